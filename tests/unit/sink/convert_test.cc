#include "flashload/convert.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "sink/convert_scalar.h"
#include "support/status_matchers.h"

namespace flashload {
namespace {

using ::testing::HasSubstr;

// ---- An independent reference ---------------------------------------------------------------
// Formats are described by their parameters; values are decoded to double by arithmetic
// (sign * significand * 2^exponent with std::ldexp) and encoded by searching the sorted table of
// every finite value of the target and rounding in double, with the tie rule written out. Nothing
// here shares code or method with src/sink/convert_scalar.h.

enum class Specials { kIeee, kFn, kFnuz };

struct Format {
  const char* name;
  int exp_bits;
  int man_bits;
  int bias;
  Specials specials;
  int bits() const { return 1 + exp_bits + man_bits; }
};

constexpr Format kF32{"F32", 8, 23, 127, Specials::kIeee};
constexpr Format kF16{"F16", 5, 10, 15, Specials::kIeee};
constexpr Format kBF16{"BF16", 8, 7, 127, Specials::kIeee};
constexpr Format kE4M3{"F8_E4M3", 4, 3, 7, Specials::kFn};
constexpr Format kE5M2{"F8_E5M2", 5, 2, 15, Specials::kIeee};
constexpr Format kE4M3Fnuz{"F8_E4M3FNUZ", 4, 3, 8, Specials::kFnuz};
constexpr Format kE5M2Fnuz{"F8_E5M2FNUZ", 5, 2, 16, Specials::kFnuz};

struct Decoded {
  enum Kind { kFinite, kInf, kNan } kind = kFinite;
  bool negative = false;
  double value = 0;        // for kFinite (signed; -0.0 for negative zero)
  double nan_payload = 0;  // for kNan: the fraction field as a fraction of one, in [0, 1)
};

Decoded RefDecode(const Format& f, uint64_t bits) {
  const uint64_t man_count = uint64_t{1} << f.man_bits;
  const uint64_t exp_max = (uint64_t{1} << f.exp_bits) - 1;
  const bool negative = (bits >> (f.bits() - 1)) & 1;
  const uint64_t e = (bits >> f.man_bits) & exp_max;
  const uint64_t m = bits % man_count;
  Decoded d;
  d.negative = negative;
  if (f.specials == Specials::kFnuz && bits == (uint64_t{1} << (f.bits() - 1))) {
    d.kind = Decoded::kNan;
    d.negative = false;
    return d;
  }
  if ((f.specials == Specials::kIeee && e == exp_max) ||
      (f.specials == Specials::kFn && e == exp_max && m == man_count - 1)) {
    d.kind = m == 0 && f.specials == Specials::kIeee ? Decoded::kInf : Decoded::kNan;
    d.nan_payload = static_cast<double>(m) / static_cast<double>(man_count);
    return d;
  }
  const double significand = e == 0 ? static_cast<double>(m) : static_cast<double>(man_count + m);
  const int exponent = (e == 0 ? 1 : static_cast<int>(e)) - f.bias - f.man_bits;
  d.value = std::ldexp(significand, exponent);
  if (negative) d.value = -d.value;
  return d;
}

// Every non-negative finite value of a format in increasing order with its bit pattern; the entry
// after the largest finite value is 2^(emax + 1), which IEEE rounding treats as the next value
// ("as if the exponent range were unbounded") and which stands for infinity.
struct Ladder {
  std::vector<double> values;
  std::vector<uint64_t> patterns;
};

Ladder BuildLadder(const Format& f) {
  Ladder l;
  for (uint64_t b = 0; b < (uint64_t{1} << (f.bits() - 1)); ++b) {
    const Decoded d = RefDecode(f, b);
    if (d.kind != Decoded::kFinite) continue;
    l.values.push_back(d.value);
    l.patterns.push_back(b);
  }
  const double max = l.values.back();
  const int emax = std::ilogb(max);
  l.values.push_back(std::ldexp(1.0, emax + 1));
  l.patterns.push_back(l.patterns.back() + 1);  // the infinity pattern of F16/BF16
  return l;
}

// Encodes a finite double into an IEEE format with infinities (F16, BF16), rounding to nearest,
// ties to the even pattern; magnitudes at or beyond the top rung become infinity.
uint64_t RefEncodeFinite(const Format& f, const Ladder& l, double v) {
  const uint64_t sign = std::signbit(v) ? uint64_t{1} << (f.bits() - 1) : 0;
  const double a = std::fabs(v);
  const uint64_t inf = l.patterns.back();
  if (a >= l.values.back()) return sign | inf;
  // First rung >= a.
  const size_t hi = std::lower_bound(l.values.begin(), l.values.end(), a) - l.values.begin();
  if (l.values[hi] == a) return sign | l.patterns[hi];
  const size_t lo = hi - 1;  // a > 0 = values[0], so hi >= 1
  const double down = a - l.values[lo];
  const double up = l.values[hi] - a;
  uint64_t pick;
  if (down < up) {
    pick = l.patterns[lo];
  } else if (up < down) {
    pick = l.patterns[hi];
  } else {
    pick = (l.patterns[lo] % 2 == 0) ? l.patterns[lo] : l.patterns[hi];
  }
  return sign | pick;
}

// The NaN rule: quiet NaN, sign kept, the leading bits of the payload kept, quiet bit set.
uint64_t RefNan(const Format& to, const Decoded& d) {
  const uint64_t man_count = uint64_t{1} << to.man_bits;
  const uint64_t exp_all = ((uint64_t{1} << to.exp_bits) - 1) << to.man_bits;
  const uint64_t payload = static_cast<uint64_t>(std::floor(d.nan_payload * man_count));
  const uint64_t sign = d.negative ? uint64_t{1} << (to.bits() - 1) : 0;
  return sign | exp_all | (man_count / 2) | payload;
}

class Reference {
 public:
  Reference() : f16_(BuildLadder(kF16)), bf16_(BuildLadder(kBF16)) {}

  // Expected bits of converting `bits` of format `from` to `to` (F32, F16 or BF16).
  uint64_t Convert(const Format& from, const Format& to, uint64_t bits) const {
    const Decoded d = RefDecode(from, bits);
    if (d.kind == Decoded::kNan) return RefNan(to, d);
    const uint64_t sign = d.negative ? uint64_t{1} << (to.bits() - 1) : 0;
    if (d.kind == Decoded::kInf) {
      return sign | (((uint64_t{1} << to.exp_bits) - 1) << to.man_bits);
    }
    if (to.bits() == 32) {
      // Every input here is exactly a float, so the cast does not round.
      const float f = static_cast<float>(d.value);
      EXPECT_EQ(static_cast<double>(f), d.value) << "reference: not exact";
      return std::bit_cast<uint32_t>(f);
    }
    return RefEncodeFinite(to, to.exp_bits == 5 ? f16_ : bf16_, d.value);
  }

 private:
  Ladder f16_;
  Ladder bf16_;
};

const Reference& Ref() {
  static const Reference* const kRef = new Reference();
  return *kRef;
}

std::string Hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

// Converts every input with ConvertElements (one call, the whole buffer) and compares each result
// with the reference, bit for bit. Reports the first few mismatches.
template <typename In, typename Out>
void ExpectMatchesReference(Dtype from_dtype, Dtype to_dtype, const Format& from, const Format& to,
                            const std::vector<In>& in) {
  std::vector<Out> out(in.size());
  FL_ASSERT_OK(ConvertElements(from_dtype, to_dtype, in.data(), out.data(), in.size()));
  int mismatches = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    const uint64_t want = Ref().Convert(from, to, in[i]);
    if (out[i] != want) {
      if (++mismatches <= 10) {
        ADD_FAILURE() << from.name << " " << Hex(in[i]) << " -> " << to.name << ": got "
                      << Hex(out[i]) << ", want " << Hex(want);
      }
    }
  }
  EXPECT_EQ(mismatches, 0) << "of " << in.size() << " inputs";
}

std::vector<uint16_t> All16() {
  std::vector<uint16_t> v(65536);
  for (uint32_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint16_t>(i);
  return v;
}

std::vector<uint8_t> All8() {
  std::vector<uint8_t> v(256);
  for (uint32_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint8_t>(i);
  return v;
}

// F32 inputs: both signs, every exponent, and per exponent the mantissas around every rounding
// position (for every number k of dropped bits: just below, at and above half of 2^k, with the
// kept part even and odd), single bits, all ones, and seeded random ones. NaNs with payloads and
// the infinities come from exponent 255.
std::vector<uint32_t> StructuredF32Sample() {
  std::vector<uint32_t> mantissas = {0, 1, 2, 3, 0x7FFFFF, 0x7FFFFE, 0x400000, 0x3FFFFF, 0x400001};
  for (int k = 1; k <= 23; ++k) {
    const uint32_t half = 1u << (k - 1);
    const uint32_t step = 1u << k;
    for (uint32_t kept : {0u, 1u, 2u, 3u, (0x7FFFFFu >> k) - 1, 0x7FFFFFu >> k}) {
      for (uint32_t low : {half - 1, half, half + 1, 0u, step - 1}) {
        mantissas.push_back(((kept << k) | low) & 0x7FFFFFu);
      }
    }
  }
  for (int b = 0; b < 23; ++b) mantissas.push_back(1u << b);
  std::mt19937 rng(20240611);
  for (int i = 0; i < 64; ++i) mantissas.push_back(rng() & 0x7FFFFFu);
  std::sort(mantissas.begin(), mantissas.end());
  mantissas.erase(std::unique(mantissas.begin(), mantissas.end()), mantissas.end());

  std::vector<uint32_t> out;
  for (uint32_t sign : {0u, 0x80000000u}) {
    for (uint32_t e = 0; e < 256; ++e) {
      for (uint32_t m : mantissas) out.push_back(sign | (e << 23) | m);
    }
  }
  return out;
}

// ---- The reference itself, against facts about the formats -------------------------------

TEST(ConvertReferenceTest, DecodesKnownValues) {
  EXPECT_EQ(RefDecode(kF16, 0x7BFF).value, 65504.0);
  EXPECT_EQ(RefDecode(kF16, 0x0001).value, std::ldexp(1.0, -24));
  EXPECT_EQ(RefDecode(kF16, 0x3C00).value, 1.0);
  EXPECT_EQ(RefDecode(kF16, 0x7C00).kind, Decoded::kInf);
  EXPECT_EQ(RefDecode(kBF16, 0x3F80).value, 1.0);
  EXPECT_EQ(RefDecode(kBF16, 0x0001).value, std::ldexp(1.0, -133));
  EXPECT_EQ(RefDecode(kF32, 0x3F800000).value, 1.0);
  EXPECT_EQ(RefDecode(kE4M3, 0x7E).value, 448.0);
  EXPECT_EQ(RefDecode(kE4M3, 0x01).value, std::ldexp(1.0, -9));
  EXPECT_EQ(RefDecode(kE4M3, 0x7F).kind, Decoded::kNan);
  EXPECT_EQ(RefDecode(kE4M3, 0x78).value, 256.0);  // no infinity in E4M3
  EXPECT_EQ(RefDecode(kE5M2, 0x7B).value, 57344.0);
  EXPECT_EQ(RefDecode(kE5M2, 0x7C).kind, Decoded::kInf);
  EXPECT_EQ(RefDecode(kE5M2, 0x01).value, std::ldexp(1.0, -16));
  EXPECT_EQ(RefDecode(kE4M3Fnuz, 0x7F).value, 240.0);
  EXPECT_EQ(RefDecode(kE4M3Fnuz, 0x01).value, std::ldexp(1.0, -10));
  EXPECT_EQ(RefDecode(kE4M3Fnuz, 0x80).kind, Decoded::kNan);
  EXPECT_EQ(RefDecode(kE5M2Fnuz, 0x7F).value, 57344.0);
  EXPECT_EQ(RefDecode(kE5M2Fnuz, 0x01).value, std::ldexp(1.0, -17));
  EXPECT_EQ(RefDecode(kE5M2Fnuz, 0x80).kind, Decoded::kNan);
  EXPECT_EQ(RefDecode(kE5M2Fnuz, 0xFF).value, -57344.0);
}

TEST(ConvertReferenceTest, EncodesKnownValues) {
  const Ladder f16 = BuildLadder(kF16);
  EXPECT_EQ(RefEncodeFinite(kF16, f16, 65504.0), 0x7BFFu);
  EXPECT_EQ(RefEncodeFinite(kF16, f16, 65519.0), 0x7BFFu);
  EXPECT_EQ(RefEncodeFinite(kF16, f16, 65520.0), 0x7C00u);               // tie to even: infinity
  EXPECT_EQ(RefEncodeFinite(kF16, f16, std::ldexp(1.0, -25)), 0x0000u);  // tie to even: zero
  EXPECT_EQ(RefEncodeFinite(kF16, f16, std::ldexp(3.0, -25)), 0x0002u);  // tie to even: 2
  EXPECT_EQ(RefEncodeFinite(kF16, f16, -1.0), 0xBC00u);
  EXPECT_EQ(RefEncodeFinite(kF16, f16, -0.0), 0x8000u);
}

// ---- Every 16-bit and fp8 pattern ---------------------------------------------------------------

TEST(ConvertTest, VectorizedF16DecodeEqualsTheScalarOneForEveryPattern) {
  for (uint32_t h = 0; h <= 0xFFFF; ++h) {
    ASSERT_EQ(sink::F16ToF32BitsVectorized(static_cast<uint16_t>(h)),
              sink::F16ToF32Bits(static_cast<uint16_t>(h)))
        << std::hex << h;
  }
}

TEST(ConvertTest, F16ToF32EveryPattern) {
  ExpectMatchesReference<uint16_t, uint32_t>(Dtype::kF16, Dtype::kF32, kF16, kF32, All16());
}

TEST(ConvertTest, BF16ToF32EveryPattern) {
  ExpectMatchesReference<uint16_t, uint32_t>(Dtype::kBF16, Dtype::kF32, kBF16, kF32, All16());
}

TEST(ConvertTest, F16ToBF16EveryPattern) {
  ExpectMatchesReference<uint16_t, uint16_t>(Dtype::kF16, Dtype::kBF16, kF16, kBF16, All16());
}

TEST(ConvertTest, BF16ToF16EveryPattern) {
  ExpectMatchesReference<uint16_t, uint16_t>(Dtype::kBF16, Dtype::kF16, kBF16, kF16, All16());
}

struct Fp8Case {
  Dtype dtype;
  const Format* format;
};

void PrintTo(const Fp8Case& c, std::ostream* os) { *os << c.format->name; }

class ConvertFp8Test : public ::testing::TestWithParam<Fp8Case> {};

TEST_P(ConvertFp8Test, EveryPatternToEachTarget) {
  const Fp8Case c = GetParam();
  ExpectMatchesReference<uint8_t, uint32_t>(c.dtype, Dtype::kF32, *c.format, kF32, All8());
  ExpectMatchesReference<uint8_t, uint16_t>(c.dtype, Dtype::kF16, *c.format, kF16, All8());
  ExpectMatchesReference<uint8_t, uint16_t>(c.dtype, Dtype::kBF16, *c.format, kBF16, All8());
}

INSTANTIATE_TEST_SUITE_P(ConvertAllFp8, ConvertFp8Test,
                         ::testing::Values(Fp8Case{Dtype::kF8E4M3, &kE4M3},
                                           Fp8Case{Dtype::kF8E5M2, &kE5M2},
                                           Fp8Case{Dtype::kF8E4M3Fnuz, &kE4M3Fnuz},
                                           Fp8Case{Dtype::kF8E5M2Fnuz, &kE5M2Fnuz}),
                         [](const auto& info) {
                           std::string n = info.param.format->name;
                           n.erase(std::remove(n.begin(), n.end(), '_'), n.end());
                           return n;
                         });

TEST(ConvertTest, Fp8SpecialValues) {
  // Spot checks that do not depend on the reference: NaN encodings and the largest values.
  const std::vector<uint8_t> in = {0x7F, 0xFF, 0x7E, 0x80};
  std::vector<uint32_t> out(in.size());
  FL_ASSERT_OK(ConvertElements(Dtype::kF8E4M3, Dtype::kF32, in.data(), out.data(), in.size()));
  EXPECT_TRUE(std::isnan(std::bit_cast<float>(out[0])));
  EXPECT_TRUE(std::isnan(std::bit_cast<float>(out[1])));
  EXPECT_TRUE(std::signbit(std::bit_cast<float>(out[1])));
  EXPECT_EQ(std::bit_cast<float>(out[2]), 448.0f);
  EXPECT_EQ(out[3], 0x80000000u);  // -0
  FL_ASSERT_OK(ConvertElements(Dtype::kF8E4M3Fnuz, Dtype::kF32, in.data(), out.data(), in.size()));
  EXPECT_EQ(std::bit_cast<float>(out[0]), 240.0f);
  EXPECT_EQ(out[3], 0x7FC00000u);  // the one NaN
  FL_ASSERT_OK(ConvertElements(Dtype::kF8E5M2, Dtype::kF32, in.data(), out.data(), in.size()));
  EXPECT_TRUE(std::isnan(std::bit_cast<float>(out[0])));
  EXPECT_TRUE(std::isnan(std::bit_cast<float>(out[2])));
  const uint8_t e5m2_inf[2] = {0x7C, 0xFC};
  FL_ASSERT_OK(ConvertElements(Dtype::kF8E5M2, Dtype::kF32, e5m2_inf, out.data(), 2));
  EXPECT_EQ(std::bit_cast<float>(out[0]), std::numeric_limits<float>::infinity());
  EXPECT_EQ(std::bit_cast<float>(out[1]), -std::numeric_limits<float>::infinity());
}

// ---- F32 narrowing on a structured sample -------------------------------------------------------

TEST(ConvertTest, F32ToF16StructuredSample) {
  const std::vector<uint32_t> in = StructuredF32Sample();
  ASSERT_GT(in.size(), 100000u);
  ExpectMatchesReference<uint32_t, uint16_t>(Dtype::kF32, Dtype::kF16, kF32, kF16, in);
}

TEST(ConvertTest, F32ToBF16StructuredSample) {
  const std::vector<uint32_t> in = StructuredF32Sample();
  ExpectMatchesReference<uint32_t, uint16_t>(Dtype::kF32, Dtype::kBF16, kF32, kBF16, in);
}

TEST(ConvertTest, F32NarrowingEdgeCases) {
  struct Case {
    float in;
    uint16_t f16;
    uint16_t bf16;
  };
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<Case> cases = {
      {0.0f, 0x0000, 0x0000},
      {-0.0f, 0x8000, 0x8000},
      {1.0f, 0x3C00, 0x3F80},
      {65504.0f, 0x7BFF, 0x4780},
      {65519.996f, 0x7BFF, 0x4780},
      {65520.0f, 0x7C00, 0x4780},  // f16: the tie rounds to even, which is infinity
      {-1e6f, 0xFC00, 0xC974},
      {inf, 0x7C00, 0x7F80},
      {-inf, 0xFC00, 0xFF80},
      {std::ldexp(1.0f, -24), 0x0001, 0x3380},   // smallest f16 subnormal
      {std::ldexp(1.0f, -25), 0x0000, 0x3300},   // tie to even: zero
      {std::ldexp(1.5f, -25), 0x0001, 0x3340},   // above the tie
      {std::ldexp(1.0f, -149), 0x0000, 0x0000},  // smallest f32 subnormal: bf16 tie to even zero
      {std::ldexp(1.0f, -133), 0x0000, 0x0001},  // smallest bf16 subnormal
      {std::numeric_limits<float>::max(), 0x7C00, 0x7F80},  // bf16 overflows by rounding
  };
  for (const Case& c : cases) {
    uint16_t h = 0, b = 0;
    FL_ASSERT_OK(ConvertElements(Dtype::kF32, Dtype::kF16, &c.in, &h, 1));
    FL_ASSERT_OK(ConvertElements(Dtype::kF32, Dtype::kBF16, &c.in, &b, 1));
    EXPECT_EQ(h, c.f16) << c.in;
    EXPECT_EQ(b, c.bf16) << c.in;
  }
}

TEST(ConvertTest, NanNeverBecomesInfinity) {
  // Payloads whose rounding would carry into the exponent field if NaN were rounded like a number.
  const std::vector<uint32_t> in = {0x7FFFFFFF, 0xFFFFFFFF, 0x7F800001,
                                    0x7FBFFFFF, 0x7F808000, 0xFF800001};
  std::vector<uint16_t> h(in.size()), b(in.size());
  FL_ASSERT_OK(ConvertElements(Dtype::kF32, Dtype::kF16, in.data(), h.data(), in.size()));
  FL_ASSERT_OK(ConvertElements(Dtype::kF32, Dtype::kBF16, in.data(), b.data(), in.size()));
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(h[i] & 0x7E00, 0x7E00) << Hex(in[i]) << " -> " << Hex(h[i]) << " is not a quiet NaN";
    EXPECT_EQ(b[i] & 0x7FC0, 0x7FC0) << Hex(in[i]) << " -> " << Hex(b[i]) << " is not a quiet NaN";
    EXPECT_EQ(h[i] >> 15, in[i] >> 31);
    EXPECT_EQ(b[i] >> 15, in[i] >> 31);
  }
}

// The CUDA kernels call the scalar functions directly; they must agree with the buffer code.
TEST(ConvertTest, ScalarFunctionsAgreeWithBufferCode) {
  const std::vector<uint16_t> all = All16();
  std::vector<uint32_t> f32(all.size());
  std::vector<uint16_t> b16(all.size());
  FL_ASSERT_OK(ConvertElements(Dtype::kF16, Dtype::kF32, all.data(), f32.data(), all.size()));
  FL_ASSERT_OK(ConvertElements(Dtype::kF16, Dtype::kBF16, all.data(), b16.data(), all.size()));
  for (uint32_t i = 0; i < all.size(); ++i) {
    ASSERT_EQ(sink::F16ToF32Bits(all[i]), f32[i]) << Hex(i);
    ASSERT_EQ(sink::F16ToBF16Bits(all[i]), b16[i]) << Hex(i);
    ASSERT_EQ(sink::BF16ToF16Bits(all[i]), Ref().Convert(kBF16, kF16, i)) << Hex(i);
    ASSERT_EQ(sink::BF16ToF32Bits(all[i]), Ref().Convert(kBF16, kF32, i)) << Hex(i);
  }
  for (uint32_t x : StructuredF32Sample()) {
    ASSERT_EQ(sink::F32ToF16Bits(x), Ref().Convert(kF32, kF16, x)) << Hex(x);
    ASSERT_EQ(sink::F32ToBF16Bits(x), Ref().Convert(kF32, kBF16, x)) << Hex(x);
  }
}

// ---- Buffers: in place, alignment, identity, errors ------------------------------------------

std::vector<uint32_t> RandomF32Bits(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint32_t> v(n);
  for (auto& x : v) x = rng();
  return v;
}

class ConvertInPlaceTest : public ::testing::TestWithParam<size_t> {};

TEST_P(ConvertInPlaceTest, NarrowingInPlaceEqualsOutOfPlace) {
  const size_t n = GetParam();
  const std::vector<uint32_t> in = RandomF32Bits(n, static_cast<uint32_t>(n));
  for (Dtype to : {Dtype::kF16, Dtype::kBF16}) {
    std::vector<uint16_t> expected(n);
    FL_ASSERT_OK(ConvertElements(Dtype::kF32, to, in.data(), expected.data(), n));
    std::vector<uint32_t> buf = in;
    FL_ASSERT_OK(ConvertElements(Dtype::kF32, to, buf.data(), buf.data(), n));
    std::vector<uint16_t> got(n);
    std::memcpy(got.data(), buf.data(), n * sizeof(uint16_t));
    EXPECT_EQ(got, expected) << DtypeName(to) << " n=" << n;
  }
  // Same-size conversions in place.
  std::vector<uint16_t> halves(n);
  std::memcpy(halves.data(), in.data(), n * sizeof(uint16_t));
  std::vector<uint16_t> expected(n);
  FL_ASSERT_OK(ConvertElements(Dtype::kF16, Dtype::kBF16, halves.data(), expected.data(), n));
  FL_ASSERT_OK(ConvertElements(Dtype::kF16, Dtype::kBF16, halves.data(), halves.data(), n));
  EXPECT_EQ(halves, expected);
}

// Below one block, exactly one block, and several blocks with a tail.
INSTANTIATE_TEST_SUITE_P(ConvertCounts, ConvertInPlaceTest,
                         ::testing::Values(size_t{1}, size_t{7}, size_t{512}, size_t{4099}));

TEST(ConvertTest, UnalignedBuffersGiveTheSameBits) {
  const size_t n = 1031;
  const std::vector<uint32_t> in = RandomF32Bits(n, 3);
  std::vector<uint16_t> expected(n);
  FL_ASSERT_OK(ConvertElements(Dtype::kF32, Dtype::kBF16, in.data(), expected.data(), n));
  std::vector<unsigned char> src(n * 4 + 1), dst(n * 2 + 3);
  std::memcpy(src.data() + 1, in.data(), n * 4);
  FL_ASSERT_OK(ConvertElements(Dtype::kF32, Dtype::kBF16, src.data() + 1, dst.data() + 3, n));
  EXPECT_EQ(std::memcmp(dst.data() + 3, expected.data(), n * 2), 0);
  // And widening from an odd address.
  std::vector<uint32_t> wide(n), wide_unaligned(n);
  FL_ASSERT_OK(ConvertElements(Dtype::kBF16, Dtype::kF32, expected.data(), wide.data(), n));
  FL_ASSERT_OK(
      ConvertElements(Dtype::kBF16, Dtype::kF32, dst.data() + 3, wide_unaligned.data(), n));
  EXPECT_EQ(wide, wide_unaligned);
}

TEST(ConvertTest, DoesNotWritePastTheOutput) {
  const size_t n = 515;
  const std::vector<uint32_t> in = RandomF32Bits(n, 9);
  std::vector<uint16_t> out(n + 8, 0xABCD);
  FL_ASSERT_OK(ConvertElements(Dtype::kF32, Dtype::kF16, in.data(), out.data(), n));
  for (size_t i = n; i < out.size(); ++i) EXPECT_EQ(out[i], 0xABCD) << i;
}

TEST(ConvertTest, IdentityCopiesEveryDtype) {
  for (const DtypeInfo& info : AllDtypes()) {
    if (info.bits % 8 != 0) continue;
    EXPECT_TRUE(CanConvert(info.dtype, info.dtype)) << info.name;
    const size_t n = 37;
    const size_t bytes = n * info.bits / 8;
    std::vector<unsigned char> src(bytes), dst(bytes, 0);
    for (size_t i = 0; i < bytes; ++i) src[i] = static_cast<unsigned char>(i * 7 + 1);
    FL_ASSERT_OK(ConvertElements(info.dtype, info.dtype, src.data(), dst.data(), n));
    EXPECT_EQ(src, dst) << info.name;
    FL_EXPECT_OK(ConvertElements(info.dtype, info.dtype, src.data(), src.data(), n));
  }
}

TEST(ConvertTest, CanConvertIsExactlyTheSupportedSet) {
  const std::vector<Dtype> wide = {Dtype::kF32, Dtype::kF16, Dtype::kBF16};
  const std::vector<Dtype> fp8 = {Dtype::kF8E4M3, Dtype::kF8E5M2, Dtype::kF8E4M3Fnuz,
                                  Dtype::kF8E5M2Fnuz};
  int supported = 0;
  for (const DtypeInfo& from : AllDtypes()) {
    for (const DtypeInfo& to : AllDtypes()) {
      if (from.dtype == to.dtype) continue;
      const bool from_ok = std::count(wide.begin(), wide.end(), from.dtype) +
                               std::count(fp8.begin(), fp8.end(), from.dtype) >
                           0;
      const bool want = from_ok && std::count(wide.begin(), wide.end(), to.dtype) > 0;
      EXPECT_EQ(CanConvert(from.dtype, to.dtype), want) << from.name << " -> " << to.name;
      supported += want;
    }
  }
  EXPECT_EQ(supported, 6 + 4 * 3);
}

TEST(ConvertTest, UnsupportedPairIsInvalidArgumentNamingBoth) {
  const std::vector<std::pair<Dtype, Dtype>> pairs = {
      {Dtype::kF32, Dtype::kF8E4M3},    {Dtype::kI32, Dtype::kF32},
      {Dtype::kF16, Dtype::kI8},        {Dtype::kF64, Dtype::kF32},
      {Dtype::kF8E4M3, Dtype::kF8E5M2}, {Dtype::kF8E8M0, Dtype::kF32}};
  uint32_t src[4] = {1, 2, 3, 4};
  uint32_t dst[4] = {7, 7, 7, 7};
  for (const auto& [from, to] : pairs) {
    const Status s = ConvertElements(from, to, src, dst, 1);
    EXPECT_THAT(
        s, StatusIs(StatusCode::kInvalidArgument, AllOf(HasSubstr(std::string(DtypeName(from))),
                                                        HasSubstr(std::string(DtypeName(to))))));
    EXPECT_FALSE(CanConvert(from, to));
  }
  EXPECT_EQ(dst[0], 7u) << "nothing is written on error";
}

TEST(ConvertTest, OverlapOtherThanInPlaceNarrowingIsRejected) {
  std::vector<uint32_t> buf(64, 0x3F800000);
  // Widening in place would overwrite inputs before they are read.
  EXPECT_THAT(ConvertElements(Dtype::kBF16, Dtype::kF32, buf.data(), buf.data(), 32),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("overlap")));
  // A shifted destination overlapping the source.
  EXPECT_THAT(ConvertElements(Dtype::kF32, Dtype::kF16, buf.data() + 1, buf.data(), 32),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("overlap")));
  EXPECT_THAT(ConvertElements(Dtype::kF32, Dtype::kF32, buf.data() + 1, buf.data(), 32),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("overlap")));
  // Adjacent (touching, not overlapping) buffers are fine.
  FL_EXPECT_OK(ConvertElements(Dtype::kF32, Dtype::kF16, buf.data() + 32, buf.data(), 32));
}

TEST(ConvertTest, NullBufferAndOverflowAreInvalidArgument) {
  uint32_t x = 0;
  EXPECT_THAT(ConvertElements(Dtype::kF32, Dtype::kF16, nullptr, &x, 1),
              StatusIs(StatusCode::kInvalidArgument));
  EXPECT_THAT(ConvertElements(Dtype::kF32, Dtype::kF16, &x, nullptr, 1),
              StatusIs(StatusCode::kInvalidArgument));
  FL_EXPECT_OK(ConvertElements(Dtype::kF32, Dtype::kF16, nullptr, nullptr, 0));
  EXPECT_THAT(ConvertElements(Dtype::kF32, Dtype::kF16, &x, &x, uint64_t{1} << 63),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("overflow")));
}

// ---- Rules --------------------------------------------------------------------------------------

Dtype Target(const ConvertSpec& spec, std::string_view name, Dtype stored) {
  Result<Dtype> r = TargetDtype(name, stored, spec);
  EXPECT_THAT(r, IsOk());
  return r.ok() ? *r : stored;
}

TEST(ConvertSpecTest, BlanketConvertsFloatsOnly) {
  FL_ASSERT_OK_AND_ASSIGN(ConvertSpec spec, ParseConvertSpec("bf16"));
  ASSERT_EQ(spec.rules.size(), 1u);
  for (Dtype d : {Dtype::kF32, Dtype::kF16, Dtype::kBF16, Dtype::kF8E4M3, Dtype::kF8E5M2,
                  Dtype::kF8E4M3Fnuz, Dtype::kF8E5M2Fnuz}) {
    EXPECT_EQ(Target(spec, "w", d), Dtype::kBF16) << DtypeName(d);
  }
  for (Dtype d : {Dtype::kI8, Dtype::kU8, Dtype::kI16, Dtype::kI32, Dtype::kI64, Dtype::kU64,
                  Dtype::kBool, Dtype::kF64, Dtype::kC64, Dtype::kF8E8M0, Dtype::kF4}) {
    EXPECT_EQ(Target(spec, "w", d), d) << DtypeName(d) << " must be left as stored";
  }
}

TEST(ConvertSpecTest, SpellingsAreCaseInsensitiveWithAliases) {
  for (const char* text : {"bf16", "BF16", "bfloat16", " Bf16 "}) {
    FL_ASSERT_OK_AND_ASSIGN(ConvertSpec spec, ParseConvertSpec(text));
    EXPECT_EQ(Target(spec, "w", Dtype::kF32), Dtype::kBF16) << text;
  }
  for (const char* text : {"f16", "fp16", "half", "float16"}) {
    FL_ASSERT_OK_AND_ASSIGN(ConvertSpec spec, ParseConvertSpec(text));
    EXPECT_EQ(Target(spec, "w", Dtype::kF32), Dtype::kF16) << text;
  }
  FL_ASSERT_OK_AND_ASSIGN(ConvertSpec spec, ParseConvertSpec("f8_e4m3fnuz=fp32"));
  EXPECT_EQ(Target(spec, "w", Dtype::kF8E4M3Fnuz), Dtype::kF32);
}

TEST(ConvertSpecTest, PerDtypeMapping) {
  FL_ASSERT_OK_AND_ASSIGN(ConvertSpec spec, ParseConvertSpec("F32=BF16,F8_E4M3=F16"));
  EXPECT_EQ(Target(spec, "a", Dtype::kF32), Dtype::kBF16);
  EXPECT_EQ(Target(spec, "a", Dtype::kF8E4M3), Dtype::kF16);
  EXPECT_EQ(Target(spec, "a", Dtype::kF16), Dtype::kF16);  // no rule: stored
  EXPECT_EQ(Target(spec, "a", Dtype::kF8E5M2), Dtype::kF8E5M2);
}

TEST(ConvertSpecTest, PrecedenceGlobThenDtypeThenBlanket) {
  FL_ASSERT_OK_AND_ASSIGN(
      ConvertSpec spec,
      ParseConvertSpec("f16, F32=BF16, *.norm.weight:keep, lm_head.*:F32, *norm*:BF16"));
  EXPECT_EQ(Target(spec, "model.layers.0.mlp.weight", Dtype::kF32), Dtype::kBF16);
  EXPECT_EQ(Target(spec, "model.layers.0.mlp.weight", Dtype::kBF16), Dtype::kF16);
  EXPECT_EQ(Target(spec, "model.layers.0.norm.weight", Dtype::kF32), Dtype::kF32);  // keep
  EXPECT_EQ(Target(spec, "model.layers.0.norm.weight", Dtype::kBF16), Dtype::kBF16);
  EXPECT_EQ(Target(spec, "model.norm.bias", Dtype::kF32), Dtype::kBF16);  // third glob
  EXPECT_EQ(Target(spec, "lm_head.weight", Dtype::kBF16), Dtype::kF32);
  EXPECT_EQ(Target(spec, "lm_head.weight", Dtype::kI32), Dtype::kI32);  // integers untouched
}

TEST(ConvertSpecTest, EmptySpecChangesNothing) {
  for (const char* text : {"", "  ", ",", " , "}) {
    FL_ASSERT_OK_AND_ASSIGN(ConvertSpec spec, ParseConvertSpec(text));
    EXPECT_TRUE(spec.empty()) << '"' << text << '"';
    EXPECT_EQ(Target(spec, "w", Dtype::kF32), Dtype::kF32);
  }
}

TEST(ConvertSpecTest, ErrorsNameTheItem) {
  struct Case {
    const char* text;
    const char* item;
    const char* why;
  };
  const std::vector<Case> cases = {
      {"bf17", "bf17", "unknown dtype"},
      {"F32=bf17", "F32=bf17", "unknown dtype"},
      {"XX=F16", "XX=F16", "unknown dtype"},
      {"F8_E4M3", "F8_E4M3", "must be F32, F16 or BF16"},
      {"F32=F8_E5M2", "F32=F8_E5M2", "must be F32, F16 or BF16"},
      {"I32=F16", "I32=F16", "cannot convert I32 to F16"},
      {"F64=F32", "F64=F32", "cannot convert F64 to F32"},
      {"bf16,f16", "f16", "second blanket"},
      {"F32=BF16,f32=f16", "f32=f16", "second rule for F32"},
      {":F16", ":F16", "empty tensor-name glob"},
      {"w.*:I8", "w.*:I8", "must be F32, F16 or BF16"},
      {"w.*:", "w.*:", "unknown dtype"},
      {"keep", "keep", "unknown dtype"},
  };
  for (const Case& c : cases) {
    EXPECT_THAT(ParseConvertSpec(c.text),
                StatusIs(StatusCode::kInvalidArgument,
                         AllOf(HasSubstr(std::string("\"") + c.item + "\""), HasSubstr(c.why))))
        << c.text;
  }
}

TEST(ConvertSpecTest, HandBuiltImpossibleRuleIsAnErrorNamingTheTensor) {
  ConvertSpec spec;
  spec.rules.push_back({DtypeRule::Match::kAnyFloat, Dtype::kF32, "", Dtype::kF8E4M3});
  EXPECT_THAT(TargetDtype("enc.w", Dtype::kF32, spec),
              StatusIs(StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("enc.w"), HasSubstr("F32"), HasSubstr("F8_E4M3"))));
  // The same rule never touches an integer tensor.
  EXPECT_EQ(Target(spec, "enc.ids", Dtype::kI64), Dtype::kI64);
}

TEST(ConvertGlobTest, Matches) {
  EXPECT_TRUE(GlobMatches("*", ""));
  EXPECT_TRUE(GlobMatches("*", "a.b/c"));
  EXPECT_TRUE(GlobMatches("a?c", "abc"));
  EXPECT_FALSE(GlobMatches("a?c", "ac"));
  EXPECT_TRUE(GlobMatches("*.weight", "model.layers.3.weight"));
  EXPECT_FALSE(GlobMatches("*.weight", "model.layers.3.weight_scale"));
  EXPECT_TRUE(GlobMatches("model.*.norm.*", "model.layers.1.norm.bias"));
  EXPECT_FALSE(GlobMatches("model.*.norm.*", "model.norm.bias"));
  EXPECT_TRUE(GlobMatches("a*b*c", "aXbYbZc"));
  EXPECT_FALSE(GlobMatches("a*b*c", "aXbYbZ"));
  EXPECT_TRUE(GlobMatches("exact", "exact"));
  EXPECT_FALSE(GlobMatches("exact", "exactly"));
  EXPECT_FALSE(GlobMatches("", "x"));
  EXPECT_TRUE(GlobMatches("**a**", "bab"));
}

}  // namespace
}  // namespace flashload
