// `flashload push`, `flashload pull` and `flashload cp` (store/cache.h, store/transfer.h).
//
// Output: pull prints the local path of the entry on stdout (for `flashload load $(flashload pull
// ...)`) and its summary on stderr; push and cp print their summary on stdout. --json replaces the
// stdout text with one JSON object holding the same figures. A progress line (bytes, GB/s, ETA)
// goes to stderr on a terminal unless --quiet. Ctrl-C stops the transfer cleanly: an S3 multipart
// upload is aborted, a partial local file or cache download removed.
#include <fmt/format.h>

#include <atomic>
#include <csignal>
#include <memory>

#include "cli/commands.h"
#include "cli/flags.h"
#include "cli/output.h"
#include "common/url.h"
#include "load/load_flags.h"
#include "store/cache.h"
#include "store/transfer.h"

namespace flashload::cli {
namespace {

std::atomic<bool> g_cancel{false};

extern "C" void OnTransferSigint(int) { g_cancel.store(true); }

// SIGINT sets g_cancel for the life of the object.
class CancelOnSigint {
 public:
  CancelOnSigint() {
    g_cancel = false;
    previous_ = std::signal(SIGINT, OnTransferSigint);
  }
  ~CancelOnSigint() { std::signal(SIGINT, previous_); }

 private:
  void (*previous_)(int) = SIG_DFL;
};

struct TransferArgs {
  std::string src;
  std::string dst;
  std::string cache;
  uint32_t parallel = 8;
  uint64_t part_mib = 64;
  bool verify = false;
  bool direct = false;
  bool json = false;
  bool quiet = false;
  LoadFlags flags;  // remote
};

void AddDirectFlag(CLI::App& cmd, TransferArgs& a) {
  cmd.add_flag("--direct", a.direct,
               "Write local files with O_DIRECT, leaving the page cache alone (refused where the "
               "file system does not support it)");
}

void AddCommonOptions(CLI::App& cmd, TransferArgs& a) {
  cmd.add_option("--parallel", a.parallel,
                 "Reads (or S3 parts) in flight per object (default 8). Memory: parallel x the "
                 "read size (--range-mib, default 8) for downloads and local copies, parallel x "
                 "--part-mib for uploads")
      ->check(CLI::Range(1u, 256u));
  cmd.add_option("--part-mib", a.part_mib,
                 "MiB per S3 part of an upload (default 64, at least 5; raised to fit the object "
                 "in 10000 parts). Objects up to one part go in one PUT")
      ->check(CLI::Range(uint64_t{5}, uint64_t{5120}));
  cmd.add_flag("--json", a.json, "Print the result as one JSON object");
  cmd.add_flag("--quiet", a.quiet, "No progress line");
  AddLoadFlags(cmd, a.flags, {.remote = true});
}

// The transfer options of `a`, or 2 (bad usage) after printing why.
std::optional<store::TransferOptions> TransferOptionsOf(std::string_view command,
                                                        const TransferArgs& a) {
  Result<LoadOptions> options = ParseLoadFlags(a.flags);
  if (!options.ok()) {
    fmt::print(stderr, "flashload {}: {}\n", command, options.status().message());
    return std::nullopt;
  }
  store::TransferOptions t;
  t.open.remote = options->remote;
  t.parallel = a.parallel;
  t.part_bytes = a.part_mib << 20;
  t.direct = a.direct;
  if (options->remote.chunk_bytes > 0) t.chunk_bytes = options->remote.chunk_bytes;
  t.cancel = &g_cancel;
  return t;
}

double GBps(uint64_t bytes, double seconds) {
  return seconds > 0 ? static_cast<double>(bytes) / seconds / 1e9 : 0.0;
}

int Fail(std::string_view command, const Status& s) {
  fmt::print(stderr, "flashload {}: {}\n", command, s.ToString());
  return 1;
}

int RunCp(const TransferArgs& a) {
  std::optional<store::TransferOptions> t = TransferOptionsOf("cp", a);
  if (!t) return 2;
  ProgressBar bar("cp", a.quiet);
  t->progress = [&](uint64_t done, uint64_t total) { bar.Update(done, total); };
  CancelOnSigint sigint;
  Result<store::TransferResult> r = store::CopyObject(a.src, a.dst, *t);
  bar.Finish();
  if (!r.ok()) return Fail("cp", r.status());
  if (a.json) {
    fmt::print(
        "{{\"src\": {}, \"dst\": {}, \"bytes\": {}, \"sha256\": \"{}\", \"seconds\": {:.6f}, "
        "\"gbps\": {:.4f}, \"parts\": {}, \"requests\": {}}}\n",
        JsonString(RedactUrl(a.src)), JsonString(RedactUrl(a.dst)), r->bytes, r->sha256, r->seconds,
        GBps(r->bytes, r->seconds), r->parts, r->requests);
  } else {
    fmt::print("copied {} to {}: {} in {:.2f} s ({:.2f} GB/s), sha256 {}\n", RedactUrl(a.src),
               RedactUrl(a.dst), HumanBytes(r->bytes), r->seconds, GBps(r->bytes, r->seconds),
               r->sha256);
  }
  return 0;
}

int RunPush(const TransferArgs& a) {
  std::optional<store::TransferOptions> t = TransferOptionsOf("push", a);
  if (!t) return 2;
  ProgressBar bar("push", a.quiet);
  t->progress = [&](uint64_t done, uint64_t total) { bar.Update(done, total); };
  CancelOnSigint sigint;
  Result<store::PushResult> r = store::Push(a.src, a.dst, *t);
  bar.Finish();
  if (!r.ok()) return Fail("push", r.status());
  if (a.json) {
    std::string files;
    for (const store::ManifestFile& f : r->manifest.files) {
      files += fmt::format("{}{{\"name\": {}, \"size\": {}, \"sha256\": \"{}\"}}",
                           files.empty() ? "" : ", ", JsonString(f.name), f.size, f.sha256);
    }
    fmt::print(
        "{{\"url\": {}, \"manifest\": {}, \"bytes\": {}, \"seconds\": {:.6f}, \"gbps\": "
        "{:.4f}, \"parts\": {}, \"files\": [{}]}}\n",
        JsonString(RedactUrl(r->url)), JsonString(RedactUrl(r->manifest_url)), r->bytes, r->seconds,
        GBps(r->bytes, r->seconds), r->parts, files);
  } else {
    fmt::print("pushed {} to {} ({} file{}, {}) in {:.2f} s ({:.2f} GB/s); manifest {}\n", a.src,
               RedactUrl(r->url), r->manifest.files.size(),
               r->manifest.files.size() == 1 ? "" : "s", HumanBytes(r->bytes), r->seconds,
               GBps(r->bytes, r->seconds), RedactUrl(r->manifest_url));
  }
  return 0;
}

int RunPull(const TransferArgs& a) {
  std::optional<store::TransferOptions> t = TransferOptionsOf("pull", a);
  if (!t) return 2;
  ProgressBar bar("pull", a.quiet);
  store::PullOptions options;
  options.cache_dir = a.cache;
  options.verify = a.verify;
  options.transfer = *t;
  options.transfer.progress = [&](uint64_t done, uint64_t total) { bar.Update(done, total); };
  CancelOnSigint sigint;
  Result<store::PullResult> r = store::Pull(a.src, options);
  bar.Finish();
  if (!r.ok()) return Fail("pull", r.status());
  const std::string url = RedactUrl(r->url);
  if (a.json) {
    fmt::print(
        "{{\"url\": {}, \"path\": {}, \"entry\": {}, \"downloaded\": {}, \"verified\": {}, "
        "\"rehashed\": {}, \"note\": {}, \"bytes\": {}, \"seconds\": {:.6f}, \"gbps\": "
        "{:.4f}, \"files\": {}}}\n",
        JsonString(url), JsonString(r->path), JsonString(r->entry_dir), r->downloaded, r->verified,
        r->rehashed, JsonString(r->note), r->bytes, r->seconds, GBps(r->bytes, r->seconds),
        r->manifest.files.size());
    return 0;
  }
  fmt::print("{}\n", r->path);
  if (!a.quiet || !r->note.empty()) {
    if (r->downloaded) {
      fmt::print(stderr, "flashload pull: {}: {} in {:.2f} s ({:.2f} GB/s), {}\n", url,
                 HumanBytes(r->bytes), r->seconds, GBps(r->bytes, r->seconds),
                 r->verified ? "SHA-256 verified against the manifest" : r->note);
    } else {
      fmt::print(stderr, "flashload pull: {}: already in the cache{}{}\n", url,
                 r->rehashed ? fmt::format(", re-hashed {} and intact", HumanBytes(r->bytes)) : "",
                 r->note.empty() ? "" : "; " + r->note);
    }
  }
  return 0;
}

}  // namespace

void AddTransferCommands(CLI::App& app, std::vector<Command>& commands) {
  auto push = std::make_shared<TransferArgs>();
  CLI::App* push_cmd = app.add_subcommand(
      "push",
      "Upload a packed model (a file) or a folder to S3, with a SHA-256 manifest beside it "
      "(<object or folder>.manifest.json), written last. s3://bucket/prefix/ keeps the local name");
  push_cmd->add_option("local", push->src, "File or folder to upload")->required();
  push_cmd->add_option("dst", push->dst, "s3://bucket/prefix/ or s3://bucket/prefix/name")
      ->required();
  AddCommonOptions(*push_cmd, *push);
  commands.push_back({push_cmd, [push] { return RunPush(*push); }});

  auto pull = std::make_shared<TransferArgs>();
  CLI::App* pull_cmd = app.add_subcommand(
      "pull",
      "Download a model into the local cache (FLASHLOAD_CACHE, default ~/.cache/flashload), "
      "checked against its SHA-256 manifest, and print its local path. Takes an s3:// or "
      "http(s):// URL, or ORG/NAME@PRECISION under FLASHLOAD_STORE");
  pull_cmd->add_option("what", pull->src, "URL, or ORG/NAME@PRECISION")->required();
  pull_cmd->add_option("--cache", pull->cache, "Cache folder (default: FLASHLOAD_CACHE)");
  pull_cmd->add_flag("--verify", pull->verify,
                     "Re-hash an entry already in the cache against its manifest (a damaged "
                     "entry is removed)");
  AddDirectFlag(*pull_cmd, *pull);
  AddCommonOptions(*pull_cmd, *pull);
  commands.push_back({pull_cmd, [pull] { return RunPull(*pull); }});

  auto cp = std::make_shared<TransferArgs>();
  CLI::App* cp_cmd = app.add_subcommand(
      "cp",
      "Copy one object between a local path, http(s):// (read only) and s3://, with ranged reads "
      "in parallel and its SHA-256 computed on the way; a local destination is written whole or "
      "not at all");
  cp_cmd->add_option("src", cp->src, "Source: path, http(s):// or s3:// URL")->required();
  cp_cmd->add_option("dst", cp->dst, "Destination: path or s3:// URL")->required();
  AddDirectFlag(*cp_cmd, *cp);
  AddCommonOptions(*cp_cmd, *cp);
  commands.push_back({cp_cmd, [cp] { return RunCp(*cp); }});
}

}  // namespace flashload::cli
