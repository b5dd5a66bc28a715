#include "io/s3_source.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>
#include <span>
#include <vector>

#include "common/strings.h"
#include "io/read_text.h"
#include "io/s3_list.h"
#include "io/s3_url.h"
#include "io/sigv4.h"

namespace flashload {
namespace {

constexpr size_t kMaxListedObjects = 1'000'000;

std::string StripSlash(std::string key) {
  while (!key.empty() && key.back() == '/') key.pop_back();
  return key;
}

// Reads a whole small object (an index, a listing page) with ReadTextFile(); `what` (the s3://
// URI or the listing) is named in errors. The opening GET asks for up to `limit` bytes, which
// holds all of a page or of a typical index.
Result<std::string> GetWhole(const std::string& url, HttpOptions http, uint64_t limit,
                             std::string_view what) {
  http.prefix_bytes = std::min<uint64_t>(limit, 1ull << 20);
  http.connections = 1;
  Result<std::unique_ptr<HttpSource>> source = OpenHttpObject(url, http);
  if (!source.ok()) return source.status();
  Result<std::string> text = ReadTextFile(**source, limit);
  if (!text.ok()) return text.status().WithContext(what);
  return text;
}

// The objects under one prefix, listed once.
class S3Store final : public ModelStore {
 public:
  S3Store(S3Location root, S3Config config, RemoteOpenOptions remote)
      : root_(std::move(root)), config_(std::move(config)), remote_(std::move(remote)) {
    root_.key = StripSlash(root_.key);
  }

  Result<EntryKind> Stat(const std::string& path) const override {
    FL_ASSIGN_OR_RETURN(S3Location loc, ParseS3Uri(path));
    const bool asked_prefix = loc.is_prefix();
    const std::string key = StripSlash(loc.key);
    FL_ASSIGN_OR_RETURN(const std::vector<std::string>* keys, KeysFor(loc.bucket, key));
    if (!asked_prefix && std::binary_search(keys->begin(), keys->end(), key)) {
      return EntryKind::kFile;
    }
    const std::string prefix = key.empty() ? "" : key + "/";
    auto it = std::lower_bound(keys->begin(), keys->end(), prefix);
    if (it != keys->end() && it->starts_with(prefix)) return EntryKind::kFolder;
    return EntryKind::kMissing;
  }

  Result<std::vector<Entry>> List(const std::string& folder) const override {
    FL_ASSIGN_OR_RETURN(S3Location loc, ParseS3Uri(folder));
    const std::string key = StripSlash(loc.key);
    FL_ASSIGN_OR_RETURN(const std::vector<std::string>* keys, KeysFor(loc.bucket, key));
    const std::string prefix = key.empty() ? "" : key + "/";
    std::map<std::string, EntryKind> children;
    for (auto it = std::lower_bound(keys->begin(), keys->end(), prefix);
         it != keys->end() && it->starts_with(prefix); ++it) {
      const std::string rest = it->substr(prefix.size());
      const size_t slash = rest.find('/');
      if (rest.empty()) continue;  // a "folder marker" object ("prefix/")
      if (slash == std::string::npos) {
        children.emplace(rest, EntryKind::kFile);
      } else if (slash > 0) {
        children[rest.substr(0, slash)] = EntryKind::kFolder;
      }
    }
    std::vector<Entry> out;
    for (auto& [name, kind] : children) out.push_back({name, kind});
    return out;
  }

  Result<std::string> ReadText(const std::string& path) const override {
    FL_ASSIGN_OR_RETURN(S3Location loc, ParseS3Uri(path));
    FL_ASSIGN_OR_RETURN(S3RequestTarget target,
                        S3ObjectTarget(config_.options, loc.bucket, loc.key));
    return GetWhole(target.url, S3HttpOptions(config_, remote_), kMaxTextFileBytes, path);
  }

  std::string Canonical(const std::string& path) const override { return path; }

 private:
  // Every key under the root prefix (listed on first use), or, for a path outside it, under that
  // path's own prefix. Sorted.
  Result<const std::vector<std::string>*> KeysFor(const std::string& bucket,
                                                  const std::string& key) const {
    std::lock_guard lock(mu_);
    const bool under_root = bucket == root_.bucket && (root_.key.empty() || key == root_.key ||
                                                       key.starts_with(root_.key + "/"));
    const std::string prefix = under_root ? root_.key : key;
    auto [it, inserted] = listings_.try_emplace(bucket + "/" + prefix);
    if (inserted) {
      Result<std::vector<std::string>> keys = ListAll(bucket, prefix);
      if (!keys.ok()) {
        listings_.erase(it);
        return keys.status();
      }
      it->second = *std::move(keys);
    }
    return &it->second;
  }

  Result<std::vector<std::string>> ListAll(const std::string& bucket,
                                           const std::string& prefix) const {
    FL_ASSIGN_OR_RETURN(S3RequestTarget target, S3ObjectTarget(config_.options, bucket, ""));
    const std::string what = fmt::format("ListObjectsV2 of s3://{}/{}", bucket, prefix);
    const HttpOptions http = S3HttpOptions(config_, remote_);
    std::vector<std::string> keys;
    S3ListRequest request;
    request.prefix = prefix;
    while (true) {
      const std::vector<QueryParam> query = ListObjectsV2Query(request);
      const std::string url = target.url + "?" + CanonicalQueryString(query);
      FL_ASSIGN_OR_RETURN(std::string body, GetWhole(url, http, kMaxS3XmlBytes, what));
      FL_ASSIGN_OR_RETURN(S3ListPage page, ParseListObjectsV2(body, what));
      for (S3Object& o : page.objects) keys.push_back(std::move(o.key));
      if (keys.size() > kMaxListedObjects) {
        return ResourceExhaustedError(fmt::format(
            "{}: more than {} objects; name a narrower prefix", what, kMaxListedObjects));
      }
      if (!page.is_truncated) break;
      request.continuation_token = page.next_continuation_token;
    }
    std::sort(keys.begin(), keys.end());
    return keys;
  }

  S3Location root_;
  const S3Config config_;
  const RemoteOpenOptions remote_;
  mutable std::mutex mu_;
  mutable std::map<std::string, std::vector<std::string>> listings_;
};

}  // namespace

Result<S3Config> S3ConfigFor(const RemoteOpenOptions& remote, const EnvLookup& env) {
  AwsConfigOverrides o;
  if (!remote.region.empty()) o.region = remote.region;
  if (!remote.endpoint.empty()) o.endpoint = remote.endpoint;
  if (remote.path_style >= 0) o.path_style = remote.path_style == 1;
  if (remote.anonymous) o.anonymous = true;
  if (!remote.ca_bundle.empty()) o.ca_bundle = remote.ca_bundle;
  return ResolveS3Config(env, o);
}

HttpOptions S3HttpOptions(const S3Config& config, const RemoteOpenOptions& remote) {
  HttpOptions http = HttpOptionsFrom(remote);
  if (http.ca_bundle.empty()) http.ca_bundle = config.options.ca_bundle;
  if (config.options.anonymous || config.credentials.anonymous()) return http;
  SigV4Options sign;
  sign.region = config.options.region;
  sign.service = "s3";
  http.decorator = [credentials = config.credentials, sign](HttpRequest& request) -> Status {
    FL_ASSIGN_OR_RETURN(SigV4Signature signature,
                        SignV4Url(request.method, request.url, request.headers, kEmptyPayloadSha256,
                                  credentials, std::chrono::system_clock::now(), sign));
    for (HttpHeader& h : signature.headers) {
      if (!EqualsIgnoreCase(h.first, "host")) request.headers.push_back(std::move(h));
    }
    return Status::Ok();
  };
  return http;
}

Result<std::unique_ptr<Source>> OpenS3Object(const std::string& uri, const S3Config& config,
                                             const RemoteOpenOptions& remote) {
  FL_ASSIGN_OR_RETURN(S3Location loc, ParseS3Uri(uri));
  if (loc.is_prefix()) {
    return InvalidArgumentError(fmt::format(
        "{} names a prefix (a folder), not an object: load the folder, or name a .safetensors "
        "object in it",
        uri));
  }
  FL_ASSIGN_OR_RETURN(S3RequestTarget target, S3ObjectTarget(config.options, loc.bucket, loc.key));
  return OpenHttpSource(target.url, S3HttpOptions(config, remote));
}

Result<std::unique_ptr<ModelStore>> OpenS3ModelStore(const std::string& uri, const S3Config& config,
                                                     const RemoteOpenOptions& remote) {
  FL_ASSIGN_OR_RETURN(S3Location loc, ParseS3Uri(uri));
  return std::unique_ptr<ModelStore>(std::make_unique<S3Store>(std::move(loc), config, remote));
}

Result<std::unique_ptr<Source>> OpenS3Uri(const std::string& uri, const OpenOptions& options) {
  FL_ASSIGN_OR_RETURN(S3Config config, S3ConfigFor(options.remote, ProcessEnvironment()));
  return OpenS3Object(uri, config, options.remote);
}

Result<std::unique_ptr<ModelStore>> OpenS3UriModelStore(const std::string& uri,
                                                        const OpenOptions& options) {
  FL_ASSIGN_OR_RETURN(S3Config config, S3ConfigFor(options.remote, ProcessEnvironment()));
  return OpenS3ModelStore(uri, config, options.remote);
}

}  // namespace flashload
