// Dtype conversion of tensor data, and the per-tensor rules a load uses to pick target dtypes.
//
// Supported conversions (CanConvert):
// - between F32, F16 and BF16, in all six directions;
// - from each fp8 type (F8_E4M3, F8_E5M2, F8_E4M3FNUZ, F8_E5M2FNUZ) to F32, F16 and BF16;
// - any dtype to itself (a copy).
// Narrowing rounds to nearest, ties to even; values beyond the target's range become infinity;
// subnormals are kept (never flushed to zero); NaN stays a quiet NaN with its sign. Widening is
// exact. Results are bit-identical to the CUDA kernels (both use src/sink/convert_scalar.h).
//
// Thread-safety: all functions are pure, or touch only the buffers passed in; any number of
// threads may convert different buffers at once.
#ifndef FLASHLOAD_CONVERT_H_
#define FLASHLOAD_CONVERT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "flashload/dtype.h"
#include "flashload/status.h"

namespace flashload {

// True when ConvertElements() supports `from` -> `to` (see the list above).
bool CanConvert(Dtype from, Dtype to);

// Converts `count` elements of dtype `from` at `src` into dtype `to` at `dst`.
//
// Buffers: `src` holds count * size(from) bytes, `dst` receives count * size(to) bytes; neither
// needs any alignment. The buffers either do not overlap at all, or are the same buffer
// (dst == src) when size(to) <= size(from): in-place narrowing (F32 -> F16/BF16) and in-place
// F16 <-> BF16. In place, element i is written only after elements 0..i have been read (the
// output of element i occupies bytes that belong to elements <= i), so the buffer is processed
// front to back, and the result is the first count * size(to) bytes of it; the bytes after that
// are left unspecified. Identity conversions copy (nothing to do in place).
//
// Errors (nothing is written): kInvalidArgument for an unsupported pair (naming both dtypes), for
// a null pointer with count > 0, for overlapping buffers other than the in-place case above, and
// for a byte count that overflows 64 bits.
Status ConvertElements(Dtype from, Dtype to, const void* src, void* dst, uint64_t count);

// ---- Rules: which dtype each tensor of a load gets ----------------------------------------------
//
// A conversion spec is a comma-separated list of rules (no spaces needed; spaces around items are
// ignored). Dtypes are spelled as in a safetensors header (F32, F16, BF16, F8_E4M3, ...), case
// insensitive, or as fp32/float32, fp16/float16/half, bf16/bfloat16.
//   "bf16"                  every convertible tensor becomes BF16 (a blanket rule)
//   "F32=BF16,F8_E4M3=F16"  per stored dtype: F32 tensors become BF16, F8_E4M3 tensors F16
//   "*.norm.weight:keep"    tensors whose name matches the glob keep their stored dtype
//   "lm_head.*:F32"         tensors whose name matches the glob become F32
// Name globs match the whole tensor name; '*' matches any run of characters (dots and slashes
// included), '?' any one character; there is no escaping, and names containing ',' cannot be
// matched. A glob rule is split at its last ':'.
//
// Which rule applies to a tensor: the first glob rule (in spec order) whose glob matches its name;
// else the rule for its stored dtype; else the blanket rule; else none (the stored dtype is kept).
// Only convertible floating tensors are ever converted: those stored as F32, F16, BF16 or one of
// the four fp8 types above. Every other tensor (integers, BOOL, F64, C64, F8_E8M0, F4, F6) keeps
// its stored dtype whatever the rules say. Targets are F32, F16 or BF16 (or "keep" in a glob
// rule), so every rule can be honoured for every convertible tensor.
struct DtypeRule {
  enum class Match {
    kAnyFloat,     // blanket: every convertible tensor
    kStoredDtype,  // tensors stored as `stored`
    kNameGlob,     // tensors whose name matches `name_glob`
  };
  Match match = Match::kAnyFloat;
  Dtype stored = Dtype::kF32;   // for kStoredDtype
  std::string name_glob;        // for kNameGlob
  std::optional<Dtype> target;  // nullopt: keep the stored dtype
};

struct ConvertSpec {
  std::vector<DtypeRule> rules;  // in spec order
  // True when no rule would change any tensor.
  bool empty() const { return rules.empty(); }
};

// Parses a conversion spec (grammar above). An empty or all-blank string is an empty spec.
// Errors: kInvalidArgument naming the offending item: an unknown dtype, a target other than
// F32/F16/BF16, a per-dtype rule whose source cannot be converted (e.g. "I32=F16"), an empty
// glob, a second blanket rule, or a second rule for the same stored dtype.
Result<ConvertSpec> ParseConvertSpec(std::string_view text);

// The dtype tensor `tensor_name`, stored as `stored`, should be loaded as under `spec` (the
// stored dtype when no rule applies). Errors: kInvalidArgument, naming the tensor, when the
// applicable rule asks for a conversion CanConvert() rejects (only possible for a hand-built
// spec; ParseConvertSpec() never produces one).
Result<Dtype> TargetDtype(std::string_view tensor_name, Dtype stored, const ConvertSpec& spec);

// Whether `name` matches the glob `pattern` ('*' any run, '?' any one character).
bool GlobMatches(std::string_view pattern, std::string_view name);

}  // namespace flashload

#endif  // FLASHLOAD_CONVERT_H_
