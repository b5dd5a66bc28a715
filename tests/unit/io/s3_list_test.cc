#include "io/s3_list.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "support/status_matchers.h"

namespace flashload {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

// A ListObjectsV2 page as AWS documents it.
constexpr char kPage[] = R"(<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>bucket</Name>
  <Prefix>models/</Prefix>
  <KeyCount>3</KeyCount>
  <MaxKeys>3</MaxKeys>
  <IsTruncated>true</IsTruncated>
  <NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>
  <Contents>
    <Key>models/a &amp; b.safetensors</Key>
    <LastModified>2024-01-02T03:04:05.000Z</LastModified>
    <ETag>&quot;599bab3ed2c697f1d26842727561fd94&quot;</ETag>
    <Size>18446744073709551615</Size>
    <StorageClass>STANDARD</StorageClass>
  </Contents>
  <Contents>
    <Key> spaced &#x1F600;&#233;&lt;&gt;&apos; </Key>
    <Size>0</Size>
  </Contents>
  <CommonPrefixes><Prefix>models/sub/</Prefix></CommonPrefixes>
</ListBucketResult>)";

TEST(ListObjectsV2Test, ParsesAPage) {
  FL_ASSERT_OK_AND_ASSIGN(S3ListPage page, ParseListObjectsV2(kPage, "list s3://bucket/models/"));
  ASSERT_EQ(page.objects.size(), 2u);
  EXPECT_EQ(page.objects[0].key, "models/a & b.safetensors");
  EXPECT_EQ(page.objects[0].size, UINT64_MAX);
  EXPECT_EQ(page.objects[0].etag, "\"599bab3ed2c697f1d26842727561fd94\"");
  EXPECT_EQ(page.objects[0].last_modified, "2024-01-02T03:04:05.000Z");
  EXPECT_EQ(page.objects[1].key, " spaced \xF0\x9F\x98\x80\xC3\xA9<>' ");
  EXPECT_EQ(page.objects[1].size, 0u);
  EXPECT_EQ(page.objects[1].etag, "");
  EXPECT_THAT(page.common_prefixes, ElementsAre("models/sub/"));
  EXPECT_TRUE(page.is_truncated);
  EXPECT_EQ(page.next_continuation_token, "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=");
  EXPECT_EQ(page.key_count, 3u);
}

TEST(ListObjectsV2Test, LastPageEmptyListingPrefixesAndCdata) {
  FL_ASSERT_OK_AND_ASSIGN(
      S3ListPage empty,
      ParseListObjectsV2("<ListBucketResult><KeyCount>0</KeyCount><IsTruncated>false</IsTruncated>"
                         "</ListBucketResult>",
                         "w"));
  EXPECT_TRUE(empty.objects.empty());
  EXPECT_FALSE(empty.is_truncated);
  FL_ASSERT_OK_AND_ASSIGN(
      S3ListPage p,
      ParseListObjectsV2(
          "<s3:ListBucketResult xmlns:s3='x'><s3:Contents><s3:Key><![CDATA[a<b&c]]>"
          "</s3:Key><s3:Size>7</s3:Size></s3:Contents><!-- note --></s3:ListBucketResult>"
          "\n<!-- trailing -->\n",
          "w"));
  ASSERT_EQ(p.objects.size(), 1u);
  EXPECT_EQ(p.objects[0].key, "a<b&c");
  EXPECT_EQ(p.objects[0].size, 7u);
}

TEST(ListObjectsV2Test, UrlEncodedKeysAreDecoded) {
  FL_ASSERT_OK_AND_ASSIGN(
      S3ListPage p,
      ParseListObjectsV2(
          "<ListBucketResult><EncodingType>url</EncodingType><Contents><Key>a+b%2Fc%01"
          "</Key><Size>1</Size></Contents><CommonPrefixes><Prefix>d%20e/</Prefix>"
          "</CommonPrefixes></ListBucketResult>",
          "w"));
  EXPECT_EQ(p.objects[0].key, std::string("a b/c\x01"));
  EXPECT_THAT(p.common_prefixes, ElementsAre("d e/"));
  EXPECT_THAT(
      ParseListObjectsV2("<ListBucketResult><EncodingType>url</EncodingType><Contents><Key>a%zz"
                         "</Key><Size>1</Size></Contents></ListBucketResult>",
                         "w"),
      StatusIs(StatusCode::kDataLoss, HasSubstr("%-escape")));
}

TEST(ListObjectsV2Test, InconsistentListingsAreDataLoss) {
  struct Case {
    std::string xml;
    std::string what;
  };
  const Case cases[] = {
      {"<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",
       "NextContinuationToken"},
      {"<ListBucketResult><IsTruncated>yes</IsTruncated></ListBucketResult>", "not true or false"},
      {"<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>", "no <Key>"},
      {"<ListBucketResult><Contents><Key>k</Key></Contents></ListBucketResult>", "no <Size>"},
      {"<ListBucketResult><Contents><Key>k</Key><Size>-1</Size></Contents></ListBucketResult>",
       "not a decimal uint64"},
      {"<ListBucketResult><Contents><Key>k</Key><Size>18446744073709551616</Size></Contents>"
       "</ListBucketResult>",
       "not a decimal uint64"},
      {"<ListBucketResult><Contents><Key>k</Key><Size></Size></Contents></ListBucketResult>",
       "not a decimal uint64"},
      {"<ListBucketResult><KeyCount>1x</KeyCount></ListBucketResult>", "not a decimal uint64"},
      {"<CommonPrefixes/>", "not <ListBucketResult>"},
      {"<ListBucketResult><CommonPrefixes/></ListBucketResult>", "no <Prefix>"},
  };
  for (const Case& c : cases) {
    EXPECT_THAT(
        ParseListObjectsV2(c.xml, "list s3://b/p"),
        StatusIs(StatusCode::kDataLoss, AllOf(HasSubstr("list s3://b/p"), HasSubstr(c.what))))
        << c.xml;
  }
}

TEST(ListObjectsV2Test, AnErrorBodyBecomesItsStatus) {
  EXPECT_THAT(
      ParseListObjectsV2("<Error><Code>NoSuchBucket</Code><Message>The specified bucket "
                         "does not exist</Message></Error>",
                         "list s3://nope/"),
      StatusIs(StatusCode::kNotFound, AllOf(HasSubstr("list s3://nope/"), HasSubstr("NoSuchBucket"),
                                            HasSubstr("does not exist"))));
}

TEST(ListObjectsV2Test, QueryCarriesTheSetFields) {
  EXPECT_THAT(ListObjectsV2Query({}), ElementsAre(QueryParam("list-type", "2")));
  const std::vector<QueryParam> q = ListObjectsV2Query(
      {.prefix = "models/a b", .continuation_token = "tok/=", .delimiter = "/", .max_keys = 500});
  EXPECT_THAT(q, ElementsAre(QueryParam("list-type", "2"), QueryParam("prefix", "models/a b"),
                             QueryParam("continuation-token", "tok/="),
                             QueryParam("delimiter", "/"), QueryParam("max-keys", "500")));
  EXPECT_EQ(CanonicalQueryString(q),
            "continuation-token=tok%2F%3D&delimiter=%2F&list-type=2&max-keys=500&prefix=models%2Fa%"
            "20b");
}

// ---- The XML scanner ---------------------------------------------------------------------------

TEST(S3ErrorTest, ParsesTheErrorBodyAndDropsSignatureDetails) {
  constexpr char kBody[] =
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SignatureDoesNotMatch</Code>"
      "<Message>The request signature we calculated does not match the signature you provided."
      "</Message><StringToSign>AWS4-HMAC-SHA256 x</StringToSign>"
      "<SignatureProvided>0123456789abcdef</SignatureProvided>"
      "<RequestId>4442587FB7D0A2F9</RequestId></Error>";
  FL_ASSERT_OK_AND_ASSIGN(S3ErrorInfo info, ParseS3ErrorXml(kBody));
  EXPECT_EQ(info.code, "SignatureDoesNotMatch");
  EXPECT_EQ(info.request_id, "4442587FB7D0A2F9");
  const Status s = S3ErrorToStatus(403, kBody, "GET s3://b/k");
  EXPECT_THAT(s,
              StatusIs(StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("GET s3://b/k: HTTP 403 SignatureDoesNotMatch: The request "
                                       "signature we calculated"),
                             HasSubstr("request id 4442587FB7D0A2F9"),
                             Not(HasSubstr("0123456789abcdef")), Not(HasSubstr("AWS4-HMAC")))));
  EXPECT_THAT(ParseS3ErrorXml("<ListBucketResult/>"), StatusIs(StatusCode::kDataLoss));
  EXPECT_THAT(ParseS3ErrorXml("<Error>"), StatusIs(StatusCode::kDataLoss));
}

TEST(S3ErrorTest, RegionAndEndpointHintsAreShown) {
  EXPECT_THAT(
      S3ErrorToStatus(400,
                      "<Error><Code>AuthorizationHeaderMalformed</Code><Message>the region "
                      "'us-east-1' is wrong</Message><Region>eu-west-1</Region></Error>",
                      "w"),
      StatusIs(StatusCode::kFailedPrecondition, HasSubstr("the bucket is in region eu-west-1")));
  EXPECT_THAT(S3ErrorToStatus(301,
                              "<Error><Code>PermanentRedirect</Code><Endpoint>b.s3-eu-west-1."
                              "amazonaws.com</Endpoint></Error>",
                              "w"),
              StatusIs(StatusCode::kFailedPrecondition,
                       HasSubstr("use endpoint b.s3-eu-west-1.amazonaws.com")));
}

TEST(S3ErrorTest, CodesMapToRetryableOrNot) {
  EXPECT_EQ(S3ErrorStatusCode(404, "NoSuchKey"), StatusCode::kNotFound);
  EXPECT_EQ(S3ErrorStatusCode(503, "SlowDown"), StatusCode::kUnavailable);
  EXPECT_EQ(S3ErrorStatusCode(500, "InternalError"), StatusCode::kUnavailable);
  EXPECT_EQ(S3ErrorStatusCode(403, "AccessDenied"), StatusCode::kFailedPrecondition);
  EXPECT_EQ(S3ErrorStatusCode(403, "RequestTimeTooSkewed"), StatusCode::kFailedPrecondition);
  EXPECT_EQ(S3ErrorStatusCode(416, "InvalidRange"), StatusCode::kOutOfRange);
  EXPECT_EQ(S3ErrorStatusCode(404, ""), StatusCode::kNotFound);
  EXPECT_EQ(S3ErrorStatusCode(416, ""), StatusCode::kOutOfRange);
  EXPECT_EQ(S3ErrorStatusCode(401, ""), StatusCode::kFailedPrecondition);
  EXPECT_EQ(S3ErrorStatusCode(429, ""), StatusCode::kUnavailable);
  EXPECT_EQ(S3ErrorStatusCode(502, "Whatever"), StatusCode::kUnavailable);
  EXPECT_EQ(S3ErrorStatusCode(400, "Whatever"), StatusCode::kInvalidArgument);
  EXPECT_EQ(S3ErrorStatusCode(304, ""), StatusCode::kIoError);
  EXPECT_TRUE(S3ErrorToStatus(503, "<Error><Code>SlowDown</Code></Error>", "w").IsRetryable());
  EXPECT_FALSE(S3ErrorToStatus(403, "<Error><Code>AccessDenied</Code></Error>", "w").IsRetryable());
}

TEST(S3ErrorTest, NonXmlBodiesShowAShortPrintableSnippet) {
  EXPECT_THAT(S3ErrorToStatus(502, "<html>\r\n<body>Bad Gateway</body>\x01</html>", "GET x"),
              StatusIs(StatusCode::kUnavailable,
                       HasSubstr("GET x: HTTP 502: <html>  <body>Bad Gateway</body> </html>")));
  const Status empty = S3ErrorToStatus(404, "", "HEAD s3://b/k");
  EXPECT_THAT(empty, StatusIs(StatusCode::kNotFound));
  EXPECT_EQ(empty.message(), "HEAD s3://b/k: HTTP 404");
  EXPECT_LE(S3ErrorToStatus(500, std::string(5000, 'x'), "w").message().size(), 220u);
  EXPECT_THAT(S3ErrorToStatus(403, "oops <SignatureProvided>abc</Signature", "w"),
              StatusIs(StatusCode::kFailedPrecondition, Not(HasSubstr("abc"))));
}

}  // namespace
}  // namespace flashload
