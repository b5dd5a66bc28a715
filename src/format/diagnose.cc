#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <string>
#include <string_view>

#include "flashload/header.h"

namespace flashload {
namespace {

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

bool StartsWithNoCase(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(s[i])) != prefix[i]) return false;
  }
  return true;
}

std::string_view SkipSpaceAndBom(std::string_view s) {
  if (StartsWith(s, "\xef\xbb\xbf")) s.remove_prefix(3);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  return s;
}

std::string LfsPointer(std::string_view s) {
  std::string msg = "this is a Git LFS pointer file, not the weights: run `git lfs pull`";
  const size_t at = s.find("\nsize ");
  if (at != std::string_view::npos) {
    std::string_view size = s.substr(at + 6);
    size = size.substr(0, std::min(size.find('\n'), size_t{20}));
    msg += fmt::format(" (the real file is {} bytes)", size);
  }
  return msg;
}

}  // namespace

std::optional<std::string> DiagnoseFileKind(std::span<const std::byte> prefix, uint64_t file_size) {
  if (file_size == 0) return "the file is empty (0 bytes): an interrupted download or copy?";
  const std::string_view s(reinterpret_cast<const char*>(prefix.data()), prefix.size());
  if (StartsWith(s, "version https://git-lfs.github.com/spec/")) return LfsPointer(s);
  if (StartsWith(s, "PK\x03\x04") || StartsWith(s, "PK\x05\x06")) {
    if (s.find("data.pkl") != std::string_view::npos ||
        s.find("/data/") != std::string_view::npos ||
        s.find("archive/") != std::string_view::npos) {
      return "this is a PyTorch zip checkpoint (.bin/.pt): convert it to safetensors";
    }
    return "this is a zip archive (a PyTorch .bin/.pt checkpoint?): convert it to safetensors";
  }
  if (s.size() >= 2 && static_cast<unsigned char>(s[0]) == 0x80 && s[1] >= 2 && s[1] <= 5) {
    return "this is a Python pickle (a legacy PyTorch .bin/.pt/.ckpt checkpoint): convert it to "
           "safetensors";
  }
  if (StartsWith(s, "\x1f\x8b")) return "this is a gzip-compressed file: decompress it first";
  if (StartsWith(s, "\x28\xb5\x2f\xfd"))
    return "this is a zstd-compressed file: decompress it first";
  if (s.size() >= 262 && s.substr(257, 5) == "ustar") {
    return "this is a tar archive: unpack it, or open the member with a tar: URI";
  }
  if (StartsWith(s, "GGUF")) return "this is a GGUF file (llama.cpp), not safetensors";
  if (StartsWith(s, "\x93NUMPY")) return "this is a NumPy .npy file, not safetensors";
  if (StartsWith(s, "\x89HDF\r\n\x1a\n"))
    return "this is an HDF5 file (Keras .h5?), not safetensors";
  const std::string_view text = SkipSpaceAndBom(s);
  if (StartsWithNoCase(text, "<!doctype html") || StartsWithNoCase(text, "<html") ||
      StartsWithNoCase(text, "<head") || StartsWithNoCase(text, "<?xml")) {
    return "this is an HTML page (a login or error page saved instead of the file?)";
  }
  if (StartsWith(text, "{") || StartsWith(text, "[")) {
    if (text.find("\"weight_map\"") != std::string_view::npos) {
      return "this is a sharded checkpoint index (*.safetensors.index.json): load the folder or "
             "the index, not the index as a weights file";
    }
    return "this is a JSON file (a config?), not a safetensors file";
  }
  return std::nullopt;
}

}  // namespace flashload
