// Names of packed models and short model references.
//
// A packed model is one archive named `models--ORG--NAME--PRECISION.tar.zst` (or `.tar`), the
// naming teams serving diffusers models already use. A short reference `ORG/NAME@PRECISION`
// (for instance `stabilityai/stable-diffusion-2-1-base@fp16`) resolves to that archive under a
// store URL (FLASHLOAD_STORE, for instance `s3://bucket/models/`), and a pulled model lives in the
// local cache (FLASHLOAD_CACHE, default `~/.cache/flashload`).
//
// Thread-safety: pure functions, except the ones reading the environment (getenv), which are safe
// as long as nothing changes the environment meanwhile.
#ifndef FLASHLOAD_STORE_MODEL_REF_H_
#define FLASHLOAD_STORE_MODEL_REF_H_

#include <string>
#include <string_view>

#include "flashload/status.h"

namespace flashload::store {

// A model's identity: organisation, name and precision ("fp16", "bf16", "fp32").
struct ModelRef {
  std::string org;
  std::string name;
  std::string precision;
};

// Parses "ORG/NAME@PRECISION". Each part is 1..96 characters of [A-Za-z0-9._-], not starting with
// '.' or '-', and containing no "--" (the separator of archive names). kInvalidArgument naming
// the reference and the part at fault.
Result<ModelRef> ParseModelRef(std::string_view ref);
// Whether `s` looks like a short reference (no "://", no leading '/' or '.', exactly one '/' and
// one '@' after it), so commands can tell it from a path or URL before parsing it.
bool LooksLikeModelRef(std::string_view s);

// "models--ORG--NAME--PRECISION" + `extension` (".tar.zst" or ".tar").
std::string ArchiveName(const ModelRef& ref, std::string_view extension = ".tar.zst");
// The reverse of ArchiveName() for a file name (no folders), with the extension returned in
// `extension` when not null; kInvalidArgument when the name does not follow the pattern.
Result<ModelRef> ParseArchiveName(std::string_view file_name, std::string* extension = nullptr);

// The URL of `ref`'s archive under `store_url` ("s3://bucket/prefix/" or "https://host/path/";
// a missing trailing '/' is added).
std::string ArchiveUrl(const ModelRef& ref, std::string_view store_url);

// FLASHLOAD_STORE, or kFailedPrecondition saying to set it (a short reference needs a store).
Result<std::string> StoreUrlFromEnv();
// FLASHLOAD_CACHE, else $XDG_CACHE_HOME/flashload, else $HOME/.cache/flashload; kFailedPrecondition
// when none can be found.
Result<std::string> CacheDirFromEnv();

}  // namespace flashload::store

#endif  // FLASHLOAD_STORE_MODEL_REF_H_
