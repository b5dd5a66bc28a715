// Faults injected into every source of a load through the public Load(): LoadOptions::opener wraps
// what the registry opens with the fault and latency sources of src/io, so the whole path (plan,
// engine, sink) meets them. An injected fault is a clear error naming the file and the byte
// offset, or is recovered with identical bytes; it never comes back as success with wrong bytes.
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "flashload/loader.h"
#include "flashload/registry.h"
#include "flashload/writer.h"
#include "io/fault_source.h"
#include "io/latency_source.h"
#include "io/retry_source.h"
#include "support/range_server.h"
#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload {
namespace {

using ::flashload::testing::FillPositional;
using ::flashload::testing::FirstPositionMismatch;
using ::flashload::testing::RangeServer;
using ::flashload::testing::RangeServerScript;
using ::flashload::testing::TempDir;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;
using namespace std::chrono_literals;

// `count` tensors of position-encoded bytes keyed by their index (from `first`), so a byte read
// from the wrong place, or a byte a fault changed, is caught.
std::vector<TensorToWrite> Tensors(int first, int count, uint64_t elements) {
  std::vector<TensorToWrite> ts;
  for (int i = first; i < first + count; ++i) {
    TensorToWrite t;
    t.name = fmt::format("layers.{}.weight", i);
    t.dtype = Dtype::kF32;
    t.shape = {elements, 4};
    t.fill = [i](std::span<std::byte> dst, uint64_t off) { FillPositional(dst, off, 100 + i); };
    ts.push_back(std::move(t));
  }
  return ts;
}

void ExpectIdentical(const LoadedModel& m, int first, int count) {
  ASSERT_EQ(m.tensors.size(), static_cast<size_t>(count));
  for (int i = first; i < first + count; ++i) {
    const std::string name = fmt::format("layers.{}.weight", i);
    auto it = m.tensors.find(name);
    ASSERT_NE(it, m.tensors.end()) << name;
    EXPECT_EQ(FirstPositionMismatch(it->second.bytes(), 0, 100 + i), -1) << name;
  }
}

// An opener that wraps every source the registry opens with `wrap`.
SourceOpener Wrapping(std::function<std::unique_ptr<Source>(std::unique_ptr<Source>)> wrap) {
  return [wrap = std::move(wrap)](const std::string& uri,
                                  const OpenOptions& options) -> Result<std::unique_ptr<Source>> {
    FL_ASSIGN_OR_RETURN(std::unique_ptr<Source> source, OpenSource(uri, options));
    return wrap(std::move(source));
  };
}

// Buffered reads in small chunks: many requests, so faults land inside tensor data.
LoadOptions Buffered() {
  LoadOptions o;
  o.strategy = Strategy::kBuffered;
  o.chunk_bytes = 64 << 10;
  return o;
}

class LoadFaultsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.File("model.safetensors");
    FL_ASSERT_OK(WriteSafetensors(path_, Tensors(0, 8, 40'000)));  // 8 × 640 KB
  }
  TempDir dir_;
  std::string path_;
};

TEST_F(LoadFaultsTest, EioIsAnErrorNamingTheFileAndTheByteOffset) {
  LoadOptions o = Buffered();
  o.opener = Wrapping([](std::unique_ptr<Source> s) -> std::unique_ptr<Source> {
    // The header reads come first; the fault hits a read of tensor data.
    return NewFaultSource(std::move(s), {.kind = FaultKind::kIoError, .after_requests = 6});
  });
  EXPECT_THAT(Load(path_, o),
              StatusIs(StatusCode::kIoError,
                       AllOf(HasSubstr(path_), HasSubstr("byte offset"), HasSubstr("injected"))));
}

// A FaultSource that adds the faults it applied to `total` when the load closes it (a load's
// sources are gone when Load() returns).
class CountedFaultSource final : public FaultSource {
 public:
  CountedFaultSource(std::unique_ptr<Source> target, FaultOptions options,
                     std::atomic<uint64_t>* total)
      : FaultSource(std::move(target), std::move(options)), total_(total) {}
  ~CountedFaultSource() override { *total_ += injected(); }

 private:
  std::atomic<uint64_t>* const total_;
};

TEST_F(LoadFaultsTest, ShortReadsAreResumedWithIdenticalBytes) {
  LoadOptions o = Buffered();
  std::atomic<uint64_t> injected{0};
  o.opener = Wrapping([&injected](std::unique_ptr<Source> s) -> std::unique_ptr<Source> {
    return std::make_unique<CountedFaultSource>(
        std::move(s), FaultOptions{.kind = FaultKind::kShortRead, .seed = 3, .one_in = 3},
        &injected);
  });
  FL_ASSERT_OK_AND_ASSIGN(LoadedModel m, Load(path_, o));
  EXPECT_GT(injected.load(), 0u);
  ExpectIdentical(m, 0, 8);
}

TEST_F(LoadFaultsTest, TransientFaultsRetriedByTheOpenerComeBackIdentical) {
  // A caller can give local files the retry policy of remote ones: EINTR once in four reads.
  // Which request draws a fault depends on the order requests reach the fault source, which
  // concurrent reads vary; 12 attempts make a request failing every one of them (4^-12) unlikely
  // enough for any order.
  LoadOptions o = Buffered();
  o.opener = Wrapping([](std::unique_ptr<Source> s) -> std::unique_ptr<Source> {
    auto f =
        NewFaultSource(std::move(s), {.kind = FaultKind::kInterrupted, .seed = 9, .one_in = 4});
    return NewRetrySource(std::move(f), {.max_attempts = 12, .base = 100us, .cap = 1ms, .seed = 2});
  });
  FL_ASSERT_OK_AND_ASSIGN(LoadedModel m, Load(path_, o));
  ExpectIdentical(m, 0, 8);
}

TEST_F(LoadFaultsTest, WithoutRetriesATransientFaultIsAnErrorNamingTheFile) {
  LoadOptions o = Buffered();
  o.opener = Wrapping([](std::unique_ptr<Source> s) -> std::unique_ptr<Source> {
    return NewFaultSource(std::move(s),
                          {.kind = FaultKind::kInterrupted, .after_requests = 6, .max_faults = 1});
  });
  EXPECT_THAT(Load(path_, o), StatusIs(StatusCode::kUnavailable,
                                       AllOf(HasSubstr(path_), HasSubstr("byte offset"))));
}

TEST_F(LoadFaultsTest, CorruptionIsNeverHiddenBehindAnError) {
  // A flipped byte is reported as success by the source: only comparing catches it, and it must
  // be caught, in exactly the tensor that holds it.
  LoadOptions o = Buffered();
  o.opener = Wrapping([](std::unique_ptr<Source> s) -> std::unique_ptr<Source> {
    return NewFaultSource(std::move(s),
                          {.kind = FaultKind::kCorrupt, .after_requests = 6, .max_faults = 1});
  });
  FL_ASSERT_OK_AND_ASSIGN(LoadedModel m, Load(path_, o));
  int wrong = 0;
  for (int i = 0; i < 8; ++i) {
    wrong += FirstPositionMismatch(m.tensors.at(fmt::format("layers.{}.weight", i)).bytes(), 0,
                                   100 + i) >= 0;
  }
  EXPECT_EQ(wrong, 1);
}

TEST_F(LoadFaultsTest, LatencyInjectedIntoEveryReadKeepsTheBytes) {
  LoadOptions o = Buffered();
  o.opener = Wrapping([](std::unique_ptr<Source> s) -> std::unique_ptr<Source> {
    return NewLatencySource(std::move(s), {.per_request = 2ms});
  });
  const auto start = std::chrono::steady_clock::now();
  FL_ASSERT_OK_AND_ASSIGN(LoadedModel m, Load(path_, o));
  EXPECT_GE(std::chrono::steady_clock::now() - start, 2ms);
  ExpectIdentical(m, 0, 8);
}

TEST_F(LoadFaultsTest, TheOpenerSeesEveryFileOfAShardedModel) {
  FL_ASSERT_OK(WriteSafetensors(dir_.File("a.safetensors"), Tensors(0, 3, 1000)));
  FL_ASSERT_OK(WriteSafetensors(dir_.File("b.safetensors"), Tensors(3, 3, 1000)));
  std::string map;
  for (int i = 0; i < 6; ++i) {
    map += fmt::format("{}\"layers.{}.weight\":\"{}.safetensors\"", i == 0 ? "" : ",", i,
                       i < 3 ? "a" : "b");
  }
  const std::string index = dir_.File("model.safetensors.index.json");
  testing::WriteFile(index, fmt::format("{{\"weight_map\":{{{}}}}}", map));
  std::mutex mu;
  std::vector<std::string> opened;
  LoadOptions o;
  o.opener = [&](const std::string& uri,
                 const OpenOptions& options) -> Result<std::unique_ptr<Source>> {
    {
      std::lock_guard lock(mu);
      opened.push_back(uri);
    }
    return OpenSource(uri, options);
  };
  FL_ASSERT_OK_AND_ASSIGN(LoadedModel m, Load(index, o));
  ExpectIdentical(m, 0, 6);
  std::sort(opened.begin(), opened.end());
  opened.erase(std::unique(opened.begin(), opened.end()), opened.end());
  EXPECT_THAT(opened, UnorderedElementsAre(dir_.File("a.safetensors"), dir_.File("b.safetensors")));
}

// An object replaced on the server during the load: every range after the first GET carries
// If-Match with the ETag of the open, so the change is DATA_LOSS naming the URL and byte offset,
// never a mix of two versions, also with latency injected into every read.
TEST(LoadRemoteFaultsTest, ChangedEtagIsDataLossNamingTheUrlAndOffset) {
  TempDir dir;
  ASSERT_EQ(mkdir(dir.File("root").c_str(), 0755), 0);
  ASSERT_EQ(mkdir(dir.File("root/bucket").c_str(), 0755), 0);
  FL_ASSERT_OK(WriteSafetensors(dir.File("root/bucket/model.safetensors"), Tensors(0, 8, 80'000)));
  FL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RangeServer> server,
                          RangeServer::Start(RangeServerScript(), dir.File("root"), dir.path()));
  const std::string url = server->Url("bucket/model.safetensors");

  LoadOptions o;
  o.chunk_bytes = 256 << 10;
  o.remote.retry_base_ms = 1;
  o.opener = Wrapping([](std::unique_ptr<Source> s) -> std::unique_ptr<Source> {
    return NewLatencySource(std::move(s), {.per_request = 1ms});
  });
  FL_ASSERT_OK_AND_ASSIGN(LoadedModel clean, Load(url, o));
  ExpectIdentical(clean, 0, 8);

  // After the opening GET (size, ETag, header) the object's ETag changes.
  FL_ASSERT_OK(server->SetFaults("etag-change:after=1"));
  EXPECT_THAT(Load(url, o),
              StatusIs(StatusCode::kDataLoss, AllOf(HasSubstr("object changed during the load"),
                                                    HasSubstr(url), HasSubstr("byte offset"))));
}

}  // namespace
}  // namespace flashload
