// `flashload pack` and `flashload unpack`: model folders to and from deterministic archives
// (src/store/pack.h, src/store/unpack.h).
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "cli/commands.h"
#include "cli/output.h"
#include "store/pack.h"
#include "store/unpack.h"

namespace flashload::cli {
namespace {

struct PackArgs {
  std::string dir;
  std::string output;
  std::string name;
  std::string precision;
  std::string format;
  int level = 3;
  uint64_t frame_mib = 4;
  uint32_t threads = 0;
  bool json = false;
  bool quiet = false;
  bool force = false;
  bool no_compile_cache = false;
};

struct UnpackArgs {
  std::string archive;
  std::string output;
  uint64_t max_member_gib = 256;
  uint64_t max_total_gib = 1024;
  uint64_t max_members = 100'000;
  int max_window_log = 27;
  uint32_t threads = 0;
  bool json = false;
  bool quiet = false;
};

int RunPack(const PackArgs& a) {
  store::PackOptions o;
  o.input_dir = a.dir;
  o.output = a.output;
  o.name = a.name;
  o.precision = a.precision;
  if (!a.format.empty()) {
    Result<store::ArchiveFormat> f = store::ParseArchiveFormat(a.format);
    if (!f.ok()) {
      fmt::print(stderr, "flashload pack: {}\n", f.status().message());
      return 2;
    }
    o.format = *f;
  }
  o.level = a.level;
  o.frame_bytes = a.frame_mib << 20;
  o.threads = a.threads;
  o.force = a.force;
  o.compile_cache = !a.no_compile_cache;
  auto bar = std::make_unique<ProgressBar>("pack", a.quiet || a.json);
  o.progress = [&bar](uint64_t done, uint64_t total) { bar->Update(done, total); };
  Result<store::PackSummary> r = store::PackModel(o);
  bar->Finish();
  if (!r.ok()) {
    fmt::print(stderr, "flashload pack: {}\n", r.status().ToString());
    return 1;
  }
  const store::PackSummary& s = *r;
  if (a.json) {
    fmt::print(
        "{{\"archive\":{},\"format\":\"{}\",\"precision\":{},\"members\":{},\"files\":{},"
        "\"directories\":{},\"converted_files\":{},\"converted_tensors\":{},\"bytes_in\":{},"
        "\"compile_cache_files\":{},\"compile_cache_left_out\":{},\"tar_bytes\":{},"
        "\"bytes_out\":{},\"frames\":{},\"ratio\":{:.4f},\"gb_per_s\":{:.3f},\"seconds\":{:.3f}}}"
        "\n",
        JsonString(s.archive), store::ArchiveFormatName(s.format), JsonString(s.precision),
        s.members, s.files, s.directories, s.converted_files, s.converted_tensors, s.bytes_in,
        s.compile_cache_files, s.compile_cache_left_out ? "true" : "false", s.tar_bytes,
        s.bytes_out, s.frames, s.Ratio(), s.GbPerSecond(), s.seconds);
    return 0;
  }
  if (a.quiet) return 0;
  std::string converted;
  if (s.converted_files > 0) {
    converted = fmt::format("; {} tensors in {} files converted to {}", s.converted_tensors,
                            s.converted_files, s.precision);
  }
  std::string compile_cache;
  if (s.compile_cache_files > 0) {
    compile_cache = fmt::format("; the compile cache's {} files included", s.compile_cache_files);
  } else if (s.compile_cache_left_out) {
    compile_cache = "; the compile cache left out";
  }
  fmt::print("packed {} members ({} files, {} folders{}{}) into {}\n", s.members, s.files,
             s.directories, converted, compile_cache, s.archive);
  fmt::print("  in {} -> out {} (tar {}, ratio {:.3f}{}), {:.2f} GB/s, {:.2f} s\n",
             HumanBytes(s.bytes_in), HumanBytes(s.bytes_out), HumanBytes(s.tar_bytes), s.Ratio(),
             s.frames ? fmt::format(", {} zstd frames", s.frames) : std::string(), s.GbPerSecond(),
             s.seconds);
  return 0;
}

int RunUnpack(const UnpackArgs& a) {
  store::UnpackOptions o;
  o.archive = a.archive;
  o.out_dir = a.output;
  o.limits.max_member_bytes = a.max_member_gib << 30;
  o.limits.max_total_bytes = a.max_total_gib << 30;
  o.limits.max_members = a.max_members;
  o.limits.window_log_max = a.max_window_log;
  o.threads = a.threads;
  auto bar = std::make_unique<ProgressBar>("unpack", a.quiet || a.json);
  o.progress = [&bar](uint64_t done, uint64_t total) { bar->Update(done, total); };
  Result<store::UnpackSummary> r = store::UnpackArchive(o);
  bar->Finish();
  if (!r.ok()) {
    fmt::print(stderr, "flashload unpack: {}\n", r.status().ToString());
    return 1;
  }
  const store::UnpackSummary& s = *r;
  if (a.json) {
    fmt::print(
        "{{\"out_dir\":{},\"compressed\":{},\"seekable\":{},\"members\":{},\"files\":{},"
        "\"directories\":{},"
        "\"bytes_in\":{},\"tar_bytes\":{},\"bytes_out\":{},\"gb_per_s\":{:.3f},\"seconds\":{:.3f}}}"
        "\n",
        JsonString(s.out_dir), s.compressed ? "true" : "false", s.seekable ? "true" : "false",
        s.members, s.files, s.directories, s.bytes_in, s.tar_bytes, s.bytes_out, s.GbPerSecond(),
        s.seconds);
    return 0;
  }
  if (a.quiet) return 0;
  fmt::print("unpacked {} members ({} files, {} folders) into {}\n", s.members, s.files,
             s.directories, s.out_dir);
  fmt::print("  archive {} -> files {}, {:.2f} GB/s, {:.2f} s\n", HumanBytes(s.bytes_in),
             HumanBytes(s.bytes_out), s.GbPerSecond(), s.seconds);
  return 0;
}

}  // namespace

void AddPackCommands(CLI::App& app, std::vector<Command>& commands) {
  auto pa = std::make_shared<PackArgs>();
  CLI::App* pack = app.add_subcommand(
      "pack",
      "Pack a model folder into one deterministic archive: members sorted by path, folders "
      "included, mtime 0, uid/gid 0, no owner names, modes 0644/0755, so the same folder gives "
      "the same bytes. .tar.zst archives are in the zstd seekable format (every header and every "
      "member's data start a frame; data is cut into --frame-mib frames; a seek table at the end) "
      "that zstd -d, tar and bsdtar read, and flashload loads from without extracting. Symbolic "
      "links, devices and FIFOs are refused. The archive is written to a temporary file beside "
      "it and renamed when complete; on error nothing is left.");
  pack->add_option("dir", pa->dir, "the model folder to pack")->required();
  pack->add_option("-o,--output", pa->output,
                   "the archive: a path ending in .tar.zst or .tar (the extension picks the "
                   "format), or an existing folder, where the archive is named "
                   "models--ORG--NAME--PRECISION.tar.zst (needs --name)")
      ->required();
  pack->add_option("--name", pa->name,
                   "ORG/NAME of the model, to name the archive when -o is a folder");
  pack->add_option("--precision", pa->precision,
                   "convert every F32/F16/BF16 tensor of every .safetensors file to this dtype "
                   "while packing (round to nearest even, tensor by tensor in bounded memory) and "
                   "record it in each converted file's __metadata__ as flashload.precision; also "
                   "names the archive. Without it, files are packed as they are and the name "
                   "takes the precision of the files' float tensors")
      ->check(CLI::IsMember({"fp16", "bf16", "fp32"}));
  pack->add_option("--format", pa->format,
                   "tar or tar.zst; must agree with -o's extension (default: the extension, or "
                   "tar.zst in a folder)")
      ->check(CLI::IsMember({"tar", "tar.zst"}));
  pack->add_option("--level", pa->level,
                   "zstd compression level: 1 (fastest) to 19 (smallest), 20-22 need much memory; "
                   "negative levels are faster still")
      ->capture_default_str()
      ->check(CLI::Range(-7, 22));
  pack->add_option("--frame-mib", pa->frame_mib,
                   "decompressed MiB per zstd frame of member data: smaller frames let a reader "
                   "fetch less around each tensor, larger ones compress a little better")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  pack->add_option("--threads", pa->threads,
                   "threads compressing frames in parallel (0: one per core, at most 8)")
      ->capture_default_str();
  pack->add_flag("--json", pa->json, "print the summary as JSON (no progress line)");
  pack->add_flag("--quiet", pa->quiet, "no progress line and no summary");
  pack->add_flag("--force", pa->force, "replace the archive if it exists");
  pack->add_flag("--no-compile-cache", pa->no_compile_cache,
                 "leave out .flashload/compile-cache/, the torch.compile cache saved with the "
                 "model (flashload.torch.save_compile_cache), which is packed by default so that "
                 "a server loading the archive skips the compile");
  commands.push_back({pack, [pa] { return RunPack(*pa); }});

  auto ua = std::make_shared<UnpackArgs>();
  CLI::App* unpack = app.add_subcommand(
      "unpack",
      "Extract a .tar or .tar.zst archive (seekable or any zstd stream) into a new folder, "
      "safely: absolute paths, '..', symbolic and hard links (all of them), devices, FIFOs, "
      "duplicate paths, members or totals over the limits and zstd frames with windows over "
      "the limit are refused, naming the member and its byte offset. Extraction goes to a "
      "temporary folder beside DIR, renamed when complete; on error nothing is left.");
  unpack->add_option("archive", ua->archive, "the archive file (.tar, .tar.zst)")->required();
  unpack
      ->add_option("-o,--output", ua->output,
                   "the folder to create (it must not exist, or be empty)")
      ->required();
  unpack->add_option("--max-member-gib", ua->max_member_gib, "largest member accepted, GiB")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{0}, uint64_t{1} << 24));
  unpack->add_option("--max-total-gib", ua->max_total_gib, "most file data in all, GiB")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{0}, uint64_t{1} << 24));
  unpack->add_option("--max-members", ua->max_members, "most files and folders")
      ->capture_default_str();
  unpack
      ->add_option("--max-window-log", ua->max_window_log,
                   "largest zstd window accepted, as a power of two (27: 128 MiB)")
      ->capture_default_str()
      ->check(CLI::Range(10, 31));
  unpack
      ->add_option("--threads", ua->threads,
                   "threads decompressing the frames of a seekable .tar.zst ahead of "
                   "extraction (0: one per core, at most 8)")
      ->capture_default_str();
  unpack->add_flag("--json", ua->json, "print the summary as JSON (no progress line)");
  unpack->add_flag("--quiet", ua->quiet, "no progress line and no summary");
  commands.push_back({unpack, [ua] { return RunUnpack(*ua); }});
}

}  // namespace flashload::cli
