#include "common/url.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "flashload/source.h"
#include "flashload/status.h"

namespace flashload {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(SplitUrlTest, SplitsEveryPart) {
  const auto p = SplitUrl("https://u:pw@Host.example:8443/b/k.bin?a=1&b=2#frag");
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->scheme, "https");
  EXPECT_TRUE(p->has_userinfo);
  EXPECT_EQ(p->userinfo, "u:pw");
  EXPECT_EQ(p->host, "Host.example");
  EXPECT_EQ(p->port, "8443");
  EXPECT_EQ(p->path, "/b/k.bin");
  EXPECT_EQ(p->query, "a=1&b=2");
  EXPECT_EQ(p->fragment, "frag");
  const auto v6 = SplitUrl("http://[::1]:80/x");
  ASSERT_TRUE(v6.has_value());
  EXPECT_EQ(v6->host, "[::1]");
  EXPECT_EQ(v6->port, "80");
  // A password holding '@' and ':': the last '@' ends the user info.
  const auto at = SplitUrl("http://a:p@ss:w@h/");
  ASSERT_TRUE(at.has_value());
  EXPECT_EQ(at->userinfo, "a:p@ss:w");
  EXPECT_EQ(at->host, "h");
  const auto empty_port = SplitUrl("http://h:/x");
  ASSERT_TRUE(empty_port.has_value());
  EXPECT_TRUE(empty_port->has_port);
  EXPECT_EQ(empty_port->port, "");
  EXPECT_FALSE(SplitUrl("http://h/x")->has_port);
  EXPECT_FALSE(SplitUrl("http://[::1]x/").has_value()) << "text after an IPv6 literal";
  EXPECT_FALSE(SplitUrl("1http://h/").has_value()) << "a scheme starts with a letter";
  EXPECT_FALSE(SplitUrl("/local/model.safetensors").has_value());
  EXPECT_FALSE(SplitUrl("tar:/a.tar#m").has_value());
}

TEST(RedactUrlTest, DropsUserInfoAndFragmentAndHidesCredentialQueryValues) {
  EXPECT_EQ(RedactUrl("https://user:pw@host:8443/b/k.bin?X-Amz-Signature=abc#f"),
            "https://host:8443/b/k.bin?X-Amz-Signature=<redacted>");
  EXPECT_EQ(RedactUrl("http://host/k"), "http://host/k");
  EXPECT_EQ(RedactUrl("http://host?token=1"), "http://host?token=<redacted>");
  EXPECT_EQ(RedactUrl("http://alice:PASSWORD@h/m.safetensors"), "http://h/m.safetensors");
  EXPECT_EQ(RedactUrl("http://h/m?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F2024"
                      "&X-Amz-Security-Token=TOK&X-Amz-Signature=SIG&v=2&sig=S&Token=T"),
            "http://h/m?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=<redacted>"
            "&X-Amz-Security-Token=<redacted>&X-Amz-Signature=<redacted>&v=2&sig=<redacted>"
            "&Token=<redacted>");
  // Case and percent-encoding of the name do not matter.
  EXPECT_EQ(RedactUrl("http://h/m?x-amz-signature=S&X%2DAmz%2DSignature=S2"),
            "http://h/m?x-amz-signature=<redacted>&X%2DAmz%2DSignature=<redacted>");
  EXPECT_EQ(RedactUrl("http://h/m?access_token=a&client_secret=b&password=c&api_key=d"),
            "http://h/m?access_token=<redacted>&client_secret=<redacted>&password=<redacted>"
            "&api_key=<redacted>");
  // Idempotent: a message built from a redacted URL is redacted again unchanged.
  const std::string once = RedactUrl("https://u:p@h/k?sig=S&a=1");
  EXPECT_EQ(RedactUrl(once), once);
  // s3:// keys are literal ('?' and '#' belong to the key); local paths are not URLs.
  EXPECT_EQ(RedactUrl("s3://bucket/a?b#c"), "s3://bucket/a?b#c");
  EXPECT_EQ(RedactUrl("/models/a:b@c/m.safetensors"), "/models/a:b@c/m.safetensors");
}

TEST(RedactUrlTest, ArchiveMemberUrisRedactTheArchiveUrl) {
  EXPECT_EQ(RedactUrl("tar:https://u:p@h/m.tar.zst?X-Amz-Signature=S!/unet/w.safetensors"),
            "tar:https://h/m.tar.zst?X-Amz-Signature=<redacted>!/unet/w.safetensors");
  EXPECT_EQ(RedactUrl("tar:/models/m.tar!/a.safetensors"), "tar:/models/m.tar!/a.safetensors");
  EXPECT_EQ(RedactUrl("tar:s3://b/m.tar.zst"), "tar:s3://b/m.tar.zst");
}

TEST(RedactUrlsInTest, RedactsEveryUrlOfAMessageAndKeepsTheSentence) {
  EXPECT_EQ(RedactUrlsIn("http://a:SECRET@h/x.safetensors: not found (HTTP 404); and "
                         "'https://b:SECRET2@g/y?token=T3', then (http://c:S4@i/z)."),
            "http://h/x.safetensors: not found (HTTP 404); and 'https://g/y?token=<redacted>', "
            "then (http://i/z).");
  const std::string redacted = "NOT_FOUND: http://h/k?token=<redacted>: not found";
  EXPECT_EQ(RedactUrlsIn(redacted), redacted);
  EXPECT_EQ(RedactUrlsIn("no url here: a://"), "no url here: a://");
  EXPECT_EQ(RedactUrlsIn("://x"), "://x");
}

// Regression: a password in a URL reached messages built from the raw URL (load errors, report
// lines). A Status never holds it, whichever code built the message.
TEST(RedactUrlsInTest, StatusMessagesNeverHoldCredentials) {
  const Status s = NotFoundError("http://alice:PASSWORD@h/m.safetensors?X-Amz-Signature=SIG: gone");
  EXPECT_THAT(std::string(s.message()), Not(HasSubstr("PASSWORD")));
  EXPECT_THAT(std::string(s.message()), Not(HasSubstr("SIG:")));
  EXPECT_EQ(s.message(), "http://h/m.safetensors?X-Amz-Signature=<redacted>: gone");
  EXPECT_THAT(std::string(s.WithContext("reading http://bob:PW2@h/x").message()),
              Not(HasSubstr("PW2")));
}

TEST(SameOriginTest, SchemeHostAndPortMustAllMatch) {
  EXPECT_TRUE(SameOrigin("http://h/a", "http://H:80/b?x"));
  EXPECT_TRUE(SameOrigin("https://h:443/a", "HTTPS://h/b"));
  EXPECT_FALSE(SameOrigin("http://127.0.0.1:8000/a", "http://127.0.0.2:8000/a"));
  EXPECT_FALSE(SameOrigin("http://h:8000/a", "http://h:8001/a"));
  EXPECT_FALSE(SameOrigin("https://h/a", "http://h:443/a"));
  EXPECT_FALSE(SameOrigin("http://h/a", "/relative"));
}

}  // namespace
}  // namespace flashload
