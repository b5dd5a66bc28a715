#include "store/tar_writer.h"

#include <fmt/format.h>

#include <array>
#include <utility>

#include "format/tar.h"

namespace flashload::store {
namespace {

std::span<const std::byte> AsBytes(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

}  // namespace

TarWriter::TarWriter(WriteFn write, BoundaryFn boundary, std::string name)
    : write_(std::move(write)), boundary_(std::move(boundary)), name_(std::move(name)) {}

Status TarWriter::Fail(Status s) {
  if (!s.ok() && error_.ok()) error_ = s;
  return s;
}

Status TarWriter::Emit(std::span<const std::byte> bytes) {
  Status s = write_(bytes);
  if (!s.ok()) return Fail(std::move(s));
  offset_ += bytes.size();
  return Status::Ok();
}

Status TarWriter::Header(std::string_view path, bool directory, uint64_t size) {
  if (!error_.ok()) return error_;
  if (in_file_ || finished_) {
    return Fail(InvalidArgumentError(
        fmt::format("{}: member '{}' at byte offset {} started while '{}' is {}", name_, path,
                    offset_, file_path_, finished_ ? "the end of the archive" : "still open")));
  }
  format::TarEntry entry;
  entry.path = std::string(path);
  entry.directory = directory;
  entry.size = directory ? 0 : size;
  entry.mode = directory ? 0755 : 0644;
  entry.mtime = 0;
  Result<std::string> header = format::BuildTarHeader(entry);
  if (!header.ok()) {
    return Fail(header.status().WithContext(
        fmt::format("{}: member '{}' at byte offset {}", name_, path, offset_)));
  }
  if (boundary_) FL_RETURN_IF_ERROR(Fail(boundary_()));
  FL_RETURN_IF_ERROR(Emit(AsBytes(*header)));
  if (boundary_) FL_RETURN_IF_ERROR(Fail(boundary_()));
  ++members_;
  return Status::Ok();
}

Status TarWriter::AddDirectory(std::string_view path) { return Header(path, true, 0); }

Status TarWriter::BeginFile(std::string_view path, uint64_t size) {
  FL_RETURN_IF_ERROR(Header(path, false, size));
  in_file_ = true;
  file_path_ = std::string(path);
  file_size_ = size;
  file_written_ = 0;
  return Status::Ok();
}

Status TarWriter::WriteData(std::span<const std::byte> bytes) {
  if (!error_.ok()) return error_;
  if (!in_file_) {
    return Fail(InvalidArgumentError(
        fmt::format("{}: data at byte offset {} outside any file member", name_, offset_)));
  }
  if (bytes.size() > file_size_ - file_written_) {
    return Fail(InvalidArgumentError(fmt::format(
        "{}: member '{}': {} bytes of data beyond the {} its header announced (byte offset {}); "
        "the file changed while it was packed: pack it again",
        name_, file_path_, file_written_ + bytes.size() - file_size_, file_size_, offset_)));
  }
  FL_RETURN_IF_ERROR(Emit(bytes));
  file_written_ += bytes.size();
  return Status::Ok();
}

Status TarWriter::EndFile() {
  if (!error_.ok()) return error_;
  if (!in_file_) {
    return Fail(InvalidArgumentError(
        fmt::format("{}: EndFile at byte offset {} outside any file member", name_, offset_)));
  }
  if (file_written_ != file_size_) {
    return Fail(InvalidArgumentError(fmt::format(
        "{}: member '{}' ends after {} of the {} bytes its header announced (byte offset {}); "
        "the file changed while it was packed: pack it again",
        name_, file_path_, file_written_, file_size_, offset_)));
  }
  static constexpr std::array<std::byte, format::kTarBlock> kZeros{};
  const uint64_t pad = format::TarPadding(file_size_);
  FL_RETURN_IF_ERROR(Emit(std::span<const std::byte>(kZeros.data(), pad)));
  in_file_ = false;
  return Status::Ok();
}

Status TarWriter::Finish() {
  if (!error_.ok()) return error_;
  if (in_file_ || finished_) {
    return Fail(InvalidArgumentError(
        fmt::format("{}: the archive is finished at byte offset {} while '{}' is {}", name_,
                    offset_, file_path_, finished_ ? "already finished" : "still open")));
  }
  if (boundary_) FL_RETURN_IF_ERROR(Fail(boundary_()));
  FL_RETURN_IF_ERROR(Emit(AsBytes(format::TarEnd())));
  finished_ = true;
  return Status::Ok();
}

}  // namespace flashload::store
