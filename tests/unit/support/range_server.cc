#include "support/range_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

extern char** environ;

namespace flashload::testing {
namespace {

using Clock = std::chrono::steady_clock;

// Waits up to `limit` for `pid` to exit; true when it did (and was reaped).
bool WaitExit(pid_t pid, std::chrono::milliseconds limit) {
  const Clock::time_point until = Clock::now() + limit;
  for (;;) {
    int status = 0;
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD)) return true;
    if (Clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void Stop(pid_t pid) {
  kill(pid, SIGTERM);
  if (!WaitExit(pid, std::chrono::seconds(5))) {
    kill(pid, SIGKILL);
    WaitExit(pid, std::chrono::seconds(5));
  }
}

}  // namespace

Result<std::unique_ptr<RangeServer>> RangeServer::Start(const std::string& script,
                                                        const std::string& root,
                                                        const std::string& work_dir,
                                                        std::vector<std::string> args) {
  if (access(script.c_str(), R_OK) != 0) {
    return ErrnoToStatus(errno, "open range server script", script);
  }
  const std::string port_file = work_dir + "/range_server.port";
  unlink(port_file.c_str());
  std::vector<std::string> argv_s = {"python3", script,        "--root",  root,     "--port",
                                     "0",       "--port-file", port_file, "--quiet"};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, "python3", &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return ErrnoToStatus(rc, "posix_spawnp python3", script);

  const Clock::time_point until = Clock::now() + std::chrono::seconds(20);
  while (Clock::now() < until) {
    std::ifstream f(port_file);
    int port = 0;
    if (f >> port && port > 0) {
      std::string host = "127.0.0.1";
      for (size_t i = 0; i + 1 < args.size(); ++i) {
        if (args[i] == "--host") host = args[i + 1];
      }
      return std::unique_ptr<RangeServer>(new RangeServer(pid, port, host));
    }
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      return FailedPreconditionError(
          fmt::format("{} exited (status {}) before listening; see its stderr", script, status));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  Stop(pid);
  return DeadlineExceededError(fmt::format("{} did not write {} within 20 s", script, port_file));
}

RangeServer::~RangeServer() { Stop(pid_); }

std::string RangeServer::Url(const std::string& path) const {
  return fmt::format("http://{}:{}/{}", host_, port_, path);
}

Result<std::string> RangeServer::Exchange(const std::string& method, const std::string& path,
                                          const std::string& body) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoToStatus(errno, "socket", "range server");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port_));
  if (inet_pton(AF_INET, host_.c_str(), &addr.sin_addr) != 1) {
    close(fd);
    return InvalidArgumentError(fmt::format("range server host {} is not an IPv4 address", host_));
  }
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int err = errno;
    close(fd);
    return ErrnoToStatus(err, "connect", Url(""));
  }
  std::string req = fmt::format(
      "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: "
      "application/json\r\nContent-Length: {}\r\n\r\n{}",
      method, path, host_, body.size(), body);
  for (size_t sent = 0; sent < req.size();) {
    const ssize_t n = send(fd, req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) {
      const int err = errno;
      close(fd);
      return ErrnoToStatus(err, "send", Url(path));
    }
    sent += static_cast<size_t>(n);
  }
  std::string resp;
  char buf[4096];
  for (;;) {
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    resp.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  const size_t end = resp.find("\r\n\r\n");
  if (resp.rfind("HTTP/1.", 0) != 0 || end == std::string::npos) {
    return UnavailableError(
        fmt::format("{}: malformed answer '{}'", Url(path), resp.substr(0, 80)));
  }
  if (resp.compare(9, 3, "200") != 0) {
    return FailedPreconditionError(fmt::format("{}: {}", Url(path), resp.substr(0, 200)));
  }
  return resp.substr(end + 4);
}

Status RangeServer::SetFaults(const std::string& spec) {
  return Exchange("POST", "/__control", fmt::format("{{\"faults\": \"{}\"}}", spec)).status();
}

Status RangeServer::RedirectTo(const std::string& prefix) {
  return Exchange("POST", "/__control", fmt::format("{{\"redirect_to\": \"{}\"}}", prefix))
      .status();
}

Result<std::string> RangeServer::StatsJson() { return Exchange("GET", "/__stats", ""); }

Result<uint64_t> RangeServer::Stat(const std::string& field) {
  FL_ASSIGN_OR_RETURN(std::string json, Exchange("GET", "/__stats", ""));
  const std::string key = fmt::format("\"{}\":", field);
  size_t p = json.find(key);
  if (p == std::string::npos)
    return NotFoundError(fmt::format("/__stats has no {}: {}", field, json));
  p += key.size();
  while (p < json.size() && json[p] == ' ') ++p;
  uint64_t v = 0;
  size_t digits = 0;
  while (p < json.size() && json[p] >= '0' && json[p] <= '9') {
    v = v * 10 + static_cast<uint64_t>(json[p++] - '0');
    ++digits;
  }
  if (digits == 0)
    return DataLossError(fmt::format("/__stats {} is not a number: {}", field, json));
  return v;
}

}  // namespace flashload::testing
