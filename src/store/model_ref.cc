#include "store/model_ref.h"

#include <fmt/format.h>

#include <cstdlib>

namespace flashload::store {
namespace {

constexpr size_t kMaxPart = 96;

bool PartChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

Status CheckPart(std::string_view part, std::string_view what, std::string_view whole) {
  if (part.empty() || part.size() > kMaxPart) {
    return InvalidArgumentError(fmt::format(
        "model reference '{}': the {} must be 1 to {} characters", whole, what, kMaxPart));
  }
  for (char c : part) {
    if (!PartChar(c)) {
      return InvalidArgumentError(fmt::format(
          "model reference '{}': the {} '{}' has '{}'; use letters, digits, '.', '_' and '-'",
          whole, what, part, c));
    }
  }
  if (part.front() == '.' || part.front() == '-') {
    return InvalidArgumentError(
        fmt::format("model reference '{}': the {} '{}' must not start with '{}'", whole, what, part,
                    part.front()));
  }
  if (part.find("--") != std::string_view::npos) {
    return InvalidArgumentError(fmt::format(
        "model reference '{}': the {} '{}' must not contain '--' (it separates the parts of "
        "archive names)",
        whole, what, part));
  }
  return Status::Ok();
}

}  // namespace

Result<ModelRef> ParseModelRef(std::string_view ref) {
  const size_t slash = ref.find('/');
  const size_t at = ref.rfind('@');
  if (slash == std::string_view::npos || at == std::string_view::npos || at < slash) {
    return InvalidArgumentError(
        fmt::format("model reference '{}': expected ORG/NAME@PRECISION (for example "
                    "stabilityai/stable-diffusion-2-1-base@fp16)",
                    ref));
  }
  ModelRef m{std::string(ref.substr(0, slash)), std::string(ref.substr(slash + 1, at - slash - 1)),
             std::string(ref.substr(at + 1))};
  FL_RETURN_IF_ERROR(CheckPart(m.org, "organisation", ref));
  FL_RETURN_IF_ERROR(CheckPart(m.name, "name", ref));
  FL_RETURN_IF_ERROR(CheckPart(m.precision, "precision", ref));
  return m;
}

bool LooksLikeModelRef(std::string_view s) {
  if (s.empty() || s.find("://") != std::string_view::npos || s.front() == '/' || s.front() == '.')
    return false;
  const size_t slash = s.find('/');
  if (slash == std::string_view::npos || s.find('/', slash + 1) != std::string_view::npos) {
    return false;
  }
  const size_t at = s.find('@', slash);
  return at != std::string_view::npos && s.find('@', at + 1) == std::string_view::npos;
}

std::string ArchiveName(const ModelRef& ref, std::string_view extension) {
  return fmt::format("models--{}--{}--{}{}", ref.org, ref.name, ref.precision, extension);
}

Result<ModelRef> ParseArchiveName(std::string_view file_name, std::string* extension) {
  std::string_view stem = file_name;
  std::string_view ext;
  for (std::string_view e : {std::string_view(".tar.zst"), std::string_view(".tar")}) {
    if (stem.size() > e.size() && stem.substr(stem.size() - e.size()) == e) {
      ext = e;
      stem.remove_suffix(e.size());
      break;
    }
  }
  constexpr std::string_view kPrefix = "models--";
  const auto bad = [&] {
    return InvalidArgumentError(fmt::format(
        "'{}' is not a packed model name: expected models--ORG--NAME--PRECISION.tar.zst (or .tar)",
        file_name));
  };
  if (ext.empty() || stem.substr(0, kPrefix.size()) != kPrefix) return bad();
  stem.remove_prefix(kPrefix.size());
  const size_t a = stem.find("--");
  const size_t b = a == std::string_view::npos ? a : stem.find("--", a + 2);
  if (b == std::string_view::npos || stem.find("--", b + 2) != std::string_view::npos) return bad();
  const std::string ref =
      fmt::format("{}/{}@{}", stem.substr(0, a), stem.substr(a + 2, b - a - 2), stem.substr(b + 2));
  auto parsed = ParseModelRef(ref);
  if (!parsed.ok()) return bad();
  if (extension != nullptr) *extension = std::string(ext);
  return parsed;
}

std::string ArchiveUrl(const ModelRef& ref, std::string_view store_url) {
  std::string url(store_url);
  if (url.empty() || url.back() != '/') url.push_back('/');
  return url + ArchiveName(ref);
}

Result<std::string> StoreUrlFromEnv() {
  const char* s = std::getenv("FLASHLOAD_STORE");
  if (s == nullptr || *s == '\0') {
    return FailedPreconditionError(
        "a model reference (ORG/NAME@PRECISION) needs a store: set FLASHLOAD_STORE to its URL "
        "(for example s3://bucket/models/), or give the archive's URL instead");
  }
  return std::string(s);
}

Result<std::string> CacheDirFromEnv() {
  if (const char* c = std::getenv("FLASHLOAD_CACHE"); c != nullptr && *c != '\0') {
    return std::string(c);
  }
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x != nullptr && *x == '/') {
    return std::string(x) + "/flashload";
  }
  if (const char* h = std::getenv("HOME"); h != nullptr && *h == '/') {
    return std::string(h) + "/.cache/flashload";
  }
  return FailedPreconditionError(
      "no cache folder: set FLASHLOAD_CACHE (or HOME) to where pulled models may be kept");
}

}  // namespace flashload::store
