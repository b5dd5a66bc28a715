#include "io/registry.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <mutex>
#include <optional>

#include "io/http_source.h"

namespace flashload {
namespace {

struct Registry {
  std::mutex mu;
  std::map<std::string, SourceFactory> factories;
  std::map<std::string, ModelStoreFactory> stores;
};

Registry& GlobalRegistry() {
  static Registry* registry = [] {
    auto* r = new Registry;
    r->factories["file"] = [](const std::string& uri,
                              const OpenOptions& options) -> Result<std::unique_ptr<Source>> {
      FL_ASSIGN_OR_RETURN(std::string path, FileUriPath(uri));
      return OpenLocalFile(path, options.local);
    };
    return r;
  }();
  return *registry;
}

// The scheme of `uri` if it starts with an RFC 3986 scheme and ':', lower-cased.
std::optional<std::string> SchemeOf(const std::string& uri, bool* has_slashes) {
  const size_t colon = uri.find(':');
  if (colon == std::string::npos || colon < 2 ||
      !std::isalpha(static_cast<unsigned char>(uri[0]))) {
    return std::nullopt;  // colon < 2 keeps "C:..." and ":x" paths
  }
  std::string scheme;
  for (size_t i = 0; i < colon; ++i) {
    const char c = uri[i];
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '-' && c != '.') {
      return std::nullopt;
    }
    scheme.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  *has_slashes = uri.compare(colon, 3, "://") == 0;
  return scheme;
}

}  // namespace

void RegisterSourceScheme(const std::string& scheme, SourceFactory factory) {
  Registry& r = GlobalRegistry();
  std::lock_guard lock(r.mu);
  r.factories[scheme] = std::move(factory);
}

void RegisterModelStoreScheme(const std::string& scheme, ModelStoreFactory factory) {
  Registry& r = GlobalRegistry();
  std::lock_guard lock(r.mu);
  r.stores[scheme] = std::move(factory);
}

std::string RemoteScheme(const std::string& uri) {
  bool has_slashes = false;
  std::optional<std::string> scheme = SchemeOf(uri, &has_slashes);
  if (!scheme || !has_slashes || *scheme == "file") return "";
  return *scheme;
}

Result<std::unique_ptr<ModelStore>> OpenModelStore(const std::string& uri,
                                                   const OpenOptions& options) {
  const std::string scheme = RemoteScheme(uri);
  if (scheme.empty()) return std::unique_ptr<ModelStore>();
  RegisterHttpSchemes();
  ModelStoreFactory factory;
  {
    Registry& r = GlobalRegistry();
    std::lock_guard lock(r.mu);
    if (auto it = r.stores.find(scheme); it != r.stores.end()) factory = it->second;
  }
  if (!factory) {
    return InvalidArgumentError(
        fmt::format("{}: no store resolves models under the scheme '{}'", uri, scheme));
  }
  return factory(uri, options);
}

std::vector<std::string> RegisteredSourceSchemes() {
  RegisterHttpSchemes();
  Registry& r = GlobalRegistry();
  std::lock_guard lock(r.mu);
  std::vector<std::string> out;
  for (const auto& [scheme, factory] : r.factories) out.push_back(scheme);
  return out;
}

Result<std::string> FileUriPath(const std::string& uri) {
  constexpr std::string_view kPrefix = "file://";
  if (uri.size() < kPrefix.size() ||
      !std::equal(kPrefix.begin(), kPrefix.end(), uri.begin(),
                  [](char a, char b) { return a == std::tolower(b); })) {
    return InvalidArgumentError(fmt::format("{} is not a file:// URI", uri));
  }
  std::string rest = uri.substr(kPrefix.size());
  if (rest.rfind("localhost/", 0) == 0) rest.erase(0, std::string_view("localhost").size());
  if (rest.empty() || rest[0] != '/') {
    return InvalidArgumentError(
        fmt::format("{}: a file:// URI needs an absolute path (file:///path) on this host", uri));
  }
  return rest;
}

Result<std::unique_ptr<Source>> OpenSource(const std::string& uri,
                                           const LocalOpenOptions& options) {
  OpenOptions all;
  all.local = options;
  return OpenSource(uri, all);
}

Result<std::unique_ptr<Source>> OpenSource(const std::string& uri, const OpenOptions& options) {
  // The remote backends register here, not from static initializers, which a static library may
  // drop at link time.
  RegisterHttpSchemes();
  if (uri.empty()) return InvalidArgumentError("empty path or URI");
  bool has_slashes = false;
  std::optional<std::string> scheme = SchemeOf(uri, &has_slashes);
  if (scheme) {
    SourceFactory factory;
    std::vector<std::string> known;
    {
      Registry& r = GlobalRegistry();
      std::lock_guard lock(r.mu);
      if (auto it = r.factories.find(*scheme); it != r.factories.end()) factory = it->second;
      for (const auto& [s, f] : r.factories) known.push_back(s + "://");
    }
    if (factory) return factory(uri, options);
    if (has_slashes) {
      return InvalidArgumentError(
          fmt::format("{}: no source handles the scheme '{}'; known schemes: {} (or a plain path)",
                      uri, *scheme, fmt::join(known, ", ")));
    }
  }
  return OpenLocalFile(uri, options.local);
}

}  // namespace flashload
