// S3 and S3-compatible object stores: "s3://bucket/key" objects and "s3://bucket/prefix/" model
// folders, through the HTTP source.
//
// An object is an HttpSource (one speculative ranged GET for size, ETag and the header; ranges in
// parallel, each pinned with If-Match), with every request signed with SigV4 by a request
// decorator (unsigned when anonymous) and S3's error bodies decoded (DecodeS3Error). Retries are
// the registry's policy, as for every remote scheme (flashload/registry.h). Where requests go and whose credentials sign
// them come from the remote options first, then the AWS environment and files (aws_config.h).
//
// A model store lists the prefix once with ListObjectsV2 (paginated) and answers Stat()/List() from
// that listing, so resolving a diffusers folder or a sharded index costs one listing plus one GET
// per JSON file (read with ReadTextFile(), io/read_text.h). Folders are the '/'-separated key
// prefixes, as the AWS console shows them.
//
// Errors name the s3:// URI (or the request URL, without query string) and never hold a secret:
// signatures travel in headers, which no message quotes.
//
// Thread-safety: sources as HttpSource; a store's methods may be called concurrently.
#ifndef FLASHLOAD_IO_S3_SOURCE_H_
#define FLASHLOAD_IO_S3_SOURCE_H_

#include <memory>
#include <string>

#include "flashload/model_store.h"
#include "flashload/registry.h"
#include "flashload/source.h"
#include "io/aws_config.h"
#include "io/http_source.h"

namespace flashload {

// The S3 settings for `remote` (its set fields win over the environment `env`).
Result<S3Config> S3ConfigFor(const RemoteOpenOptions& remote, const EnvLookup& env);

// HTTP options for requests to S3 under `config`: the remote options' transport settings, the
// config's CA bundle, and a SigV4 signing decorator unless anonymous.
HttpOptions S3HttpOptions(const S3Config& config, const RemoteOpenOptions& remote);

// Opens the object `uri` ("s3://bucket/key").
Result<std::unique_ptr<Source>> OpenS3Object(const std::string& uri, const S3Config& config,
                                             const RemoteOpenOptions& remote);

// A store of the objects under the prefix `uri` names ("s3://bucket/prefix" with or without '/').
Result<std::unique_ptr<ModelStore>> OpenS3ModelStore(const std::string& uri, const S3Config& config,
                                                     const RemoteOpenOptions& remote);

// The factories RegisterBuiltinSchemes() registers for "s3": OpenS3Object() and OpenS3ModelStore()
// with the settings S3ConfigFor() finds for `options.remote` in the process environment.
Result<std::unique_ptr<Source>> OpenS3Uri(const std::string& uri, const OpenOptions& options);
Result<std::unique_ptr<ModelStore>> OpenS3UriModelStore(const std::string& uri,
                                                        const OpenOptions& options);

}  // namespace flashload

#endif  // FLASHLOAD_IO_S3_SOURCE_H_
