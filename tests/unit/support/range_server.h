// RangeServer: runs tools/range_server.py (an S3-compatible range server on 127.0.0.1, or the
// loopback address given as "--host ADDR" in the args, with
// bandwidth caps, first-byte latency and fault injection) for the duration of a test.
//
// Start() spawns `python3 SCRIPT --root ROOT --port 0 --port-file ROOT/../port --quiet ARGS...`
// and waits for the port file. The destructor sends SIGTERM and reaps the process (SIGKILL after
// 5 s), so no test leaves a server running. SetFaults() and Stats() talk to its /__control and
// /__stats endpoints over a plain socket.
//
// Thread-safety: none; one test thread owns a server.
#ifndef FLASHLOAD_TESTS_SUPPORT_RANGE_SERVER_H_
#define FLASHLOAD_TESTS_SUPPORT_RANGE_SERVER_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "flashload/status.h"

namespace flashload::testing {

class RangeServer {
 public:
  // `root` holds one folder per bucket; `work_dir` (existing) receives the port file.
  static Result<std::unique_ptr<RangeServer>> Start(const std::string& script,
                                                    const std::string& root,
                                                    const std::string& work_dir,
                                                    std::vector<std::string> args = {});
  ~RangeServer();
  RangeServer(const RangeServer&) = delete;
  RangeServer& operator=(const RangeServer&) = delete;

  int port() const { return port_; }
  // "http://HOST:PORT/" + path (e.g. "bucket/key"); HOST is 127.0.0.1 unless --host was given.
  std::string Url(const std::string& path) const;

  // Answers every object request with a redirect to `prefix` + its path ("" stops).
  Status RedirectTo(const std::string& prefix);
  // The whole /__stats answer (JSON), request_headers included.
  Result<std::string> StatsJson();
  // Replaces the fault rules (their counters restart); "" clears them.
  Status SetFaults(const std::string& spec);
  // An integer field of /__stats (e.g. "requests", "faults_injected"). The stats request itself
  // counts in "requests".
  Result<uint64_t> Stat(const std::string& field);

 private:
  RangeServer(pid_t pid, int port, std::string host)
      : pid_(pid), port_(port), host_(std::move(host)) {}
  // One request over a fresh connection; returns the body of a 200 answer.
  Result<std::string> Exchange(const std::string& method, const std::string& path,
                               const std::string& body);

  pid_t pid_;
  int port_;
  std::string host_;
};

#ifdef FL_TEST_DATA_DIR
// tools/range_server.py of this checkout (FL_TEST_DATA_DIR is <repo>/tests/data).
inline std::string RangeServerScript() {
  return std::string(FL_TEST_DATA_DIR) + "/../../tools/range_server.py";
}
#endif

}  // namespace flashload::testing

#endif  // FLASHLOAD_TESTS_SUPPORT_RANGE_SERVER_H_
