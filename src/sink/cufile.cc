#include "sink/cufile.h"

#include <dlfcn.h>
#include <fmt/format.h>

namespace flashload::sink {

CuFileProbe ProbeCuFile(const std::vector<std::string>& libraries) {
  CuFileProbe probe;
  std::string errors;
  for (const std::string& name : libraries) {
    // RTLD_NOLOAD first: a library already loaded by this process is reused as is.
    void* handle = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
    if (handle == nullptr) handle = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      const char* err = dlerror();
      errors += fmt::format("{}{}", errors.empty() ? "" : "; ", err != nullptr ? err : name);
      continue;
    }
    const bool has_api = dlsym(handle, "cuFileDriverOpen") != nullptr &&
                         dlsym(handle, "cuFileHandleRegister") != nullptr &&
                         dlsym(handle, "cuFileRead") != nullptr;
    probe.reason = has_api ? fmt::format(
                                 "pinned staging: {} found, but flashload's direct cuFile "
                                 "path is not implemented yet",
                                 name)
                           : fmt::format("pinned staging: {} lacks the cuFile API", name);
    return probe;
  }
  probe.reason = fmt::format("pinned staging: GPUDirect Storage unavailable ({})", errors);
  return probe;
}

}  // namespace flashload::sink
