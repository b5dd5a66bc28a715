#include "io/http_status.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace flashload {
namespace {

TEST(HttpStatusTest, OneMappingForEveryRequest) {
  EXPECT_EQ(HttpStatusCode(404), StatusCode::kNotFound);
  EXPECT_EQ(HttpStatusCode(401), StatusCode::kFailedPrecondition);
  EXPECT_EQ(HttpStatusCode(403), StatusCode::kFailedPrecondition);
  for (int retryable : {408, 429, 500, 502, 503, 504, 599}) {
    EXPECT_EQ(HttpStatusCode(retryable), StatusCode::kUnavailable) << retryable;
  }
  EXPECT_EQ(HttpStatusCode(412), StatusCode::kDataLoss);
  for (int wrong_request : {400, 405, 409, 410, 414, 451}) {
    EXPECT_EQ(HttpStatusCode(wrong_request), StatusCode::kInvalidArgument) << wrong_request;
  }
  for (int unexpected : {100, 200, 206, 301, 304, 600}) {
    EXPECT_EQ(HttpStatusCode(unexpected), StatusCode::kIoError) << unexpected;
  }
}

// Regression: the HTTP source called a 416 data loss and the S3 listing out of range. Both hold,
// each where it applies: once the size is known, a range past the end means the object shrank.
TEST(HttpStatusTest, RangeNotSatisfiableIsDataLossOnceTheSizeIsKnown) {
  EXPECT_EQ(HttpStatusCode(416, /*size_known=*/false), StatusCode::kOutOfRange);
  EXPECT_EQ(HttpStatusCode(416, /*size_known=*/true), StatusCode::kDataLoss);
}

TEST(HttpStatusTest, AServiceCodeOverridesTheHttpStatus) {
  ServiceError said;
  said.code = "RequestTimeout";
  said.status = StatusCode::kUnavailable;
  EXPECT_EQ(HttpErrorCode(400, &said), StatusCode::kUnavailable);
  said.status.reset();
  EXPECT_EQ(HttpErrorCode(400, &said), StatusCode::kInvalidArgument);
  EXPECT_EQ(HttpErrorCode(416, nullptr, /*size_known=*/true), StatusCode::kDataLoss);
}

TEST(HttpStatusTest, WhatAMessageQuotesOfABody) {
  EXPECT_EQ(ErrorBodySnippet("<html>\r\nBad Gateway</html>"), "<html>  Bad Gateway</html>");
  EXPECT_EQ(ErrorBodySnippet(std::string(5000, 'x')).size(), kQuotedBodyBytes);
  EXPECT_EQ(ErrorBodySnippet("<SignatureProvided>abc</SignatureProvided>"), "")
      << "an echoed signature is never quoted";
  ServiceError no_key;
  no_key.code = "NoSuchKey";
  no_key.message = "The specified key does not exist.";
  no_key.hints = " (request id X)";
  EXPECT_EQ(DescribeServiceError(no_key),
            "NoSuchKey: The specified key does not exist. (request id X)");
  ServiceError text_only;
  text_only.message = "only text";
  EXPECT_EQ(DescribeServiceError(text_only), "only text");
}

}  // namespace
}  // namespace flashload
