#include "io/http_source.h"

#include <curl/curl.h>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include "common/completions.h"
#include "common/strings.h"
#include "common/url.h"
#include "flashload/model.h"
#include "io/http_request.h"
#include "io/read_text.h"
#include "io/s3_list.h"

namespace flashload {
namespace {

// Bytes of an error response kept for its message: S3's SignatureDoesNotMatch body (with the
// canonical request and its bytes in hex) must fit whole for the XML reader to decode it.
constexpr size_t kErrorBodyLimit = 64 << 10;

// "bytes FIRST-LAST/TOTAL" or "bytes */TOTAL" (TOTAL may be "*").
struct ContentRange {
  bool has_range = false;
  uint64_t first = 0;
  uint64_t last = 0;
  std::optional<uint64_t> total;
};

std::optional<ContentRange> ParseContentRange(std::string_view v) {
  v = Trim(v);
  if (v.size() < 6 || !EqualsIgnoreCase(v.substr(0, 6), "bytes ")) return std::nullopt;
  v = Trim(v.substr(6));
  const size_t slash = v.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  ContentRange cr;
  const std::string_view range = v.substr(0, slash);
  const std::string_view total = v.substr(slash + 1);
  if (total != "*") {
    cr.total = ParseDecimal(total);
    if (!cr.total) return std::nullopt;
  }
  if (range != "*") {
    const size_t dash = range.find('-');
    if (dash == std::string_view::npos) return std::nullopt;
    auto first = ParseDecimal(range.substr(0, dash));
    auto last = ParseDecimal(range.substr(dash + 1));
    if (!first || !last || *last < *first) return std::nullopt;
    cr.has_range = true;
    cr.first = *first;
    cr.last = *last;
  }
  return cr;
}

// What the server said in an error body: the service's error as `decoder` reads it, or a short
// printable snippet. Header values sent with the request (`secrets`) are replaced, in case the
// server echoes them.
std::string ServerMessage(std::string_view body, const std::optional<ServiceError>& said,
                          const std::vector<std::string>& secrets) {
  return ScrubSecrets(said ? DescribeServiceError(*said) : ErrorBodySnippet(body), secrets);
}

// A synchronous caller (ReadAt(), the opening GET) waiting for one transfer.
struct Transfer;
struct Waiter {
  bool done = false;  // guarded by the source's mu_
  ReadResult result;
  std::unique_ptr<Transfer> transfer;  // handed back when done
  std::atomic<bool> abandon{false};    // the caller's deadline passed
};

// One ranged GET. Owned by the source's queue, then by the event thread while it runs.
struct Transfer {
  class HttpObject* owner = nullptr;
  uint64_t tag = 0;
  uint64_t offset = 0;       // first byte asked on the wire
  uint64_t length = 0;       // bytes asked on the wire (> 0)
  std::byte* dst = nullptr;  // where they go
  uint64_t pre = 0;          // bytes of the caller's request already copied from the prefix
  Waiter* waiter = nullptr;  // null: the completion goes to Reap()
  bool open = false;         // the opening GET: object size not known yet
  std::string url;           // where the request goes now: the source's URL, or a redirect's
  uint32_t redirects = 0;    // followed so far
  bool left_origin = false;  // a redirect went to another scheme, host or port

  CURL* easy = nullptr;
  curl_slist* header_list = nullptr;
  std::vector<std::string> secrets;
  char errbuf[CURL_ERROR_SIZE] = {};

  // The current response (reset at every status line, e.g. after a redirect).
  long code = 0;
  std::string content_range;
  std::string etag;
  std::optional<uint64_t> content_length;
  bool headers_checked = false;
  bool body_to_dst = false;   // a 2xx body being copied into dst
  bool whole_object = false;  // a 200 answer carrying the whole object
  std::string error_body;
  uint64_t received = 0;  // body bytes placed at dst
  Status abort_status;    // why a callback stopped the transfer

  // Learned by the opening GET.
  std::optional<uint64_t> total_size;
  uint64_t first_byte_ns = 0;
  uint64_t total_ns = 0;  // the opening request: until its last byte
};

// The link as the opening request measured it: time to first byte, and the rate its body arrived
// at. The body must have carried at least 512 KiB for its rate to mean anything.
void MeasureLink(uint64_t received, uint64_t first_byte_ns, uint64_t total_ns, SourceCaps& caps) {
  caps.first_byte_ns = first_byte_ns;
  if (received < (512u << 10) || total_ns <= first_byte_ns) return;
  caps.request_bytes_per_second = static_cast<uint64_t>(
      static_cast<double>(received) / (static_cast<double>(total_ns - first_byte_ns) * 1e-9));
}

class HttpObject final : public HttpSource {
 public:
  HttpObject(std::string url, HttpOptions options)
      : url_(std::move(url)), display_url_(RedactUrl(url_)), options_(std::move(options)) {
    options_.connections = std::max<uint32_t>(options_.connections, 1);
    options_.prefix_bytes = std::max<uint64_t>(options_.prefix_bytes, 1);
  }

  ~HttpObject() override {
    if (thread_.joinable()) {
      {
        std::lock_guard lock(mu_);
        stopping_ = true;
      }
      curl_multi_wakeup(multi_);
      thread_.join();
    }
    for (CURL* e : idle_easy_) curl_easy_cleanup(e);
    if (multi_ != nullptr) curl_multi_cleanup(multi_);
  }

  Status Start() {
    multi_ = curl_multi_init();
    if (multi_ == nullptr)
      return InternalError(fmt::format("{}: curl_multi_init failed", display_url_));
    curl_multi_setopt(multi_, CURLMOPT_MAX_HOST_CONNECTIONS,
                      static_cast<long>(options_.connections));
    curl_multi_setopt(multi_, CURLMOPT_MAX_TOTAL_CONNECTIONS,
                      static_cast<long>(options_.connections));
    curl_multi_setopt(multi_, CURLMOPT_MAXCONNECTS, static_cast<long>(options_.connections));
    thread_ = std::thread([this] { Run(); });
    return Status();
  }

  // The opening GET: size, ETag and the first bytes.
  Status Open() {
    prefix_.assign(options_.prefix_bytes, std::byte{0});
    auto t = std::make_unique<Transfer>();
    t->open = true;
    t->offset = 0;
    t->length = prefix_.size();
    t->dst = prefix_.data();
    Waiter w;
    RunSync(std::move(t), Deadline::Infinite(), &w);
    if (!w.result.status.ok()) return w.result.status;
    const Transfer& done = *w.transfer;
    if (!done.total_size) {
      return FailedPreconditionError(fmt::format(
          "{}: the server did not say how large the object is (no total in Content-Range, no "
          "Content-Length); flashload needs the size to plan ranged reads",
          display_url_));
    }
    size_ = *done.total_size;
    prefix_.resize(std::min<uint64_t>(done.received, size_));
    prefix_.shrink_to_fit();
    etag_ = done.etag;
    strong_etag_ = !etag_.empty() && etag_.rfind("W/", 0) != 0;
    link_.max_in_flight = options_.connections;
    link_.preferred_chunk = options_.chunk_size;
    MeasureLink(done.received, done.first_byte_ns, done.total_ns, link_);
    return Status();
  }

  const std::string& name() const override { return display_url_; }
  const std::string& display_url() const override { return display_url_; }
  const std::string& etag() const override { return etag_; }
  uint64_t prefix_size() const override { return prefix_.size(); }
  uint64_t size() const override { return size_; }
  std::string_view backend() const override { return "http"; }

  SourceCaps caps() const override { return link_; }

  Result<size_t> ReadAt(uint64_t offset, std::span<std::byte> dst,
                        const ReadOptions& options) const override {
    std::unique_ptr<Transfer> t;
    size_t n = 0;
    Plan(offset, dst.size(), dst.data(), 0, &t, &n);
    if (t == nullptr) return n;
    Waiter w;
    RunSync(std::move(t), options.deadline, &w);
    if (!w.result.status.ok()) return w.result.status;
    return static_cast<size_t>(w.result.bytes);
  }

  Result<size_t> Reap(std::span<ReadResult> out, Deadline deadline) override {
    std::unique_lock lock(mu_);
    return common_internal::TakeCompletions(lock, cv_, done_, out, deadline);
  }

  void Cancel() override {
    {
      std::lock_guard lock(mu_);
      cancel_requested_ = true;
    }
    curl_multi_wakeup(multi_);
  }

  // Callbacks (event thread).
  static size_t OnHeader(char* data, size_t size, size_t nmemb, void* user);
  static size_t OnBody(char* data, size_t size, size_t nmemb, void* user);

 protected:
  // The batch was validated by Source::Submit().
  Status DoSubmit(std::span<const ReadRequest> requests) override {
    std::vector<std::unique_ptr<Transfer>> transfers;
    std::vector<ReadResult> immediate;
    for (const ReadRequest& r : requests) {
      std::unique_ptr<Transfer> t;
      size_t n = 0;
      Plan(r.offset, r.length, r.dst, r.tag, &t, &n);
      if (t == nullptr) {
        immediate.push_back(ReadResult{r.tag, n, Status()});
      } else {
        transfers.push_back(std::move(t));
      }
    }
    {
      std::lock_guard lock(mu_);
      for (auto& t : transfers) queued_.push_back(std::move(t));
      for (ReadResult& r : immediate) done_.push_back(std::move(r));
    }
    if (!immediate.empty()) cv_.notify_all();
    if (!transfers.empty()) curl_multi_wakeup(multi_);
    return Status();
  }

 private:
  // Splits a read into the part served from the prefix (copied now) and a transfer for the rest.
  // Sets *t to null when nothing needs the network; *n is then the bytes the read returns.
  void Plan(uint64_t offset, uint64_t length, std::byte* dst, uint64_t tag,
            std::unique_ptr<Transfer>* t, size_t* n) const {
    *t = nullptr;
    *n = 0;
    if (offset >= size_ || length == 0) return;
    const uint64_t len = std::min(length, size_ - offset);
    uint64_t pre = 0;
    if (offset < prefix_.size()) {
      pre = std::min<uint64_t>(len, prefix_.size() - offset);
      std::memcpy(dst, prefix_.data() + offset, pre);
    }
    if (pre == len) {
      *n = len;
      return;
    }
    auto tr = std::make_unique<Transfer>();
    tr->tag = tag;
    tr->offset = offset + pre;
    tr->length = len - pre;
    tr->dst = dst + pre;
    tr->pre = pre;
    *t = std::move(tr);
  }

  void RunSync(std::unique_ptr<Transfer> t, Deadline deadline, Waiter* w) const {
    t->waiter = w;
    {
      std::lock_guard lock(mu_);
      queued_.push_back(std::move(t));
    }
    curl_multi_wakeup(multi_);
    std::unique_lock lock(mu_);
    auto done = [&] { return w->done; };
    if (deadline.infinite()) {
      cv_.wait(lock, done);
      return;
    }
    if (cv_.wait_until(lock, deadline.when(), done)) return;
    w->abandon = true;
    abandon_requested_ = true;
    lock.unlock();
    curl_multi_wakeup(multi_);
    lock.lock();
    cv_.wait(lock, done);
  }

  std::string RangeText(const Transfer& t) const {
    return fmt::format("bytes {}-{} (byte offset {})", t.offset, t.offset + t.length - 1, t.offset);
  }

  Status ChangedError(const Transfer& t, std::string_view why) const {
    return DataLossError(fmt::format(
        "{}: object changed during the load ({}) reading {}; its bytes would mix two versions, "
        "so the load stops: restart it",
        display_url_, why, RangeText(t)));
  }

  Status IgnoresRangeError(const Transfer& t) const {
    return FailedPreconditionError(fmt::format(
        "{}: server ignores Range requests; it answered a GET of {} with the whole object (HTTP "
        "200); use a server or CDN that supports ranged GETs, or download the file first",
        display_url_, RangeText(t)));
  }

  // Checks the headers of a response before its body is used; decides where the body goes.
  Status CheckHeaders(Transfer& t) const {
    t.headers_checked = true;
    t.body_to_dst = false;
    if (t.code >= 300 && t.code < 400 && options_.follow_redirects) return Status();
    if (t.code == 206) {
      auto cr = ParseContentRange(t.content_range);
      if (!cr || !cr->has_range) {
        return DataLossError(fmt::format("{}: HTTP 206 with a malformed Content-Range '{}' for {}",
                                         display_url_, PrintableSnippet(t.content_range, 100),
                                         RangeText(t)));
      }
      const uint64_t want_last = t.offset + t.length - 1;
      const bool range_ok =
          cr->first == t.offset && (t.open ? cr->last <= want_last : cr->last == want_last);
      if (!range_ok) {
        return DataLossError(fmt::format("{}: Content-Range '{}' does not match the requested {}",
                                         display_url_, PrintableSnippet(t.content_range, 100),
                                         RangeText(t)));
      }
      if (t.open) {
        t.total_size = cr->total;
      } else {
        if (cr->total && *cr->total != size_) {
          return ChangedError(t, fmt::format("size {} bytes, now {}", size_, *cr->total));
        }
        FL_RETURN_IF_ERROR(CheckEtag(t));
      }
      t.body_to_dst = true;
      return Status();
    }
    if (t.code == 200) {
      if (t.open) {
        if (t.content_length && *t.content_length > t.length) return IgnoresRangeError(t);
        t.whole_object = true;
        t.body_to_dst = true;
        return Status();
      }
      if (t.offset == 0 && t.length == size_ && (!t.content_length || *t.content_length == size_)) {
        FL_RETURN_IF_ERROR(CheckEtag(t));
        t.whole_object = true;
        t.body_to_dst = true;
        return Status();
      }
      return IgnoresRangeError(t);
    }
    return Status();  // an error status: its body is kept for the message
  }

  Status CheckEtag(const Transfer& t) const {
    if (!etag_.empty() && !t.etag.empty() && t.etag != etag_) {
      return ChangedError(t, fmt::format("ETag {} no longer matches; the server now has {}", etag_,
                                         PrintableSnippet(t.etag, 100)));
    }
    return Status();
  }

  // The status of a transfer curl finished with `rc`, and the intact bytes at dst.
  Status Outcome(Transfer& t, CURLcode rc) const {
    if (!t.abort_status.ok()) return t.abort_status;
    if (rc != CURLE_OK) return CurlError(t, rc);
    if (!t.headers_checked) FL_RETURN_IF_ERROR(CheckHeaders(t));
    if (t.body_to_dst) {
      uint64_t expected = t.length;
      if (t.open) {
        if (t.whole_object) {
          t.total_size = t.received;
          expected = t.received;
        } else {
          auto cr = ParseContentRange(t.content_range);
          expected = cr->last - cr->first + 1;
        }
      }
      if (t.received < expected) {
        return UnavailableError(
            fmt::format("{}: the server sent {} of the {} bytes it promised for {}: body cut short",
                        display_url_, t.received, expected, RangeText(t)));
      }
      return Status();
    }
    if (t.code == 416 && t.open) {
      auto cr = ParseContentRange(t.content_range);
      if (cr && cr->total && *cr->total == 0) {
        t.total_size = 0;  // an empty object has no byte 0 to range over
        return Status();
      }
    }
    const std::optional<ServiceError> said =
        options_.error_decoder ? options_.error_decoder(t.error_body) : std::nullopt;
    const std::string server = ServerMessage(t.error_body, said, t.secrets);
    const std::string quoted = server.empty() ? "" : fmt::format(": {}", server);
    if (t.code >= 300 && t.code < 400) {
      return FailedPreconditionError(fmt::format(
          "{}: HTTP {} (redirect{}) reading {}{}", display_url_, t.code,
          options_.follow_redirects ? " without a usable Location" : "s are not followed",
          RangeText(t), quoted));
    }
    // Once the object is open its size is known: a 416 then means it shrank.
    const StatusCode code = HttpErrorCode(static_cast<int>(t.code), said ? &*said : nullptr,
                                          /*size_known=*/!t.open);
    switch (code) {
      case StatusCode::kNotFound:
        return NotFoundError(fmt::format("{}: not found (HTTP {}) reading {}{}", display_url_,
                                         t.code, RangeText(t), quoted));
      case StatusCode::kDataLoss:
        return ChangedError(
            t, t.code == 412 ? fmt::format("ETag {} no longer matches; HTTP 412{}", etag_, quoted)
                             : fmt::format("HTTP {} range not satisfiable{}", t.code, quoted));
      case StatusCode::kUnavailable:
        return UnavailableError(
            fmt::format("{}: HTTP {} reading {}{}; the server may be overloaded", display_url_,
                        t.code, RangeText(t), quoted));
      case StatusCode::kFailedPrecondition:
        if (t.code == 401 || t.code == 403) {
          return FailedPreconditionError(fmt::format(
              "{}: access denied (HTTP {}) reading {}{}; check the credentials, the Authorization "
              "header or the bucket policy",
              display_url_, t.code, RangeText(t), quoted));
        }
        [[fallthrough]];
      default:
        return Status(
            code, fmt::format("{}: HTTP {}{} reading {}{}", display_url_, t.code,
                              t.code == 416 ? " range not satisfiable" : "", RangeText(t), quoted));
    }
  }

  Status CurlError(const Transfer& t, CURLcode rc) const {
    return CurlTransportError(rc, t.errbuf,
                              fmt::format("{}: reading {}", display_url_, RangeText(t)), t.received,
                              options_);
  }

  // Configures an easy handle for `t` and adds it to the multi handle; completes `t` on failure.
  void Begin(std::unique_ptr<Transfer> t) {
    HttpRequest req;
    req.url = t->url.empty() ? url_ : t->url;
    req.range_begin = t->offset;
    req.range_end = t->offset + t->length - 1;
    req.headers.emplace_back("Range", fmt::format("bytes={}-{}", req.range_begin, req.range_end));
    if (!t->open && strong_etag_) req.headers.emplace_back("If-Match", etag_);
    // Credentials are bound to the origin they were given for (see HttpOptions::headers).
    const bool credentials = !t->left_origin || options_.header_on_redirect;
    if (credentials) {
      for (const auto& h : options_.headers) req.headers.push_back(h);
    }
    if (options_.decorator && credentials) {
      Status s = options_.decorator(req);
      if (!s.ok()) {
        s = s.WithContext(fmt::format("{}: preparing {}", display_url_, RangeText(*t)));
        Complete(std::move(t), std::move(s), 0);
        return;
      }
    }
    for (const auto& [name, value] : req.headers) {
      if (value.size() >= 6 && !EqualsIgnoreCase(name, "Range") &&
          !EqualsIgnoreCase(name, "If-Match") && !EqualsIgnoreCase(name, "Host")) {
        t->secrets.push_back(value);
      }
      const std::string line =
          value.empty() ? fmt::format("{};", name) : fmt::format("{}: {}", name, value);
      curl_slist* next = curl_slist_append(t->header_list, line.c_str());
      if (next == nullptr) {
        Complete(std::move(t),
                 ResourceExhaustedError(
                     fmt::format("{}: out of memory building request headers", display_url_)),
                 0);
        return;
      }
      t->header_list = next;
    }

    CURL* e = nullptr;
    if (!idle_easy_.empty()) {
      e = idle_easy_.back();  // reset when it was given back
      idle_easy_.pop_back();
    } else {
      e = curl_easy_init();
    }
    if (e == nullptr) {
      Complete(std::move(t), InternalError(fmt::format("{}: curl_easy_init failed", display_url_)),
               0);
      return;
    }
    t->easy = e;
    t->owner = this;
    curl_easy_setopt(e, CURLOPT_URL, req.url.c_str());
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->header_list);
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    // Redirects are followed here (Finish()), not by libcurl, which would send every custom
    // header to whatever host a Location names; ApplyCurlTransport() leaves them off.
    ApplyCurlTransport(e, options_);
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 512L * 1024);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, &HttpObject::OnHeader);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, t.get());
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &HttpObject::OnBody);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, t.get());
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
    curl_easy_setopt(e, CURLOPT_PRIVATE, t.get());
    const CURLMcode mc = curl_multi_add_handle(multi_, e);
    if (mc != CURLM_OK) {
      Complete(std::move(t),
               InternalError(fmt::format("{}: curl_multi_add_handle failed: {}", display_url_,
                                         curl_multi_strerror(mc))),
               0);
      return;
    }
    active_.push_back(std::move(t));
  }

  // Detaches `t` from curl (if it was added), recycles its handle and delivers its completion.
  void Complete(std::unique_ptr<Transfer> t, Status status, uint64_t wire_bytes) {
    if (t->easy != nullptr) {
      curl_multi_remove_handle(multi_, t->easy);
      curl_easy_reset(t->easy);  // drops the pointers into `t` (buffers, callbacks' data)
      idle_easy_.push_back(t->easy);
      t->easy = nullptr;
    }
    curl_slist_free_all(t->header_list);
    t->header_list = nullptr;
    ReadResult r{t->tag, t->pre + wire_bytes, std::move(status)};
    {
      std::lock_guard lock(mu_);
      if (t->waiter != nullptr) {
        Waiter* w = t->waiter;
        w->result = std::move(r);
        w->transfer = std::move(t);
        w->done = true;
      } else {
        done_.push_back(std::move(r));
      }
    }
    cv_.notify_all();
  }

  std::unique_ptr<Transfer> TakeActive(Transfer* p) {
    for (auto it = active_.begin(); it != active_.end(); ++it) {
      if (it->get() == p) {
        std::unique_ptr<Transfer> t = std::move(*it);
        active_.erase(it);
        return t;
      }
    }
    return nullptr;
  }

  void Finish(CURL* e, CURLcode rc) {
    Transfer* p = nullptr;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, reinterpret_cast<char**>(&p));
    std::unique_ptr<Transfer> t = TakeActive(p);
    if (t == nullptr) return;
    if (t->open) {
      curl_off_t us = 0;
      if (curl_easy_getinfo(e, CURLINFO_STARTTRANSFER_TIME_T, &us) == CURLE_OK && us > 0) {
        t->first_byte_ns = static_cast<uint64_t>(us) * 1000;
      }
      if (curl_easy_getinfo(e, CURLINFO_TOTAL_TIME_T, &us) == CURLE_OK && us > 0) {
        t->total_ns = static_cast<uint64_t>(us) * 1000;
      }
    }
    if (rc == CURLE_OK && t->abort_status.ok() && options_.follow_redirects && t->code >= 300 &&
        t->code < 400) {
      char* location = nullptr;
      if (curl_easy_getinfo(e, CURLINFO_REDIRECT_URL, &location) == CURLE_OK &&
          location != nullptr) {
        Redirect(std::move(t), location);
        return;
      }
    }
    Status s = Outcome(*t, rc);
    uint64_t bytes = 0;
    if (s.ok()) {
      bytes = t->received;
    } else if (s.code() == StatusCode::kUnavailable && t->body_to_dst) {
      bytes = t->received;  // validated by CheckHeaders: they start at the requested offset
    }
    Complete(std::move(t), std::move(s), bytes);
  }

  // Sends `t` again to `location` (absolute, resolved by libcurl against the URL it answered),
  // with its credentials only while the redirects stay at the source's origin.
  void Redirect(std::unique_ptr<Transfer> t, const std::string& location) {
    if (t->redirects >= options_.max_redirects) {
      Status s = FailedPreconditionError(fmt::format(
          "{}: more than {} redirects reading {} (the last to {}); fix the URL or the server's "
          "redirects",
          display_url_, options_.max_redirects, RangeText(*t), RedactUrl(location)));
      Complete(std::move(t), std::move(s), 0);
      return;
    }
    ++t->redirects;
    if (!SameOrigin(url_, location)) t->left_origin = true;
    t->url = location;
    curl_multi_remove_handle(multi_, t->easy);
    curl_easy_reset(t->easy);
    idle_easy_.push_back(t->easy);
    t->easy = nullptr;
    curl_slist_free_all(t->header_list);
    t->header_list = nullptr;
    t->code = 0;
    t->headers_checked = false;
    t->body_to_dst = false;
    t->whole_object = false;
    t->error_body.clear();
    t->received = 0;
    t->errbuf[0] = '\0';
    Begin(std::move(t));
  }

  // The event thread.
  void Run() {
    for (;;) {
      std::vector<std::unique_ptr<Transfer>> starting;
      std::vector<std::unique_ptr<Transfer>> dropped;
      bool cancel = false;
      bool abandon = false;
      bool stop = false;
      {
        std::lock_guard lock(mu_);
        cancel = std::exchange(cancel_requested_, false);
        abandon = std::exchange(abandon_requested_, false);
        if (cancel) {
          while (!queued_.empty()) {
            dropped.push_back(std::move(queued_.front()));
            queued_.pop_front();
          }
        } else if (abandon) {
          for (auto it = queued_.begin(); it != queued_.end();) {
            if ((*it)->waiter != nullptr && (*it)->waiter->abandon) {
              dropped.push_back(std::move(*it));
              it = queued_.erase(it);
            } else {
              ++it;
            }
          }
        }
        while (active_.size() + starting.size() < options_.connections && !queued_.empty()) {
          starting.push_back(std::move(queued_.front()));
          queued_.pop_front();
        }
        stop = stopping_ && queued_.empty() && active_.empty() && starting.empty();
      }
      if (cancel) {
        for (auto& t : dropped) Complete(std::move(t), CancelledStatus(*t), 0);
        while (!active_.empty()) {
          std::unique_ptr<Transfer> t = std::move(active_.back());
          active_.pop_back();
          const uint64_t intact = t->body_to_dst ? t->received : 0;
          Status s = CancelledStatus(*t);
          Complete(std::move(t), std::move(s), intact);
        }
      } else if (abandon) {
        for (auto& t : dropped) Complete(std::move(t), DeadlineStatus(*t), 0);
        for (size_t i = 0; i < active_.size();) {
          if (active_[i]->waiter != nullptr && active_[i]->waiter->abandon) {
            std::unique_ptr<Transfer> t = std::move(active_[i]);
            active_.erase(active_.begin() + static_cast<ptrdiff_t>(i));
            Status s = DeadlineStatus(*t);
            Complete(std::move(t), std::move(s), 0);
          } else {
            ++i;
          }
        }
      }
      if (stop) return;
      for (auto& t : starting) Begin(std::move(t));

      int running = 0;
      curl_multi_perform(multi_, &running);
      int left = 0;
      while (CURLMsg* msg = curl_multi_info_read(multi_, &left)) {
        if (msg->msg == CURLMSG_DONE) Finish(msg->easy_handle, msg->data.result);
      }
      bool more;
      {
        std::lock_guard lock(mu_);
        more = !queued_.empty() && active_.size() < options_.connections;
      }
      if (!more) curl_multi_poll(multi_, nullptr, 0, 1000, nullptr);
    }
  }

  Status CancelledStatus(const Transfer& t) const {
    return CancelledError(fmt::format("{}: read of {} cancelled", display_url_, RangeText(t)));
  }
  Status DeadlineStatus(const Transfer& t) const {
    return DeadlineExceededError(
        fmt::format("{}: read of {} passed its deadline", display_url_, RangeText(t)));
  }

  const std::string url_;
  const std::string display_url_;
  HttpOptions options_;
  // Set by Open(), read-only afterwards.
  uint64_t size_ = 0;
  std::string etag_;
  bool strong_etag_ = false;
  std::vector<std::byte> prefix_;
  SourceCaps link_;  // caps(): set by Open()

  CURLM* multi_ = nullptr;
  std::thread thread_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;                    // completions, and synchronous waiters
  mutable std::deque<std::unique_ptr<Transfer>> queued_;  // guarded by mu_
  std::deque<ReadResult> done_;                           // guarded by mu_
  bool stopping_ = false;                                 // guarded by mu_
  bool cancel_requested_ = false;                         // guarded by mu_
  mutable bool abandon_requested_ = false;                // guarded by mu_
  // Event thread only.
  std::vector<std::unique_ptr<Transfer>> active_;
  std::vector<CURL*> idle_easy_;
};

size_t HttpObject::OnHeader(char* data, size_t size, size_t nmemb, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * nmemb;
  std::string_view line(data, n);
  if (line.size() >= 5 && line.substr(0, 5) == "HTTP/") {
    // A new response (the first, or the next after a redirect): start over.
    t->code = 0;
    const size_t sp = line.find(' ');
    if (sp != std::string_view::npos) {
      const std::string_view rest = line.substr(sp + 1);
      if (rest.size() >= 3)
        t->code = static_cast<long>(ParseDecimal(rest.substr(0, 3)).value_or(0));
    }
    t->content_range.clear();
    t->etag.clear();
    t->content_length.reset();
    t->headers_checked = false;
    t->body_to_dst = false;
    t->whole_object = false;
    t->error_body.clear();
    return n;
  }
  const size_t colon = line.find(':');
  if (colon == std::string_view::npos) return n;
  const std::string_view name = Trim(line.substr(0, colon));
  const std::string_view value = Trim(line.substr(colon + 1));
  if (EqualsIgnoreCase(name, "Content-Range")) {
    t->content_range = value;
  } else if (EqualsIgnoreCase(name, "ETag")) {
    t->etag = value;
  } else if (EqualsIgnoreCase(name, "Content-Length")) {
    t->content_length = ParseDecimal(value);
  }
  return n;
}

size_t HttpObject::OnBody(char* data, size_t size, size_t nmemb, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * nmemb;
  if (!t->headers_checked) {
    Status s = t->owner->CheckHeaders(*t);
    if (!s.ok()) {
      t->abort_status = std::move(s);
      return 0;  // != n: curl stops the transfer
    }
  }
  if (!t->body_to_dst) {
    const size_t keep =
        std::min(n, kErrorBodyLimit - std::min(kErrorBodyLimit, t->error_body.size()));
    t->error_body.append(data, keep);
    return n;
  }
  const uint64_t room = t->length - t->received;
  if (n > room) {
    if (t->open && t->whole_object) {
      t->abort_status = t->owner->IgnoresRangeError(*t);
    } else {
      t->abort_status =
          DataLossError(fmt::format("{}: the server sent more than the {} bytes requested for {}",
                                    t->owner->display_url_, t->length, t->owner->RangeText(*t)));
    }
    return 0;
  }
  std::memcpy(t->dst + t->received, data, n);
  t->received += n;
  return n;
}

}  // namespace

Status CheckRequestHeaders(const std::vector<std::pair<std::string, std::string>>& headers,
                           const std::string& url) {
  for (const auto& [name, value] : headers) {
    if (!IsHttpToken(name)) {
      return InvalidArgumentError(
          fmt::format("{}: request header name '{}' is not an HTTP token (letters, digits and "
                      "!#$%&'*+-.^_`|~ only; no spaces, CR, LF or NUL); give it as 'Name: value'",
                      RedactUrl(url), PrintableSnippet(name, 100)));
    }
    if (value.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos) {
      return InvalidArgumentError(fmt::format(
          "{}: the value of request header '{}' holds a CR, LF or NUL byte, which would start "
          "another header line; give one header per --header, each on one line",
          RedactUrl(url), name));
    }
  }
  return Status();
}

Result<std::unique_ptr<HttpSource>> OpenHttpObject(const std::string& url,
                                                   const HttpOptions& options) {
  const std::optional<UrlParts> parts = SplitUrl(url);
  if (!parts ||
      (!EqualsIgnoreCase(parts->scheme, "http") && !EqualsIgnoreCase(parts->scheme, "https"))) {
    return InvalidArgumentError(fmt::format("{}: not an http:// or https:// URL", RedactUrl(url)));
  }
  FL_RETURN_IF_ERROR(CheckRequestHeaders(options.headers, url));
  FL_RETURN_IF_ERROR(CurlGlobalInit());
  auto object = std::make_unique<HttpObject>(url, options);
  FL_RETURN_IF_ERROR(object->Start());
  FL_RETURN_IF_ERROR(object->Open());
  return std::unique_ptr<HttpSource>(std::move(object));
}

Result<std::unique_ptr<Source>> OpenHttpSource(const std::string& url, const HttpOptions& options) {
  FL_ASSIGN_OR_RETURN(std::unique_ptr<HttpSource> s, OpenHttpObject(url, options));
  return std::unique_ptr<Source>(std::move(s));
}

HttpOptions HttpOptionsFrom(const RemoteOpenOptions& remote) {
  HttpOptions o;
  if (remote.connections > 0) o.connections = remote.connections;
  if (remote.chunk_bytes > 0) o.chunk_size = remote.chunk_bytes;
  o.ca_bundle = remote.ca_bundle;
  o.verify_tls = remote.verify_tls;
  o.header_on_redirect = remote.header_on_redirect;
  for (const std::string& line : remote.headers) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    o.headers.emplace_back(std::string(Trim(std::string_view(line).substr(0, colon))),
                           std::string(Trim(std::string_view(line).substr(colon + 1))));
  }
  // Servers in front of object stores (presigned URLs, S3-compatible ones) answer errors with
  // S3's XML body.
  o.error_decoder = DecodeS3Error;
  return o;
}

namespace {

// The path of a URL without its query or fragment.
std::string_view UrlPath(std::string_view url) {
  const std::optional<UrlParts> parts = SplitUrl(url);
  return parts ? parts->path : url;
}

// A model at an http(s):// URL: a single file (plain HTTP cannot list folders).
class HttpModelStore final : public ModelStore {
 public:
  explicit HttpModelStore(HttpOptions options) : options_(std::move(options)) {
    options_.prefix_bytes = 64 * 1024;
    options_.connections = 1;
  }

  // Answered from the name, without a request: the open that follows is the one round trip that
  // finds out whether the object exists (kNotFound naming the URL).
  Result<EntryKind> Stat(const std::string& path) const override {
    const std::string_view p = UrlPath(path);
    if (p.ends_with(".safetensors") || p.ends_with(".json")) return EntryKind::kFile;
    return InvalidArgumentError(fmt::format(
        "{}: an http(s) URL must name a .safetensors file or a *.safetensors.index.json; plain "
        "HTTP cannot list a folder (an S3 prefix can: s3://bucket/prefix/)",
        RedactUrl(path)));
  }

  Result<std::vector<Entry>> List(const std::string& folder) const override {
    return UnimplementedError(fmt::format(
        "{}: plain HTTP cannot list a folder; name the .safetensors file (or its index) itself",
        RedactUrl(folder)));
  }

  Result<std::string> ReadText(const std::string& path) const override {
    FL_ASSIGN_OR_RETURN(std::unique_ptr<HttpSource> s, OpenHttpObject(path, options_));
    return ReadTextFile(*s);
  }

  std::string Canonical(const std::string& path) const override { return path; }

 private:
  HttpOptions options_;
};

}  // namespace

Result<std::unique_ptr<Source>> OpenHttpUri(const std::string& uri, const OpenOptions& options) {
  return OpenHttpSource(uri, HttpOptionsFrom(options.remote));
}

Result<std::unique_ptr<ModelStore>> OpenHttpModelStore(const std::string& uri,
                                                       const OpenOptions& options) {
  return std::unique_ptr<ModelStore>(
      std::make_unique<HttpModelStore>(HttpOptionsFrom(options.remote)));
}

}  // namespace flashload
