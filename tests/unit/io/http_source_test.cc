#include "io/http_source.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "io/registry.h"
#include "io/retry_source.h"
#include "support/range_server.h"
#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload {
namespace {

using ::flashload::testing::FirstPositionMismatch;
using ::flashload::testing::PositionalBytes;
using ::flashload::testing::RangeServer;
using ::flashload::testing::RangeServerScript;
using ::flashload::testing::TempDir;
using ::flashload::testing::WriteFile;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using namespace std::chrono_literals;

constexpr uint64_t kModelSize = (3 << 20) + 12345;  // not a multiple of anything in use
constexpr uint64_t kSmallSize = 1000;
constexpr uint64_t kSeed = 21;
constexpr uint64_t kMiB = 1 << 20;

class HttpSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(mkdir(dir_.File("root").c_str(), 0755), 0);
    ASSERT_EQ(mkdir(dir_.File("root/bucket").c_str(), 0755), 0);
    WriteFile(dir_.File("root/bucket/model.bin"), PositionalBytes(kModelSize, kSeed));
    WriteFile(dir_.File("root/bucket/small.bin"), PositionalBytes(kSmallSize, kSeed));
    WriteFile(dir_.File("root/bucket/empty.bin"), std::string());
  }

  // Starts the server with extra flags (once per test).
  void StartServer(std::vector<std::string> args = {}) {
    Result<std::unique_ptr<RangeServer>> s =
        RangeServer::Start(RangeServerScript(), dir_.File("root"), dir_.path(), std::move(args));
    ASSERT_THAT(s, IsOk());
    server_ = std::move(s).value();
  }

  std::string Url(const std::string& key) const { return server_->Url("bucket/" + key); }

  // Object GETs the server saw since the last call (the /__stats requests themselves excluded).
  uint64_t NewRequests() {
    Result<uint64_t> n = server_->Stat("requests");
    EXPECT_THAT(n, IsOk());
    const uint64_t now = n.ok() ? *n : 0;
    const uint64_t delta = now - last_requests_ - 1;  // minus this stats request
    last_requests_ = now;
    return delta;
  }

  static HttpOptions Options() {
    HttpOptions o;
    o.connections = 4;
    return o;
  }

  std::unique_ptr<HttpSource> Open(const std::string& key, HttpOptions o = Options()) {
    Result<std::unique_ptr<HttpSource>> s = OpenHttpObject(Url(key), o);
    EXPECT_THAT(s, IsOk());
    return s.ok() ? std::move(s).value() : nullptr;
  }

  TempDir dir_;
  std::unique_ptr<RangeServer> server_;
  uint64_t last_requests_ = 0;
};

// Submits `size` bytes from `offset` as chunks of `chunk` into `buf` (indexed from 0), in a
// shuffled order, and reaps every completion (within 60 s), keyed by tag (= buffer offset).
std::map<uint64_t, ReadResult> ReadChunks(Source& s, std::vector<std::byte>& buf, uint64_t chunk) {
  std::vector<ReadRequest> reqs;
  for (uint64_t off = 0; off < buf.size(); off += chunk) {
    reqs.push_back({off, std::min<uint64_t>(chunk, buf.size() - off), buf.data() + off, off});
  }
  std::shuffle(reqs.begin(), reqs.end(), std::mt19937_64(3));
  std::map<uint64_t, ReadResult> done;
  EXPECT_THAT(s.Submit(reqs), IsOk());
  std::vector<ReadResult> out(16);
  const Deadline give_up = Deadline::In(60s);
  while (done.size() < reqs.size() && !give_up.expired()) {
    Result<size_t> n = s.Reap(out, Deadline::In(1s));
    EXPECT_THAT(n, IsOk());
    if (!n.ok()) break;
    for (size_t i = 0; i < *n; ++i) {
      EXPECT_TRUE(done.emplace(out[i].tag, out[i]).second) << "tag reaped twice " << out[i].tag;
    }
  }
  EXPECT_EQ(done.size(), reqs.size()) << "every request completes exactly once";
  return done;
}

// RedactUrl() itself is proven in tests/unit/common/url_test.cc; here, what a source shows.
TEST(RedactUrlTest, DisplayUrlHasNoCredentials) {
  EXPECT_EQ(RedactUrl("https://user:pw@host:8443/b/k.bin?X-Amz-Signature=abc#f"),
            "https://host:8443/b/k.bin?X-Amz-Signature=<redacted>");
}

// Regression: a header value holding a newline injected a second header line.
TEST(CheckRequestHeadersTest, RefusesCrLfAndNulInNamesAndValues) {
  const std::string url = "http://alice:PASSWORD@127.0.0.1:1/m.safetensors";
  using Headers = std::vector<std::pair<std::string, std::string>>;
  FL_EXPECT_OK(
      CheckRequestHeaders(Headers{{"Authorization", "Bearer tok"}, {"X-Api-Key", ""}}, url));
  for (const Headers& bad : {Headers{{"Authorization", "Bearer S3CRET\nX: y"}},
                             Headers{{"Authorization", "Bearer S3CRET\r\nX: y"}},
                             Headers{{"Authorization", std::string("Bearer S3CRET\0X", 15)}}}) {
    const Status s = CheckRequestHeaders(bad, url);
    EXPECT_THAT(s, StatusIs(StatusCode::kInvalidArgument,
                            AllOf(HasSubstr("'Authorization'"), HasSubstr("CR, LF or NUL"),
                                  HasSubstr("http://127.0.0.1:1/m.safetensors"))));
    EXPECT_THAT(std::string(s.message()),
                AllOf(Not(HasSubstr("S3CRET")), Not(HasSubstr("PASSWORD"))));
  }
  for (const Headers& bad :
       {Headers{{"X\nInjected", "v"}}, Headers{{"", "v"}}, Headers{{"Two Words", "v"}}}) {
    EXPECT_THAT(CheckRequestHeaders(bad, url),
                StatusIs(StatusCode::kInvalidArgument, HasSubstr("not an HTTP token")));
  }
  // OpenHttpObject refuses before sending anything (port 1: nothing listens there).
  HttpOptions o;
  o.headers = {{"Authorization", "Bearer S3CRET\nX: y"}};
  EXPECT_THAT(OpenHttpObject(url, o), StatusIs(StatusCode::kInvalidArgument, HasSubstr("CR, LF")));
}

TEST_F(HttpSourceTest, OpenLearnsSizeEtagAndPrefixFromOneRequest) {
  StartServer();
  NewRequests();
  HttpOptions o = Options();
  o.connections = 7;
  o.chunk_size = 3 * kMiB;
  auto s = Open("model.bin", o);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(NewRequests(), 1u) << "no HEAD, no second round trip";
  EXPECT_EQ(s->size(), kModelSize);
  ASSERT_GE(s->etag().size(), 3u);
  EXPECT_EQ(s->etag().front(), '"');
  EXPECT_EQ(s->prefix_size(), kMiB);
  EXPECT_EQ(s->name(), Url("model.bin"));
  EXPECT_EQ(s->backend(), "http");
  const SourceCaps c = s->caps();
  EXPECT_EQ(c.max_in_flight, 7u);
  EXPECT_EQ(c.preferred_chunk, 3 * kMiB);
  EXPECT_FALSE(c.direct_io);
}

TEST_F(HttpSourceTest, HeaderReadIsServedFromThePrefix) {
  StartServer();
  auto s = Open("model.bin");
  ASSERT_NE(s, nullptr);
  NewRequests();
  std::vector<std::byte> head(8), body(200000);
  Result<size_t> n = s->ReadAt(0, head, {});
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, 8u);
  EXPECT_EQ(FirstPositionMismatch(head, 0, kSeed), -1);
  n = s->ReadAt(8, body, {});
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, body.size());
  EXPECT_EQ(FirstPositionMismatch(body, 8, kSeed), -1);
  EXPECT_EQ(NewRequests(), 0u) << "both reads were served from the prefix";
}

TEST_F(HttpSourceTest, FullReadEqualsTheFileAndFetchesOnlyWhatThePrefixLacks) {
  StartServer();
  auto s = Open("model.bin");
  ASSERT_NE(s, nullptr);
  NewRequests();
  std::vector<std::byte> all(kModelSize + 100);  // asks past the end: a short read at EOF
  Result<size_t> n = s->ReadAt(0, all, {});
  ASSERT_THAT(n, IsOk());
  ASSERT_EQ(*n, kModelSize);
  EXPECT_EQ(FirstPositionMismatch(std::span(all).first(kModelSize), 0, kSeed), -1);
  EXPECT_EQ(NewRequests(), 1u);
  FL_ASSERT_OK_AND_ASSIGN(const std::string seen, server_->StatsJson());
  EXPECT_THAT(seen, HasSubstr(fmt::format("bytes={}-{}", kMiB, kModelSize - 1)))
      << "the prefix is never fetched twice";
  n = s->ReadAt(kModelSize, all, {});
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, 0u);
}

TEST_F(HttpSourceTest, ManyConcurrentRangesComeBackRight) {
  StartServer();
  HttpOptions o = Options();
  o.connections = 6;
  auto s = Open("model.bin", o);
  ASSERT_NE(s, nullptr);
  std::vector<std::byte> buf(kModelSize);
  auto done = ReadChunks(*s, buf, 100 * 1024 + 7);
  for (const auto& [tag, r] : done) {
    EXPECT_THAT(r.status, IsOk()) << "tag " << tag;
    EXPECT_EQ(r.bytes, std::min<uint64_t>(100 * 1024 + 7, kModelSize - tag));
  }
  EXPECT_EQ(FirstPositionMismatch(buf, 0, kSeed), -1);
  Result<uint64_t> most = server_->Stat("max_concurrent_connections");
  ASSERT_THAT(most, IsOk());
  EXPECT_LE(*most, 6u + 1u) << "at most `connections` connections (+1 for /__stats)";
}

TEST_F(HttpSourceTest, SmallAndEmptyObjects) {
  StartServer();
  auto small = Open("small.bin");
  ASSERT_NE(small, nullptr);
  EXPECT_EQ(small->size(), kSmallSize);
  EXPECT_EQ(small->prefix_size(), kSmallSize);
  std::vector<std::byte> buf(kSmallSize);
  Result<size_t> n = small->ReadAt(0, buf, {});
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, kSmallSize);
  EXPECT_EQ(FirstPositionMismatch(buf, 0, kSeed), -1);
  EXPECT_EQ(NewRequests(), 1u);

  auto empty = Open("empty.bin");
  ASSERT_NE(empty, nullptr);
  EXPECT_EQ(empty->size(), 0u);
  n = empty->ReadAt(0, buf, {});
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, 0u);
}

TEST_F(HttpSourceTest, MissingObjectIsNotFound) {
  StartServer();
  Result<std::unique_ptr<Source>> s = OpenHttpSource(Url("nope.bin"), Options());
  EXPECT_THAT(s, StatusIs(StatusCode::kNotFound, HasSubstr(Url("nope.bin"))));
  EXPECT_THAT(s, StatusIs(StatusCode::kNotFound, HasSubstr("NoSuchKey")));
}

TEST_F(HttpSourceTest, ServerIgnoringRangeIsAClearError) {
  StartServer({"--faults", "ignore-range"});
  Result<std::unique_ptr<Source>> s = OpenHttpSource(Url("model.bin"), Options());
  EXPECT_THAT(s, StatusIs(StatusCode::kFailedPrecondition, HasSubstr("ignores Range")));
  EXPECT_THAT(s, StatusIs(StatusCode::kFailedPrecondition, HasSubstr(Url("model.bin"))));
  // An object that fits in the opening answer is fine: nothing else is ever requested.
  auto small = Open("small.bin");
  ASSERT_NE(small, nullptr);
  EXPECT_EQ(small->size(), kSmallSize);
}

TEST_F(HttpSourceTest, ServerStartingToIgnoreRangeAfterOpenIsAClearError) {
  StartServer();
  auto s = Open("model.bin");
  ASSERT_NE(s, nullptr);
  ASSERT_THAT(server_->SetFaults("ignore-range"), IsOk());
  std::vector<std::byte> buf(4096);
  Result<size_t> n = s->ReadAt(2 * kMiB, buf, {});
  EXPECT_THAT(n, StatusIs(StatusCode::kFailedPrecondition, HasSubstr("ignores Range")));
  EXPECT_THAT(n, StatusIs(StatusCode::kFailedPrecondition, HasSubstr(std::to_string(2 * kMiB))));
}

TEST_F(HttpSourceTest, ObjectChangedDuringTheLoadIsDataLossNamingTheEtag) {
  StartServer();
  auto s = Open("model.bin");
  ASSERT_NE(s, nullptr);
  const std::string etag = s->etag();
  ASSERT_THAT(server_->SetFaults("etag-change:after=0"), IsOk());
  std::vector<std::byte> buf(kMiB);
  auto retry = NewRetrySource(std::move(s), RetryPolicy{.base = 1ms, .seed = 1});
  Result<size_t> n = retry->ReadAt(kMiB, buf, {});
  EXPECT_THAT(n, StatusIs(StatusCode::kDataLoss, HasSubstr("object changed during the load")));
  EXPECT_THAT(n, StatusIs(StatusCode::kDataLoss, HasSubstr("ETag " + etag + " no longer matches")));
  EXPECT_EQ(retry->counters().retries, 0u) << "a changed object is not retried";
}

TEST_F(HttpSourceTest, AuthorizationHeaderIsSentButNeverInErrors) {
  StartServer({"--faults", "status=403:path=secret"});
  HttpOptions o = Options();
  const std::string token = "Bearer sekrit-token-0123456789";
  o.headers = {{"Authorization", token}};
  std::vector<std::string> seen;
  o.decorator = [&seen](HttpRequest& req) {
    for (const auto& [name, value] : req.headers) seen.push_back(name + "=" + value);
    return Status();
  };
  WriteFile(dir_.File("root/bucket/secret.bin"), PositionalBytes(100, kSeed));
  Result<std::unique_ptr<Source>> denied = OpenHttpSource(Url("secret.bin"), o);
  EXPECT_THAT(denied, StatusIs(StatusCode::kFailedPrecondition, HasSubstr("HTTP 403")));
  EXPECT_THAT(denied, StatusIs(StatusCode::kFailedPrecondition, Not(HasSubstr("sekrit"))));
  Result<std::unique_ptr<Source>> missing = OpenHttpSource(Url("nope.bin?sig=sekrit"), o);
  EXPECT_THAT(missing, StatusIs(StatusCode::kNotFound, Not(HasSubstr("sekrit"))));
  EXPECT_THAT(seen, ::testing::Contains("Authorization=" + token)) << "the header is sent";
}

TEST_F(HttpSourceTest, DecoratorSeesEveryRequestWithRangeAndIfMatch) {
  StartServer();
  std::vector<HttpRequest> seen;
  HttpOptions o = Options();
  o.decorator = [&seen](HttpRequest& req) {
    req.headers.emplace_back("x-amz-content-sha256", "UNSIGNED-PAYLOAD");
    seen.push_back(req);
    return Status();
  };
  auto s = Open("model.bin", o);
  ASSERT_NE(s, nullptr);
  std::vector<std::byte> buf(1000);
  FL_ASSERT_OK(s->ReadAt(2 * kMiB, buf, {}).status());
  EXPECT_EQ(FirstPositionMismatch(buf, 2 * kMiB, kSeed), -1);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].method, "GET");
  EXPECT_EQ(seen[0].range_begin, 0u);
  EXPECT_EQ(seen[0].range_end, kMiB - 1);
  EXPECT_EQ(seen[1].range_begin, 2 * kMiB);
  EXPECT_EQ(seen[1].range_end, 2 * kMiB + 999);
  EXPECT_EQ(seen[1].url, Url("model.bin"));
  using Header = std::pair<std::string, std::string>;
  EXPECT_THAT(seen[1].headers, ::testing::Contains(Header("If-Match", s->etag())));
  EXPECT_THAT(seen[1].headers, ::testing::Contains(Header(
                                   "Range", fmt::format("bytes={}-{}", 2 * kMiB, 2 * kMiB + 999))));
  EXPECT_THAT(seen[0].headers,
              Not(::testing::Contains(::testing::Field(&Header::first, "If-Match"))));

  // A decorator that fails fails the request, and nothing is sent.
  HttpOptions failing = Options();
  failing.decorator = [](HttpRequest&) { return FailedPreconditionError("no credentials"); };
  NewRequests();
  EXPECT_THAT(OpenHttpSource(Url("model.bin"), failing),
              StatusIs(StatusCode::kFailedPrecondition, HasSubstr("no credentials")));
  EXPECT_EQ(NewRequests(), 0u);
}

// Every fault the range server injects, on a clean open: reads through RetrySource come back with
// identical bytes; the same reads without retries are OK with the right bytes or fail retryably.
class HttpFaultTest : public HttpSourceTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(HttpFaultTest, RecoveredWithIdenticalBytesThroughRetrySource) {
  StartServer();
  auto s = Open("model.bin");
  ASSERT_NE(s, nullptr);
  ASSERT_THAT(server_->SetFaults(GetParam()), IsOk());
  auto retry = NewRetrySource(std::move(s),
                              RetryPolicy{.max_attempts = 10, .base = 1ms, .cap = 5ms, .seed = 17});
  std::vector<std::byte> buf(kModelSize);
  auto done = ReadChunks(*retry, buf, 256 * 1024);
  for (const auto& [tag, r] : done) {
    EXPECT_THAT(r.status, IsOk()) << "tag " << tag;
  }
  EXPECT_EQ(FirstPositionMismatch(buf, 0, kSeed), -1);
  EXPECT_GT(retry->counters().retries, 0u);
  Result<uint64_t> faults = server_->Stat("faults_injected");
  ASSERT_THAT(faults, IsOk());
  EXPECT_GT(*faults, 0u);
  const std::string spec = GetParam();
  if (spec.rfind("reset", 0) == 0 || spec.rfind("short", 0) == 0) {
    EXPECT_GT(retry->counters().bytes_resumed, 0u) << "a cut body resumes after its intact bytes";
  }
}

TEST_P(HttpFaultTest, WithoutRetriesEveryFaultIsAClearRetryableError) {
  StartServer();
  auto s = Open("model.bin");
  ASSERT_NE(s, nullptr);
  ASSERT_THAT(server_->SetFaults(GetParam()), IsOk());
  std::vector<std::byte> buf(kModelSize);
  auto done = ReadChunks(*s, buf, 256 * 1024);
  uint64_t failed = 0;
  for (const auto& [tag, r] : done) {
    if (r.status.ok()) {
      EXPECT_EQ(FirstPositionMismatch(std::span(buf).subspan(tag, r.bytes), tag, kSeed), -1);
      continue;
    }
    ++failed;
    EXPECT_THAT(r.status, StatusIs(StatusCode::kUnavailable, HasSubstr(Url("model.bin"))));
    EXPECT_THAT(r.status, StatusIs(StatusCode::kUnavailable, HasSubstr("byte offset")));
    EXPECT_LT(r.bytes, std::min<uint64_t>(256 * 1024, kModelSize - tag));
    EXPECT_EQ(FirstPositionMismatch(std::span(buf).subspan(tag, r.bytes), tag, kSeed), -1)
        << "the bytes reported intact are intact";
  }
  EXPECT_GT(failed, 0u);
}

INSTANTIATE_TEST_SUITE_P(Faults, HttpFaultTest,
                         ::testing::Values("slowdown:every=2", "status=500:every=3",
                                           "status=503:every=2", "reset:every=2", "short:every=2"));

TEST_F(HttpSourceTest, CancelCompletesEveryTransferAndTheSourceStaysUsable) {
  StartServer({"--bandwidth-per-conn", "262144"});
  HttpOptions o = Options();
  o.prefix_bytes = 16 * 1024;
  auto s = Open("model.bin", o);
  ASSERT_NE(s, nullptr);
  std::vector<std::byte> buf(8 * 256 * 1024);
  std::vector<ReadRequest> reqs;
  for (uint64_t i = 0; i < 8; ++i) {
    reqs.push_back({kMiB + i * 256 * 1024, 256 * 1024, buf.data() + i * 256 * 1024, i});
  }
  ASSERT_THAT(s->Submit(reqs), IsOk());
  std::this_thread::sleep_for(100ms);
  const auto start = std::chrono::steady_clock::now();
  s->Cancel();
  std::vector<ReadResult> out(8);
  size_t got = 0, cancelled = 0;
  while (got < reqs.size()) {
    Result<size_t> n = s->Reap(std::span(out).subspan(got), Deadline::In(10s));
    ASSERT_THAT(n, IsOk());
    ASSERT_GT(*n, 0u);
    got += *n;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  for (const ReadResult& r : out) {
    if (r.status.ok()) continue;
    ++cancelled;
    EXPECT_THAT(r.status, StatusIs(StatusCode::kCancelled, HasSubstr(Url("model.bin"))));
  }
  EXPECT_GT(cancelled, 0u);
  std::vector<std::byte> small(1000);
  Result<size_t> n = s->ReadAt(3 * kMiB, small, {});
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(FirstPositionMismatch(small, 3 * kMiB, kSeed), -1);
}

TEST_F(HttpSourceTest, ReadAtDeadlineAndRequestTimeout) {
  StartServer({"--first-byte-latency-ms", "400"});
  HttpOptions o = Options();
  o.prefix_bytes = 4096;
  o.request_timeout = 150ms;
  // The opening GET itself times out (400 ms to the first byte): a retryable error.
  Result<std::unique_ptr<Source>> slow = OpenHttpSource(Url("model.bin"), o);
  EXPECT_THAT(slow, StatusIs(StatusCode::kUnavailable, HasSubstr("timed out")));
  o.request_timeout = 0ms;
  auto s = Open("model.bin", o);
  ASSERT_NE(s, nullptr);
  std::vector<std::byte> buf(1000);
  Result<size_t> n = s->ReadAt(kMiB, buf, {.deadline = Deadline::In(50ms)});
  EXPECT_THAT(n, StatusIs(StatusCode::kDeadlineExceeded, HasSubstr(std::to_string(kMiB))));
  n = s->ReadAt(kMiB, buf, {});
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(FirstPositionMismatch(buf, kMiB, kSeed), -1);
}

TEST_F(HttpSourceTest, OpenRetriesRetryableFailures) {
  StartServer({"--faults", "slowdown:first=2"});
  // Retries are the registry's policy for every remote scheme.
  OpenOptions open;
  open.remote.max_attempts = 3;
  open.remote.retry_base_ms = 1;
  Result<std::unique_ptr<Source>> s = OpenSource(Url("model.bin"), open);
  ASSERT_THAT(s, IsOk());
  EXPECT_EQ((*s)->size(), kModelSize);
  ASSERT_THAT(server_->SetFaults("slowdown"), IsOk());
  open.remote.max_attempts = 2;
  Result<std::unique_ptr<Source>> r = OpenSource(Url("model.bin"), open);
  EXPECT_THAT(r, StatusIs(StatusCode::kUnavailable, HasSubstr("SlowDown")));
  EXPECT_THAT(r, StatusIs(StatusCode::kUnavailable, HasSubstr("after 2 attempts")));
}

TEST_F(HttpSourceTest, RegistryOpensHttpUrls) {
  StartServer();
  EXPECT_THAT(RegisteredSourceSchemes(), ::testing::IsSupersetOf({"http", "https"}));
  Result<std::unique_ptr<Source>> s = OpenSource(Url("small.bin"));
  ASSERT_THAT(s, IsOk());
  EXPECT_EQ((*s)->backend(), "http");
  EXPECT_EQ((*s)->size(), kSmallSize);
}

TEST_F(HttpSourceTest, RemoteOptionsAndModelStoreThroughTheRegistry) {
  StartServer({"--faults", "slowdown:first=1"});
  OpenOptions open;
  open.remote.connections = 5;
  open.remote.chunk_bytes = 2 * kMiB;
  open.remote.headers = {"Authorization: Bearer sekrit-0123456789"};
  open.remote.retry_base_ms = 1;
  // The first GET gets 503 SlowDown; the open is retried per the remote options.
  Result<std::unique_ptr<Source>> s = OpenSource(Url("model.bin"), open);
  ASSERT_THAT(s, IsOk());
  EXPECT_EQ((*s)->caps().max_in_flight, 5u);
  EXPECT_EQ((*s)->caps().preferred_chunk, 2 * kMiB);
  EXPECT_NE(dynamic_cast<RetrySource*>(s->get()), nullptr) << "ranges are retried too";

  Result<std::unique_ptr<ModelStore>> store = OpenModelStore(Url("model.bin"), open);
  ASSERT_THAT(store, IsOk());
  ASSERT_NE(*store, nullptr);
  // Stat answers from the name (the open that follows is the one request that finds out whether the
  // object exists), and refuses what cannot be a model file: plain HTTP cannot list folders.
  NewRequests();
  Result<ModelStore::EntryKind> file = (*store)->Stat(Url("model.safetensors"));
  ASSERT_THAT(file, IsOk());
  EXPECT_EQ(*file, ModelStore::EntryKind::kFile);
  Result<ModelStore::EntryKind> index = (*store)->Stat(Url("m.safetensors.index.json?x=1"));
  ASSERT_THAT(index, IsOk());
  EXPECT_EQ(*index, ModelStore::EntryKind::kFile);
  EXPECT_EQ(NewRequests(), 0u);
  EXPECT_THAT((*store)->Stat(server_->Url("bucket")),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("cannot list a folder")));
  WriteFile(dir_.File("root/bucket/index.json"), std::string("{\"weight_map\": {}}"));
  Result<std::string> text = (*store)->ReadText(Url("index.json"));
  ASSERT_THAT(text, IsOk());
  EXPECT_EQ(*text, "{\"weight_map\": {}}");
  EXPECT_THAT((*store)->List(server_->Url("bucket")), StatusIs(StatusCode::kUnimplemented));
}

TEST(HttpSourceNoServerTest, RefusedConnectionIsRetryableAndNotAUrlErrorOtherwise) {
  HttpOptions o;
  // Port 1 on loopback: nothing listens there.
  Result<std::unique_ptr<Source>> s = OpenHttpSource("http://127.0.0.1:1/b/k", o);
  EXPECT_THAT(s, StatusIs(StatusCode::kUnavailable, HasSubstr("http://127.0.0.1:1/b/k")));
  EXPECT_THAT(OpenHttpSource("ftp://127.0.0.1/b/k", o), StatusIs(StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace flashload

namespace flashload {
namespace {

using ::flashload::testing::RangeServer;
using ::flashload::testing::RangeServerScript;
using ::flashload::testing::TempDir;
using ::flashload::testing::WriteFile;

// Regression: a 302 from 127.0.0.1 to 127.0.0.2 sent the user's X-Api-Key to the second host on
// every request (libcurl forwards custom headers to any host). They stay with their origin unless
// header_on_redirect is set; the bytes come back right either way.
TEST_F(HttpSourceTest, HeadersAreDroppedOnARedirectToAnotherOriginUnlessTrusted) {
  Result<std::unique_ptr<RangeServer>> other = RangeServer::Start(
      RangeServerScript(), dir_.File("root"), dir_.File("root"), {"--host", "127.0.0.2"});
  ASSERT_THAT(other, IsOk());
  StartServer({"--redirect-to", fmt::format("http://127.0.0.2:{}", (*other)->port())});
  for (const bool trusted : {false, true}) {
    SCOPED_TRACE(trusted ? "header_on_redirect" : "default");
    const std::string secret = trusted ? "SECRET-KEY-TRUSTED" : "SECRET-KEY-DEFAULT";
    HttpOptions o = Options();
    o.headers = {{"X-Api-Key", secret}};
    o.header_on_redirect = trusted;
    o.chunk_size = kMiB;
    std::unique_ptr<HttpSource> s = Open("model.bin", o);
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(s->size(), kModelSize);
    std::vector<std::byte> buf(kModelSize);
    for (const auto& [tag, r] : ReadChunks(*s, buf, kMiB)) EXPECT_THAT(r.status, IsOk());
    EXPECT_EQ(FirstPositionMismatch(buf, 0, kSeed), -1);
    FL_ASSERT_OK_AND_ASSIGN(const std::string first, server_->StatsJson());
    FL_ASSERT_OK_AND_ASSIGN(const std::string second, (*other)->StatsJson());
    EXPECT_THAT(first, HasSubstr(secret)) << "the URL's own host gets the header";
    if (trusted) {
      EXPECT_THAT(second, HasSubstr(secret));
    } else {
      EXPECT_THAT(second, Not(HasSubstr(secret))) << "another host never gets it";
    }
    FL_ASSERT_OK_AND_ASSIGN(const uint64_t served, (*other)->Stat("requests"));
    EXPECT_GT(served, 4u) << "every range went through the redirect";
  }
}

TEST_F(HttpSourceTest, ARedirectLoopIsAClearErrorNamingTheUrl) {
  StartServer({"--redirect-to", "/loop"});
  HttpOptions o = Options();
  o.max_redirects = 3;
  EXPECT_THAT(OpenHttpObject(Url("model.bin") + "?token=TOKSECRET", o),
              StatusIs(StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("more than 3 redirects"), HasSubstr(Url("model.bin")),
                             Not(HasSubstr("TOKSECRET")))));
  EXPECT_EQ(NewRequests(), 4u) << "the first request and 3 redirects, then it stops";
}

}  // namespace
}  // namespace flashload
