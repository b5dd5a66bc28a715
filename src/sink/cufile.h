// GPUDirect Storage (cuFile), loaded at run time with dlopen: flashload has no link-time
// dependency on libcufile, and a machine without it loads through the pinned staging path.
//
// ProbeCuFile() decides, once per GPU load, whether files may be read straight into device memory.
// Today it only establishes whether the library can be loaded and says why the staging path is
// used; the direct read path itself (cuFileDriverOpen in real direct mode, not compatibility
// mode, cuFileHandleRegister per file, falling back per file when registration fails) is not
// implemented yet, so every file is staged and its FileReport says why.
//
// Thread-safety: ProbeCuFile() may be called from any thread; the library handle, once loaded,
// stays loaded for the life of the process.
#ifndef FLASHLOAD_SINK_CUFILE_H_
#define FLASHLOAD_SINK_CUFILE_H_

#include <string>
#include <vector>

namespace flashload::sink {

struct CuFileProbe {
  bool direct = false;  // files may be read with cuFileRead into device memory
  std::string reason;   // why not (or how), for the load report
};

// Tries `libraries` in order (default: libcufile.so.0, then libcufile.so).
CuFileProbe ProbeCuFile(const std::vector<std::string>& libraries = {"libcufile.so.0",
                                                                     "libcufile.so"});

}  // namespace flashload::sink

#endif  // FLASHLOAD_SINK_CUFILE_H_
