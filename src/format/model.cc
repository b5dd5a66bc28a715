#include "flashload/model.h"

#include <fmt/format.h>
#include <simdjson.h>

#include <algorithm>
#include <cctype>
#include <filesystem>

#include "format/json_text.h"
#include "format/layout_rules.h"

namespace flashload {

namespace format {

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

bool EscapesAfterPercentDecoding(std::string_view name) {
  std::string decoded;
  for (size_t i = 0; i < name.size(); ++i) {
    if (name[i] == '%' && i + 2 < name.size()) {
      auto lower = [](char c) {
        return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      };
      const std::string hex{lower(name[i + 1]), lower(name[i + 2])};
      const char c = hex == "2e" ? '.' : hex == "2f" ? '/' : hex == "5c" ? '\\' : '\0';
      if (c != '\0') {
        decoded.push_back(c);
        i += 2;
        continue;
      }
    }
    decoded.push_back(name[i]);
  }
  size_t begin = 0;
  while (begin <= decoded.size()) {
    size_t end = decoded.find_first_of("/\\", begin);
    if (end == std::string::npos) end = decoded.size();
    if (std::string_view(decoded).substr(begin, end - begin) == "..") return true;
    begin = end + 1;
  }
  return false;
}

bool IsIndexName(std::string_view name, std::string_view variant) {
  if (variant.empty()) return EndsWith(name, kIndexSuffix);
  return EndsWith(name, fmt::format(".safetensors.index.{}.json", variant));
}

bool IsWeightsName(std::string_view name, std::string_view variant) {
  if (!EndsWith(name, kWeightsSuffix)) return false;
  const std::string_view stem = name.substr(0, name.size() - kWeightsSuffix.size());
  if (variant.empty()) return !stem.empty() && stem.find('.') == std::string_view::npos;
  const std::string suffix = fmt::format(".{}", variant);
  return EndsWith(stem, suffix) && stem.size() > suffix.size() &&
         stem.substr(0, stem.size() - suffix.size()).find('.') == std::string_view::npos;
}

Result<std::vector<std::string>> ParseModelIndexComponents(std::string_view json,
                                                           std::string_view file_name) {
  simdjson::dom::parser parser;
  simdjson::dom::object obj;
  if (parser.parse(json.data(), json.size(), true).get_object().get(obj) != simdjson::SUCCESS) {
    return DataLossError(fmt::format("{}: not a JSON object", file_name));
  }
  std::vector<std::string> components;
  for (simdjson::dom::key_value_pair kv : obj) {
    if (kv.key.empty() || kv.key.front() == '_') continue;
    simdjson::dom::array spec;
    if (kv.value.get_array().get(spec) != simdjson::SUCCESS || spec.size() != 2) continue;
    if ((*spec.begin()).is_null()) continue;  // an optional component left out
    components.emplace_back(kv.key);
  }
  return components;
}

}  // namespace format

namespace {
namespace fs = std::filesystem;
using format::EscapesAfterPercentDecoding;
using format_internal::Quote;
}  // namespace

Result<std::map<std::string, std::string>> ParseIndexJson(std::string_view json,
                                                          std::string_view file_name) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (auto code = parser.parse(json.data(), json.size(), true).get(root); code) {
    return DataLossError(
        fmt::format("{}: not valid JSON: {}", file_name, simdjson::error_message(code)));
  }
  simdjson::dom::object obj;
  if (root.get_object().get(obj) != simdjson::SUCCESS) {
    return DataLossError(fmt::format("{}: an index must be a JSON object", file_name));
  }
  simdjson::dom::element map_value;
  if (obj["weight_map"].get(map_value) != simdjson::SUCCESS) {
    return DataLossError(fmt::format("{}: no `weight_map` in the index", file_name));
  }
  simdjson::dom::object map_obj;
  if (map_value.get_object().get(map_obj) != simdjson::SUCCESS) {
    return DataLossError(fmt::format("{}: `weight_map` must be an object", file_name));
  }
  std::map<std::string, std::string> out;
  for (simdjson::dom::key_value_pair kv : map_obj) {
    std::string_view shard;
    if (kv.value.get_string().get(shard) != simdjson::SUCCESS) {
      return DataLossError(fmt::format("{}: weight_map entry {} must be a shard file name",
                                       file_name, Quote(kv.key)));
    }
    const fs::path p(shard);
    if (shard.empty() || p.is_absolute() ||
        std::any_of(p.begin(), p.end(), [](const fs::path& c) { return c == ".."; })) {
      return DataLossError(
          fmt::format("{}: weight_map entry {} names shard {}, outside the "
                      "index's folder",
                      file_name, Quote(kv.key), Quote(shard)));
    }
    // Remote stores join the name to the index's URL, and a server decodes %2e%2e (or .%2e, or
    // ..%2f) into a ".." segment: percent-encoded, it escapes the folder just as "../" does.
    if (EscapesAfterPercentDecoding(shard)) {
      return DataLossError(fmt::format(
          "{}: weight_map entry {} names shard {}, outside the index's folder once its "
          "percent-encoding is decoded (a \"..\" segment); name the shard file itself, relative "
          "to the index",
          file_name, Quote(kv.key), Quote(shard)));
    }
    if (!out.emplace(std::string(kv.key), std::string(shard)).second) {
      return DataLossError(
          fmt::format("{}: tensor {} is listed twice in weight_map", file_name, Quote(kv.key)));
    }
  }
  return out;
}

Status CheckWeightMap(const std::string& index_path,
                      const std::map<std::string, std::string>& weight_map_abs,
                      const std::map<std::string, std::vector<std::string>>& shard_tensors) {
  std::map<std::string_view, std::string_view> found;  // tensor -> shard holding it
  for (const auto& [shard, names] : shard_tensors) {
    for (const std::string& name : names) {
      auto [it, inserted] = found.emplace(name, shard);
      if (!inserted) {
        return DataLossError(fmt::format("{}: tensor {} is in two shards, {} and {}", index_path,
                                         Quote(name), it->second, shard));
      }
      auto listed = weight_map_abs.find(name);
      if (listed == weight_map_abs.end()) {
        return DataLossError(fmt::format(
            "{}: shard {} holds tensor {}, which the index does not list (extra tensor)",
            index_path, shard, Quote(name)));
      }
      if (listed->second != shard) {
        return DataLossError(
            fmt::format("{}: index assigns tensor {} to shard {}, but it is in shard {}",
                        index_path, Quote(name), listed->second, shard));
      }
    }
  }
  for (const auto& [name, shard] : weight_map_abs) {
    if (!found.contains(name)) {
      return DataLossError(fmt::format(
          "{}: index lists tensor {} in shard {}, but that shard does not hold it (missing tensor)",
          index_path, Quote(name), shard));
    }
  }
  return Status::Ok();
}

}  // namespace flashload
