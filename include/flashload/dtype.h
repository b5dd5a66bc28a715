// Element types of the safetensors format, with their sizes and DLPack mapping.
//
// Thread-safety: pure functions over constant tables. Lifetime: the table AllDtypes() returns, the
// DtypeInfo references and the names are static and stay valid for the life of the process.
#ifndef FLASHLOAD_DTYPE_H_
#define FLASHLOAD_DTYPE_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

namespace flashload {

// The 22 dtypes of the reference format. The enumerator order is the reference's own order of the
// type (smallest to largest); the writer sorts tensors by this order, descending, then by name.
enum class Dtype : uint8_t {
  kBool,
  kF4,
  kF6E2M3,
  kF6E3M2,
  kU8,
  kI8,
  kF8E5M2,
  kF8E4M3,
  kF8E8M0,
  kF8E4M3Fnuz,
  kF8E5M2Fnuz,
  kI16,
  kU16,
  kF16,
  kBF16,
  kI32,
  kU32,
  kF32,
  kC64,
  kF64,
  kI64,
  kU64,
};

inline constexpr int kDtypeCount = 22;

struct DtypeInfo {
  Dtype dtype;
  std::string_view name;  // as spelled in the header, e.g. "BF16"
  uint32_t bits;          // bits per element: 4, 6, 8, 16, 32, 64
  bool is_float;  // floating point (real or complex): the set a `--dtype` conversion applies to
};

// Table of every dtype, indexed by static_cast<int>(Dtype).
const std::array<DtypeInfo, kDtypeCount>& AllDtypes();
const DtypeInfo& GetDtypeInfo(Dtype d);
inline std::string_view DtypeName(Dtype d) { return GetDtypeInfo(d).name; }
inline uint32_t DtypeBits(Dtype d) { return GetDtypeInfo(d).bits; }

// Parses a header spelling ("F16"); nullopt for anything else (case-sensitive, as the reference).
std::optional<Dtype> ParseDtype(std::string_view name);

// DLPack type of a dtype: {code, bits, lanes}. BOOL is kDLBool (code 6, DLPack >= 0.8), 8 bits.
// The types DLPack cannot name (the fp8, fp6 and fp4 types) are exported as 8-bit unsigned
// integers, whatever their width; DlpackIsExact() is false for exactly those.
struct DlpackType {
  uint8_t code;  // DLDataTypeCode
  uint8_t bits;
  uint16_t lanes;
};
DlpackType ToDlpackType(Dtype d);
bool DlpackIsExact(Dtype d);

}  // namespace flashload

#endif  // FLASHLOAD_DTYPE_H_
