#include "flashload/status.h"

#include <dlpack/dlpack.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <set>

#include "flashload/dtype.h"
#include "flashload/tensor.h"
#include "support/status_matchers.h"

namespace flashload {
namespace {

using ::testing::HasSubstr;

TEST(StatusTest, OkAndErrors) {
  Status ok;
  EXPECT_TRUE(ok.ok());
  EXPECT_EQ(ok.ToString(), "OK");
  Status e = DataLossError("bad header");
  EXPECT_FALSE(e.ok());
  EXPECT_EQ(e.code(), StatusCode::kDataLoss);
  EXPECT_EQ(e.ToString(), "DATA_LOSS: bad header");
  EXPECT_EQ(e.WithContext("a.safetensors").message(), "a.safetensors: bad header");
  EXPECT_TRUE(ok.WithContext("x").ok());
  EXPECT_FALSE(e.IsRetryable());
  EXPECT_TRUE(UnavailableError("503").IsRetryable());
}

TEST(StatusTest, ErrnoMapsToCodesWithWhereAndWhat) {
  Status s = ErrnoToStatus(EIO, "pread", "/m/a.safetensors", 4096);
  EXPECT_THAT(
      s, StatusIs(StatusCode::kIoError, HasSubstr("pread /m/a.safetensors at byte offset 4096")));
  EXPECT_THAT(ErrnoToStatus(EINTR, "read", "f"), StatusIs(StatusCode::kUnavailable));
  EXPECT_THAT(ErrnoToStatus(ENOENT, "open", "f"), StatusIs(StatusCode::kNotFound));
  EXPECT_THAT(ErrnoToStatus(ENOMEM, "mmap", "f"), StatusIs(StatusCode::kResourceExhausted));
  EXPECT_THAT(ErrnoToStatus(EACCES, "open", "f"), StatusIs(StatusCode::kFailedPrecondition));
  EXPECT_EQ(ErrnoToStatus(EIO, "open", "f").message().find("offset"), std::string_view::npos);
}

Result<int> Half(int v) {
  if (v % 2) return InvalidArgumentError("odd");
  return v / 2;
}

Result<int> Quarter(int v) {
  FL_ASSIGN_OR_RETURN(int h, Half(v));
  FL_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

TEST(StatusTest, ResultAndMacros) {
  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_THAT(Quarter(6), StatusIs(StatusCode::kInvalidArgument));
  Result<int> from_ok_status{Status()};
  EXPECT_THAT(from_ok_status, StatusIs(StatusCode::kInternal));
}

TEST(DtypeTest, TableHasAllReferenceDtypesWithSizes) {
  std::set<std::string_view> names;
  for (const DtypeInfo& d : AllDtypes()) {
    names.insert(d.name);
    EXPECT_EQ(ParseDtype(d.name), d.dtype);
    EXPECT_EQ(&GetDtypeInfo(d.dtype), &d);
  }
  EXPECT_EQ(names.size(), 22u);
  EXPECT_EQ(DtypeBits(Dtype::kF4), 4u);
  EXPECT_EQ(DtypeBits(Dtype::kF6E3M2), 6u);
  EXPECT_EQ(DtypeBits(Dtype::kBF16), 16u);
  EXPECT_EQ(DtypeBits(Dtype::kC64), 64u);
  EXPECT_FALSE(ParseDtype("f16").has_value());
  EXPECT_FALSE(ParseDtype("F128").has_value());
}

TEST(DtypeTest, DlpackMapping) {
  EXPECT_EQ(ToDlpackType(Dtype::kBF16).code, kDLBfloat);
  EXPECT_EQ(ToDlpackType(Dtype::kI64).code, kDLInt);
  EXPECT_EQ(ToDlpackType(Dtype::kU16).code, kDLUInt);
  EXPECT_EQ(ToDlpackType(Dtype::kF32).bits, 32);
  EXPECT_FALSE(DlpackIsExact(Dtype::kF8E4M3));
  EXPECT_EQ(ToDlpackType(Dtype::kF8E4M3).bits, 8);
  EXPECT_TRUE(DlpackIsExact(Dtype::kF16));
}

TEST(TensorTest, DlpackHoldsAShareUntilDeleted) {
  auto buffer = std::make_shared<std::vector<float>>(6, 1.5f);
  std::weak_ptr<std::vector<float>> watch = buffer;
  Tensor t("w", Dtype::kF32, {2, 3}, Device{}, buffer->data(), 24, buffer);
  buffer.reset();
  DLManagedTensor* dl = t.ToDlpack();
  t = Tensor();
  EXPECT_FALSE(watch.expired());
  EXPECT_EQ(static_cast<float*>(dl->dl_tensor.data)[5], 1.5f);
  EXPECT_EQ(dl->dl_tensor.shape[1], 3);
  EXPECT_EQ(dl->dl_tensor.strides, nullptr);
  dl->deleter(dl);
  EXPECT_TRUE(watch.expired());
}

}  // namespace
}  // namespace flashload
