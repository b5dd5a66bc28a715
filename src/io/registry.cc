#include "io/registry.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <optional>
#include <utility>

#include "common/strings.h"
#include "common/url.h"
#include "io/archive_source.h"
#include "io/http_source.h"
#include "io/retry_source.h"
#include "io/s3_source.h"

namespace flashload {
namespace {

// A store of a remote scheme: every call retried while it fails with a retryable status (a
// listing or an index GET answered 503), as the registry retries the sources of the scheme.
class RetryingModelStore final : public ModelStore {
 public:
  RetryingModelStore(std::unique_ptr<ModelStore> store, RetryPolicy policy)
      : store_(std::move(store)), policy_(policy) {}

  Result<EntryKind> Stat(const std::string& path) const override {
    return RetryCalls(policy_, [&] { return store_->Stat(path); });
  }
  Result<std::vector<Entry>> List(const std::string& folder) const override {
    return RetryCalls(policy_, [&] { return store_->List(folder); });
  }
  Result<std::string> ReadText(const std::string& path) const override {
    return RetryCalls(policy_, [&] { return store_->ReadText(path); });
  }
  std::string Canonical(const std::string& path) const override { return store_->Canonical(path); }

 private:
  const std::unique_ptr<ModelStore> store_;
  const RetryPolicy policy_;
};

Result<std::unique_ptr<Source>> OpenFileUri(const std::string& uri, const OpenOptions& options) {
  FL_ASSIGN_OR_RETURN(std::string path, FileUriPath(uri));
  return OpenLocalFile(path, options.local);
}

}  // namespace

SourceRegistry::SourceRegistry() = default;
SourceRegistry::~SourceRegistry() = default;

void SourceRegistry::Register(const std::string& scheme, SourceFactory factory,
                              SchemePolicy policy) {
  std::lock_guard lock(mu_);
  schemes_[ToLower(scheme)] = Scheme{std::move(factory), policy};
}

void SourceRegistry::RegisterModelStore(const std::string& scheme, ModelStoreFactory factory) {
  std::lock_guard lock(mu_);
  stores_[ToLower(scheme)] = std::move(factory);
}

std::vector<std::string> SourceRegistry::Schemes() const {
  std::lock_guard lock(mu_);
  std::vector<std::string> out;
  for (const auto& [name, scheme] : schemes_) out.push_back(name);
  return out;
}

Result<std::unique_ptr<Source>> SourceRegistry::Open(const std::string& uri,
                                                     const OpenOptions& options) const {
  if (uri.empty()) return InvalidArgumentError("empty path or URI");
  const std::optional<UriScheme> scheme = SchemeOf(uri);
  if (!scheme) return OpenLocalFile(uri, options.local);
  std::optional<Scheme> found;
  std::vector<std::string> known;
  {
    std::lock_guard lock(mu_);
    if (auto it = schemes_.find(scheme->name); it != schemes_.end()) found = it->second;
    for (const auto& [name, s] : schemes_) known.push_back(name + "://");
  }
  if (!found) {
    if (!scheme->has_slashes) return OpenLocalFile(uri, options.local);  // "weights:v2.bin"
    return InvalidArgumentError(
        fmt::format("{}: no source handles the scheme '{}'; known schemes: {} (or a plain path)",
                    uri, scheme->name, fmt::join(known, ", ")));
  }
  if (!found->policy.remote) return found->open(uri, options);
  const RetryPolicy policy = RetryPolicyFor(options.remote);
  FL_ASSIGN_OR_RETURN(std::unique_ptr<Source> source,
                      RetryCalls(policy, [&] { return found->open(uri, options); }));
  return std::unique_ptr<Source>(NewRetrySource(std::move(source), policy));
}

Result<std::unique_ptr<ModelStore>> SourceRegistry::OpenModelStore(
    const std::string& uri, const OpenOptions& options) const {
  const std::string scheme = RemoteScheme(uri);
  if (scheme.empty()) return std::unique_ptr<ModelStore>();
  ModelStoreFactory factory;
  bool remote = false;
  {
    std::lock_guard lock(mu_);
    if (auto it = stores_.find(scheme); it != stores_.end()) factory = it->second;
    if (auto it = schemes_.find(scheme); it != schemes_.end()) remote = it->second.policy.remote;
  }
  if (!factory) {
    return InvalidArgumentError(
        fmt::format("{}: no store resolves models under the scheme '{}'", uri, scheme));
  }
  FL_ASSIGN_OR_RETURN(std::unique_ptr<ModelStore> store, factory(uri, options));
  if (!remote) return store;
  return std::unique_ptr<ModelStore>(
      std::make_unique<RetryingModelStore>(std::move(store), RetryPolicyFor(options.remote)));
}

void RegisterBuiltinSchemes(SourceRegistry& registry) {
  registry.Register("file", OpenFileUri);
  for (const char* scheme : {"http", "https"}) {
    registry.Register(scheme, OpenHttpUri, {.remote = true});
    registry.RegisterModelStore(scheme, OpenHttpModelStore);
  }
  registry.Register("s3", OpenS3Uri, {.remote = true});
  registry.RegisterModelStore("s3", OpenS3UriModelStore);
  // Archive members, "tar:<archive>!/<member>" (src/io/archive_source.h). Not remote itself: the
  // archive underneath is opened through the default registry, with its own scheme's policy.
  registry.Register(std::string(kArchiveScheme), OpenArchiveMemberUri);
}

SourceRegistry& DefaultSourceRegistry() {
  // Function-local static: created once, thread-safe, never destroyed (sources may be opened from
  // threads that outlive main's statics).
  static SourceRegistry* registry = [] {
    auto* r = new SourceRegistry;
    RegisterBuiltinSchemes(*r);
    return r;
  }();
  return *registry;
}

std::string RemoteScheme(const std::string& uri) {
  const std::optional<UriScheme> scheme = SchemeOf(uri);
  if (!scheme || !scheme->has_slashes || scheme->name == "file") return "";
  return scheme->name;
}

Result<std::unique_ptr<ModelStore>> OpenModelStore(const std::string& uri,
                                                   const OpenOptions& options) {
  return DefaultSourceRegistry().OpenModelStore(uri, options);
}

std::vector<std::string> RegisteredSourceSchemes() { return DefaultSourceRegistry().Schemes(); }

Result<std::string> FileUriPath(const std::string& uri) {
  const std::optional<UrlParts> parts = SplitUrl(uri);
  if (!parts || !EqualsIgnoreCase(parts->scheme, "file")) {
    return InvalidArgumentError(fmt::format("{} is not a file:// URI", uri));
  }
  // The path is literal: '?' and '#' belong to the file name.
  const std::string_view path = parts->after_authority;
  if ((!parts->authority.empty() && parts->authority != "localhost") || !path.starts_with('/')) {
    return InvalidArgumentError(
        fmt::format("{}: a file:// URI needs an absolute path (file:///path) on this host", uri));
  }
  return std::string(path);
}

Result<std::unique_ptr<Source>> OpenSource(const std::string& uri,
                                           const LocalOpenOptions& options) {
  OpenOptions all;
  all.local = options;
  return OpenSource(uri, all);
}

Result<std::unique_ptr<Source>> OpenSource(const std::string& uri, const OpenOptions& options) {
  return DefaultSourceRegistry().Open(uri, options);
}

}  // namespace flashload
