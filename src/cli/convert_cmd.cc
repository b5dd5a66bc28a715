// `flashload convert`: PyTorch checkpoints to safetensors, with a restricted unpickler that runs
// nothing from the checkpoint (src/store/convert.h).
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "cli/commands.h"
#include "cli/output.h"
#include "store/convert.h"

namespace flashload::cli {
namespace {

struct ConvertArgs {
  std::string input;
  std::string output;
  std::string dtype;
  uint64_t align = 8;
  bool json = false;
  bool quiet = false;
  bool force = false;
};

std::string JsonStrings(const std::vector<std::string>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + JsonString(v[i]);
  return out + "]";
}

std::string SharedJson(const store::SharedStorage& s) {
  return fmt::format("{{\"storage\":{},\"tensors\":{},\"kind\":\"{}\"}}", JsonString(s.storage_key),
                     JsonStrings(s.tensors),
                     s.identical     ? "identical"
                     : s.overlapping ? "overlapping"
                                     : "disjoint");
}

int RunConvert(const ConvertArgs& a) {
  store::ConvertOptions o;
  if (a.dtype == "fp16") o.dtype = Dtype::kF16;
  if (a.dtype == "bf16") o.dtype = Dtype::kBF16;
  if (a.align < 8 || (a.align & (a.align - 1)) != 0) {
    fmt::print(stderr, "flashload convert: --align must be a power of two >= 8, not {}\n", a.align);
    return 2;
  }
  o.alignment = a.align;
  o.force = a.force;
  auto bar = std::make_unique<ProgressBar>("convert", a.quiet || a.json);
  o.progress = [&bar](uint64_t done, uint64_t total) { bar->Update(done, total); };
  const auto start = std::chrono::steady_clock::now();
  Result<store::ConvertReport> r = store::Convert(a.input, a.output, o);
  bar->Finish();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!r.ok()) {
    fmt::print(stderr, "flashload convert: {}\n", r.status().ToString());
    return 1;
  }
  const store::ConvertReport& s = *r;
  if (a.json) {
    std::string files = "[";
    for (size_t i = 0; i < s.files.size(); ++i) {
      const store::ConvertedFile& f = s.files[i];
      std::string shared = "[";
      for (size_t j = 0; j < f.shared.size(); ++j)
        shared += (j ? "," : "") + SharedJson(f.shared[j]);
      shared += "]";
      files += fmt::format(
          "{}{{\"input\":{},\"output\":{},\"format\":\"{}\",\"unwrapped\":{},\"tensors\":{},"
          "\"bytes\":{},\"converted_tensors\":{},\"skipped_entries\":{},\"skipped\":{},"
          "\"shared_storages\":{}}}",
          i ? "," : "", JsonString(f.input), JsonString(f.output), f.format,
          JsonString(f.unwrapped_key), f.tensors, f.bytes, f.converted_tensors, f.skipped_entries,
          JsonStrings(f.skipped_names), shared);
    }
    files += "]";
    fmt::print(
        "{{\"input\":{},\"output\":{},\"dtype\":{},\"align\":{},\"tensors\":{},\"bytes\":{},"
        "\"shared_storages\":{},\"skipped_entries\":{},\"files\":{},\"copied\":{},"
        "\"left_out\":{},\"indexes\":{},\"seconds\":{:.3f}}}\n",
        JsonString(a.input), JsonString(a.output), JsonString(a.dtype), a.align, s.tensors, s.bytes,
        s.shared_storages, s.skipped_entries, files, JsonStrings(s.copied), JsonStrings(s.left_out),
        JsonStrings(s.indexes), seconds);
    return 0;
  }
  if (a.quiet) return 0;
  for (const store::ConvertedFile& f : s.files) {
    fmt::print(
        "{} -> {}: {} tensors, {} ({} format{}{})\n", f.input, f.output, f.tensors,
        HumanBytes(f.bytes), f.format,
        f.unwrapped_key.empty() ? "" : fmt::format(", tensors taken from '{}'", f.unwrapped_key),
        f.converted_tensors ? fmt::format(", {} converted to {}", f.converted_tensors, a.dtype)
                            : "");
    for (const store::SharedStorage& sh : f.shared) {
      std::string names;
      for (const std::string& n : sh.tensors) names += (names.empty() ? "" : ", ") + n;
      fmt::print("  shared storage {} ({}): {}; each name written with its own copy\n",
                 sh.storage_key,
                 sh.identical     ? "identical views"
                 : sh.overlapping ? "overlapping views"
                                  : "disjoint views",
                 names);
    }
    if (f.skipped_entries > 0) {
      std::string names;
      for (const std::string& n : f.skipped_names) names += (names.empty() ? "" : ", ") + n;
      fmt::print("  skipped {} non-tensor entries: {}{}\n", f.skipped_entries, names,
                 f.skipped_entries > f.skipped_names.size() ? ", ..." : "");
    }
  }
  if (!s.copied.empty()) fmt::print("copied {} other files\n", s.copied.size());
  for (const std::string& l : s.left_out)
    fmt::print("left out {} (training state, not weights)\n", l);
  for (const std::string& i : s.indexes) fmt::print("rewrote index {}\n", i);
  fmt::print(
      "converted {} tensors, {} in {} files; {} shared storages, {} skipped entries; {:.2f} s\n",
      s.tensors, HumanBytes(s.bytes), s.files.size(), s.shared_storages, s.skipped_entries,
      seconds);
  return 0;
}

}  // namespace

void AddConvertCommand(CLI::App& app, std::vector<Command>& commands) {
  auto ca = std::make_shared<ConvertArgs>();
  CLI::App* convert = app.add_subcommand(
      "convert",
      "Convert a PyTorch checkpoint (torch.save, zip or legacy format) to safetensors, or a "
      "transformers/diffusers folder of .bin files to the same layout with .safetensors files "
      "and rewritten *.safetensors.index.json. The pickle is read by a restricted unpickler that "
      "runs nothing: it accepts only the globals torch.save writes for tensors and state dicts, "
      "and refuses anything else (os.system, eval, ...) naming it and its byte offset. Non-tensor "
      "entries are skipped and counted; Lightning-style checkpoints are read from their "
      "'state_dict'. Output is written to a temporary file or folder and renamed when complete; "
      "on error nothing is left.");
  convert->add_option("input", ca->input, "the checkpoint file (.bin, .pt, .pth, .ckpt) or folder")
      ->required();
  convert
      ->add_option("-o,--output", ca->output,
                   "the .safetensors file to write (a folder when the input is a folder)")
      ->required();
  convert
      ->add_option("--dtype", ca->dtype,
                   "convert F32, F64, F16 and BF16 tensors to fp16 or bf16 (round to nearest "
                   "even, F64 through F32 as torch does); other dtypes are kept")
      ->check(CLI::IsMember({"fp16", "bf16"}));
  convert
      ->add_option("--align", ca->align,
                   "start the data section of each file at a multiple of N bytes (a power of "
                   "two >= 8; 4096 for O_DIRECT reads); tensors inside it are not padded")
      ->capture_default_str();
  convert->add_flag("--json", ca->json, "print the summary as JSON (no progress line)");
  convert->add_flag("--quiet", ca->quiet, "no progress line and no summary");
  convert->add_flag("--force", ca->force, "replace the output if it exists");
  commands.push_back({convert, [ca] { return RunConvert(*ca); }});
}

}  // namespace flashload::cli
