#include "io/s3_upload.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/strings.h"
#include "io/sigv4.h"
#include "io/xml.h"
#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload {
namespace {

using ::flashload::testing::PositionalBytes;
using ::testing::HasSubstr;

constexpr uint64_t kMiB = uint64_t{1} << 20;

// ---- pure functions ------------------------------------------------------------------------

TEST(ChoosePartBytesTest, KeepsTheRequestedSizeWhenTheObjectFits) {
  EXPECT_EQ(*ChoosePartBytes(100 * kMiB, 8 * kMiB), 8 * kMiB);
  EXPECT_EQ(*ChoosePartBytes(0, kS3MinPartBytes), kS3MinPartBytes);
}

TEST(ChoosePartBytesTest, RaisesThePartSizeToFitTenThousandParts) {
  const uint64_t size = uint64_t{1} << 40;  // 1 TiB at 5 MiB would be 209716 parts
  Result<uint64_t> part = ChoosePartBytes(size, kS3MinPartBytes);
  ASSERT_THAT(part, IsOk());
  EXPECT_EQ(*part % kMiB, 0u);
  EXPECT_LE((size + *part - 1) / *part, kS3MaxParts);
  EXPECT_GT((size + (*part - kMiB) - 1) / (*part - kMiB), kS3MaxParts);  // the smallest such
}

TEST(ChoosePartBytesTest, RefusesSizesOutsideS3Limits) {
  EXPECT_THAT(ChoosePartBytes(kMiB, 4 * kMiB), StatusIs(StatusCode::kInvalidArgument));
  EXPECT_THAT(ChoosePartBytes(kMiB, kS3MaxPartBytes + 1), StatusIs(StatusCode::kInvalidArgument));
  EXPECT_THAT(ChoosePartBytes(kS3MaxParts * kS3MaxPartBytes + 1, kS3MinPartBytes),
              StatusIs(StatusCode::kInvalidArgument));
}

TEST(CompleteMultipartXmlTest, ListsEtagsInPartOrderEscaped) {
  const std::string xml = CompleteMultipartXml({"\"a\"", "\"b&c\""});
  EXPECT_EQ(xml,
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>&quot;a&quot;</ETag>"
            "</Part><Part><PartNumber>2</PartNumber><ETag>&quot;b&amp;c&quot;</ETag></Part>"
            "</CompleteMultipartUpload>");
  Result<XmlElement> parsed = ParseS3Xml(xml, "test");
  ASSERT_THAT(parsed, IsOk());
  EXPECT_EQ(parsed->children[1].Child("ETag")->text, "\"b&c\"");
}

TEST(ParseCreateMultipartUploadXmlTest, ReadsTheUploadId) {
  Result<std::string> id = ParseCreateMultipartUploadXml(
      "<?xml version=\"1.0\"?><InitiateMultipartUploadResult xmlns=\"http://s3.amazonaws.com/doc/"
      "2006-03-01/\"><Bucket>b</Bucket><Key>k</Key><UploadId>abc-123</UploadId>"
      "</InitiateMultipartUploadResult>",
      200, "create");
  ASSERT_THAT(id, IsOk());
  EXPECT_EQ(*id, "abc-123");
}

TEST(ParseCreateMultipartUploadXmlTest, RefusesErrorsOtherDocumentsAndAMissingId) {
  EXPECT_THAT(ParseCreateMultipartUploadXml(
                  "<Error><Code>AccessDenied</Code><Message>no</Message></Error>", 403, "create"),
              StatusIs(StatusCode::kFailedPrecondition));
  EXPECT_THAT(ParseCreateMultipartUploadXml("<ListBucketResult/>", 200, "create"),
              StatusIs(StatusCode::kDataLoss));
  EXPECT_THAT(ParseCreateMultipartUploadXml("<InitiateMultipartUploadResult><UploadId></UploadId>"
                                            "</InitiateMultipartUploadResult>",
                                            200, "create"),
              StatusIs(StatusCode::kDataLoss));
  EXPECT_THAT(ParseCreateMultipartUploadXml("not xml", 200, "create"),
              StatusIs(StatusCode::kDataLoss));
}

TEST(ParseCompleteMultipartUploadXmlTest, AnErrorInsideA200IsAnError) {
  Result<std::string> ok = ParseCompleteMultipartUploadXml(
      "<CompleteMultipartUploadResult><ETag>\"x-3\"</ETag></CompleteMultipartUploadResult>", "c");
  ASSERT_THAT(ok, IsOk());
  EXPECT_EQ(*ok, "\"x-3\"");
  Result<std::string> internal = ParseCompleteMultipartUploadXml(
      "<Error><Code>InternalError</Code><Message>try again</Message></Error>", "complete k");
  EXPECT_THAT(internal, StatusIs(StatusCode::kUnavailable));  // retryable
  EXPECT_THAT(internal.status().message(), HasSubstr("complete k"));
  EXPECT_THAT(ParseCompleteMultipartUploadXml(
                  "<Error><Code>InvalidPart</Code><Message>bad etag</Message></Error>", "c"),
              StatusIs(StatusCode::kIoError));
  EXPECT_THAT(ParseCompleteMultipartUploadXml("<Other/>", "c"), StatusIs(StatusCode::kDataLoss));
}

// ---- an in-process S3 that takes writes -----------------------------------------------------

struct FakeRequest {
  std::string method;
  std::string path;
  std::map<std::string, std::string> query;
  std::map<std::string, std::string> headers;  // names lower case
  std::string body;
};

std::string Get(const std::map<std::string, std::string>& m, const std::string& key) {
  auto it = m.find(key);
  return it == m.end() ? "" : it->second;
}

struct FakeResponse {
  int code = 200;
  std::string body;
  std::string etag;
};

// A minimal HTTP/1.1 server (keep-alive, Content-Length bodies) on 127.0.0.1 with an in-memory S3
// behind it: PutObject, CreateMultipartUpload, UploadPart, CompleteMultipartUpload,
// AbortMultipartUpload. `fault` may answer a request instead (called with the request's index).
class FakeS3 {
 public:
  using Fault = std::function<std::optional<FakeResponse>(const FakeRequest&, int index)>;

  explicit FakeS3(Fault fault = nullptr) : fault_(std::move(fault)) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    EXPECT_EQ(bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(listen(listen_fd_, 64), 0);
    socklen_t len = sizeof(addr);
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] { Accept(); });
  }

  ~FakeS3() {
    stopping_ = true;
    shutdown(listen_fd_, SHUT_RDWR);
    close(listen_fd_);
    acceptor_.join();
    {
      std::lock_guard lock(mu_);
      for (int fd : conn_fds_) shutdown(fd, SHUT_RDWR);
    }
    for (std::thread& t : conns_) t.join();
  }

  std::string endpoint() const { return fmt::format("http://127.0.0.1:{}", port_); }

  std::map<std::string, std::string> objects() {
    std::lock_guard lock(mu_);
    return objects_;
  }
  std::vector<FakeRequest> requests() {
    std::lock_guard lock(mu_);
    return log_;
  }
  size_t open_uploads() {
    std::lock_guard lock(mu_);
    return uploads_.size();
  }

 private:
  struct Upload {
    std::string key;
    std::map<int, std::pair<std::string, std::string>> parts;  // number -> (etag, bytes)
  };

  void Accept() {
    while (!stopping_) {
      const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) return;
      std::lock_guard lock(mu_);
      conn_fds_.push_back(fd);
      conns_.emplace_back([this, fd] { Serve(fd); });
    }
  }

  static bool ReadMore(int fd, std::string& buf) {
    char chunk[65536];
    const ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
    if (n <= 0) return false;
    buf.append(chunk, static_cast<size_t>(n));
    return true;
  }

  void Serve(int fd) {
    std::string buf;
    for (;;) {
      size_t end;
      while ((end = buf.find("\r\n\r\n")) == std::string::npos) {
        if (!ReadMore(fd, buf)) {
          close(fd);
          return;
        }
      }
      FakeRequest req;
      const std::string head = buf.substr(0, end);
      buf.erase(0, end + 4);
      size_t line_end = head.find("\r\n");
      const std::string first = head.substr(0, line_end);
      const size_t sp1 = first.find(' ');
      const size_t sp2 = first.find(' ', sp1 + 1);
      req.method = first.substr(0, sp1);
      std::string target = first.substr(sp1 + 1, sp2 - sp1 - 1);
      const size_t q = target.find('?');
      req.path = target.substr(0, q);
      if (q != std::string::npos) {
        const std::string query = target.substr(q + 1);
        for (std::string_view kv : Split(query, '&')) {
          const size_t eq = kv.find('=');
          req.query[std::string(kv.substr(0, eq))] =
              eq == std::string_view::npos ? "" : std::string(kv.substr(eq + 1));
        }
      }
      while (line_end != std::string::npos && line_end < head.size()) {
        const size_t next = head.find("\r\n", line_end + 2);
        const std::string line = head.substr(line_end + 2, next - line_end - 2);
        const size_t colon = line.find(':');
        if (colon != std::string::npos) {
          std::string name = line.substr(0, colon);
          for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
          req.headers[name] = std::string(Trim(line.substr(colon + 1)));
        }
        line_end = next;
      }
      const size_t length =
          req.headers.count("content-length") ? std::stoul(Get(req.headers, "content-length")) : 0;
      while (buf.size() < length) {
        if (!ReadMore(fd, buf)) {
          close(fd);
          return;
        }
      }
      req.body = buf.substr(0, length);
      buf.erase(0, length);
      const FakeResponse resp = Handle(req);
      std::string out =
          fmt::format("HTTP/1.1 {} X\r\nContent-Length: {}\r\n", resp.code, resp.body.size());
      if (!resp.etag.empty()) out += fmt::format("ETag: {}\r\n", resp.etag);
      out += "\r\n" + resp.body;
      if (send(fd, out.data(), out.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(out.size())) {
        close(fd);
        return;
      }
    }
  }

  static std::vector<std::string_view> Split(std::string_view s, char sep) {
    std::vector<std::string_view> out;
    size_t start = 0;
    while (start <= s.size()) {
      const size_t end = std::min(s.find(sep, start), s.size());
      out.push_back(s.substr(start, end - start));
      start = end + 1;
    }
    return out;
  }

  static FakeResponse Error(int code, std::string_view s3_code) {
    return {code, fmt::format("<Error><Code>{}</Code><Message>fake</Message></Error>", s3_code),
            ""};
  }

  FakeResponse Handle(const FakeRequest& req) {
    std::lock_guard lock(mu_);
    const int index = static_cast<int>(log_.size());
    log_.push_back(req);
    if (fault_) {
      if (std::optional<FakeResponse> r = fault_(req, index)) return *r;
    }
    // Signed requests carry the SHA-256 of their body.
    auto sha = req.headers.find("x-amz-content-sha256");
    if (sha != req.headers.end() && sha->second != Sha256Hex(req.body)) {
      return Error(400, "XAmzContentSHA256Mismatch");
    }
    const std::string key = req.path;
    if (req.method == "PUT" && req.query.empty()) {
      objects_[key] = req.body;
      return {200, "", "\"" + Sha256Hex(req.body).substr(0, 32) + "\""};
    }
    if (req.method == "POST" && req.query.count("uploads")) {
      const std::string id = fmt::format("upload{}", next_id_++);
      uploads_[id].key = key;
      return {200,
              fmt::format("<InitiateMultipartUploadResult><UploadId>{}</UploadId>"
                          "</InitiateMultipartUploadResult>",
                          id),
              ""};
    }
    auto it = uploads_.find(req.query.count("uploadId") ? req.query.at("uploadId") : "");
    if (it == uploads_.end()) return Error(404, "NoSuchUpload");
    if (req.method == "PUT") {
      const std::string etag = "\"" + Sha256Hex(req.body).substr(0, 32) + "\"";
      it->second.parts[std::stoi(req.query.at("partNumber"))] = {etag, req.body};
      return {200, "", etag};
    }
    if (req.method == "DELETE") {
      uploads_.erase(it);
      return {204, "", ""};
    }
    if (req.method == "POST") {
      Result<XmlElement> doc = ParseS3Xml(req.body, "complete");
      if (!doc.ok()) return Error(400, "MalformedXML");
      std::string object;
      int expected = 1;
      for (const XmlElement& part : doc->children) {
        const int n = std::stoi(part.Child("PartNumber")->text);
        auto p = it->second.parts.find(n);
        if (n != expected++ || p == it->second.parts.end() ||
            p->second.first != part.Child("ETag")->text) {
          return Error(400, "InvalidPart");
        }
        object += p->second.second;
      }
      objects_[it->second.key] = object;
      uploads_.erase(it);
      return {200,
              "<CompleteMultipartUploadResult><ETag>\"done\"</ETag>"
              "</CompleteMultipartUploadResult>",
              ""};
    }
    return Error(405, "MethodNotAllowed");
  }

  Fault fault_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<int> conn_fds_;                   // guarded by mu_
  std::vector<std::thread> conns_;              // guarded by mu_
  std::vector<FakeRequest> log_;                // guarded by mu_
  std::map<std::string, std::string> objects_;  // guarded by mu_
  std::map<std::string, Upload> uploads_;       // guarded by mu_
  int next_id_ = 1;                             // guarded by mu_
};

S3Uploader UploaderFor(const FakeS3& server, bool signed_requests = true) {
  S3Config config;
  config.options.endpoint = server.endpoint();
  config.options.path_style = true;
  config.options.region = "us-east-1";
  if (signed_requests) {
    config.credentials.access_key_id = "AKIDEXAMPLE";
    config.credentials.secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
  } else {
    config.options.anonymous = true;
  }
  HttpOptions http;
  http.connect_timeout = std::chrono::milliseconds(2000);
  return S3Uploader(config, http);
}

S3UploadOptions FastOptions() {
  S3UploadOptions o;
  o.part_bytes = kS3MinPartBytes;
  o.parts_in_flight = 3;
  o.retry.max_attempts = 3;
  o.retry.base = std::chrono::milliseconds(1);
  o.retry.cap = std::chrono::milliseconds(5);
  o.retry.seed = 7;
  return o;
}

PartReader ReaderOf(const std::vector<std::byte>& data) {
  return [&data](uint64_t offset, std::span<std::byte> dst) {
    std::copy_n(data.begin() + static_cast<ptrdiff_t>(offset), dst.size(), dst.begin());
    return Status();
  };
}

std::string AsString(const std::vector<std::byte>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size());
}

int CountMethod(const std::vector<FakeRequest>& log, std::string_view method) {
  return static_cast<int>(std::count_if(log.begin(), log.end(),
                                        [&](const FakeRequest& r) { return r.method == method; }));
}

TEST(S3UploaderTest, MultipartUploadIsReassembledInPartOrderWithSignedPayloads) {
  FakeS3 server;
  const std::vector<std::byte> data = PositionalBytes(3 * kS3MinPartBytes + 12345, /*seed=*/3);
  std::vector<uint64_t> progress;
  S3UploadOptions options = FastOptions();
  options.progress = [&](uint64_t done) { progress.push_back(done); };
  Result<S3UploadResult> r =
      UploaderFor(server).Upload("s3://bucket/dir/obj.bin", data.size(), ReaderOf(data), options);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->parts, 4u);
  EXPECT_EQ(r->etag, "\"done\"");
  EXPECT_EQ(server.objects().at("/bucket/dir/obj.bin"), AsString(data));
  EXPECT_EQ(server.open_uploads(), 0u);
  ASSERT_EQ(progress.size(), 4u);
  EXPECT_EQ(progress.back(), data.size());
  for (const FakeRequest& req : server.requests()) {
    EXPECT_THAT(Get(req.headers, "authorization"), HasSubstr("AWS4-HMAC-SHA256"));
    EXPECT_EQ(Get(req.headers, "x-amz-content-sha256"),
              Sha256Hex(req.body));  // checked by the server
  }
}

TEST(S3UploaderTest, SmallObjectsGoInOnePutAnonymousRequestsAreUnsigned) {
  FakeS3 server;
  const std::vector<std::byte> data = PositionalBytes(1000);
  Result<S3UploadResult> r =
      UploaderFor(server, /*signed_requests=*/false)
          .Upload("s3://bucket/small", data.size(), ReaderOf(data), FastOptions());
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->parts, 0u);
  EXPECT_EQ(server.objects().at("/bucket/small"), AsString(data));
  const std::vector<FakeRequest> log = server.requests();
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0].headers.count("authorization"), 0u);
  EXPECT_EQ(Get(log[0].headers, "content-type"), "application/octet-stream");
}

TEST(S3UploaderTest, ARetryableErrorOnAPartIsRetriedAndTheUploadSucceeds) {
  std::atomic<int> slowdowns{0};
  FakeS3 server([&](const FakeRequest& req, int) -> std::optional<FakeResponse> {
    if (req.method == "PUT" && Get(req.query, "partNumber") == "2" && slowdowns++ == 0) {
      return FakeResponse{503, "<Error><Code>SlowDown</Code><Message>x</Message></Error>", ""};
    }
    return std::nullopt;
  });
  const std::vector<std::byte> data = PositionalBytes(2 * kS3MinPartBytes + 1);
  Result<S3UploadResult> r =
      UploaderFor(server).Upload("s3://bucket/k", data.size(), ReaderOf(data), FastOptions());
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->retries, 1u);
  EXPECT_EQ(server.objects().at("/bucket/k"), AsString(data));
}

TEST(S3UploaderTest, APartRefusedAbortsTheUploadAndNamesThePartAndOffset) {
  FakeS3 server([](const FakeRequest& req, int) -> std::optional<FakeResponse> {
    if (req.method == "PUT" && Get(req.query, "partNumber") == "3") {
      return FakeResponse{403, "<Error><Code>AccessDenied</Code><Message>no</Message></Error>", ""};
    }
    return std::nullopt;
  });
  const std::vector<std::byte> data = PositionalBytes(4 * kS3MinPartBytes);
  Result<S3UploadResult> r =
      UploaderFor(server).Upload("s3://bucket/k", data.size(), ReaderOf(data), FastOptions());
  EXPECT_THAT(r, StatusIs(StatusCode::kFailedPrecondition));
  EXPECT_THAT(r.status().message(), HasSubstr("part 3 of 4"));
  EXPECT_THAT(r.status().message(), HasSubstr(fmt::format("byte offset {}", 2 * kS3MinPartBytes)));
  EXPECT_THAT(r.status().message(), HasSubstr("s3://bucket/k"));
  EXPECT_THAT(r.status().message(), HasSubstr("aborted"));
  EXPECT_EQ(server.open_uploads(), 0u);
  EXPECT_EQ(server.objects().count("/bucket/k"), 0u);
  EXPECT_EQ(CountMethod(server.requests(), "DELETE"), 1);
  // Not retried: a 403 cannot succeed on a second try.
  int part3 = 0;
  for (const FakeRequest& req : server.requests()) part3 += Get(req.query, "partNumber") == "3";
  EXPECT_EQ(part3, 1);
}

TEST(S3UploaderTest, AnErrorInsideTheCompleteAnswerIsRetriedThenAborts) {
  FakeS3 server([](const FakeRequest& req, int) -> std::optional<FakeResponse> {
    if (req.method == "POST" && req.query.count("uploadId")) {
      return FakeResponse{200, "<Error><Code>InternalError</Code><Message>x</Message></Error>", ""};
    }
    return std::nullopt;
  });
  const std::vector<std::byte> data = PositionalBytes(kS3MinPartBytes + 1);
  Result<S3UploadResult> r =
      UploaderFor(server).Upload("s3://bucket/k", data.size(), ReaderOf(data), FastOptions());
  EXPECT_THAT(r, StatusIs(StatusCode::kUnavailable));
  EXPECT_THAT(r.status().message(), HasSubstr("gave up after 3 attempts"));
  EXPECT_EQ(server.open_uploads(), 0u);
  EXPECT_EQ(server.objects().count("/bucket/k"), 0u);
}

TEST(S3UploaderTest, AReaderErrorAbortsTheUpload) {
  FakeS3 server;
  const std::vector<std::byte> data = PositionalBytes(3 * kS3MinPartBytes);
  const PartReader failing = [&](uint64_t offset, std::span<std::byte> dst) -> Status {
    if (offset >= kS3MinPartBytes) return IoError(fmt::format("disk at byte offset {}", offset));
    return ReaderOf(data)(offset, dst);
  };
  Result<S3UploadResult> r =
      UploaderFor(server).Upload("s3://bucket/k", data.size(), failing, FastOptions());
  EXPECT_THAT(r, StatusIs(StatusCode::kIoError));
  EXPECT_THAT(r.status().message(), HasSubstr("reading part"));
  EXPECT_EQ(server.open_uploads(), 0u);
  EXPECT_EQ(CountMethod(server.requests(), "DELETE"), 1);
}

TEST(S3UploaderTest, CancellationAbortsTheUpload) {
  FakeS3 server;
  std::atomic<bool> cancel{false};
  const std::vector<std::byte> data = PositionalBytes(4 * kS3MinPartBytes);
  S3UploadOptions options = FastOptions();
  options.parts_in_flight = 1;
  options.cancel = &cancel;
  const PartReader read = [&](uint64_t offset, std::span<std::byte> dst) {
    cancel = true;  // Ctrl-C while the first part is read
    return ReaderOf(data)(offset, dst);
  };
  Result<S3UploadResult> r =
      UploaderFor(server).Upload("s3://bucket/k", data.size(), read, options);
  EXPECT_THAT(r, StatusIs(StatusCode::kCancelled));
  EXPECT_EQ(server.open_uploads(), 0u);
  EXPECT_EQ(server.objects().count("/bucket/k"), 0u);
  EXPECT_LE(CountMethod(server.requests(), "PUT"), 1);
}

TEST(S3UploaderTest, AFailedAbortSaysWhichUploadIdToRemove) {
  FakeS3 server([](const FakeRequest& req, int) -> std::optional<FakeResponse> {
    if (req.method == "PUT" && req.query.count("partNumber")) {
      return FakeResponse{400, "<Error><Code>InvalidArgument</Code><Message>x</Message></Error>",
                          ""};
    }
    if (req.method == "DELETE") {
      return FakeResponse{403, "<Error><Code>AccessDenied</Code><Message>x</Message></Error>", ""};
    }
    return std::nullopt;
  });
  const std::vector<std::byte> data = PositionalBytes(kS3MinPartBytes + 1);
  Result<S3UploadResult> r =
      UploaderFor(server).Upload("s3://bucket/k", data.size(), ReaderOf(data), FastOptions());
  EXPECT_THAT(r, StatusIs(StatusCode::kInvalidArgument));
  EXPECT_THAT(r.status().message(), HasSubstr("abort upload id upload1"));
}

TEST(S3UploaderTest, RefusesAPrefixAsTheObject) {
  FakeS3 server;
  EXPECT_THAT(UploaderFor(server).PutObject("s3://bucket/dir/", {}, FastOptions()),
              StatusIs(StatusCode::kInvalidArgument));
}

TEST(S3UploaderTest, AConnectionRefusedIsRetryableAndNamesTheObject) {
  int port = 0;
  {
    FakeS3 gone;
    port = std::stoi(gone.endpoint().substr(gone.endpoint().rfind(':') + 1));
  }
  S3Config config;
  config.options.endpoint = fmt::format("http://127.0.0.1:{}", port);
  config.options.path_style = true;
  config.options.anonymous = true;
  S3Uploader uploader(config, HttpOptions{});
  S3UploadOptions options = FastOptions();
  options.retry.max_attempts = 2;
  const std::string text = "x";
  Result<S3UploadResult> r = uploader.PutObject(
      "s3://bucket/k", std::as_bytes(std::span(text.data(), text.size())), options);
  EXPECT_THAT(r, StatusIs(StatusCode::kUnavailable));
  EXPECT_THAT(r.status().message(), HasSubstr("s3://bucket/k"));
  EXPECT_THAT(r.status().message(), HasSubstr("gave up after 2 attempts"));
}

}  // namespace
}  // namespace flashload
