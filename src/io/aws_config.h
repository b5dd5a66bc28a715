// Where S3 requests go and whose credentials sign them: the AWS environment variables and shared
// config files, resolved the way the AWS CLI and SDKs do for the parts flashload uses.
//
// Credentials, first match wins:
//   1. anonymous when asked (AwsConfigOverrides::anonymous, or AWS_NO_SIGN_REQUEST=true/1);
//   2. AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN);
//   3. the profile (overrides.profile, else AWS_PROFILE, else "default"): aws_access_key_id,
//      aws_secret_access_key, aws_session_token from the credentials file
//      (AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/credentials, sections "[NAME]"), else from the
//      config file (AWS_CONFIG_FILE, else ~/.aws/config, sections "[profile NAME]" and
//      "[default]");
//   4. none found: anonymous access.
// A key id without its secret (or the reverse) is an error, never silently anonymous. A profile
// named explicitly (override or AWS_PROFILE) that neither file holds is kNotFound.
// Region: overrides.region, AWS_REGION, AWS_DEFAULT_REGION, the profile's `region`, "us-east-1".
// Endpoint: overrides.endpoint, AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, the profile's
// `endpoint_url` (or `endpoint_url` under its nested `s3 =` block); the environment and profile
// ones are ignored when AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true. Empty: AWS itself.
// Path-style addressing: overrides.path_style, the profile's nested `s3 = addressing_style`
// ("path" / "virtual"), else on exactly when a custom endpoint is set.
// CA bundle: overrides.ca_bundle, AWS_CA_BUNDLE, the profile's `ca_bundle`.
//
// Missing files are not errors; unreadable or malformed ones are, naming the file (and line).
// Nothing here reads the process environment directly: the caller passes an EnvLookup
// (ProcessEnvironment() for the real one), so tests never touch it. Error messages never hold a
// secret access key or session token.
//
// Thread-safety: reentrant; ProcessEnvironment()'s lookup calls getenv(), so it must not race
// with setenv() in the same process.
#ifndef FLASHLOAD_IO_AWS_CONFIG_H_
#define FLASHLOAD_IO_AWS_CONFIG_H_

#include <cstddef>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "flashload/status.h"
#include "io/sigv4.h"

namespace flashload {

// Returns the value of an environment variable, or nullopt when it is not set.
using EnvLookup = std::function<std::optional<std::string>(std::string_view name)>;

// The process environment (getenv).
EnvLookup ProcessEnvironment();

// Where and how to reach S3 (or an S3-compatible store).
struct S3Options {
  std::string endpoint;  // "" (AWS: https://s3.REGION.amazonaws.com) or "http[s]://host[:port]"
  std::string region = "us-east-1";
  bool path_style = false;  // http://host/bucket/key instead of http://bucket.host/key
  bool anonymous = false;   // send requests unsigned
  std::string ca_bundle;    // PEM file of trusted CAs for https; "" = the system's
  std::string profile;      // the profile the values came from (for messages)
};

// What a caller (a CLI flag, an API option) asks for; each set field wins over the environment.
struct AwsConfigOverrides {
  std::optional<std::string> profile = std::nullopt;
  std::optional<std::string> region = std::nullopt;
  std::optional<std::string> endpoint = std::nullopt;
  std::optional<bool> path_style = std::nullopt;
  std::optional<bool> anonymous = std::nullopt;
  std::optional<std::string> ca_bundle = std::nullopt;
};

struct S3Config {
  AwsCredentials credentials;  // empty when options.anonymous
  S3Options options;
  // Where the credentials came from, for messages: "anonymous", "environment",
  // "profile NAME in FILE". Never holds a secret.
  std::string credentials_source;
};

Result<S3Config> ResolveS3Config(const EnvLookup& env, const AwsConfigOverrides& overrides = {});

// A parsed AWS INI file: section name -> key -> value. A nested block
//   s3 =
//     addressing_style = path
// is stored as key "s3.addressing_style". Keys are lower-cased ("AWS_ACCESS_KEY_ID" is
// "aws_access_key_id", as the AWS CLI reads them); section names keep their case, with runs of
// spaces collapsed; keys and values are trimmed. '#' and ';' start a comment only at the beginning
// of a line.
struct AwsIniFile {
  std::map<std::string, std::map<std::string, std::string>> sections;

  // The value of `key` in `section`, or nullptr.
  const std::string* Find(std::string_view section, std::string_view key) const;
};

// The largest INI file ParseAwsIni() accepts.
inline constexpr size_t kMaxAwsIniBytes = 1 << 20;

// Parses `text`; `file_name` is only used in messages. Errors (kInvalidArgument) name the file and
// the 1-based line: a key outside a section, a line that is neither a section, a key = value nor
// a nested line, an unterminated or empty section name, a repeated section or key, a NUL byte, or
// a file over kMaxAwsIniBytes.
Result<AwsIniFile> ParseAwsIni(std::string_view text, std::string_view file_name);

// Reads and parses `path`. A missing file gives an empty AwsIniFile; other read errors fail.
Result<AwsIniFile> LoadAwsIni(const std::string& path);

}  // namespace flashload

#endif  // FLASHLOAD_IO_AWS_CONFIG_H_
