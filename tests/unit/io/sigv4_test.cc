#include "io/sigv4.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cctype>
#include <chrono>
#include <ctime>
#include <string>
#include <vector>

#include "support/status_matchers.h"

namespace flashload {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

// The published SigV4 test suite: access key, secret, scope and date shared by every case.
constexpr char kSuiteAccessKey[] = "AKIDEXAMPLE";
constexpr char kSuiteSecret[] = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
constexpr char kSuiteToken[] =
    "AQoDYXdzEPT//////////"
    "wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIe"
    "oIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/"
    "kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq"
    "5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+"
    "scqKmlzm8FDrypNC"
    "9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";
constexpr char kSuiteScope[] = "20150830/us-east-1/service/aws4_request";
constexpr char kEmptyHash[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

std::chrono::system_clock::time_point Utc(int year, int month, int day, int hour, int minute,
                                          int second) {
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

std::chrono::system_clock::time_point SuiteTime() { return Utc(2015, 8, 30, 12, 36, 0); }

struct SuiteCase {
  std::string name;
  std::string method;
  std::string raw_path;
  std::vector<QueryParam> query;
  std::vector<HttpHeader> headers;  // besides Host (added by the test)
  std::string body;
  bool session_token = false;
  // Expected, from the suite's .creq, .sts and .authz files.
  std::string creq;
  std::string sts_hash;  // last line of the .sts file
  std::string signed_headers;
  std::string signature;
};

std::string SuiteCreq(std::string_view method, std::string_view path, std::string_view query,
                      std::string_view headers_block, std::string_view signed_headers,
                      std::string_view payload_hash = kEmptyHash) {
  return fmt::format("{}\n{}\n{}\n{}\n{}\n{}", method, path, query, headers_block, signed_headers,
                     payload_hash);
}

constexpr char kHostDate[] = "host:example.amazonaws.com\nx-amz-date:20150830T123600Z\n";

std::vector<SuiteCase> SuiteCases() {
  const std::string hd = "host;x-amz-date";
  const std::string unreserved =
      "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  std::vector<SuiteCase> cases = {
      {"get-vanilla",
       "GET",
       "/",
       {},
       {},
       "",
       false,
       SuiteCreq("GET", "/", "", kHostDate, hd),
       "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63",
       hd,
       "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
      {"get-vanilla-query",
       "GET",
       "/",
       {},
       {},
       "",
       false,
       SuiteCreq("GET", "/", "", kHostDate, hd),
       "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63",
       hd,
       "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
      {"get-vanilla-empty-query-key",
       "GET",
       "/",
       {{"Param1", "value1"}},
       {},
       "",
       false,
       SuiteCreq("GET", "/", "Param1=value1", kHostDate, hd),
       "1e24db194ed7d0eec2de28d7369675a243488e08526e8c1c73571282f7c517ab",
       hd,
       "a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb"},
      {"get-vanilla-query-order-key",
       "GET",
       "/",
       {{"Param1", "value2"}, {"Param1", "Value1"}},
       {},
       "",
       false,
       SuiteCreq("GET", "/", "Param1=Value1&Param1=value2", kHostDate, hd),
       "704b4cef673542d84cdff252633f065e8daeba5f168b77116f8b1bcaf3d38f89",
       hd,
       "eedbc4e291e521cf13422ffca22be7d2eb8146eecf653089df300a15b2382bd1"},
      {"get-vanilla-query-order-key-case",
       "GET",
       "/",
       {{"Param2", "value2"}, {"Param1", "value1"}},
       {},
       "",
       false,
       SuiteCreq("GET", "/", "Param1=value1&Param2=value2", kHostDate, hd),
       "816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa93762cf0fc39e2cf19e0",
       hd,
       "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"},
      {"get-vanilla-query-order-value",
       "GET",
       "/",
       {{"Param1", "value2"}, {"Param1", "value1"}},
       {},
       "",
       false,
       SuiteCreq("GET", "/", "Param1=value1&Param1=value2", kHostDate, hd),
       "c968629d70850097a2d8781c9bf7edcb988b04cac14cca9be4acc3595f884606",
       hd,
       "5772eed61e12b33fae39ee5e7012498b51d56abc0abb7c60486157bd471c4694"},
      {"get-vanilla-query-unreserved",
       "GET",
       "/",
       {{unreserved, unreserved}},
       {},
       "",
       false,
       SuiteCreq("GET", "/", unreserved + "=" + unreserved, kHostDate, hd),
       "c30d4703d9f799439be92736156d47ccfb2d879ddf56f5befa6d1d6aab979177",
       hd,
       "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197"},
      {"get-vanilla-utf8-query",
       "GET",
       "/",
       {{"\xe1\x88\xb4", "bar"}},
       {},
       "",
       false,
       SuiteCreq("GET", "/", "%E1%88%B4=bar", kHostDate, hd),
       "eb30c5bed55734080471a834cc727ae56beb50e5f39d1bff6d0d38cb192a7073",
       hd,
       "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04"},
      {"get-header-key-duplicate",
       "GET",
       "/",
       {},
       {{"My-Header1", "value2"}, {"My-Header1", "value2"}, {"My-Header1", "value1"}},
       "",
       false,
       SuiteCreq("GET", "/", "",
                 "host:example.amazonaws.com\nmy-header1:value2,value2,value1\n"
                 "x-amz-date:20150830T123600Z\n",
                 "host;my-header1;x-amz-date"),
       "dc7f04a3abfde8d472b0ab1a418b741b7c67174dad1551b4117b15527fbe966c",
       "host;my-header1;x-amz-date",
       "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea"},
      {"get-header-value-order",
       "GET",
       "/",
       {},
       {{"My-Header1", "value4"},
        {"My-Header1", "value1"},
        {"My-Header1", "value3"},
        {"My-Header1", "value2"}},
       "",
       false,
       SuiteCreq("GET", "/", "",
                 "host:example.amazonaws.com\nmy-header1:value4,value1,value3,value2\n"
                 "x-amz-date:20150830T123600Z\n",
                 "host;my-header1;x-amz-date"),
       "31ce73cd3f3d9f66977ad3dd957dc47af14df92fcd8509f59b349e9137c58b86",
       "host;my-header1;x-amz-date",
       "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01"},
      {"get-header-value-trim",
       "GET",
       "/",
       {},
       {{"My-Header1", " value1"}, {"My-Header2", " \"a   b   c\""}},
       "",
       false,
       SuiteCreq("GET", "/", "",
                 "host:example.amazonaws.com\nmy-header1:value1\nmy-header2:\"a b c\"\n"
                 "x-amz-date:20150830T123600Z\n",
                 "host;my-header1;my-header2;x-amz-date"),
       "a726db9b0df21c14f559d0a978e563112acb1b9e05476f0a6a1c7d68f28605c7",
       "host;my-header1;my-header2;x-amz-date",
       "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"},
      {"get-unreserved",
       "GET",
       "/" + unreserved,
       {},
       {},
       "",
       false,
       SuiteCreq("GET", "/" + unreserved, "", kHostDate, hd),
       "6a968768eefaa713e2a6b16b589a8ea192661f098f37349f4e2c0082757446f9",
       hd,
       "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f"},
      {"get-utf8",
       "GET",
       "/\xe1\x88\xb4",
       {},
       {},
       "",
       false,
       SuiteCreq("GET", "/%E1%88%B4", "", kHostDate, hd),
       "2a0a97d02205e45ce2e994789806b19270cfbbb0921b278ccf58f5249ac42102",
       hd,
       "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"},
      {"get-space",
       "GET",
       "/example space/",
       {},
       {},
       "",
       false,
       SuiteCreq("GET", "/example%20space/", "", kHostDate, hd),
       "63ee75631ed7234ae61b5f736dfc7754cdccfedbff4b5128a915706ee9390d86",
       hd,
       "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741"},
      {"post-vanilla",
       "POST",
       "/",
       {},
       {},
       "",
       false,
       SuiteCreq("POST", "/", "", kHostDate, hd),
       "553f88c9e4d10fc9e109e2aeb65f030801b70c2f6468faca261d401ae622fc87",
       hd,
       "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"},
      {"post-vanilla-query",
       "POST",
       "/",
       {{"Param1", "value1"}},
       {},
       "",
       false,
       SuiteCreq("POST", "/", "Param1=value1", kHostDate, hd),
       "9d659678c1756bb3113e2ce898845a0a79dbbc57b740555917687f1b3340fbbd",
       hd,
       "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11"},
      {"post-header-key-sort",
       "POST",
       "/",
       {},
       {{"My-Header1", "value1"}},
       "",
       false,
       SuiteCreq("POST", "/", "",
                 "host:example.amazonaws.com\nmy-header1:value1\nx-amz-date:20150830T123600Z\n",
                 "host;my-header1;x-amz-date"),
       "9368318c2967cf6de74404b30c65a91e8f6253e0a8659d6d5319f1a812f87d65",
       "host;my-header1;x-amz-date",
       "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c"},
      {"post-header-value-case",
       "POST",
       "/",
       {},
       {{"My-Header1", "VALUE1"}},
       "",
       false,
       SuiteCreq("POST", "/", "",
                 "host:example.amazonaws.com\nmy-header1:VALUE1\nx-amz-date:20150830T123600Z\n",
                 "host;my-header1;x-amz-date"),
       "d51ced243e649e3de6ef63afbbdcbca03131a21a7103a1583706a64618606a93",
       "host;my-header1;x-amz-date",
       "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d"},
      {"post-x-www-form-urlencoded",
       "POST",
       "/",
       {},
       {{"Content-Type", "application/x-www-form-urlencoded"}},
       "Param1=value1",
       false,
       SuiteCreq("POST", "/", "",
                 "content-type:application/x-www-form-urlencoded\nhost:example.amazonaws.com\n"
                 "x-amz-date:20150830T123600Z\n",
                 "content-type;host;x-amz-date",
                 "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"),
       "42a5e5bb34198acb3e84da4f085bb7927f2bc277ca766e6d19c73c2154021281",
       "content-type;host;x-amz-date",
       "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"},
      {"post-x-www-form-urlencoded-parameters",
       "POST",
       "/",
       {},
       {{"Content-Type", "application/x-www-form-urlencoded; charset=utf8"}},
       "Param1=value1",
       false,
       SuiteCreq("POST", "/", "",
                 "content-type:application/x-www-form-urlencoded; charset=utf8\n"
                 "host:example.amazonaws.com\nx-amz-date:20150830T123600Z\n",
                 "content-type;host;x-amz-date",
                 "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"),
       "2e1cf7ed91881a30569e46552437e4156c823447bf1781b921b5d486c568dd1c",
       "content-type;host;x-amz-date",
       "1a72ec8f64bd914b0e42e42607c7fbce7fb2c7465f63e3092b3b0d39fa77a6fe"},
      {"post-sts-token/post-sts-header-before",
       "POST",
       "/",
       {},
       {},
       "",
       true,
       SuiteCreq("POST", "/", "",
                 std::string(kHostDate) + "x-amz-security-token:" + kSuiteToken + "\n",
                 "host;x-amz-date;x-amz-security-token"),
       "c237e1b440d4c63c32ca95b5b99481081cb7b13c7e40434868e71567c1a882f6",
       "host;x-amz-date;x-amz-security-token",
       "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead"},
  };
  return cases;
}

// Line `index` (from 0) of `text`.
std::string LineOf(const std::string& text, int index) {
  size_t begin = 0;
  for (int i = 0; i < index; ++i) begin = text.find('\n', begin) + 1;
  return text.substr(begin, text.find('\n', begin) - begin);
}

class SigV4SuiteTest : public ::testing::TestWithParam<SuiteCase> {};

TEST_P(SigV4SuiteTest, MatchesCanonicalRequestStringToSignAndAuthorization) {
  const SuiteCase& c = GetParam();
  SigV4Request req;
  req.method = c.method;
  req.canonical_uri = UriEncodePath(c.raw_path);
  req.query = c.query;
  req.headers.emplace_back("Host", "example.amazonaws.com");
  for (const HttpHeader& h : c.headers) req.headers.push_back(h);
  req.payload_hash = Sha256Hex(c.body);
  AwsCredentials creds{kSuiteAccessKey, kSuiteSecret, c.session_token ? kSuiteToken : ""};
  SigV4Options options{
      .region = "us-east-1", .service = "service", .add_content_sha256_header = false};

  FL_ASSERT_OK_AND_ASSIGN(SigV4Signature sig, SignV4(req, creds, SuiteTime(), options));
  EXPECT_EQ(sig.canonical_request, c.creq);
  EXPECT_EQ(sig.string_to_sign,
            fmt::format("AWS4-HMAC-SHA256\n20150830T123600Z\n{}\n{}", kSuiteScope, c.sts_hash));
  EXPECT_EQ(sig.signed_headers, c.signed_headers);
  ASSERT_FALSE(sig.headers.empty());
  EXPECT_EQ(sig.headers[0].first, "Authorization");
  EXPECT_EQ(sig.headers[0].second,
            fmt::format("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{}, SignedHeaders={}, "
                        "Signature={}",
                        kSuiteScope, c.signed_headers, c.signature));
  // The query to send is the one that was signed.
  EXPECT_EQ(sig.canonical_query, LineOf(c.creq, 2));
}

INSTANTIATE_TEST_SUITE_P(AwsSigV4TestSuite, SigV4SuiteTest, ::testing::ValuesIn(SuiteCases()),
                         [](const ::testing::TestParamInfo<SuiteCase>& info) {
                           std::string n = info.param.name;
                           for (char& ch : n) {
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return n;
                         });

// The "GET Object" example of the S3 SigV4 documentation: a ranged read with x-amz-content-sha256.
TEST(SigV4Test, S3GetObjectExampleWithRange) {
  SigV4Request req;
  req.method = "GET";
  req.canonical_uri = UriEncodePath("/test.txt");
  req.headers = {{"Host", "examplebucket.s3.amazonaws.com"}, {"Range", "bytes=0-9"}};
  req.payload_hash = std::string(kEmptyPayloadSha256);
  AwsCredentials creds{"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", ""};

  FL_ASSERT_OK_AND_ASSIGN(SigV4Signature sig,
                          SignV4(req, creds, Utc(2013, 5, 24, 0, 0, 0), {.region = "us-east-1"}));
  EXPECT_EQ(
      sig.canonical_request,
      "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
      "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
      "x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n"
      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sig.string_to_sign,
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
            "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
  const std::vector<HttpHeader> expected = {
      {"Authorization",
       "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
       "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
       "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"},
      {"x-amz-date", "20130524T000000Z"},
      {"x-amz-content-sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
  };
  EXPECT_EQ(sig.headers, expected);
}

SigV4Request S3Get() {
  SigV4Request req;
  req.canonical_uri = "/bucket/model.safetensors";
  req.headers = {{"Host", "localhost:9000"}, {"Range", "bytes=0-99"}};
  req.payload_hash = std::string(kUnsignedPayload);
  return req;
}

const AwsCredentials kCreds{"AKIDEXAMPLE", "s3cr3t/Key+value", ""};

std::string AuthorizationOf(const SigV4Request& req, const AwsCredentials& creds,
                            const SigV4Options& options = {}) {
  Result<SigV4Signature> sig = SignV4(req, creds, SuiteTime(), options);
  EXPECT_THAT(sig, IsOk());
  return sig.ok() ? sig->headers[0].second : "";
}

TEST(SigV4Test, SessionTokenIsSentAndSignedAfterTheOtherAddedHeaders) {
  AwsCredentials creds = kCreds;
  creds.session_token = "token/with+chars=";
  FL_ASSERT_OK_AND_ASSIGN(SigV4Signature sig, SignV4(S3Get(), creds, SuiteTime()));
  ASSERT_EQ(sig.headers.size(), 4u);
  EXPECT_EQ(sig.headers[1], HttpHeader("x-amz-date", "20150830T123600Z"));
  EXPECT_EQ(sig.headers[2], HttpHeader("x-amz-content-sha256", "UNSIGNED-PAYLOAD"));
  EXPECT_EQ(sig.headers[3], HttpHeader("x-amz-security-token", "token/with+chars="));
  EXPECT_EQ(sig.signed_headers, "host;range;x-amz-content-sha256;x-amz-date;x-amz-security-token");
  EXPECT_THAT(sig.canonical_request, HasSubstr("\nx-amz-security-token:token/with+chars=\n"));
  EXPECT_NE(sig.headers[0].second, AuthorizationOf(S3Get(), kCreds));
}

TEST(SigV4Test, EveryInputChangesTheSignature) {
  const std::string base = AuthorizationOf(S3Get(), kCreds);
  auto differs = [&](const std::string& other) { EXPECT_NE(other, base); };
  SigV4Request r = S3Get();
  r.method = "HEAD";
  differs(AuthorizationOf(r, kCreds));
  r = S3Get();
  r.canonical_uri = "/bucket/model2.safetensors";
  differs(AuthorizationOf(r, kCreds));
  r = S3Get();
  r.query = {{"versionId", "1"}};
  differs(AuthorizationOf(r, kCreds));
  r = S3Get();
  r.headers[1].second = "bytes=0-98";
  differs(AuthorizationOf(r, kCreds));
  r = S3Get();
  r.payload_hash = std::string(kEmptyPayloadSha256);
  differs(AuthorizationOf(r, kCreds));
  AwsCredentials other = kCreds;
  other.secret_access_key += "x";
  differs(AuthorizationOf(S3Get(), other));
  differs(AuthorizationOf(S3Get(), kCreds, {.region = "eu-west-1"}));
  differs(AuthorizationOf(S3Get(), kCreds, {.service = "s3-object-lambda"}));
  Result<SigV4Signature> later = SignV4(S3Get(), kCreds, SuiteTime() + std::chrono::seconds(1));
  ASSERT_THAT(later, IsOk());
  differs(later->headers[0].second);
  // And the same inputs give the same signature.
  EXPECT_EQ(AuthorizationOf(S3Get(), kCreds), base);
}

TEST(SigV4Test, QueryIsEncodedAndSortedAfterEncoding) {
  SigV4Request r = S3Get();
  r.query = {{"prefix", "a b/c+d"},
             {"list-type", "2"},
             {"continuation-token", "x=y&z"},
             {"empty", ""},
             {"B", "1"}};
  FL_ASSERT_OK_AND_ASSIGN(SigV4Signature sig, SignV4(r, kCreds, SuiteTime()));
  EXPECT_EQ(sig.canonical_query,
            "B=1&continuation-token=x%3Dy%26z&empty=&list-type=2&prefix=a%20b%2Fc%2Bd");
  EXPECT_THAT(sig.canonical_request, HasSubstr("\n" + sig.canonical_query + "\n"));
}

TEST(SigV4Test, UriEncodingKeepsOnlyUnreservedBytesAndSlash) {
  EXPECT_EQ(UriEncode("a b+c/d~e_f.g-h%", false), "a%20b%2Bc%2Fd~e_f.g-h%25");
  EXPECT_EQ(UriEncode("a b+c/d", true), "a%20b%2Bc/d");
  EXPECT_EQ(UriEncode("\xff\x01", false), "%FF%01");
  EXPECT_EQ(UriEncodePath("dir/x y.safetensors"), "/dir/x%20y.safetensors");
  EXPECT_EQ(UriEncodePath(""), "/");
}

TEST(SigV4Test, Sha256MatchesKnownDigests) {
  EXPECT_EQ(Sha256Hex(""), kEmptyPayloadSha256);
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(SigV4Test, FormatsTheAmzDateInUtc) {
  EXPECT_EQ(FormatAmzDate(Utc(2013, 5, 24, 0, 0, 0)), "20130524T000000Z");
  EXPECT_EQ(FormatAmzDate(Utc(1999, 12, 31, 23, 59, 59) + std::chrono::milliseconds(999)),
            "19991231T235959Z");
}

TEST(SigV4Test, MalformedRequestsAreRejectedWithoutTheSecret) {
  auto expect_rejected = [](const SigV4Request& r, const AwsCredentials& c, const SigV4Options& o,
                            std::string_view what) {
    Result<SigV4Signature> sig = SignV4(r, c, SuiteTime(), o);
    EXPECT_THAT(sig, StatusIs(StatusCode::kInvalidArgument, HasSubstr(what)));
    EXPECT_THAT(std::string(sig.status().message()), Not(HasSubstr(kCreds.secret_access_key)));
  };
  SigV4Request r = S3Get();
  r.headers.erase(r.headers.begin());
  expect_rejected(r, kCreds, {}, "Host");
  r = S3Get();
  r.headers.emplace_back("X-Amz-Date", "20200101T000000Z");
  expect_rejected(r, kCreds, {}, "X-Amz-Date");
  r = S3Get();
  r.headers.emplace_back("Authorization", "x");
  expect_rejected(r, kCreds, {}, "Authorization");
  r = S3Get();
  r.headers.emplace_back("X-Evil", "a\r\nInjected: 1");
  expect_rejected(r, kCreds, {}, "line break");
  r = S3Get();
  r.headers.emplace_back("Bad Name", "1");
  expect_rejected(r, kCreds, {}, "Bad Name");
  r = S3Get();
  r.canonical_uri = "/bucket/a b";
  expect_rejected(r, kCreds, {}, "byte 9");
  r = S3Get();
  r.canonical_uri = "/bucket/a%2fb";  // lower-case hex is not canonical
  expect_rejected(r, kCreds, {}, "not encoded");
  r = S3Get();
  r.canonical_uri = "bucket/a";
  expect_rejected(r, kCreds, {}, "start with '/'");
  r = S3Get();
  r.payload_hash = "ABC";
  expect_rejected(r, kCreds, {}, "payload hash");
  r = S3Get();
  r.method = "get";
  expect_rejected(r, kCreds, {}, "method");
  expect_rejected(S3Get(), kCreds, {.region = ""}, "region");
  expect_rejected(S3Get(), kCreds, {.region = "us-east-1/x"}, "region \"us-east-1/x\"");
  expect_rejected(S3Get(), kCreds, {.service = "s3\n"}, "service");
  expect_rejected(S3Get(), AwsCredentials{}, {}, "access key");
  expect_rejected(S3Get(), AwsCredentials{"AKID", "", ""}, {}, "secret access key");
  expect_rejected(S3Get(), AwsCredentials{"AK ID", kCreds.secret_access_key, ""}, {},
                  "access key id");
  expect_rejected(S3Get(), AwsCredentials{"AKID", kCreds.secret_access_key, "tok\nen"}, {},
                  "session token");
}

TEST(SigV4Test, ContentSha256HeaderIsOwnedBySignerOnlyWhenItAddsIt) {
  SigV4Request r = S3Get();
  r.headers.emplace_back("x-amz-content-sha256", "UNSIGNED-PAYLOAD");
  EXPECT_THAT(SignV4(r, kCreds, SuiteTime()), StatusIs(StatusCode::kInvalidArgument));
  FL_ASSERT_OK_AND_ASSIGN(SigV4Signature sig,
                          SignV4(r, kCreds, SuiteTime(), {.add_content_sha256_header = false}));
  EXPECT_EQ(sig.signed_headers, "host;range;x-amz-content-sha256;x-amz-date");
  EXPECT_EQ(sig.headers.size(), 2u);
}

TEST(SigV4Test, RedactionHidesTheSignatureAndTokens) {
  FL_ASSERT_OK_AND_ASSIGN(SigV4Signature sig, SignV4(S3Get(), kCreds, SuiteTime()));
  const std::string& authz = sig.headers[0].second;
  const std::string signature = authz.substr(authz.rfind('=') + 1);
  ASSERT_EQ(signature.size(), 64u);
  const std::string redacted = RedactAuthorization(authz);
  EXPECT_THAT(redacted, Not(HasSubstr(signature)));
  EXPECT_THAT(redacted, HasSubstr("Credential=AKIDEXAMPLE/20150830/us-east-1/s3/aws4_request"));
  EXPECT_THAT(redacted, HasSubstr("SignedHeaders=host;range;x-amz-content-sha256;x-amz-date"));
  EXPECT_THAT(redacted, HasSubstr("Signature=<redacted>"));
  EXPECT_EQ(RedactHeaderValue("AUTHORIZATION", authz), redacted);
  // Any other shape is hidden whole: it might be a secret pasted in the wrong place.
  EXPECT_EQ(RedactAuthorization("Bearer abc.def"), "<redacted>");
  EXPECT_EQ(RedactAuthorization("AWS4-HMAC-SHA256 Credential=a, SignedHeaders=b, Signature=ZZ"),
            "<redacted>");
  EXPECT_EQ(RedactAuthorization("AWS4-HMAC-SHA256 Credential=a b, SignedHeaders=c, Signature=0"),
            "<redacted>");
  EXPECT_EQ(RedactHeaderValue("X-Amz-Security-Token", "tok"), "<redacted>");
  EXPECT_EQ(RedactHeaderValue("Range", "bytes=0-9"), "bytes=0-9");
}

TEST(SigV4Test, SignsAUrlLikeTheEquivalentRequest) {
  const AwsCredentials creds{"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                             ""};
  const std::vector<HttpHeader> range = {{"Range", "bytes=0-9"}};
  for (const char* url : {"https://examplebucket.s3.amazonaws.com/test.txt",
                          "https://examplebucket.s3.amazonaws.com:443/test.txt",
                          "HTTPS://examplebucket.s3.amazonaws.com/test.txt#fragment"}) {
    FL_ASSERT_OK_AND_ASSIGN(SigV4Signature sig,
                            SignV4Url("GET", url, range, kEmptyPayloadSha256, creds,
                                      Utc(2013, 5, 24, 0, 0, 0), {.region = "us-east-1"}));
    EXPECT_THAT(
        sig.headers[0].second,
        HasSubstr("Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"))
        << url;
  }

  // A non-default port stays in Host; the query is decoded, then signed in canonical order.
  SigV4Request req;
  req.canonical_uri = "/bkt";
  req.query = {{"list-type", "2"}, {"prefix", "a b/"}, {"continuation-token", "x+y="}};
  req.headers = {{"Host", "localhost:9000"}};
  FL_ASSERT_OK_AND_ASSIGN(SigV4Signature direct, SignV4(req, kCreds, SuiteTime()));
  FL_ASSERT_OK_AND_ASSIGN(
      SigV4Signature via_url,
      SignV4Url("GET",
                "http://localhost:9000/bkt?prefix=a%20b%2F&list-type=2&continuation-token=x%2By%3D",
                {}, kEmptyPayloadSha256, kCreds, SuiteTime()));
  EXPECT_EQ(via_url.canonical_request, direct.canonical_request);
  EXPECT_EQ(via_url.headers, direct.headers);

  // A Host given by the caller wins; an empty path is "/".
  const std::vector<HttpHeader> host = {{"Host", "other:1"}};
  FL_ASSERT_OK_AND_ASSIGN(SigV4Signature h, SignV4Url("GET", "http://h:2", host,
                                                      kEmptyPayloadSha256, kCreds, SuiteTime()));
  EXPECT_THAT(h.canonical_request, AllOf(HasSubstr("GET\n/\n"), HasSubstr("\nhost:other:1\n")));
}

TEST(SigV4Test, MalformedUrlsAreRejectedWithoutTheirQuery) {
  for (const char* url :
       {"localhost/x", "ftp://h/x", "http:///x", "http://user@h/x",
        "http://h/x?token=SECRETTOKEN&bad=%zz", "http://h/a b?token=SECRETTOKEN"}) {
    Result<SigV4Signature> sig =
        SignV4Url("GET", url, {}, kEmptyPayloadSha256, kCreds, SuiteTime());
    EXPECT_THAT(sig, StatusIs(StatusCode::kInvalidArgument, Not(HasSubstr("SECRETTOKEN")))) << url;
  }
}

}  // namespace
}  // namespace flashload
