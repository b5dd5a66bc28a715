#include "flashload/convert.h"

#include <fmt/format.h>

#include <array>
#include <cctype>
#include <cstddef>
#include <cstring>
#include <string>

#include "common/strings.h"
#include "sink/convert_scalar.h"

// The per-pair loops are compiled twice on x86-64, for the baseline and for AVX2 (whose per-lane
// variable shifts the narrowing code needs to vectorise), and picked at load time.
#if defined(__x86_64__) && defined(__GNUC__) && defined(__has_attribute)
#if __has_attribute(target_clones) && !defined(__SANITIZE_ADDRESS__) && \
    !defined(__SANITIZE_THREAD__)
#define FL_CONVERT_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef FL_CONVERT_CLONES
#define FL_CONVERT_CLONES
#endif

namespace flashload {
namespace {

using ConvertFn = void (*)(const unsigned char* src, unsigned char* dst, uint64_t count);

// Elements per block. Each block is converted into a local buffer by a loop with a constant trip
// count (which the vectoriser handles even under its cheapest cost model), then copied out. Going
// through the buffer is also what makes in-place narrowing safe: block k is written over bytes
// that blocks <= k have already been read from.
constexpr size_t kBlock = 512;

template <typename In, typename Out, typename Op>
__attribute__((always_inline)) inline void ConvertBlocks(const unsigned char* src,
                                                         unsigned char* dst, uint64_t count,
                                                         Op op) {
  Out block[kBlock];
  uint64_t i = 0;
  for (; count - i >= kBlock; i += kBlock) {
    const unsigned char* s = src + i * sizeof(In);
    for (size_t j = 0; j < kBlock; ++j) {
      In x;
      std::memcpy(&x, s + j * sizeof(In), sizeof(In));
      block[j] = op(x);
    }
    std::memcpy(dst + i * sizeof(Out), block, sizeof(block));
  }
  for (; i < count; ++i) {  // the tail, one element at a time (read before written)
    In x;
    std::memcpy(&x, src + i * sizeof(In), sizeof(In));
    const Out y = op(x);
    std::memcpy(dst + i * sizeof(Out), &y, sizeof(Out));
  }
}

FL_CONVERT_CLONES void F32ToF16(const unsigned char* src, unsigned char* dst, uint64_t n) {
  ConvertBlocks<uint32_t, uint16_t>(src, dst, n, [](auto x) { return sink::F32ToF16Bits(x); });
}
FL_CONVERT_CLONES void F32ToBF16(const unsigned char* src, unsigned char* dst, uint64_t n) {
  ConvertBlocks<uint32_t, uint16_t>(src, dst, n, [](auto x) { return sink::F32ToBF16Bits(x); });
}
FL_CONVERT_CLONES void F16ToF32(const unsigned char* src, unsigned char* dst, uint64_t n) {
  ConvertBlocks<uint16_t, uint32_t>(src, dst, n,
                                    [](auto x) { return sink::F16ToF32BitsVectorized(x); });
}
FL_CONVERT_CLONES void BF16ToF32(const unsigned char* src, unsigned char* dst, uint64_t n) {
  ConvertBlocks<uint16_t, uint32_t>(src, dst, n, [](auto x) { return sink::BF16ToF32Bits(x); });
}
FL_CONVERT_CLONES void F16ToBF16(const unsigned char* src, unsigned char* dst, uint64_t n) {
  ConvertBlocks<uint16_t, uint16_t>(
      src, dst, n, [](auto x) { return sink::F32ToBF16Bits(sink::F16ToF32BitsVectorized(x)); });
}
FL_CONVERT_CLONES void BF16ToF16(const unsigned char* src, unsigned char* dst, uint64_t n) {
  ConvertBlocks<uint16_t, uint16_t>(src, dst, n, [](auto x) { return sink::BF16ToF16Bits(x); });
}

// fp8 sources: a 256-entry table per (fp8 type, target), built once from the scalar decoders.
enum Fp8Kind { kE4M3, kE5M2, kE4M3Fnuz, kE5M2Fnuz, kFp8Kinds };

struct Fp8Tables {
  std::array<std::array<uint32_t, 256>, kFp8Kinds> f32;
  std::array<std::array<uint16_t, 256>, kFp8Kinds> f16;
  std::array<std::array<uint16_t, 256>, kFp8Kinds> bf16;
};

const Fp8Tables& GetFp8Tables() {
  static const Fp8Tables* const kTables = [] {
    auto* t = new Fp8Tables;
    for (uint32_t x = 0; x < 256; ++x) {
      const auto b = static_cast<uint8_t>(x);
      t->f32[kE4M3][x] = sink::F8E4M3ToF32Bits(b);
      t->f32[kE5M2][x] = sink::F8E5M2ToF32Bits(b);
      t->f32[kE4M3Fnuz][x] = sink::F8E4M3FnuzToF32Bits(b);
      t->f32[kE5M2Fnuz][x] = sink::F8E5M2FnuzToF32Bits(b);
      for (int k = 0; k < kFp8Kinds; ++k) {
        // Exact: every fp8 value is an F16 and a BF16 value, so these narrowings never round.
        t->f16[k][x] = sink::F32ToF16Bits(t->f32[k][x]);
        t->bf16[k][x] = sink::F32ToBF16Bits(t->f32[k][x]);
      }
    }
    return t;
  }();
  return *kTables;
}

template <Fp8Kind kKind>
void Fp8ToF32(const unsigned char* src, unsigned char* dst, uint64_t n) {
  const uint32_t* table = GetFp8Tables().f32[kKind].data();
  ConvertBlocks<uint8_t, uint32_t>(src, dst, n, [table](uint8_t x) { return table[x]; });
}
template <Fp8Kind kKind>
void Fp8ToF16(const unsigned char* src, unsigned char* dst, uint64_t n) {
  const uint16_t* table = GetFp8Tables().f16[kKind].data();
  ConvertBlocks<uint8_t, uint16_t>(src, dst, n, [table](uint8_t x) { return table[x]; });
}
template <Fp8Kind kKind>
void Fp8ToBF16(const unsigned char* src, unsigned char* dst, uint64_t n) {
  const uint16_t* table = GetFp8Tables().bf16[kKind].data();
  ConvertBlocks<uint8_t, uint16_t>(src, dst, n, [table](uint8_t x) { return table[x]; });
}

template <Fp8Kind kKind>
ConvertFn Fp8Converter(Dtype to) {
  switch (to) {
    case Dtype::kF32:
      return Fp8ToF32<kKind>;
    case Dtype::kF16:
      return Fp8ToF16<kKind>;
    case Dtype::kBF16:
      return Fp8ToBF16<kKind>;
    default:
      return nullptr;
  }
}

// The loop for a supported pair of different dtypes; nullptr for anything else.
ConvertFn FindConverter(Dtype from, Dtype to) {
  switch (from) {
    case Dtype::kF32:
      return to == Dtype::kF16 ? F32ToF16 : to == Dtype::kBF16 ? F32ToBF16 : nullptr;
    case Dtype::kF16:
      return to == Dtype::kF32 ? F16ToF32 : to == Dtype::kBF16 ? F16ToBF16 : nullptr;
    case Dtype::kBF16:
      return to == Dtype::kF32 ? BF16ToF32 : to == Dtype::kF16 ? BF16ToF16 : nullptr;
    case Dtype::kF8E4M3:
      return Fp8Converter<kE4M3>(to);
    case Dtype::kF8E5M2:
      return Fp8Converter<kE5M2>(to);
    case Dtype::kF8E4M3Fnuz:
      return Fp8Converter<kE4M3Fnuz>(to);
    case Dtype::kF8E5M2Fnuz:
      return Fp8Converter<kE5M2Fnuz>(to);
    default:
      return nullptr;
  }
}

constexpr std::string_view kSupported =
    "supported: F32, F16 and BF16 to each other, and F8_E4M3, F8_E5M2, F8_E4M3FNUZ and "
    "F8_E5M2FNUZ to F32, F16 or BF16";

// A dtype as written in a spec: a header spelling in any case, or a common alias.
std::optional<Dtype> ParseSpecDtype(std::string_view text) {
  std::string u(text);
  for (char& c : u) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (u == "FP32" || u == "FLOAT32") return Dtype::kF32;
  if (u == "FP16" || u == "FLOAT16" || u == "HALF") return Dtype::kF16;
  if (u == "BFLOAT16") return Dtype::kBF16;
  return ParseDtype(u);
}

}  // namespace

bool CanConvert(Dtype from, Dtype to) { return from == to || FindConverter(from, to) != nullptr; }

Status ConvertElements(Dtype from, Dtype to, const void* src, void* dst, uint64_t count) {
  const ConvertFn fn = from == to ? nullptr : FindConverter(from, to);
  if (from != to && fn == nullptr) {
    return InvalidArgumentError(
        fmt::format("cannot convert {} to {} ({})", DtypeName(from), DtypeName(to), kSupported));
  }
  if (count == 0) return Status::Ok();
  if (src == nullptr || dst == nullptr) {
    return InvalidArgumentError(fmt::format("converting {} elements from {} to {}: null buffer",
                                            count, DtypeName(from), DtypeName(to)));
  }
  const uint64_t in_size = DtypeBits(from) / 8;
  const uint64_t out_size = DtypeBits(to) / 8;
  const uint64_t largest = in_size > out_size ? in_size : out_size;
  if (count > UINT64_MAX / largest) {
    return InvalidArgumentError(
        fmt::format("converting {} elements from {} to {}: byte count "
                    "overflows",
                    count, DtypeName(from), DtypeName(to)));
  }
  const auto s = reinterpret_cast<uintptr_t>(src);
  const auto d = reinterpret_cast<uintptr_t>(dst);
  const uint64_t in_bytes = count * in_size;
  const uint64_t out_bytes = count * out_size;
  const bool overlap = s < d + out_bytes && d < s + in_bytes;
  if (overlap && !(s == d && out_size <= in_size)) {
    return InvalidArgumentError(fmt::format(
        "converting {} elements from {} to {}: source and destination overlap (only the same "
        "buffer, for a conversion to a dtype no larger, is allowed)",
        count, DtypeName(from), DtypeName(to)));
  }
  if (fn == nullptr) {  // identity
    if (s != d) std::memcpy(dst, src, in_bytes);
    return Status::Ok();
  }
  fn(static_cast<const unsigned char*>(src), static_cast<unsigned char*>(dst), count);
  return Status::Ok();
}

bool GlobMatches(std::string_view pattern, std::string_view name) {
  // Greedy matching with one backtrack point (the last '*'): linear in practice, never exponential.
  size_t p = 0, n = 0;
  size_t star = std::string_view::npos, star_n = 0;
  while (n < name.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == name[n])) {
      ++p;
      ++n;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      star_n = n;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      n = ++star_n;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

Result<ConvertSpec> ParseConvertSpec(std::string_view text) {
  ConvertSpec spec;
  bool have_blanket = false;
  std::array<bool, kDtypeCount> have_stored{};
  const std::string_view whole = text;
  while (true) {
    const size_t comma = text.find(',');
    const std::string_view item = Trim(text.substr(0, comma));
    auto fail = [&](std::string_view why) {
      return InvalidArgumentError(
          fmt::format("conversion spec \"{}\": item \"{}\": {}", whole, item, why));
    };
    auto target_of = [&](std::string_view t, bool allow_keep) -> Result<std::optional<Dtype>> {
      t = Trim(t);
      std::string lower(t);
      for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (allow_keep && lower == "keep") return std::optional<Dtype>();
      const std::optional<Dtype> d = ParseSpecDtype(t);
      if (!d) return fail(fmt::format("unknown dtype \"{}\"", t));
      if (!sink::IsConversionTarget(*d)) {
        return fail(fmt::format("cannot convert to {}: the target must be F32, F16 or BF16{}",
                                DtypeName(*d), allow_keep ? " (or keep)" : ""));
      }
      return std::optional<Dtype>(*d);
    };

    if (!item.empty()) {
      DtypeRule rule;
      if (const size_t colon = item.rfind(':'); colon != std::string_view::npos) {
        rule.match = DtypeRule::Match::kNameGlob;
        rule.name_glob = std::string(Trim(item.substr(0, colon)));
        if (rule.name_glob.empty()) return fail("empty tensor-name glob before ':'");
        FL_ASSIGN_OR_RETURN(rule.target, target_of(item.substr(colon + 1), /*allow_keep=*/true));
      } else if (const size_t eq = item.find('='); eq != std::string_view::npos) {
        rule.match = DtypeRule::Match::kStoredDtype;
        const std::string_view from = Trim(item.substr(0, eq));
        const std::optional<Dtype> stored = ParseSpecDtype(from);
        if (!stored) return fail(fmt::format("unknown dtype \"{}\"", from));
        rule.stored = *stored;
        FL_ASSIGN_OR_RETURN(rule.target, target_of(item.substr(eq + 1), /*allow_keep=*/false));
        if (!CanConvert(rule.stored, *rule.target)) {
          return fail(fmt::format("cannot convert {} to {} ({})", DtypeName(rule.stored),
                                  DtypeName(*rule.target), kSupported));
        }
        if (have_stored[static_cast<int>(rule.stored)]) {
          return fail(fmt::format("a second rule for {}", DtypeName(rule.stored)));
        }
        have_stored[static_cast<int>(rule.stored)] = true;
      } else {
        rule.match = DtypeRule::Match::kAnyFloat;
        FL_ASSIGN_OR_RETURN(rule.target, target_of(item, /*allow_keep=*/false));
        if (have_blanket) return fail("a second blanket dtype (only one is allowed)");
        have_blanket = true;
      }
      spec.rules.push_back(std::move(rule));
    }
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return spec;
}

Result<Dtype> TargetDtype(std::string_view tensor_name, Dtype stored, const ConvertSpec& spec) {
  if (!sink::IsConversionSource(stored)) return stored;
  const DtypeRule* rule = nullptr;
  for (const DtypeRule& r : spec.rules) {
    if (r.match == DtypeRule::Match::kNameGlob && GlobMatches(r.name_glob, tensor_name)) {
      rule = &r;
      break;
    }
  }
  for (const DtypeRule& r : spec.rules) {
    if (rule == nullptr && r.match == DtypeRule::Match::kStoredDtype && r.stored == stored)
      rule = &r;
  }
  for (const DtypeRule& r : spec.rules) {
    if (rule == nullptr && r.match == DtypeRule::Match::kAnyFloat) rule = &r;
  }
  if (rule == nullptr || !rule->target) return stored;
  if (!CanConvert(stored, *rule->target)) {
    return InvalidArgumentError(
        fmt::format("tensor \"{}\" is stored as {}: cannot convert it to {} ({})", tensor_name,
                    DtypeName(stored), DtypeName(*rule->target), kSupported));
  }
  return *rule->target;
}

}  // namespace flashload
