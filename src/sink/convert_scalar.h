// Scalar dtype conversions on bit patterns, shared by the CPU loops (convert.cc) and the CUDA
// kernels (convert.cu), so both produce the same bits.
//
// Every function maps the bit pattern of one element to the bit pattern of the result, with
// integer operations only: no host or device floating-point unit, no rounding mode, no _Float16.
// The code is written without data-dependent branches (all candidates are computed, then one is
// selected), so a loop over an array of them auto-vectorises on the CPU and does not diverge on
// the GPU.
//
// Semantics (IEEE 754 convertFormat):
// - Narrowing (F32 -> F16/BF16) rounds to nearest, ties to even. A finite value whose rounded
//   magnitude exceeds the target's largest finite value becomes infinity; subnormal results are
//   produced exactly (no flush to zero).
// - Widening (F16/BF16/fp8 -> F32) is exact, subnormal inputs included.
// - ±0 and ±inf keep their sign.
// - NaN stays NaN, quiet, with its sign and the leading bits of its payload (for narrowing, the
//   payload bits that fit; for widening, the payload moved to the top of the wider fraction) and
//   the quiet bit set. A NaN never rounds into infinity. The FNUZ fp8 types have one unsigned NaN
//   (0x80); it becomes the positive canonical quiet NaN (F32 0x7FC00000).
//
// The fp8 types: F8_E4M3 is OCP "E4M3FN" (bias 7, no infinities, NaN = S.1111.111, max 448);
// F8_E5M2 is IEEE-like (bias 15, inf = S.11111.00, NaN = S.11111.{01,10,11}, max 57344);
// F8_E4M3FNUZ (bias 8, max 240) and F8_E5M2FNUZ (bias 16, max 57344) have no infinities and no
// negative zero, and 0x80 is their only NaN. Every fp8 value is exactly representable in F16, BF16
// and F32, so conversions from fp8 never round.
//
// Thread-safety: pure functions.
#ifndef FLASHLOAD_SINK_CONVERT_SCALAR_H_
#define FLASHLOAD_SINK_CONVERT_SCALAR_H_

#include <cstdint>
#include <cstring>

#include "flashload/dtype.h"

#if defined(__CUDACC__)
#define FL_HD __host__ __device__
#else
#define FL_HD
#endif

namespace flashload::sink {

// The dtypes conversion reads (every float format with a converter) and writes. One list for the
// CPU code and the CUDA launcher.
inline bool IsConversionSource(Dtype d) {
  switch (d) {
    case Dtype::kF32:
    case Dtype::kF16:
    case Dtype::kBF16:
    case Dtype::kF8E4M3:
    case Dtype::kF8E5M2:
    case Dtype::kF8E4M3Fnuz:
    case Dtype::kF8E5M2Fnuz:
      return true;
    default:
      return false;
  }
}
inline bool IsConversionTarget(Dtype d) {
  return d == Dtype::kF32 || d == Dtype::kF16 || d == Dtype::kBF16;
}

// How a small float format encodes its special values.
enum class SpecialEncoding {
  kIeee,  // exponent all ones: infinity (fraction 0) or NaN (F16, F8_E5M2)
  kFn,    // no infinity; NaN only when exponent and fraction are all ones (F8_E4M3)
  kFnuz,  // no infinity, no negative zero; 1000...0 is the only NaN (the FNUZ fp8 types)
};

// Decodes a float with 1 sign bit, kExp exponent bits and kMan fraction bits (in the low
// 1 + kExp + kMan bits of `x`) to the bit pattern of the equal F32.
template <int kExp, int kMan, int kBias, SpecialEncoding kSpecial>
FL_HD inline uint32_t SmallFloatToF32Bits(uint32_t x) {
  constexpr uint32_t kManMask = (1u << kMan) - 1u;
  constexpr uint32_t kExpMax = (1u << kExp) - 1u;
  constexpr uint32_t kSignBit = 1u << (kExp + kMan);
  const uint32_t sign = (x & kSignBit) ? 0x80000000u : 0u;
  const uint32_t e = (x >> kMan) & kExpMax;
  const uint32_t m = x & kManMask;

  // Normal: rebias the exponent, move the fraction to the top of F32's 23 bits.
  const uint32_t normal = ((e + (127u - kBias)) << 23) | (m << (23 - kMan));

  // Subnormal (e == 0, m != 0): value = m * 2^(1 - bias - kMan). Shift m left by s until its
  // leading one reaches bit kMan; then value = 1.f * 2^(1 - bias - s). s is the count of leading
  // zeros of m << (31 - kMan), found by a branch-free binary search (constant shifts + selects).
  uint32_t y = m << (31 - kMan);
  uint32_t s = 0;
  bool z = (y >> 16) == 0;
  y = z ? y << 16 : y;
  s += z ? 16u : 0u;
  z = (y >> 24) == 0;
  y = z ? y << 8 : y;
  s += z ? 8u : 0u;
  z = (y >> 28) == 0;
  y = z ? y << 4 : y;
  s += z ? 4u : 0u;
  z = (y >> 30) == 0;
  y = z ? y << 2 : y;
  s += z ? 2u : 0u;
  z = (y >> 31) == 0;
  y = z ? y << 1 : y;
  s += z ? 1u : 0u;
  // y now holds the leading one at bit 31 and the rest of the fraction below it.
  const uint32_t subnormal = ((128u - kBias - s) << 23) | ((y << 1) >> 9);

  uint32_t out = e != 0 ? normal : (m != 0 ? subnormal : 0u);
  if constexpr (kSpecial == SpecialEncoding::kIeee) {
    const uint32_t special = 0x7F800000u | (m != 0 ? (0x00400000u | (m << (23 - kMan))) : 0u);
    out = e == kExpMax ? special : out;
  } else if constexpr (kSpecial == SpecialEncoding::kFn) {
    out = (e == kExpMax && m == kManMask) ? (0x7FC00000u | (m << (23 - kMan))) : out;
  } else {
    // FNUZ: the sign bit of 0x80 does not survive: the result is the canonical +qNaN.
    return x == kSignBit ? 0x7FC00000u : (sign | out);
  }
  return sign | out;
}

FL_HD inline uint32_t F16ToF32Bits(uint16_t h) {
  return SmallFloatToF32Bits<5, 10, 15, SpecialEncoding::kIeee>(h);
}

// F16ToF32Bits for vector loops: the subnormal case is one exact float subtraction instead of a
// leading-zero search ((1 + m/1024) * 2^-14 - 2^-14 = m * 2^-24; every operand and the result are
// normal floats, so flush-to-zero modes cannot change it). The same bits for every input (tested
// over all 65536).
inline uint32_t F16ToF32BitsVectorized(uint16_t h) {
  const uint32_t x = h;
  const uint32_t e = (x >> 10) & 0x1Fu;
  const uint32_t m = x & 0x3FFu;
  const uint32_t normal = ((e + 112u) << 23) | (m << 13);
  const uint32_t scaled_bits = (113u << 23) | (m << 13);
  float scaled;
  std::memcpy(&scaled, &scaled_bits, sizeof(scaled));
  const float value = scaled - 6.103515625e-05f;  // 2^-14
  uint32_t subnormal;
  std::memcpy(&subnormal, &value, sizeof(subnormal));
  // Selects as masks: a ternary here becomes a branch, and the loop is no longer vectorized.
  const uint32_t special = 0x7F800000u | (m << 13) | (static_cast<uint32_t>(m != 0) << 22);
  const uint32_t is_sub = 0u - static_cast<uint32_t>(e == 0);
  const uint32_t is_special = 0u - static_cast<uint32_t>(e == 31u);
  uint32_t out = (subnormal & is_sub) | (normal & ~is_sub);
  out = (special & is_special) | (out & ~is_special);
  return ((x & 0x8000u) << 16) | out;
}

FL_HD inline uint32_t BF16ToF32Bits(uint16_t b) {
  const uint32_t f = static_cast<uint32_t>(b) << 16;
  const bool nan = (f & 0x7FFFFFFFu) > 0x7F800000u;
  return nan ? (f | 0x00400000u) : f;
}

FL_HD inline uint32_t F8E4M3ToF32Bits(uint8_t x) {
  return SmallFloatToF32Bits<4, 3, 7, SpecialEncoding::kFn>(x);
}
FL_HD inline uint32_t F8E5M2ToF32Bits(uint8_t x) {
  return SmallFloatToF32Bits<5, 2, 15, SpecialEncoding::kIeee>(x);
}
FL_HD inline uint32_t F8E4M3FnuzToF32Bits(uint8_t x) {
  return SmallFloatToF32Bits<4, 3, 8, SpecialEncoding::kFnuz>(x);
}
FL_HD inline uint32_t F8E5M2FnuzToF32Bits(uint8_t x) {
  return SmallFloatToF32Bits<5, 2, 16, SpecialEncoding::kFnuz>(x);
}

// F32 -> F16, round to nearest even.
FL_HD inline uint16_t F32ToF16Bits(uint32_t f) {
  const uint32_t sign = (f >> 16) & 0x8000u;
  const uint32_t a = f & 0x7FFFFFFFu;

  // NaN: quiet bit set, top 9 payload bits kept.
  const uint32_t nan = 0x7E00u | ((a >> 13) & 0x3FFu);

  // Normal result (a >= 2^-14): rebias by 127 - 15, round the 13 dropped bits to nearest even.
  // A carry out of the fraction correctly bumps the exponent.
  const uint32_t normal = (a + 0xFFFu + ((a >> 13) & 1u) - 0x38000000u) >> 13;

  // Subnormal result (a < 2^-14): the result is round(m * 2^(e - 150) / 2^-24) = m >> (126 - e),
  // rounded to nearest even. The shift is clamped to [1, 31]; at 25 and above the result is 0
  // (the input is at most half of the smallest subnormal, 2^-24: a tie rounds to even zero).
  const uint32_t e = a >> 23;
  const uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
  uint32_t shift = e >= 125u ? 1u : 126u - e;
  shift = shift > 31u ? 31u : shift;
  const uint32_t subnormal = (m + (1u << (shift - 1u)) - 1u + ((m >> shift) & 1u)) >> shift;

  uint32_t out = a >= 0x38800000u ? normal : subnormal;
  // 65520 = 0x477FF000 is halfway between the largest finite F16 (65504) and 2^16; the tie rounds
  // to even, which is infinity. This also maps infinity to infinity.
  out = a >= 0x477FF000u ? 0x7C00u : out;
  out = a > 0x7F800000u ? nan : out;
  return static_cast<uint16_t>(sign | out);
}

// F32 -> BF16, round to nearest even. BF16 has F32's exponent range, so rounding the 16 dropped
// bits handles subnormals and overflow (the largest finite values round up into infinity) alike.
FL_HD inline uint16_t F32ToBF16Bits(uint32_t f) {
  const uint32_t rounded = (f + 0x7FFFu + ((f >> 16) & 1u)) >> 16;
  // NaN: keep sign and top payload bits, set the quiet bit; never let rounding carry into inf.
  const uint32_t nan = (f >> 16) | 0x0040u;
  return static_cast<uint16_t>((f & 0x7FFFFFFFu) > 0x7F800000u ? nan : rounded);
}

// Conversions between the 16-bit types go through F32: the widening step is exact, so there is
// only one rounding.
FL_HD inline uint16_t F16ToBF16Bits(uint16_t h) { return F32ToBF16Bits(F16ToF32Bits(h)); }
FL_HD inline uint16_t BF16ToF16Bits(uint16_t b) { return F32ToF16Bits(BF16ToF32Bits(b)); }

}  // namespace flashload::sink

#endif  // FLASHLOAD_SINK_CONVERT_SCALAR_H_
