#include "io/aws_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <map>
#include <string>

#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload {
namespace {

using ::flashload::testing::TempDir;
using ::flashload::testing::WriteFile;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

// ---- INI parser ----------------------------------------------------------------------------

TEST(AwsIniTest, ParsesSectionsKeysCommentsAndNestedBlocks) {
  const std::string text =
      "# comment\n"
      "; another\n"
      "[default]\r\n"
      "aws_access_key_id = AKID\n"
      "  AWS_Secret_Access_Key=  se=cret  \n"
      "\n"
      "[profile   dev]\n"
      "region: eu-west-1\n"
      "s3 =\n"
      "  addressing_style = path\n"
      "  endpoint_url = http://localhost:9000\n"
      "output = json\n";
  FL_ASSERT_OK_AND_ASSIGN(AwsIniFile ini, ParseAwsIni(text, "cfg"));
  ASSERT_EQ(ini.sections.size(), 2u);
  EXPECT_EQ(*ini.Find("default", "aws_access_key_id"), "AKID");
  EXPECT_EQ(*ini.Find("default", "aws_secret_access_key"), "se=cret");
  EXPECT_EQ(*ini.Find("profile dev", "region"), "eu-west-1");
  EXPECT_EQ(*ini.Find("profile dev", "s3"), "");
  EXPECT_EQ(*ini.Find("profile dev", "s3.addressing_style"), "path");
  EXPECT_EQ(*ini.Find("profile dev", "s3.endpoint_url"), "http://localhost:9000");
  EXPECT_EQ(*ini.Find("profile dev", "output"), "json");
  EXPECT_EQ(ini.Find("profile dev", "addressing_style"), nullptr);
  EXPECT_EQ(ini.Find("missing", "region"), nullptr);
}

TEST(AwsIniTest, MalformedLinesNameTheFileAndLine) {
  struct Case {
    std::string text;
    std::string what;
  };
  const Case cases[] = {
      {"key = value\n", "cfg:1: \"key = value\" before any [section]"},
      {"[a]\nx = 1\njust words\n", "cfg:3: expected"},
      {"[a]\n\n[b\n", "cfg:3: section header without a closing ']'"},
      {"[  ]\n", "cfg:1: empty section name"},
      {"[a]\n= 1\n", "cfg:2: empty key"},
      {"[a]\nx = 1\n[b]\n[a]\n", "cfg:4: section [a] appears a second time"},
      {"[a]\nx = 1\nx = 2\n", "cfg:3: key \"x\" appears a second time"},
      {std::string("[a]\nx = 1\0\n", 11), "cfg:2: NUL byte"},
  };
  for (const Case& c : cases) {
    EXPECT_THAT(ParseAwsIni(c.text, "cfg"),
                StatusIs(StatusCode::kInvalidArgument, HasSubstr(c.what)))
        << c.text;
  }
  EXPECT_THAT(ParseAwsIni(std::string(kMaxAwsIniBytes + 1, '#'), "big"),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("big")));
}

TEST(AwsIniTest, SecretsOfOtherLinesStayOutOfErrors) {
  EXPECT_THAT(ParseAwsIni("[a]\naws_secret_access_key = TopSecret\nbroken line\n", "cfg"),
              StatusIs(StatusCode::kInvalidArgument, Not(HasSubstr("TopSecret"))));
}

TEST(AwsIniTest, MissingFileIsEmptyButUnreadableFileFails) {
  TempDir dir;
  FL_ASSERT_OK_AND_ASSIGN(AwsIniFile none, LoadAwsIni(dir.File("absent")));
  EXPECT_TRUE(none.sections.empty());
  EXPECT_THAT(LoadAwsIni(dir.path()), StatusIs(StatusCode::kIoError, HasSubstr(dir.path())));
  WriteFile(dir.File("bad"), "[a]\nnope\n");
  EXPECT_THAT(LoadAwsIni(dir.File("bad")),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr(dir.File("bad") + ":2")));
}

// ---- Resolution ----------------------------------------------------------------------------

class ResolveS3ConfigTest : public ::testing::Test {
 protected:
  EnvLookup Env() const {
    return [this](std::string_view name) -> std::optional<std::string> {
      auto it = env_.find(std::string(name));
      if (it == env_.end()) return std::nullopt;
      return it->second;
    };
  }
  Result<S3Config> Resolve(const AwsConfigOverrides& overrides = {}) {
    return ResolveS3Config(Env(), overrides);
  }
  void WriteCredentials(const std::string& text) {
    WriteFile(home_.File(".aws/credentials"), text);
  }
  void WriteConfig(const std::string& text) { WriteFile(home_.File(".aws/config"), text); }

  void SetUp() override {
    ASSERT_EQ(::mkdir(home_.File(".aws").c_str(), 0700), 0);
    env_["HOME"] = home_.path();
  }

  TempDir home_;
  std::map<std::string, std::string> env_;
};

TEST_F(ResolveS3ConfigTest, NothingConfiguredIsAnonymousAwsInUsEast1) {
  FL_ASSERT_OK_AND_ASSIGN(S3Config c, Resolve());
  EXPECT_TRUE(c.options.anonymous);
  EXPECT_TRUE(c.credentials.anonymous());
  EXPECT_EQ(c.options.region, "us-east-1");
  EXPECT_EQ(c.options.endpoint, "");
  EXPECT_FALSE(c.options.path_style);
  EXPECT_EQ(c.credentials_source, "anonymous");
}

TEST_F(ResolveS3ConfigTest, EnvironmentCredentialsWinOverTheProfile) {
  WriteCredentials("[default]\naws_access_key_id = FILEKEY\naws_secret_access_key = FILESECRET\n");
  env_["AWS_ACCESS_KEY_ID"] = "ENVKEY";
  env_["AWS_SECRET_ACCESS_KEY"] = "ENVSECRET";
  env_["AWS_SESSION_TOKEN"] = "ENVTOKEN";
  FL_ASSERT_OK_AND_ASSIGN(S3Config c, Resolve());
  EXPECT_FALSE(c.options.anonymous);
  EXPECT_EQ(c.credentials.access_key_id, "ENVKEY");
  EXPECT_EQ(c.credentials.secret_access_key, "ENVSECRET");
  EXPECT_EQ(c.credentials.session_token, "ENVTOKEN");
  EXPECT_EQ(c.credentials_source, "environment");
}

TEST_F(ResolveS3ConfigTest, HalfOfAnEnvironmentKeyPairIsAnError) {
  env_["AWS_ACCESS_KEY_ID"] = "ENVKEY";
  EXPECT_THAT(Resolve(),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("AWS_SECRET_ACCESS_KEY")));
  env_.erase("AWS_ACCESS_KEY_ID");
  env_["AWS_SECRET_ACCESS_KEY"] = "ENVSECRET";
  EXPECT_THAT(Resolve(),
              StatusIs(StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("AWS_ACCESS_KEY_ID"), Not(HasSubstr("ENVSECRET")))));
}

TEST_F(ResolveS3ConfigTest, DefaultProfileFromTheCredentialsFile) {
  WriteCredentials(
      "[default]\naws_access_key_id = AKID\naws_secret_access_key = SECRET\n"
      "aws_session_token = TOKEN\n[other]\naws_access_key_id = X\naws_secret_access_key = Y\n");
  FL_ASSERT_OK_AND_ASSIGN(S3Config c, Resolve());
  EXPECT_EQ(c.credentials.access_key_id, "AKID");
  EXPECT_EQ(c.credentials.secret_access_key, "SECRET");
  EXPECT_EQ(c.credentials.session_token, "TOKEN");
  EXPECT_EQ(c.options.profile, "default");
  EXPECT_THAT(c.credentials_source, HasSubstr(home_.File(".aws/credentials")));
  EXPECT_THAT(c.credentials_source, Not(HasSubstr("SECRET")));
}

TEST_F(ResolveS3ConfigTest, NamedProfileUsesProfileSectionsOfTheConfigFile) {
  WriteCredentials("[dev]\naws_access_key_id = DEVKEY\naws_secret_access_key = DEVSECRET\n");
  WriteConfig(
      "[default]\nregion = us-west-2\n"
      "[dev]\nregion = wrong-section\n"  // the config file names profiles "[profile NAME]"
      "[profile dev]\nregion = eu-central-1\nendpoint_url = http://minio.local:9000/\n"
      "ca_bundle = /etc/ca.pem\n");
  env_["AWS_PROFILE"] = "dev";
  FL_ASSERT_OK_AND_ASSIGN(S3Config c, Resolve());
  EXPECT_EQ(c.credentials.access_key_id, "DEVKEY");
  EXPECT_EQ(c.options.region, "eu-central-1");
  EXPECT_EQ(c.options.endpoint, "http://minio.local:9000");
  EXPECT_TRUE(c.options.path_style);  // custom endpoint
  EXPECT_EQ(c.options.ca_bundle, "/etc/ca.pem");
  EXPECT_EQ(c.options.profile, "dev");

  // The override names another profile; the default profile's region comes from "[default]".
  FL_ASSERT_OK_AND_ASSIGN(S3Config d, Resolve({.profile = "default"}));
  EXPECT_EQ(d.options.region, "us-west-2");
  EXPECT_TRUE(d.options.anonymous);
}

TEST_F(ResolveS3ConfigTest, CredentialsMayLiveInTheConfigFile) {
  WriteConfig("[profile p]\naws_access_key_id = CK\naws_secret_access_key = CS\n");
  FL_ASSERT_OK_AND_ASSIGN(S3Config c, Resolve({.profile = "p"}));
  EXPECT_EQ(c.credentials.access_key_id, "CK");
  EXPECT_EQ(c.credentials.secret_access_key, "CS");
  EXPECT_THAT(c.credentials_source, HasSubstr(home_.File(".aws/config")));
}

TEST_F(ResolveS3ConfigTest, HalfAProfileKeyPairIsAnErrorNamingTheFile) {
  WriteCredentials("[default]\naws_secret_access_key = ONLYSECRET\n");
  EXPECT_THAT(Resolve(),
              StatusIs(StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(home_.File(".aws/credentials")),
                             HasSubstr("aws_access_key_id"), Not(HasSubstr("ONLYSECRET")))));
}

TEST_F(ResolveS3ConfigTest, FileLocationsComeFromTheEnvironment) {
  TempDir other;
  WriteFile(other.File("creds"), "[default]\naws_access_key_id = K2\naws_secret_access_key = S2\n");
  WriteFile(other.File("conf"), "[default]\nregion = ap-south-1\n");
  WriteCredentials("[default]\naws_access_key_id = K1\naws_secret_access_key = S1\n");
  env_["AWS_SHARED_CREDENTIALS_FILE"] = other.File("creds");
  env_["AWS_CONFIG_FILE"] = other.File("conf");
  FL_ASSERT_OK_AND_ASSIGN(S3Config c, Resolve());
  EXPECT_EQ(c.credentials.access_key_id, "K2");
  EXPECT_EQ(c.options.region, "ap-south-1");
}

TEST_F(ResolveS3ConfigTest, MalformedConfigFailsWithFileAndLine) {
  WriteConfig("[default]\nregion = x\n[profile broken\n");
  EXPECT_THAT(Resolve(),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr(home_.File(".aws/config") + ":3:")));
}

TEST_F(ResolveS3ConfigTest, ExplicitUnknownProfileIsNotFound) {
  WriteCredentials("[default]\naws_access_key_id = K\naws_secret_access_key = S\n");
  env_["AWS_PROFILE"] = "nosuch";
  EXPECT_THAT(Resolve(), StatusIs(StatusCode::kNotFound, HasSubstr("\"nosuch\"")));
  EXPECT_THAT(Resolve({.profile = "nosuch2"}),
              StatusIs(StatusCode::kNotFound, HasSubstr("nosuch2")));
}

TEST_F(ResolveS3ConfigTest, RegionOrder) {
  WriteConfig("[default]\nregion = from-profile\n");
  FL_ASSERT_OK_AND_ASSIGN(S3Config a, Resolve());
  EXPECT_EQ(a.options.region, "from-profile");
  env_["AWS_DEFAULT_REGION"] = "from-default-region";
  FL_ASSERT_OK_AND_ASSIGN(S3Config b, Resolve());
  EXPECT_EQ(b.options.region, "from-default-region");
  env_["AWS_REGION"] = "from-region";
  FL_ASSERT_OK_AND_ASSIGN(S3Config c, Resolve());
  EXPECT_EQ(c.options.region, "from-region");
  FL_ASSERT_OK_AND_ASSIGN(S3Config d, Resolve({.region = "from-option"}));
  EXPECT_EQ(d.options.region, "from-option");
}

TEST_F(ResolveS3ConfigTest, EndpointOrderAndValidation) {
  WriteConfig(
      "[default]\nendpoint_url = http://profile:1\ns3 =\n  endpoint_url = http://nested:2\n");
  FL_ASSERT_OK_AND_ASSIGN(S3Config a, Resolve());
  EXPECT_EQ(a.options.endpoint, "http://nested:2");
  env_["AWS_ENDPOINT_URL"] = "https://generic:3";
  FL_ASSERT_OK_AND_ASSIGN(S3Config b, Resolve());
  EXPECT_EQ(b.options.endpoint, "https://generic:3");
  env_["AWS_ENDPOINT_URL_S3"] = "HTTP://s3-specific:4/";
  FL_ASSERT_OK_AND_ASSIGN(S3Config c, Resolve());
  EXPECT_EQ(c.options.endpoint, "http://s3-specific:4");
  FL_ASSERT_OK_AND_ASSIGN(S3Config d, Resolve({.endpoint = "http://option:5"}));
  EXPECT_EQ(d.options.endpoint, "http://option:5");
  env_["AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"] = "true";
  FL_ASSERT_OK_AND_ASSIGN(S3Config e, Resolve());
  EXPECT_EQ(e.options.endpoint, "");
  EXPECT_FALSE(e.options.path_style);

  env_.erase("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS");
  env_["AWS_ENDPOINT_URL_S3"] = "minio:9000";
  EXPECT_THAT(Resolve(),
              StatusIs(StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("minio:9000"), HasSubstr("AWS_ENDPOINT_URL_S3"))));
  env_["AWS_ENDPOINT_URL_S3"] = "https://";
  EXPECT_THAT(Resolve(), StatusIs(StatusCode::kInvalidArgument));
}

TEST_F(ResolveS3ConfigTest, AddressingStyle) {
  FL_ASSERT_OK_AND_ASSIGN(S3Config aws, Resolve());
  EXPECT_FALSE(aws.options.path_style);
  FL_ASSERT_OK_AND_ASSIGN(S3Config forced, Resolve({.path_style = true}));
  EXPECT_TRUE(forced.options.path_style);
  WriteConfig("[default]\ns3 =\n  addressing_style = virtual\n");
  FL_ASSERT_OK_AND_ASSIGN(S3Config v, Resolve({.endpoint = "http://localhost:9000"}));
  EXPECT_FALSE(v.options.path_style);
  WriteConfig("[default]\ns3 =\n  addressing_style = sideways\n");
  EXPECT_THAT(Resolve(), StatusIs(StatusCode::kInvalidArgument, HasSubstr("sideways")));
}

TEST_F(ResolveS3ConfigTest, NoSignRequestMakesItAnonymousDespiteCredentials) {
  env_["AWS_ACCESS_KEY_ID"] = "K";
  env_["AWS_SECRET_ACCESS_KEY"] = "S";
  env_["AWS_NO_SIGN_REQUEST"] = "TRUE";
  FL_ASSERT_OK_AND_ASSIGN(S3Config c, Resolve());
  EXPECT_TRUE(c.options.anonymous);
  EXPECT_TRUE(c.credentials.anonymous());
  EXPECT_TRUE(c.credentials.secret_access_key.empty());
  FL_ASSERT_OK_AND_ASSIGN(S3Config signed_anyway, Resolve({.anonymous = false}));
  EXPECT_FALSE(signed_anyway.options.anonymous);
  EXPECT_EQ(signed_anyway.credentials.access_key_id, "K");
  env_.erase("AWS_NO_SIGN_REQUEST");
  FL_ASSERT_OK_AND_ASSIGN(S3Config asked, Resolve({.anonymous = true}));
  EXPECT_TRUE(asked.options.anonymous);
  env_["AWS_NO_SIGN_REQUEST"] = "maybe";
  EXPECT_THAT(Resolve(), StatusIs(StatusCode::kInvalidArgument, HasSubstr("AWS_NO_SIGN_REQUEST")));
}

TEST_F(ResolveS3ConfigTest, CaBundleOrder) {
  WriteConfig("[default]\nca_bundle = /profile.pem\n");
  FL_ASSERT_OK_AND_ASSIGN(S3Config a, Resolve());
  EXPECT_EQ(a.options.ca_bundle, "/profile.pem");
  env_["AWS_CA_BUNDLE"] = "/env.pem";
  FL_ASSERT_OK_AND_ASSIGN(S3Config b, Resolve());
  EXPECT_EQ(b.options.ca_bundle, "/env.pem");
  FL_ASSERT_OK_AND_ASSIGN(S3Config c, Resolve({.ca_bundle = "/option.pem"}));
  EXPECT_EQ(c.options.ca_bundle, "/option.pem");
}

TEST_F(ResolveS3ConfigTest, NoHomeMeansNoDefaultFiles) {
  WriteCredentials("[default]\naws_access_key_id = K\naws_secret_access_key = S\n");
  env_.erase("HOME");
  FL_ASSERT_OK_AND_ASSIGN(S3Config c, Resolve());
  EXPECT_TRUE(c.options.anonymous);
}

}  // namespace
}  // namespace flashload
