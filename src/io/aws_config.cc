#include "io/aws_config.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <optional>
#include <vector>

#include "common/strings.h"
#include "common/url.h"

namespace flashload {
namespace {

// A non-empty environment value, or nullopt.
std::optional<std::string> Env(const EnvLookup& env, std::string_view name) {
  std::optional<std::string> v = env(name);
  if (v && v->empty()) return std::nullopt;
  return v;
}

Result<bool> EnvBool(const EnvLookup& env, std::string_view name) {
  const std::optional<std::string> v = Env(env, name);
  if (!v) return false;
  const std::string l = ToLower(Trim(*v));
  if (l == "true" || l == "1") return true;
  if (l == "false" || l == "0") return false;
  return InvalidArgumentError(
      fmt::format("{}=\"{}\" is not a boolean (use true or false)", name, *v));
}

// Checks an endpoint URL and drops trailing slashes; `origin` names where it came from.
Result<std::string> CheckEndpoint(std::string_view url, std::string_view origin) {
  std::string_view u = Trim(url);
  while (!u.empty() && u.back() == '/') u.remove_suffix(1);
  const std::optional<UrlParts> parts = SplitUrl(u);
  const std::string scheme = parts ? ToLower(parts->scheme) : "";
  if ((scheme != "http" && scheme != "https") || parts->host.empty()) {
    return InvalidArgumentError(fmt::format(
        "S3 endpoint \"{}\" from {} is not an http:// or https:// URL with a host", url, origin));
  }
  return scheme + std::string(u.substr(parts->scheme.size()));
}

struct ProfileView {
  const std::map<std::string, std::string>* credentials = nullptr;  // section in credentials file
  const std::map<std::string, std::string>* config = nullptr;       // section in config file

  const std::string* Get(std::string_view key, bool credentials_first) const {
    const std::map<std::string, std::string>* order[2] = {credentials, config};
    if (!credentials_first) std::swap(order[0], order[1]);
    for (const auto* m : order) {
      if (m == nullptr) continue;
      auto it = m->find(std::string(key));
      if (it != m->end() && !it->second.empty()) return &it->second;
    }
    return nullptr;
  }
};

}  // namespace

EnvLookup ProcessEnvironment() {
  return [](std::string_view name) -> std::optional<std::string> {
    const char* v = std::getenv(std::string(name).c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
}

const std::string* AwsIniFile::Find(std::string_view section, std::string_view key) const {
  auto s = sections.find(std::string(section));
  if (s == sections.end()) return nullptr;
  auto k = s->second.find(std::string(key));
  return k == s->second.end() ? nullptr : &k->second;
}

Result<AwsIniFile> ParseAwsIni(std::string_view text, std::string_view file_name) {
  if (text.size() > kMaxAwsIniBytes) {
    return InvalidArgumentError(
        fmt::format("{}: {} bytes is larger than the {} bytes an AWS "
                    "config file may have",
                    file_name, text.size(), kMaxAwsIniBytes));
  }
  AwsIniFile ini;
  std::map<std::string, std::string>* section = nullptr;
  std::string nested_parent;  // a key with an empty value whose indented lines follow
  size_t line_no = 0;
  size_t pos = 0;
  auto error = [&](std::string_view what) {
    return InvalidArgumentError(fmt::format("{}:{}: {}", file_name, line_no, what));
  };
  while (pos < text.size()) {
    ++line_no;
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view raw = text.substr(pos, end - pos);
    pos = end + 1;
    if (!raw.empty() && raw.back() == '\r') raw.remove_suffix(1);
    if (raw.find('\0') != std::string_view::npos) return error("NUL byte in the line");
    const std::string_view line = Trim(raw);
    if (line.empty() || line.front() == '#' || line.front() == ';') continue;
    if (line.front() == '[') {
      if (line.back() != ']') return error("section header without a closing ']'");
      const std::string name = CollapseSpaces(line.substr(1, line.size() - 2));
      if (name.empty()) return error("empty section name");
      auto [it, inserted] = ini.sections.try_emplace(name);
      if (!inserted) return error(fmt::format("section [{}] appears a second time", name));
      section = &it->second;
      nested_parent.clear();
      continue;
    }
    const bool indented = raw.front() == ' ' || raw.front() == '\t';
    const size_t delim = line.find_first_of("=:");
    if (delim == std::string_view::npos) {
      return error("expected \"[section]\" or \"key = value\"");
    }
    if (section == nullptr) return error("\"key = value\" before any [section]");
    std::string key = ToLower(Trim(line.substr(0, delim)));  // as the AWS CLI reads them
    const std::string_view value = Trim(line.substr(delim + 1));
    if (key.empty()) return error("empty key before '='");
    if (indented && !nested_parent.empty()) {
      key = nested_parent + "." + key;
    } else {
      nested_parent = value.empty() ? key : "";
    }
    auto [it, inserted] = section->try_emplace(key, value);
    if (!inserted)
      return error(fmt::format("key \"{}\" appears a second time in its section", key));
  }
  return ini;
}

Result<AwsIniFile> LoadAwsIni(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return AwsIniFile{};
    return ErrnoToStatus(errno, "open AWS config file", path);
  }
  std::string text;
  std::vector<char> buf(64 << 10);
  while (true) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return ErrnoToStatus(err, "read AWS config file", path, static_cast<int64_t>(text.size()));
    }
    if (n == 0) break;
    text.append(buf.data(), static_cast<size_t>(n));
    if (text.size() > kMaxAwsIniBytes) break;  // ParseAwsIni reports the size
  }
  ::close(fd);
  return ParseAwsIni(text, path);
}

Result<S3Config> ResolveS3Config(const EnvLookup& env, const AwsConfigOverrides& overrides) {
  S3Config config;
  S3Options& o = config.options;

  // Files and profile.
  const std::optional<std::string> home = Env(env, "HOME");
  auto file_path = [&](std::string_view var, std::string_view leaf) -> std::string {
    if (std::optional<std::string> p = Env(env, var)) return *p;
    return home ? fmt::format("{}/.aws/{}", *home, leaf) : "";
  };
  const std::string credentials_path = file_path("AWS_SHARED_CREDENTIALS_FILE", "credentials");
  const std::string config_path = file_path("AWS_CONFIG_FILE", "config");
  AwsIniFile credentials_file, config_file;
  if (!credentials_path.empty()) {
    FL_ASSIGN_OR_RETURN(credentials_file, LoadAwsIni(credentials_path));
  }
  if (!config_path.empty()) {
    FL_ASSIGN_OR_RETURN(config_file, LoadAwsIni(config_path));
  }
  const std::optional<std::string> env_profile = Env(env, "AWS_PROFILE");
  o.profile = overrides.profile.value_or(env_profile.value_or("default"));
  const bool profile_named = overrides.profile.has_value() || env_profile.has_value();
  ProfileView profile;
  if (auto it = credentials_file.sections.find(o.profile); it != credentials_file.sections.end()) {
    profile.credentials = &it->second;
  }
  for (const std::string& name :
       {"profile " + o.profile, o.profile == "default" ? o.profile : ""}) {
    if (auto it = config_file.sections.find(name);
        !name.empty() && it != config_file.sections.end()) {
      profile.config = &it->second;
      break;
    }
  }
  if (profile_named && profile.credentials == nullptr && profile.config == nullptr) {
    return NotFoundError(fmt::format(
        "AWS profile \"{}\" is in neither {} nor {} (set AWS_PROFILE to an existing profile, or "
        "unset it)",
        o.profile, credentials_path.empty() ? "<no credentials file>" : credentials_path,
        config_path.empty() ? "<no config file>" : config_path));
  }
  auto profile_origin = [&](std::string_view key) {
    const bool in_credentials =
        profile.credentials != nullptr && profile.credentials->count(std::string(key));
    return fmt::format("{} in profile \"{}\" of {}", key, o.profile,
                       in_credentials ? credentials_path : config_path);
  };

  // Region.
  if (overrides.region) {
    o.region = *overrides.region;
  } else if (auto r = Env(env, "AWS_REGION")) {
    o.region = *r;
  } else if (auto r = Env(env, "AWS_DEFAULT_REGION")) {
    o.region = *r;
  } else if (const std::string* r = profile.Get("region", false)) {
    o.region = *r;
  }
  if (o.region.empty()) return InvalidArgumentError("the AWS region must not be empty");

  // Endpoint.
  FL_ASSIGN_OR_RETURN(const bool ignore_configured,
                      EnvBool(env, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"));
  if (overrides.endpoint) {
    if (!overrides.endpoint->empty()) {
      FL_ASSIGN_OR_RETURN(o.endpoint, CheckEndpoint(*overrides.endpoint, "the endpoint option"));
    }
  } else if (!ignore_configured) {
    if (auto e = Env(env, "AWS_ENDPOINT_URL_S3")) {
      FL_ASSIGN_OR_RETURN(o.endpoint, CheckEndpoint(*e, "AWS_ENDPOINT_URL_S3"));
    } else if (auto e = Env(env, "AWS_ENDPOINT_URL")) {
      FL_ASSIGN_OR_RETURN(o.endpoint, CheckEndpoint(*e, "AWS_ENDPOINT_URL"));
    } else if (const std::string* e = profile.Get("s3.endpoint_url", false)) {
      FL_ASSIGN_OR_RETURN(o.endpoint, CheckEndpoint(*e, profile_origin("s3.endpoint_url")));
    } else if (const std::string* e = profile.Get("endpoint_url", false)) {
      FL_ASSIGN_OR_RETURN(o.endpoint, CheckEndpoint(*e, profile_origin("endpoint_url")));
    }
  }

  // Addressing style.
  if (overrides.path_style) {
    o.path_style = *overrides.path_style;
  } else if (const std::string* style = profile.Get("s3.addressing_style", false);
             style != nullptr && *style != "auto") {
    if (*style != "path" && *style != "virtual") {
      return InvalidArgumentError(fmt::format("{} is \"{}\"; expected path, virtual or auto",
                                              profile_origin("s3.addressing_style"), *style));
    }
    o.path_style = *style == "path";
  } else {
    o.path_style = !o.endpoint.empty();
  }

  // CA bundle.
  if (overrides.ca_bundle) {
    o.ca_bundle = *overrides.ca_bundle;
  } else if (auto c = Env(env, "AWS_CA_BUNDLE")) {
    o.ca_bundle = *c;
  } else if (const std::string* c = profile.Get("ca_bundle", false)) {
    o.ca_bundle = *c;
  }

  // Credentials.
  FL_ASSIGN_OR_RETURN(const bool no_sign, EnvBool(env, "AWS_NO_SIGN_REQUEST"));
  o.anonymous = overrides.anonymous.value_or(no_sign);
  if (o.anonymous) {
    config.credentials_source = "anonymous";
    return config;
  }
  const std::optional<std::string> env_key = Env(env, "AWS_ACCESS_KEY_ID");
  const std::optional<std::string> env_secret = Env(env, "AWS_SECRET_ACCESS_KEY");
  if (env_key || env_secret) {
    if (!env_key || !env_secret) {
      return InvalidArgumentError(
          fmt::format("{} is set but {} is not; set both, or neither",
                      env_key ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
                      env_key ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID"));
    }
    config.credentials = {*env_key, *env_secret, Env(env, "AWS_SESSION_TOKEN").value_or("")};
    config.credentials_source = "environment";
    return config;
  }
  // Both keys come from the same file: the credentials file when it has either, else the config.
  for (const auto* section : {profile.credentials, profile.config}) {
    if (section == nullptr) continue;
    auto get = [section](const char* key) -> std::string {
      auto it = section->find(key);
      return it == section->end() ? "" : it->second;
    };
    const std::string key = get("aws_access_key_id");
    const std::string secret = get("aws_secret_access_key");
    if (key.empty() && secret.empty()) continue;
    const std::string& file = section == profile.credentials ? credentials_path : config_path;
    if (key.empty() || secret.empty()) {
      return InvalidArgumentError(
          fmt::format("profile \"{}\" in {} has {} but not {}", o.profile, file,
                      key.empty() ? "aws_secret_access_key" : "aws_access_key_id",
                      key.empty() ? "aws_access_key_id" : "aws_secret_access_key"));
    }
    config.credentials = {key, secret, get("aws_session_token")};
    config.credentials_source = fmt::format("profile \"{}\" in {}", o.profile, file);
    return config;
  }
  o.anonymous = true;
  config.credentials_source = "anonymous";
  return config;
}

}  // namespace flashload
