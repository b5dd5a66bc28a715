#include "cli/flags.h"

#include <fmt/format.h>

#include <CLI/CLI.hpp>

#include "flashload/defaults.h"

namespace flashload::cli {

namespace {

constexpr uint64_t Mib(uint64_t bytes) { return bytes >> 20; }

void AddReadFlags(CLI::App& app, LoadFlags& f) {
  app.add_option(
      "--strategy", f.strategy,
      fmt::format(
          "auto (default: buffered when in page cache, O_DIRECT when cold, network on "
          "FUSE/NFS/CIFS/9p/Lustre), direct, buffered, mmap, network ({} descriptors, {} MiB "
          "sequential ranges), mapped (zero-copy views of a file in the page cache). A file "
          "truncated during the load is an error (DATA_LOSS: file, byte offset, tensor) with every "
          "strategy",
          defaults::kNetworkThreads, Mib(defaults::kNetworkChunkBytes)));
  app.add_flag("--zero-copy", f.zero_copy,
               "auto maps files that are entirely in the page cache instead of copying them "
               "(tensors become copy-on-write views of the page cache, as safetensors returns; "
               "the file must then not be truncated while they live)");
  app.add_option("--threads", f.threads, "pread workers (0: auto)");
  app.add_option("--queue-depth", f.queue_depth,
                 fmt::format("reads in flight per file (0: the source's preference, {} when it "
                             "has none)",
                             defaults::kQueueDepth));
  app.add_option("--chunk-mib", f.chunk_mib,
                 fmt::format("MiB per read (0: the source's preference, {} when it has none)",
                             Mib(defaults::kChunkBytes)));
  app.add_option("--budget-mib", f.budget_mib, "MiB of reads in flight plus staging, at least 1")
      ->capture_default_str();
  app.add_option("--parallel-files", f.parallel_files, "files read at once, at least 1")
      ->capture_default_str();
}

void AddDeviceFlags(CLI::App& app, LoadFlags& f) {
  app.add_option("--device", f.device,
                 "where the tensors go: cpu (default), cuda or cuda:N (pinned staging, copies "
                 "on several streams)");
  app.add_option("--dtype", f.dtype,
                 "convert on the way: bf16, fp16, fp32 (floating tensors only), or rules such "
                 "as F32=BF16,lm_head.*:keep");
  app.add_option("--gds", f.gds,
                 "GPUDirect Storage for --device cuda: auto (default: cold local files, when "
                 "cuFile is really direct, not in compatibility mode), on (also files in the "
                 "page cache) or off (always pinned staging); each file's report says which "
                 "path it took and why");
}

void AddRemoteFlags(CLI::App& app, LoadFlags& f) {
  const std::string group = "Remote storage (http://, https://, s3://)";
  app.add_option(
         "--connections", f.connections,
         fmt::format("ranged GETs in flight per object (0: {})", defaults::kRemoteConnections))
      ->group(group);
  app.add_option(
         "--range-mib", f.range_mib,
         fmt::format("MiB per ranged GET (0: {}), grown up to {} on a link whose first byte is "
                     "slow against its rate",
                     Mib(defaults::kRemoteChunkBytes), Mib(defaults::kRemoteMaxChunkBytes)))
      ->group(group);
  app.add_option("--endpoint", f.endpoint,
                 "S3 endpoint URL (default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, the profile's "
                 "endpoint_url, else AWS)")
      ->group(group);
  app.add_option("--region", f.region,
                 "S3 region (default: AWS_REGION, AWS_DEFAULT_REGION, the profile's, us-east-1)")
      ->group(group);
  app.add_option("--addressing", f.addressing,
                 "S3 addressing: path (host/bucket/key), virtual (bucket.host/key) or auto")
      ->group(group);
  app.add_flag("--anonymous", f.anonymous, "S3: send unsigned requests (public buckets)")
      ->group(group);
  app.add_option("--ca-bundle", f.ca_bundle, "PEM file of trusted certificate authorities")
      ->group(group);
  app.add_option("--header", f.headers,
                 "extra HTTP request header 'Name: value' (repeatable; e.g. Authorization); sent "
                 "only to the URL's own scheme, host and port, never after a redirect to "
                 "another (see --header-on-redirect); never printed; CR, LF and NUL refused")
      ->group(group);
  app.add_flag("--header-on-redirect", f.header_on_redirect,
               "also send the --header headers after a redirect to another scheme, host or port "
               "(as curl's --location-trusted); off by default: credentials stay with the host "
               "they were given for")
      ->group(group);
  app.add_option("--attempts", f.attempts,
                 "tries per range, the first included (backoff with full jitter), at least 1")
      ->capture_default_str()
      ->group(group);
  app.add_option("--retry-base-ms", f.retry_base_ms,
                 "backoff before the first retry, in ms, at least 1 (each retry waits a random "
                 "time up to min(cap, base x 2^retry))")
      ->capture_default_str()
      ->group(group);
  app.add_option("--retry-cap-ms", f.retry_cap_ms,
                 "longest backoff between tries, in ms, at least --retry-base-ms")
      ->capture_default_str()
      ->group(group);
}

}  // namespace

void AddLoadFlags(CLI::App& app, LoadFlags& flags, const LoadFlagGroups& groups) {
  if (groups.reads) AddReadFlags(app, flags);
  if (groups.header_limit) {
    app.add_option("--header-limit", flags.header_limit, "largest header accepted, in bytes")
        ->capture_default_str();
  }
  if (groups.variant) app.add_option("--variant", flags.variant, "diffusers variant, e.g. fp16");
  if (groups.device) AddDeviceFlags(app, flags);
  if (groups.remote) AddRemoteFlags(app, flags);
}

}  // namespace flashload::cli
