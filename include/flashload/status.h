// Status and Result<T>: how every fallible call in flashload reports failure.
//
// Contract:
// - Library code never throws; it returns Status or Result<T>. Exceptions appear only at the CLI
//   and Python edges, which convert a Status into one.
// - A Status carries a code and a message. The code says whether trying again can help
//   (IsRetryable()); the message says what happened, where (file, tensor, byte offset) and, where
//   possible, what the user can do.
// - Ownership: a non-OK Status holds its code and message in one immutable block that copies
//   share (a reference count, no copy of the message); an OK Status holds nothing. Moves are cheap.
// - Thread-safety: a Status or Result is a value. Copies of one Status may be made and read on any
//   number of threads at once (the shared block is never written); writing one object while another
//   thread reads it needs the caller's lock, as for any value.
#ifndef FLASHLOAD_STATUS_H_
#define FLASHLOAD_STATUS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace flashload {

enum class StatusCode : int {
  kOk = 0,
  kInvalidArgument,     // the caller asked for something malformed (bad option, bad path syntax)
  kNotFound,            // file, tensor or key does not exist
  kDataLoss,            // the bytes are not a valid model (malformed header, truncated file)
  kUnavailable,         // transient I/O failure (EINTR, EAGAIN, 503): a retry may help
  kFailedPrecondition,  // the system is not in a state to do it (no GPU, O_DIRECT unsupported)
  kResourceExhausted,   // out of memory or budget
  kCancelled,           // the operation was cancelled (first error elsewhere, user abort)
  kDeadlineExceeded,    // a deadline passed before completion
  kIoError,             // a permanent I/O error (EIO, EBADF): retrying the same read will not help
  kOutOfRange,          // a read or slice beyond the end
  kUnimplemented,       // the build or platform lacks this feature
  kInternal,            // a bug in flashload
};

// Short, stable name of a code, e.g. "DATA_LOSS".
std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  // Every URL in `message` is kept as RedactUrl() (flashload/source.h) shows it: no user info, no
  // credential in its query, so a message can be printed or logged as it is. With kOk the message
  // is dropped and the Status is OK.
  Status(StatusCode code, std::string message);

  static Status Ok() { return Status(); }

  bool ok() const { return rep_ == nullptr; }
  StatusCode code() const { return rep_ ? rep_->code : StatusCode::kOk; }
  // The message without the code name; empty for OK.
  std::string_view message() const {
    return rep_ ? std::string_view(rep_->message) : std::string_view();
  }
  // "CODE: message", or "OK".
  std::string ToString() const;

  // True when the same operation may succeed if tried again (kUnavailable, kDeadlineExceeded).
  bool IsRetryable() const;

  // Returns a copy whose message is "<prefix>: <message>"; OK stays OK.
  Status WithContext(std::string_view prefix) const;

  // Ignores the status explicitly (for best-effort cleanup paths).
  void IgnoreError() const {}

  friend bool operator==(const Status& a, const Status& b) {
    return a.code() == b.code() && a.message() == b.message();
  }

 private:
  struct Rep {
    StatusCode code;
    std::string message;
  };
  std::shared_ptr<const Rep> rep_;
};

// Helpers named after their codes.
Status InvalidArgumentError(std::string message);
Status NotFoundError(std::string message);
Status DataLossError(std::string message);
Status UnavailableError(std::string message);
Status FailedPreconditionError(std::string message);
Status ResourceExhaustedError(std::string message);
Status CancelledError(std::string message);
Status DeadlineExceededError(std::string message);
Status IoError(std::string message);
Status OutOfRangeError(std::string message);
Status UnimplementedError(std::string message);
Status InternalError(std::string message);

// The one place an errno becomes a Status. `op` is the failed operation ("open", "pread"), `path`
// the file, `offset` the byte offset (omitted from the message when < 0); the message is
// "<op> <path>[ at byte offset <offset>]: <strerror> (errno <err>)". Codes: EINTR, EAGAIN and
// ETIMEDOUT map to kUnavailable; ENOENT and ENOTDIR to kNotFound; ENOMEM, ENOSPC, EMFILE and ENFILE
// to kResourceExhausted; EINVAL to kInvalidArgument; EACCES and EPERM to kFailedPrecondition;
// ECANCELED to kCancelled; the rest to kIoError.
Status ErrnoToStatus(int err, std::string_view op, std::string_view path, int64_t offset = -1);

// Result<T> holds either a T or a non-OK Status. Built from an OK Status (a bug in the caller) it
// holds kInternal instead. value(), operator* and operator-> require ok(): on an error they throw
// std::bad_variant_access (a bug, never a way to report one). A reference they return borrows from
// the Result and lives as long as it does.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    if (std::get<Status>(v_).ok())
      v_ = Status(StatusCode::kInternal, "Result built from an OK Status");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  Status status() const { return ok() ? Status() : std::get<Status>(v_); }

  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace flashload

#define FL_STATUS_CONCAT_INNER_(a, b) a##b
#define FL_STATUS_CONCAT_(a, b) FL_STATUS_CONCAT_INNER_(a, b)

// Returns from the current function when `expr` (a Status) is not OK.
#define FL_RETURN_IF_ERROR(expr)             \
  do {                                       \
    ::flashload::Status fl_status_ = (expr); \
    if (!fl_status_.ok()) return fl_status_; \
  } while (0)

// `lhs = value of rexpr` (a Result<T>), or returns its Status.
#define FL_ASSIGN_OR_RETURN(lhs, rexpr) \
  FL_ASSIGN_OR_RETURN_IMPL_(FL_STATUS_CONCAT_(fl_result_, __LINE__), lhs, rexpr)
#define FL_ASSIGN_OR_RETURN_IMPL_(result, lhs, rexpr) \
  auto result = (rexpr);                              \
  if (!result.ok()) return result.status();           \
  lhs = std::move(result).value()

#endif  // FLASHLOAD_STATUS_H_
