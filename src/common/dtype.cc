#include "flashload/dtype.h"

#include <dlpack/dlpack.h>

namespace flashload {

const std::array<DtypeInfo, kDtypeCount>& AllDtypes() {
  static const std::array<DtypeInfo, kDtypeCount> kTable = {{
      {Dtype::kBool, "BOOL", 8, false},
      {Dtype::kF4, "F4", 4, true},
      {Dtype::kF6E2M3, "F6_E2M3", 6, true},
      {Dtype::kF6E3M2, "F6_E3M2", 6, true},
      {Dtype::kU8, "U8", 8, false},
      {Dtype::kI8, "I8", 8, false},
      {Dtype::kF8E5M2, "F8_E5M2", 8, true},
      {Dtype::kF8E4M3, "F8_E4M3", 8, true},
      {Dtype::kF8E8M0, "F8_E8M0", 8, true},
      {Dtype::kF8E4M3Fnuz, "F8_E4M3FNUZ", 8, true},
      {Dtype::kF8E5M2Fnuz, "F8_E5M2FNUZ", 8, true},
      {Dtype::kI16, "I16", 16, false},
      {Dtype::kU16, "U16", 16, false},
      {Dtype::kF16, "F16", 16, true},
      {Dtype::kBF16, "BF16", 16, true},
      {Dtype::kI32, "I32", 32, false},
      {Dtype::kU32, "U32", 32, false},
      {Dtype::kF32, "F32", 32, true},
      {Dtype::kC64, "C64", 64, true},
      {Dtype::kF64, "F64", 64, true},
      {Dtype::kI64, "I64", 64, false},
      {Dtype::kU64, "U64", 64, false},
  }};
  return kTable;
}

const DtypeInfo& GetDtypeInfo(Dtype d) { return AllDtypes()[static_cast<int>(d)]; }

std::optional<Dtype> ParseDtype(std::string_view name) {
  for (const DtypeInfo& info : AllDtypes()) {
    if (info.name == name) return info.dtype;
  }
  return std::nullopt;
}

namespace {
constexpr uint8_t kDlBool = 6;  // kDLBool of DLPack >= 0.8; torch and numpy read it
}  // namespace

DlpackType ToDlpackType(Dtype d) {
  const uint8_t bits = static_cast<uint8_t>(DtypeBits(d));
  switch (d) {
    case Dtype::kBool:
      return {kDlBool, 8, 1};
    case Dtype::kU8:
    case Dtype::kU16:
    case Dtype::kU32:
    case Dtype::kU64:
      return {kDLUInt, bits, 1};
    case Dtype::kI8:
    case Dtype::kI16:
    case Dtype::kI32:
    case Dtype::kI64:
      return {kDLInt, bits, 1};
    case Dtype::kF16:
    case Dtype::kF32:
    case Dtype::kF64:
      return {kDLFloat, bits, 1};
    case Dtype::kBF16:
      return {kDLBfloat, 16, 1};
    case Dtype::kC64:
      return {kDLComplex, 64, 1};
    default:
      // fp8/fp6/fp4: raw storage bytes.
      return {kDLUInt, 8, 1};
  }
}

bool DlpackIsExact(Dtype d) {
  switch (d) {
    case Dtype::kF8E5M2:
    case Dtype::kF8E4M3:
    case Dtype::kF8E8M0:
    case Dtype::kF8E4M3Fnuz:
    case Dtype::kF8E5M2Fnuz:
    case Dtype::kF6E2M3:
    case Dtype::kF6E3M2:
    case Dtype::kF4:
      return false;
    default:
      return true;
  }
}

}  // namespace flashload
