// Naming rules of model layouts (which names are indexes and weight files, for a variant) and the
// parsing of model_index.json: pure functions over names and text, used by the resolution of
// layouts in io (model_store.cc), which does the listing and reading.
//
// Thread-safety: pure functions.
#ifndef FLASHLOAD_FORMAT_LAYOUT_RULES_H_
#define FLASHLOAD_FORMAT_LAYOUT_RULES_H_

#include <string>
#include <string_view>
#include <vector>

#include "flashload/status.h"

namespace flashload::format {

inline constexpr std::string_view kIndexSuffix = ".safetensors.index.json";
inline constexpr std::string_view kWeightsSuffix = ".safetensors";

bool EndsWith(std::string_view s, std::string_view suffix);

// Whether `name`, with %2E, %2F and %5C decoded (either case), has a ".." segment between '/'
// or '\\' separators.
bool EscapesAfterPercentDecoding(std::string_view name);

// Index files of a folder for a variant: "<x>.safetensors.index.json", or for variant "fp16"
// "<x>.safetensors.index.fp16.json".
bool IsIndexName(std::string_view name, std::string_view variant);

// Weight files for a variant: "<stem>.safetensors" with no dot in the stem, or
// "<stem>.<variant>.safetensors".
bool IsWeightsName(std::string_view name, std::string_view variant);

// The components of a diffusers model_index.json that may hold weights, in file order: every key
// not starting with '_' whose value is a two-element array with a non-null library (an optional
// component left out is [null, null]). Errors: kDataLoss naming `file_name` when the text is not
// a JSON object.
Result<std::vector<std::string>> ParseModelIndexComponents(std::string_view json,
                                                           std::string_view file_name);

}  // namespace flashload::format

#endif  // FLASHLOAD_FORMAT_LAYOUT_RULES_H_
