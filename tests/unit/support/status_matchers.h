// GoogleTest matchers for Status and Result<T>: EXPECT_THAT(s, IsOk()), StatusIs(code),
// StatusIs(code, HasSubstr("...")).
#ifndef FLASHLOAD_TESTS_SUPPORT_STATUS_MATCHERS_H_
#define FLASHLOAD_TESTS_SUPPORT_STATUS_MATCHERS_H_

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ostream>

#include "flashload/status.h"

namespace flashload {

inline void PrintTo(const Status& s, std::ostream* os) { *os << s.ToString(); }
inline void PrintTo(StatusCode c, std::ostream* os) { *os << StatusCodeName(c); }

namespace testing_internal {
inline const Status& GetStatus(const Status& s) { return s; }
template <typename T>
Status GetStatus(const Result<T>& r) {
  return r.status();
}
}  // namespace testing_internal

MATCHER(IsOk, "is OK") {
  Status s = testing_internal::GetStatus(arg);
  if (!s.ok()) *result_listener << "status is " << s.ToString();
  return s.ok();
}

MATCHER_P(StatusIs, code, "has status code " + std::string(StatusCodeName(code))) {
  Status s = testing_internal::GetStatus(arg);
  *result_listener << "status is " << s.ToString();
  return s.code() == code;
}

MATCHER_P2(StatusIs, code, message_matcher,
           "has status code " + std::string(StatusCodeName(code))) {
  Status s = testing_internal::GetStatus(arg);
  *result_listener << "status is " << s.ToString();
  return s.code() == code &&
         ::testing::ExplainMatchResult(message_matcher, std::string(s.message()), result_listener);
}

#define FL_ASSERT_OK(expr) ASSERT_THAT((expr), ::flashload::IsOk())
#define FL_EXPECT_OK(expr) EXPECT_THAT((expr), ::flashload::IsOk())
#define FL_ASSERT_OK_AND_ASSIGN(lhs, rexpr) \
  FL_ASSERT_OK_AND_ASSIGN_IMPL_(FL_STATUS_CONCAT_(fl_test_result_, __LINE__), lhs, rexpr)
#define FL_ASSERT_OK_AND_ASSIGN_IMPL_(r, lhs, rexpr) \
  auto r = (rexpr);                                  \
  ASSERT_THAT(r.status(), ::flashload::IsOk());      \
  lhs = std::move(r).value()

}  // namespace flashload

#endif  // FLASHLOAD_TESTS_SUPPORT_STATUS_MATCHERS_H_
