#include "io/s3_url.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "flashload/source.h"
#include "io/sigv4.h"
#include "support/status_matchers.h"

namespace flashload {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

TEST(S3UriTest, ParsesBucketKeyAndPrefix) {
  FL_ASSERT_OK_AND_ASSIGN(S3Location a, ParseS3Uri("s3://my-bucket/models/sd15/unet.safetensors"));
  EXPECT_EQ(a.bucket, "my-bucket");
  EXPECT_EQ(a.key, "models/sd15/unet.safetensors");
  EXPECT_FALSE(a.is_prefix());
  EXPECT_EQ(S3Uri(a), "s3://my-bucket/models/sd15/unet.safetensors");

  FL_ASSERT_OK_AND_ASSIGN(S3Location folder, ParseS3Uri("S3://my-bucket/models/sd15/"));
  EXPECT_EQ(folder.key, "models/sd15/");
  EXPECT_TRUE(folder.is_prefix());
  FL_ASSERT_OK_AND_ASSIGN(S3Location root, ParseS3Uri("s3://my-bucket"));
  EXPECT_EQ(root.key, "");
  EXPECT_TRUE(root.is_prefix());
  FL_ASSERT_OK_AND_ASSIGN(S3Location root2, ParseS3Uri("s3://my-bucket/"));
  EXPECT_EQ(root2.key, "");
}

TEST(S3UriTest, KeysAreLiteral) {
  FL_ASSERT_OK_AND_ASSIGN(S3Location l, ParseS3Uri("s3://bkt/a%20b?c#d//e"));
  EXPECT_EQ(l.key, "a%20b?c#d//e");
}

TEST(S3UriTest, RejectsOtherSchemesBadBucketsAndLongKeys) {
  EXPECT_THAT(ParseS3Uri("http://bkt/key"),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("http://bkt/key")));
  EXPECT_THAT(ParseS3Uri("s3:/bkt/key"), StatusIs(StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseS3Uri("s3:///key"),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("no bucket")));
  EXPECT_THAT(ParseS3Uri("s3://My_Bucket/key"),
              StatusIs(StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("s3://My_Bucket/key"), HasSubstr("lower-case"))));
  EXPECT_THAT(ParseS3Uri("s3://bkt/" + std::string(kMaxS3KeyBytes + 1, 'k')),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("1025 bytes")));
  FL_EXPECT_OK(ParseS3Uri("s3://bkt/" + std::string(kMaxS3KeyBytes, 'k')));
}

TEST(S3BucketNameTest, FollowsTheNamingRules) {
  for (const char* ok : {"abc", "my-bucket", "my.bucket.v2", "123", "a-b.c-d",
                         "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij123"}) {
    FL_EXPECT_OK(ValidateS3BucketName(ok)) << ok;
  }
  struct Bad {
    std::string name;
    std::string why;
  };
  const Bad bad[] = {
      {"ab", "3 to 63"},
      {std::string(64, 'a'), "3 to 63"},
      {"Bucket", "lower-case"},
      {"my_bucket", "lower-case"},
      {"-bucket", "start and end"},
      {"bucket.", "start and end"},
      {"my..bucket", "\"..\""},
      {"my.-bucket", "\".-\""},
      {"my-.bucket", "\"-.\""},
      {"192.168.5.4", "IP address"},
      {"xn--bucket", "xn--"},
      {"sthree-bucket", "sthree-"},
      {"bucket-s3alias", "-s3alias"},
      {"bucket--ol-s3", "--ol-s3"},
  };
  for (const Bad& b : bad) {
    EXPECT_THAT(ValidateS3BucketName(b.name),
                StatusIs(StatusCode::kInvalidArgument, AllOf(HasSubstr(b.name), HasSubstr(b.why))))
        << b.name;
  }
}

TEST(S3EncodeKeyTest, EncodesEverythingButUnreservedAndSlash) {
  EXPECT_EQ(S3EncodeKey("models/unet v1+fp16.safetensors"), "models/unet%20v1%2Bfp16.safetensors");
  EXPECT_EQ(S3EncodeKey("a=b&c?d#e%f:g@h!i*j(k)l'm,n;o$p"),
            "a%3Db%26c%3Fd%23e%25f%3Ag%40h%21i%2Aj%28k%29l%27m%2Cn%3Bo%24p");
  EXPECT_EQ(S3EncodeKey("\xc3\xa9t\xc3\xa9/~_.-"), "%C3%A9t%C3%A9/~_.-");
}

TEST(S3TargetTest, AwsDefaultIsVirtualHosted) {
  S3Options o;
  o.region = "eu-west-1";
  FL_ASSERT_OK_AND_ASSIGN(S3RequestTarget t,
                          S3ObjectTarget(o, "models", "sd15/unet 1.safetensors"));
  EXPECT_FALSE(t.path_style);
  EXPECT_EQ(t.host, "models.s3.eu-west-1.amazonaws.com");
  EXPECT_EQ(t.canonical_uri, "/sd15/unet%201.safetensors");
  EXPECT_EQ(t.url, "https://models.s3.eu-west-1.amazonaws.com/sd15/unet%201.safetensors");

  FL_ASSERT_OK_AND_ASSIGN(S3RequestTarget bucket, S3ObjectTarget(o, "models", ""));
  EXPECT_EQ(bucket.canonical_uri, "/");
  EXPECT_EQ(bucket.url, "https://models.s3.eu-west-1.amazonaws.com/");

  o.region = "cn-north-1";
  FL_ASSERT_OK_AND_ASSIGN(S3RequestTarget cn, S3ObjectTarget(o, "models", "k"));
  EXPECT_EQ(cn.host, "models.s3.cn-north-1.amazonaws.com.cn");
}

TEST(S3TargetTest, AwsPathStyleWhenAskedOrWhenTheBucketHasDots) {
  S3Options o;
  o.path_style = true;
  FL_ASSERT_OK_AND_ASSIGN(S3RequestTarget t, S3ObjectTarget(o, "models", "a/b"));
  EXPECT_TRUE(t.path_style);
  EXPECT_EQ(t.host, "s3.us-east-1.amazonaws.com");
  EXPECT_EQ(t.canonical_uri, "/models/a/b");
  EXPECT_EQ(t.url, "https://s3.us-east-1.amazonaws.com/models/a/b");

  o.path_style = false;
  FL_ASSERT_OK_AND_ASSIGN(S3RequestTarget dotted, S3ObjectTarget(o, "my.models", "a"));
  EXPECT_TRUE(dotted.path_style);
  EXPECT_EQ(dotted.url, "https://s3.us-east-1.amazonaws.com/my.models/a");

  FL_ASSERT_OK_AND_ASSIGN(S3RequestTarget list, S3ObjectTarget(o, "my.models", ""));
  EXPECT_EQ(list.canonical_uri, "/my.models");
}

TEST(S3TargetTest, CustomEndpointPathStyle) {
  S3Options o;
  o.endpoint = "http://LocalHost:9000";
  o.path_style = true;
  FL_ASSERT_OK_AND_ASSIGN(S3RequestTarget t, S3ObjectTarget(o, "bkt", "dir/x y.safetensors"));
  EXPECT_EQ(t.host, "localhost:9000");
  EXPECT_EQ(t.canonical_uri, "/bkt/dir/x%20y.safetensors");
  EXPECT_EQ(t.url, "http://localhost:9000/bkt/dir/x%20y.safetensors");

  o.endpoint = "https://gw.example.com:443/storage/";
  FL_ASSERT_OK_AND_ASSIGN(S3RequestTarget base, S3ObjectTarget(o, "bkt", "k"));
  EXPECT_EQ(base.host, "gw.example.com");  // default port dropped
  EXPECT_EQ(base.canonical_uri, "/storage/bkt/k");
  EXPECT_EQ(base.url, "https://gw.example.com/storage/bkt/k");
}

TEST(S3TargetTest, CustomEndpointVirtualHostedUnlessItIsAnIpAddress) {
  S3Options o;
  o.endpoint = "http://store.internal:8080";
  FL_ASSERT_OK_AND_ASSIGN(S3RequestTarget v, S3ObjectTarget(o, "bkt", "k"));
  EXPECT_FALSE(v.path_style);
  EXPECT_EQ(v.host, "bkt.store.internal:8080");
  EXPECT_EQ(v.url, "http://bkt.store.internal:8080/k");

  o.endpoint = "http://127.0.0.1:9000";
  FL_ASSERT_OK_AND_ASSIGN(S3RequestTarget ip4, S3ObjectTarget(o, "bkt", "k"));
  EXPECT_TRUE(ip4.path_style);
  EXPECT_EQ(ip4.url, "http://127.0.0.1:9000/bkt/k");

  o.endpoint = "http://[::1]:9000";
  FL_ASSERT_OK_AND_ASSIGN(S3RequestTarget ip6, S3ObjectTarget(o, "bkt", "k"));
  EXPECT_TRUE(ip6.path_style);
  EXPECT_EQ(ip6.host, "[::1]:9000");
  EXPECT_EQ(ip6.url, "http://[::1]:9000/bkt/k");
}

TEST(S3TargetTest, TheTargetSignsAsIs) {
  S3Options o;
  o.endpoint = "http://localhost:9000";
  o.path_style = true;
  FL_ASSERT_OK_AND_ASSIGN(S3RequestTarget t, S3ObjectTarget(o, "bkt", "a b/../c+d"));
  SigV4Request req;
  req.canonical_uri = t.canonical_uri;
  req.headers = {{"Host", t.host}};
  FL_ASSERT_OK_AND_ASSIGN(SigV4Signature sig, SignV4(req, {"AKID", "SECRET", ""},
                                                     std::chrono::system_clock::from_time_t(0)));
  EXPECT_THAT(sig.canonical_request, HasSubstr("\n/bkt/a%20b/../c%2Bd\n"));
  EXPECT_THAT(sig.canonical_request, HasSubstr("\nhost:localhost:9000\n"));
}

TEST(S3TargetTest, RejectsBadEndpointsRegionsBucketsAndKeys) {
  S3Options o;
  for (const char* endpoint :
       {"localhost:9000", "ftp://host", "http://", "http://host:0", "http://host:70000",
        "http://host:9x", "http://user@host", "http://host/a b", "http://host?x=1", "http://[::1",
        "http://ho st"}) {
    o.endpoint = endpoint;
    // Named as messages show URLs: "http://user@host" without its user info.
    EXPECT_THAT(S3ObjectTarget(o, "bkt", "k"),
                StatusIs(StatusCode::kInvalidArgument, HasSubstr(RedactUrl(endpoint))))
        << endpoint;
  }
  o.endpoint = "";
  o.region = "us-east-1.evil.com/";
  EXPECT_THAT(S3ObjectTarget(o, "bkt", "k"),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("region")));
  o.region = "us-east-1";
  EXPECT_THAT(S3ObjectTarget(o, "Bad_Bucket", "k"), StatusIs(StatusCode::kInvalidArgument));
  EXPECT_THAT(S3ObjectTarget(o, "bkt", std::string(kMaxS3KeyBytes + 1, 'k')),
              StatusIs(StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace flashload
