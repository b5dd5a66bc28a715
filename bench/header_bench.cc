// Times ParseHeaderJson on a realistic header of 100,000 tensors (median of 10 runs).
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "flashload/header.h"

int main() {
  constexpr int kTensors = 100'000;
  constexpr const char* kParts[] = {
      "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
      "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
      "mlp.down_proj",    "input_layernorm",  "post_attention_layernorm",
      "mlp.experts.17.w1"};
  std::string json = R"({"__metadata__":{"format":"pt"})";
  uint64_t offset = 0;
  for (int i = 0; i < kTensors; ++i) {
    const uint64_t rows = 128 + (i % 7) * 64, cols = 4096;
    const uint64_t bytes = rows * cols * 2;
    fmt::format_to(std::back_inserter(json),
                   R"(,"model.layers.{}.{}.weight":{{"dtype":"BF16","shape":[{},{}],)"
                   R"("data_offsets":[{},{}]}})",
                   i / 10, kParts[i % 10], rows, cols, offset, offset + bytes);
    offset += bytes;
  }
  json += "}";
  const uint64_t file_size = 8 + json.size() + offset;
  std::vector<double> ms;
  for (int run = 0; run < 10; ++run) {
    const auto start = std::chrono::steady_clock::now();
    flashload::Result<flashload::Header> h =
        flashload::ParseHeaderJson(json, json.size(), file_size, "bench.safetensors");
    const auto end = std::chrono::steady_clock::now();
    if (!h.ok() || h->tensors.size() != kTensors) {
      std::fprintf(stderr, "parse failed: %s\n", h.status().ToString().c_str());
      return 1;
    }
    ms.push_back(std::chrono::duration<double, std::milli>(end - start).count());
  }
  std::sort(ms.begin(), ms.end());
  std::printf("ParseHeaderJson: %d tensors, header %.1f MB: median %.2f ms (min %.2f, max %.2f)\n",
              kTensors, json.size() / 1e6, (ms[4] + ms[5]) / 2, ms.front(), ms.back());
  return 0;
}
