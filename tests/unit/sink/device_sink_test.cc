// DeviceSink over the CPU stand-in (and, at the end, host loads with conversion through Load()):
// identical bytes, conversion on the way equal to converting each whole tensor (odd offsets,
// tensors across many chunks, chunks committed out of order from several threads), staging
// within the budget, faults that surface and free everything, tensors that outlive the sink.
#include "sink/device_sink.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <thread>

#include "flashload/convert.h"
#include "flashload/loader.h"
#include "flashload/writer.h"
#include "sink/cpu_copy_engine.h"
#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload::sink {
namespace {

using ::testing::HasSubstr;

struct Spec {
  std::string name;
  Dtype dtype;
  uint64_t count;
};

// One file: a header of `header_length` bytes (so the data section starts at an odd offset when
// asked), tensors back to back in the given order, position-encoded bytes.
struct TestFile {
  plan::FilePlan plan;
  std::vector<std::byte> bytes;  // the whole file
};

TestFile MakeFile(const std::vector<Spec>& specs, uint64_t header_length, uint64_t chunk,
                  uint32_t index, uint64_t seed) {
  TestFile f;
  f.plan.path = "file" + std::to_string(index) + ".safetensors";
  f.plan.component = index == 0 ? "" : "c" + std::to_string(index);
  f.plan.header.header_length = header_length;
  uint64_t at = 0;
  for (const Spec& s : specs) {
    TensorInfo t;
    t.name = s.name;
    t.dtype = s.dtype;
    t.shape = {s.count};
    t.data_begin = at;
    at += s.count * DtypeBits(s.dtype) / 8;
    t.data_end = at;
    f.plan.header.tensors.push_back(t);
  }
  f.plan.header.file_size = f.plan.header.data_offset() + at;
  plan::PlanOptions po;
  po.chunk_bytes = chunk;
  EXPECT_TRUE(plan::PlanFile(f.plan, index, po).ok());
  f.bytes = testing::PositionalBytes(f.plan.header.file_size, seed);
  return f;
}

plan::LoadPlan PlanOf(const std::vector<TestFile>& files) {
  plan::LoadPlan plan;
  for (const TestFile& f : files) plan.files.push_back(f.plan);
  return plan;
}

// Plays the engine: every chunk acquired, filled from the file, committed — in a shuffled order
// from `threads` threads. Returns the first error.
Status Feed(Sink& sink, const plan::LoadPlan& plan, const std::vector<TestFile>& files,
            uint32_t threads = 2, uint64_t seed = 1) {
  std::vector<const plan::Chunk*> chunks;
  for (const plan::FilePlan& f : plan.files) {
    for (const plan::Chunk& c : f.chunks) chunks.push_back(&c);
  }
  std::shuffle(chunks.begin(), chunks.end(), std::mt19937_64(seed));
  std::atomic<size_t> next{0};
  std::mutex mu;
  Status first;
  auto work = [&] {
    for (size_t i = next++; i < chunks.size(); i = next++) {
      const plan::Chunk& c = *chunks[i];
      Status st;
      Result<std::span<std::byte>> mem = sink.Acquire(c);
      if (mem.ok()) {
        const std::vector<std::byte>& file = files[c.file].bytes;
        // Chunks end at the aligned end of the read range, past the end of the file: a source
        // returns only the bytes that exist.
        const uint64_t n =
            c.offset >= file.size() ? 0 : std::min<uint64_t>(c.length, file.size() - c.offset);
        std::memcpy(mem->data(), file.data() + c.offset, n);
        st = sink.Commit(c);
      } else {
        st = mem.status();
      }
      if (!st.ok()) {
        std::lock_guard lock(mu);
        if (first.ok()) first = st;
        return;
      }
    }
  };
  std::vector<std::thread> ts;
  for (uint32_t t = 0; t < threads; ++t) ts.emplace_back(work);
  for (std::thread& t : ts) t.join();
  return first;
}

// Each tensor equals ConvertElements() over the whole stored tensor (or the stored bytes).
void ExpectConverted(const TensorMap& tensors, const std::vector<TestFile>& files,
                     const ConvertSpec& spec) {
  for (const TestFile& f : files) {
    for (const TensorInfo& t : f.plan.header.tensors) {
      const std::string name = f.plan.component.empty() ? t.name : f.plan.component + "/" + t.name;
      auto it = tensors.find(name);
      ASSERT_NE(it, tensors.end()) << name;
      FL_ASSERT_OK_AND_ASSIGN(Dtype to, TargetDtype(name, t.dtype, spec));
      const std::byte* stored = f.bytes.data() + f.plan.header.data_offset() + t.data_begin;
      std::vector<std::byte> want(t.element_count() * DtypeBits(to) / 8);
      FL_ASSERT_OK(ConvertElements(t.dtype, to, stored, want.data(), t.element_count()));
      const Tensor& got = it->second;
      EXPECT_EQ(got.dtype(), to) << name;
      ASSERT_EQ(got.byte_size(), want.size()) << name;
      EXPECT_EQ(reinterpret_cast<uintptr_t>(got.data()) % kDeviceTensorAlignment, 0u) << name;
      EXPECT_TRUE(std::equal(want.begin(), want.end(), got.bytes().begin())) << name;
    }
  }
}

// A U8 tensor of odd length first, so every later tensor starts at an odd offset; tensors far
// larger than a chunk; every convertible source dtype.
std::vector<Spec> OddSpecs() {
  return {{"odd", Dtype::kU8, 1001},        {"w32", Dtype::kF32, 10001},
          {"w16", Dtype::kF16, 7777},       {"wbf", Dtype::kBF16, 3333},
          {"e4m3", Dtype::kF8E4M3, 5001},   {"e5m2", Dtype::kF8E5M2, 999},
          {"fnuz", Dtype::kF8E4M3Fnuz, 77}, {"i32", Dtype::kI32, 501},
          {"empty", Dtype::kF32, 0},        {"f64", Dtype::kF64, 33},
          {"tail", Dtype::kF32, 3}};
}

std::shared_ptr<CpuCopyEngine> Engine(bool device_is_host, int64_t fail_at = -1,
                                      bool early = false) {
  CpuCopyEngineOptions o;
  o.streams = 3;
  o.device_is_host = device_is_host;
  o.fail_copy_at = fail_at;
  o.signal_events_early = early;
  if (early) o.op_delay = std::chrono::microseconds(500);
  return std::make_shared<CpuCopyEngine>(o);
}

TEST(DeviceSinkTest, BytesArriveUnchangedWithoutConversion) {
  std::vector<TestFile> files = {MakeFile(OddSpecs(), 8 * 13 + 1, 4096, 0, 1),
                                 MakeFile(OddSpecs(), 4096 - 8, 8192, 1, 2)};
  plan::LoadPlan plan = PlanOf(files);
  auto engine = Engine(false);
  DeviceSink sink(engine, DeviceSinkOptions{});
  FL_ASSERT_OK(sink.Prepare(plan));
  FL_ASSERT_OK(Feed(sink, plan, files));
  FL_ASSERT_OK_AND_ASSIGN(TensorMap tensors, sink.Finish());
  EXPECT_EQ(tensors.size(), 2 * OddSpecs().size());
  ExpectConverted(tensors, files, ConvertSpec{});
  EXPECT_EQ(sink.stats().files[0].tensors_converted, 0u);
  EXPECT_EQ(sink.stats().scratch_bytes, 0u) << "no conversion: no scratch";
  EXPECT_EQ(engine->conversions_enqueued(), 0u);
  EXPECT_EQ(tensors.at("w32").owner(), tensors.at("c1/w32").owner()) << "one allocation";
}

class DeviceSinkConvertTest : public ::testing::TestWithParam<std::tuple<std::string, bool>> {};

TEST_P(DeviceSinkConvertTest, EqualsConvertingEachWholeTensor) {
  const auto& [text, device_is_host] = GetParam();
  FL_ASSERT_OK_AND_ASSIGN(ConvertSpec spec, ParseConvertSpec(text));
  // Chunks of 4096 bytes: each large tensor spans several, and elements straddle chunk edges.
  std::vector<TestFile> files = {MakeFile(OddSpecs(), 8 * 13 + 1, 4096, 0, 3),
                                 MakeFile(OddSpecs(), 8 * 40 + 3, 4096, 1, 4)};
  plan::LoadPlan plan = PlanOf(files);
  auto engine = Engine(device_is_host);
  DeviceSinkOptions o;
  o.convert = spec;
  o.memory_budget = 3 * 4096;
  DeviceSink sink(engine, o);
  FL_ASSERT_OK(sink.Prepare(plan));
  FL_ASSERT_OK(Feed(sink, plan, files, 3, text.size()));
  FL_ASSERT_OK_AND_ASSIGN(TensorMap tensors, sink.Finish());
  ExpectConverted(tensors, files, spec);
  EXPECT_GT(sink.stats().files[0].tensors_converted, 0u);
  EXPECT_GT(engine->conversions_enqueued(), 0u);
  EXPECT_EQ(sink.stats().slots, 3u) << "the budget holds three chunks";
  EXPECT_GT(sink.stats().slot_reuses, 0u);
  if (device_is_host) {
    EXPECT_EQ(sink.stats().scratch_bytes, 0u) << "converts straight from staging";
  } else {
    EXPECT_EQ(sink.stats().scratch_bytes, 3u * 4096) << "scratch within the budget";
    // Peak "device" memory: the model after conversion plus the scratch, nothing else.
    uint64_t model = 0;
    for (const auto& [n, t] : tensors) model += (t.byte_size() + 255) / 256 * 256;
    EXPECT_LE(engine->peak_device_bytes(), (model + 4095) / 4096 * 4096 + 3 * 4096);
  }
}

INSTANTIATE_TEST_SUITE_P(Specs, DeviceSinkConvertTest,
                         ::testing::Combine(::testing::Values("bf16", "fp16", "fp32",
                                                              "F32=F16,F8_E4M3=BF16",
                                                              "bf16,w32:keep,c1/e5m2:F32"),
                                            ::testing::Bool()));

TEST(DeviceSinkTest, ChunksSmallerThanAnElementStillConvert) {
  // 8-byte "chunks" cannot happen with real plans (chunks are multiples of 4096), but the
  // boundary logic must not depend on that: an element may be cut anywhere.
  std::vector<TestFile> files = {
      MakeFile({{"a", Dtype::kU8, 3}, {"b", Dtype::kF32, 40}}, 8 * 2 + 1, 4096, 0, 5)};
  plan::FilePlan& fp = files[0].plan;
  plan::RechunkFile(fp, 0, 3);
  plan::LoadPlan plan = PlanOf(files);
  FL_ASSERT_OK_AND_ASSIGN(ConvertSpec spec, ParseConvertSpec("bf16"));
  DeviceSinkOptions o;
  o.convert = spec;
  o.memory_budget = 16;
  DeviceSink sink(Engine(false), o);
  FL_ASSERT_OK(sink.Prepare(plan));
  FL_ASSERT_OK(Feed(sink, plan, files, 2, 9));
  FL_ASSERT_OK_AND_ASSIGN(TensorMap tensors, sink.Finish());
  ExpectConverted(tensors, files, spec);
}

TEST(DeviceSinkTest, InjectedCopyFaultSurfacesAndFreesEverything) {
  for (int64_t fail_at : {0, 5, 17}) {
    std::vector<TestFile> files = {MakeFile(OddSpecs(), 8 * 13 + 1, 4096, 0, 6)};
    plan::LoadPlan plan = PlanOf(files);
    auto engine = Engine(false, fail_at);
    FL_ASSERT_OK_AND_ASSIGN(ConvertSpec spec, ParseConvertSpec("bf16"));
    DeviceSinkOptions o;
    o.convert = spec;
    o.memory_budget = 2 * 4096;
    {
      DeviceSink sink(engine, o);
      FL_ASSERT_OK(sink.Prepare(plan));
      EXPECT_GT(engine->live_allocations(), 0);
      Status fed = Feed(sink, plan, files, 2, 7);
      if (fed.ok()) {
        Result<TensorMap> done = sink.Finish();
        EXPECT_THAT(done, StatusIs(StatusCode::kIoError, HasSubstr("injected fault"))) << fail_at;
      } else {
        EXPECT_THAT(fed, StatusIs(StatusCode::kIoError)) << fail_at;
        sink.Abort();
      }
      EXPECT_EQ(engine->live_allocations(), 0) << "staging, scratch and model freed";
    }
  }
}

TEST(DeviceSinkTest, AnEngineSignallingEventsEarlyFailsTheLoad) {
  std::vector<TestFile> files = {MakeFile(OddSpecs(), 8 * 13 + 1, 4096, 0, 8)};
  plan::LoadPlan plan = PlanOf(files);
  DeviceSinkOptions o;
  o.memory_budget = 2 * 4096;
  DeviceSink sink(Engine(false, -1, /*early=*/true), o);
  FL_ASSERT_OK(sink.Prepare(plan));
  Status fed = Feed(sink, plan, files, 1, 1);
  Status finished = fed.ok() ? sink.Finish().status() : fed;
  EXPECT_THAT(finished,
              StatusIs(StatusCode::kInternal, HasSubstr("reused before its copy completed")));
}

TEST(DeviceSinkTest, TensorsOutliveTheSinkAndTheEngine) {
  std::vector<TestFile> files = {MakeFile(OddSpecs(), 8 * 13 + 1, 4096, 0, 9)};
  plan::LoadPlan plan = PlanOf(files);
  FL_ASSERT_OK_AND_ASSIGN(ConvertSpec spec, ParseConvertSpec("fp32"));
  TensorMap tensors;
  std::weak_ptr<CpuCopyEngine> weak;
  {
    auto engine = Engine(false);
    weak = engine;
    DeviceSinkOptions o;
    o.convert = spec;
    DeviceSink sink(engine, o);
    FL_ASSERT_OK(sink.Prepare(plan));
    FL_ASSERT_OK(Feed(sink, plan, files));
    FL_ASSERT_OK_AND_ASSIGN(tensors, sink.Finish());
  }
  EXPECT_TRUE(weak.expired()) << "the engine is gone";
  ExpectConverted(tensors, files, spec);
}

TEST(DeviceSinkTest, AbortBeforeAnyChunkFreesEverything) {
  std::vector<TestFile> files = {MakeFile(OddSpecs(), 8 * 13 + 1, 4096, 0, 10)};
  plan::LoadPlan plan = PlanOf(files);
  auto engine = Engine(false);
  DeviceSink sink(engine, DeviceSinkOptions{});
  FL_ASSERT_OK(sink.Prepare(plan));
  FL_ASSERT_OK_AND_ASSIGN(std::span<std::byte> mem, sink.Acquire(plan.files[0].chunks[0]));
  EXPECT_EQ(mem.size(), plan.files[0].chunks[0].length);
  sink.Abort();
  EXPECT_EQ(engine->live_allocations(), 0);
  EXPECT_THAT(sink.Commit(plan.files[0].chunks[1]), StatusIs(StatusCode::kInternal));
}

// ---- Through Load(): host loads that convert, and GPU requests on a machine without one ----

class ConvertingLoadTest : public ::testing::Test {
 protected:
  ConvertingLoadTest() { setenv("TMPDIR", "/var/tmp", 1); }
  testing::TempDir dir_;
};

TEST_F(ConvertingLoadTest, HostLoadWithDtypeEqualsConvertingTheFile) {
  const std::string path = dir_.File("m.safetensors");
  std::vector<TensorToWrite> ts;
  const std::vector<Spec> specs = {
      {"a", Dtype::kF32, 70001}, {"b", Dtype::kF16, 9999}, {"c", Dtype::kU8, 7}};
  for (size_t i = 0; i < specs.size(); ++i) {
    TensorToWrite t;
    t.name = specs[i].name;
    t.dtype = specs[i].dtype;
    t.shape = {specs[i].count};
    t.fill = [i](std::span<std::byte> dst, uint64_t off) { testing::FillPositional(dst, off, i); };
    ts.push_back(std::move(t));
  }
  FL_ASSERT_OK(WriteSafetensors(path, ts));
  const std::vector<std::byte> file = testing::ReadFile(path);
  for (Strategy s : {Strategy::kBuffered, Strategy::kDirect}) {
    LoadOptions o;
    o.strategy = s;
    o.dtype = "bf16";
    o.chunk_bytes = 64 << 10;
    o.memory_budget = 256 << 10;
    FL_ASSERT_OK_AND_ASSIGN(LoadedModel m, Load(path, o));
    const Header& h = m.headers.at(path);
    for (const TensorInfo& t : h.tensors) {
      const Dtype to = t.dtype == Dtype::kU8 ? Dtype::kU8 : Dtype::kBF16;
      std::vector<std::byte> want(t.element_count() * DtypeBits(to) / 8);
      FL_ASSERT_OK(ConvertElements(t.dtype, to, file.data() + h.data_offset() + t.data_begin,
                                   want.data(), t.element_count()));
      const Tensor& got = m.tensors.at(t.name);
      EXPECT_EQ(got.device(), Device{});
      EXPECT_EQ(got.dtype(), to);
      ASSERT_EQ(got.byte_size(), want.size());
      EXPECT_TRUE(std::equal(want.begin(), want.end(), got.bytes().begin())) << t.name;
    }
    EXPECT_EQ(m.report.tensors_converted, 2u);
    EXPECT_EQ(m.report.bytes_converted, 70001u * 4 + 9999u * 2);
    EXPECT_EQ(m.report.output_bytes, 70001u * 2 + 9999u * 2 + 7);
    EXPECT_EQ(m.report.device, "cpu");
    EXPECT_THAT(m.report.copy_engine, HasSubstr("cpu"));
    EXPECT_LE(m.report.staging_bytes, o.memory_budget + 64 * StagingRing::kPatchBytes);
  }
}

TEST_F(ConvertingLoadTest, BadDtypeSpecIsAnInvalidArgument) {
  LoadOptions o;
  o.dtype = "int3";
  EXPECT_THAT(Load(dir_.File("missing.safetensors"), o),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("int3")));
}

TEST_F(ConvertingLoadTest, CudaDeviceWithoutAGpuIsAClearError) {
  const std::string path = dir_.File("m.safetensors");
  FL_ASSERT_OK(WriteSafetensors(path, {}));
  LoadOptions o;
  o.device = Device{DeviceType::kCuda, 0};
  Result<LoadedModel> m = Load(path, o);
  if (m.ok()) {
    // A machine with a GPU: the tensors must then really be on it.
    EXPECT_EQ(m->report.device, "cuda:0");
    return;
  }
#ifdef FLASHLOAD_HAVE_CUDA
  EXPECT_THAT(m, StatusIs(StatusCode::kFailedPrecondition, HasSubstr("no CUDA device")));
#else
  EXPECT_THAT(m, StatusIs(StatusCode::kUnimplemented, HasSubstr("built without CUDA")));
#endif
}

TEST(ParseDeviceTest, AcceptsCpuCudaAndCudaN) {
  FL_ASSERT_OK_AND_ASSIGN(Device cpu, ParseDevice("cpu"));
  EXPECT_EQ(cpu, Device{});
  FL_ASSERT_OK_AND_ASSIGN(Device c, ParseDevice("cuda"));
  EXPECT_EQ(c, (Device{DeviceType::kCuda, 0}));
  FL_ASSERT_OK_AND_ASSIGN(Device c3, ParseDevice("cuda:3"));
  EXPECT_EQ(c3, (Device{DeviceType::kCuda, 3}));
  EXPECT_EQ(DeviceString(c3), "cuda:3");
  for (const char* bad : {"gpu", "cuda:", "cuda:x", "cuda:-1", "CUDA:0", "cuda:99999999"}) {
    EXPECT_THAT(ParseDevice(bad), StatusIs(StatusCode::kInvalidArgument, HasSubstr(bad))) << bad;
  }
}

}  // namespace
}  // namespace flashload::sink
