// GPUDirect Storage without a GPU: CuFileDriver and CuFileSource over a stand-in libcufile
// (fake_cufile.cc), the per-file choice of device reads (engine/device_reads.h), and whole loads
// of real files through the engine into a DeviceSink whose CpuCopyEngine stands for a GPU (device
// memory that is not host memory to the sink: reads land in device scratch, scattered with
// device-to-device copies and converted from there).
#include "io/cufile.h"

#include <dlfcn.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "engine/device_reads.h"
#include "engine/engine.h"
#include "flashload/convert.h"
#include "flashload/loader.h"
#include "flashload/writer.h"
#include "plan/plan.h"
#include "sink/cpu_copy_engine.h"
#include "sink/device_sink.h"
#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload::sink {
namespace {

BindDeviceFn BindTo(std::shared_ptr<CopyEngine> engine) {
  return [engine] { return engine->BindThread(); };
}

using ::testing::HasSubstr;
using ::testing::Not;

// The stand-in library's controls.
struct Fake {
  void (*set)(const char*, long long) = nullptr;
  long long (*get)(const char*) = nullptr;
};

Fake LoadFake() {
  void* lib = dlopen(FL_FAKE_CUFILE, RTLD_NOW | RTLD_LOCAL);
  EXPECT_NE(lib, nullptr) << dlerror();
  Fake f;
  if (lib == nullptr) return f;
  f.set = reinterpret_cast<void (*)(const char*, long long)>(dlsym(lib, "fake_cufile_set"));
  f.get = reinterpret_cast<long long (*)(const char*)>(dlsym(lib, "fake_cufile_get"));
  return f;
}

class CuFileTest : public ::testing::Test {
 protected:
  CuFileTest() {
    // O_DIRECT: /tmp may be a tmpfs, which refuses it.
    setenv("TMPDIR", "/var/tmp", 1);
    unsetenv("CUFILE_FORCE_COMPAT_MODE");
    fake_ = LoadFake();
    if (fake_.set == nullptr) return;
    fake_.set("nvfs_major", 2);
    fake_.set("nvfs_minor", 17);
    for (const char* k : {"driver_open_error", "refuse_register", "refuse_buffers",
                          "fail_with_errno", "short_reads", "misplaced_reads", "not_direct_fds"}) {
      fake_.set(k, 0);
    }
    fake_.set("fail_read_at", -1);
  }
  ~CuFileTest() override { unsetenv("CUFILE_FORCE_COMPAT_MODE"); }

  std::shared_ptr<CuFileDriver> Driver() { return CuFileDriver::Open({FL_FAKE_CUFILE}); }

  // A file with the given tensors, position-encoded bytes; returns its plan (one chunk size).
  plan::FilePlan WriteModel(const std::string& name, const std::vector<TensorToWrite>& ts) {
    EXPECT_TRUE(WriteSafetensors(dir_.File(name), ts).ok());
    return PlanOf(dir_.File(name));
  }

  // The plan of one written file: its header, the aligned read range, 1 MiB chunks.
  static plan::FilePlan PlanOf(const std::string& path) {
    Result<Header> h = ReadHeader(path);
    EXPECT_TRUE(h.ok()) << h.status().ToString();
    plan::FilePlan f;
    f.path = path;
    f.header = *h;
    plan::PlanOptions po;
    po.chunk_bytes = 1 << 20;
    EXPECT_TRUE(plan::PlanFile(f, 0, po).ok());
    return f;
  }

  plan::FilePlan WriteOddModel(const std::string& name) {
    std::string json = R"({"odd":{"dtype":"U8","shape":[1001],"data_offsets":[0,1001]},)"
                       R"("w":{"dtype":"F32","shape":[9999],"data_offsets":[1001,40997]}})";
    while (json.size() % 8 != 0) json += ' ';
    std::string bytes(8, '\0');
    const uint64_t n = json.size();
    std::memcpy(bytes.data(), &n, 8);
    bytes += json;
    std::vector<std::byte> data = testing::PositionalBytes(40997, 9);
    bytes.append(reinterpret_cast<const char*>(data.data()), data.size());
    testing::WriteFile(dir_.File(name), bytes);
    return PlanOf(dir_.File(name));
  }

  static TensorToWrite Tensor(const std::string& name, Dtype dtype, uint64_t count, uint64_t seed) {
    TensorToWrite t;
    t.name = name;
    t.dtype = dtype;
    t.shape = {count};
    t.fill = [seed](std::span<std::byte> dst, uint64_t off) {
      testing::FillPositional(dst, off, seed);
    };
    return t;
  }

  // Floating tensors whose bytes are all valid to convert, sizes that keep every tensor aligned
  // to its element size, several 1 MiB chunks.
  std::vector<TensorToWrite> AlignedTensors() {
    return {Tensor("w32", Dtype::kF32, 700001, 1), Tensor("h16", Dtype::kF16, 123458, 2),
            Tensor("bias", Dtype::kBF16, 4096, 3), Tensor("ids", Dtype::kI64, 1001, 4),
            Tensor("e4m3", Dtype::kF8E4M3, 5000, 5)};
  }

  static engine::FileStrategy Cold() {
    engine::FileStrategy s;
    s.strategy = Strategy::kDirect;
    s.open.direct = true;
    s.reason = "0% in page cache";
    return s;
  }
  static engine::FileStrategy Hot() {
    engine::FileStrategy s;
    s.strategy = Strategy::kBuffered;
    s.reason = "100% in page cache";
    return s;
  }

  std::shared_ptr<CpuCopyEngine> GpuStandIn() {
    CpuCopyEngineOptions o;
    o.streams = 3;
    o.device_is_host = false;  // the sink treats its memory as device memory, as with a GPU
    o.fail_copy_at = fail_copy_at_;
    engine_ = std::make_shared<CpuCopyEngine>(o);
    return engine_;
  }

  struct Outcome {
    Status status;
    TensorMap tensors;
    engine::DeviceReadChoice choice;
    std::vector<std::string> reasons;  // per file: FileRead::device_reads
  };

  // A whole load of `plan` as Load() runs a GPU load: the per-file choice, the sink, registered
  // scratch, the engine, deregistration, Finish.
  Outcome Run(plan::LoadPlan plan, std::vector<engine::FileStrategy> strategies,
              const std::string& dtype, GpuDirect mode = GpuDirect::kAuto,
              std::shared_ptr<CuFileDriver> driver = nullptr) {
    Outcome out;
    if (!driver) driver = Driver();
    auto engine = GpuStandIn();
    Result<ConvertSpec> spec = ParseConvertSpec(dtype);
    EXPECT_TRUE(spec.ok());
    std::vector<engine::FileRead> files(plan.files.size());
    for (size_t i = 0; i < plan.files.size(); ++i) {
      LocalOpenOptions lo;
      Result<std::unique_ptr<Source>> s = OpenSource(plan.files[i].path, lo);
      EXPECT_TRUE(s.ok()) << s.status().ToString();
      files[i].source = *std::move(s);
      files[i].strategy = strategies[i];
      files[i].strategy.queue_depth = 4;
    }
    engine::DeviceReadOptions dro;
    dro.mode = mode;
    dro.convert = *spec;
    dro.threads = 3;
    dro.chunk_bytes = 256 << 10;
    driver_opened_ = false;
    Result<engine::DeviceReadChoice> choice = engine::SetUpDeviceReads(
        [&] {
          driver_opened_ = true;
          return driver;
        },
        engine, dro, plan, files);
    if (!choice.ok()) {
      out.status = choice.status();
      return out;
    }
    out.choice = *choice;
    for (const engine::FileRead& f : files) out.reasons.push_back(f.device_reads);
    std::shared_ptr<CuFileBuffers> buffers = out.choice.buffers;
    EXPECT_EQ(buffers != nullptr, out.choice.direct_files > 0);
    DeviceSinkOptions dso;
    dso.convert = *spec;
    dso.memory_budget = 1 << 20;
    DeviceSink sink(engine, dso);
    out.status = sink.Prepare(plan);
    if (!out.status.ok()) return out;
    if (buffers) {
      auto [base, bytes] = sink.scratch_buffer();
      buffers->Add(base, bytes).IgnoreError();
    }
    engine::EngineOptions eo;
    eo.memory_budget = 1 << 20;
    std::vector<engine::FileInput> inputs;
    for (engine::FileRead& f : files) {
      inputs.push_back(
          {f.source.get(), std::min<uint32_t>(f.strategy.queue_depth, sink.slot_count() / 2)});
    }
    out.status = engine::RunPlan(plan, inputs, sink, eo);
    files.clear();
    if (buffers) buffers->Clear();
    if (!out.status.ok()) {
      sink.Abort();
      return out;
    }
    Result<TensorMap> t = sink.Finish();
    out.status = t.status();
    if (t.ok()) out.tensors = *std::move(t);
    return out;
  }

  // Every tensor equals the file's bytes converted by the CPU code.
  void ExpectTensorsMatchFile(const Outcome& o, const plan::FilePlan& f, const std::string& dtype) {
    FL_ASSERT_OK_AND_ASSIGN(ConvertSpec spec, ParseConvertSpec(dtype));
    const std::vector<std::byte> file = testing::ReadFile(f.path);
    ASSERT_EQ(o.tensors.size(), f.header.tensors.size());
    for (const TensorInfo& t : f.header.tensors) {
      auto it = o.tensors.find(t.name);
      ASSERT_NE(it, o.tensors.end()) << t.name;
      FL_ASSERT_OK_AND_ASSIGN(Dtype to, TargetDtype(t.name, t.dtype, spec));
      std::vector<std::byte> want(t.element_count() * DtypeBits(to) / 8);
      const std::byte* stored = file.data() + f.header.data_offset() + t.data_begin;
      FL_ASSERT_OK(ConvertElements(t.dtype, to, stored, want.data(), t.element_count()));
      ASSERT_EQ(it->second.byte_size(), want.size()) << t.name;
      EXPECT_TRUE(std::equal(want.begin(), want.end(), it->second.bytes().begin())) << t.name;
    }
  }

  testing::TempDir dir_;
  Fake fake_;
  bool driver_opened_ = false;             // whether the last Run() opened the driver
  int64_t fail_copy_at_ = -1;              // GpuStandIn(): the copy that fails (-1: none)
  std::shared_ptr<CpuCopyEngine> engine_;  // the last GpuStandIn()
};

TEST_F(CuFileTest, AMissingLibraryMeansStagingWithTheReason) {
  auto d = CuFileDriver::Open({"libcufile-not-installed.so.0"});
  EXPECT_FALSE(d->direct());
  EXPECT_THAT(d->reason(), HasSubstr("GPUDirect Storage unavailable"));
  EXPECT_THAT(d->reason(), HasSubstr("libcufile-not-installed.so.0"));
  EXPECT_EQ(d->NewBuffers(), nullptr);
  auto engine = GpuStandIn();
  EXPECT_THAT(d->OpenSource("/nonexistent", BindTo(engine), {}),
              StatusIs(StatusCode::kFailedPrecondition, HasSubstr("unavailable")));
}

TEST_F(CuFileTest, ALibraryWithoutTheApiIsNamed) {
  // libc loads, but has no cuFile entry points.
  auto d = CuFileDriver::Open({"libc.so.6"});
  EXPECT_FALSE(d->direct());
  EXPECT_THAT(d->reason(), HasSubstr("lacks the cuFile API"));
}

TEST_F(CuFileTest, DirectOnlyWhenTheNvidiaFsDriverIsThere) {
  ASSERT_NE(fake_.set, nullptr);
  auto direct = Driver();
  EXPECT_TRUE(direct->direct()) << direct->reason();
  EXPECT_THAT(direct->reason(), HasSubstr("nvidia-fs 2.17"));

  fake_.set("nvfs_major", 0);
  fake_.set("nvfs_minor", 0);
  auto compat = Driver();
  EXPECT_FALSE(compat->direct());
  EXPECT_THAT(compat->reason(), HasSubstr("compatibility mode"));

  fake_.set("nvfs_major", 2);
  setenv("CUFILE_FORCE_COMPAT_MODE", "true", 1);
  auto forced = Driver();
  EXPECT_FALSE(forced->direct());
  EXPECT_THAT(forced->reason(), HasSubstr("CUFILE_FORCE_COMPAT_MODE"));
  unsetenv("CUFILE_FORCE_COMPAT_MODE");

  fake_.set("driver_open_error", 5001);
  auto failed = Driver();
  EXPECT_FALSE(failed->direct());
  EXPECT_THAT(failed->reason(), HasSubstr("cuFileDriverOpen"));
  EXPECT_THAT(failed->reason(), HasSubstr("5001"));
}

TEST_F(CuFileTest, ColdFileIsReadStraightIntoDeviceMemoryWithRegisteredScratch) {
  ASSERT_NE(fake_.set, nullptr);
  plan::LoadPlan plan;
  plan.files.push_back(WriteModel("m.safetensors", AlignedTensors()));
  const long long reads_before = fake_.get("reads");
  Outcome o = Run(plan, {Cold()}, "");
  FL_ASSERT_OK(o.status);
  EXPECT_EQ(o.choice.direct_files, 1u);
  EXPECT_THAT(o.reasons[0], HasSubstr("GPUDirect Storage: cuFile"));
  ExpectTensorsMatchFile(o, plan.files[0], "");
  // Every byte came through cuFileRead, into the registered scratch, on O_DIRECT descriptors.
  EXPECT_GE(fake_.get("reads") - reads_before,
            static_cast<long long>(plan.files[0].header.data_size() / (256 << 10)));
  EXPECT_EQ(fake_.get("misplaced_reads"), 0);
  EXPECT_EQ(fake_.get("not_direct_fds"), 0);
  // Nothing stays registered after the load.
  EXPECT_EQ(fake_.get("handles"), 0);
  EXPECT_EQ(fake_.get("buffers"), 0);
}

TEST_F(CuFileTest, ConversionRunsFromTheDeviceScratch) {
  ASSERT_NE(fake_.set, nullptr);
  plan::LoadPlan plan;
  plan.files.push_back(WriteModel("m.safetensors", AlignedTensors()));
  for (const char* spec : {"bf16", "F32=F16,e4m3:bf16"}) {
    Outcome o = Run(plan, {Cold()}, spec);
    FL_ASSERT_OK(o.status) << spec;
    EXPECT_EQ(o.choice.direct_files, 1u) << spec;
    ExpectTensorsMatchFile(o, plan.files[0], spec);
  }
}

TEST_F(CuFileTest, ShortReadsAreResumed) {
  ASSERT_NE(fake_.set, nullptr);
  fake_.set("short_reads", 1);
  plan::LoadPlan plan;
  plan.files.push_back(WriteModel("m.safetensors", AlignedTensors()));
  Outcome o = Run(plan, {Cold()}, "bf16");
  FL_ASSERT_OK(o.status);
  ExpectTensorsMatchFile(o, plan.files[0], "bf16");
  EXPECT_EQ(fake_.get("misplaced_reads"), 0);  // resumed reads keep the registered base
}

TEST_F(CuFileTest, UnregisteredScratchStillReads) {
  ASSERT_NE(fake_.set, nullptr);
  fake_.set("refuse_buffers", 1);
  plan::LoadPlan plan;
  plan.files.push_back(WriteModel("m.safetensors", AlignedTensors()));
  Outcome o = Run(plan, {Cold()}, "");
  FL_ASSERT_OK(o.status);
  ExpectTensorsMatchFile(o, plan.files[0], "");
  EXPECT_EQ(fake_.get("misplaced_reads"), 0);
}

TEST_F(CuFileTest, ReadFaultsSurfaceNamingFileOffsetAndTensor) {
  ASSERT_NE(fake_.set, nullptr);
  plan::LoadPlan plan;
  plan.files.push_back(WriteModel("m.safetensors", AlignedTensors()));
  const uint64_t at = plan.files[0].header.data_offset() + 1500000;  // inside "w32"
  for (int with_errno : {0, 1}) {
    fake_.set("fail_read_at", static_cast<long long>(at));
    fake_.set("fail_with_errno", with_errno);
    Outcome o = Run(plan, {Cold()}, "bf16");
    ASSERT_FALSE(o.status.ok());
    EXPECT_EQ(o.choice.direct_files, 1u);
    EXPECT_THAT(o.status.message(), HasSubstr(plan.files[0].path));
    EXPECT_THAT(o.status.message(), HasSubstr("cuFileRead"));
    EXPECT_THAT(o.status.message(), HasSubstr("tensor 'w32'"));
    EXPECT_THAT(o.status.message(),
                HasSubstr(with_errno ? "Input/output error" : "cuFile error 5011"));
    EXPECT_TRUE(o.tensors.empty());
    EXPECT_EQ(fake_.get("handles"), 0);
    EXPECT_EQ(fake_.get("buffers"), 0);
  }
}

TEST_F(CuFileTest, ADeviceCopyFaultAfterADirectReadSurfacesAndFreesEverything) {
  ASSERT_NE(fake_.set, nullptr);
  plan::LoadPlan plan;
  plan.files.push_back(WriteModel("m.safetensors", AlignedTensors()));
  Outcome clean = Run(plan, {Cold()}, "");
  FL_ASSERT_OK(clean.status);
  const int64_t copies = static_cast<int64_t>(engine_->copies_enqueued());
  ASSERT_GT(copies, 2);
  for (int64_t at : {int64_t{0}, copies / 2, copies - 1}) {
    fail_copy_at_ = at;
    Outcome o = Run(plan, {Cold()}, "");
    EXPECT_EQ(o.choice.direct_files, 1u);
    EXPECT_THAT(o.status, StatusIs(StatusCode::kIoError, HasSubstr("injected fault")));
    EXPECT_THAT(o.status.message(), HasSubstr("device copy"));
    EXPECT_TRUE(o.tensors.empty());
    EXPECT_EQ(engine_->live_allocations(), 0) << "copy " << at;
    EXPECT_EQ(fake_.get("handles"), 0);
    EXPECT_EQ(fake_.get("buffers"), 0);
  }
}

TEST_F(CuFileTest, AFileTruncatedAfterItsHeaderWasReadIsDataLoss) {
  ASSERT_NE(fake_.set, nullptr);
  plan::LoadPlan plan;
  plan.files.push_back(WriteModel("m.safetensors", AlignedTensors()));
  const uint64_t keep = plan.files[0].header.data_offset() + 2000000;
  ASSERT_EQ(truncate(plan.files[0].path.c_str(), static_cast<off_t>(keep)), 0);
  Outcome o = Run(plan, {Cold()}, "");
  EXPECT_THAT(o.status, StatusIs(StatusCode::kDataLoss, HasSubstr("unexpected end of data")));
  EXPECT_THAT(o.status.message(), HasSubstr(plan.files[0].path));
}

TEST_F(CuFileTest, EachFileFallsBackToStagingWithItsOwnReason) {
  ASSERT_NE(fake_.set, nullptr);
  plan::LoadPlan plan;
  plan.files.push_back(WriteModel("cold.safetensors", AlignedTensors()));
  plan.files.push_back(WriteModel("hot.safetensors", AlignedTensors()));
  // An odd-sized U8 tensor first puts the converted F32 tensor after it at an odd offset (a
  // layout the reference writer never makes, but the format allows).
  plan.files.push_back(WriteOddModel("cut.safetensors"));
  plan.files.push_back(WriteModel("net.safetensors", AlignedTensors()));
  for (size_t i = 0; i < plan.files.size(); ++i) {
    plan.files[i].component = "c" + std::to_string(i);
    plan::RechunkFile(plan.files[i], static_cast<uint32_t>(i), 1 << 20);
  }
  engine::FileStrategy net = Hot();
  net.strategy = Strategy::kNetwork;
  net.reason = "fuse is a network file system";
  Outcome o = Run(plan, {Cold(), Hot(), Cold(), net}, "bf16");
  FL_ASSERT_OK(o.status);
  EXPECT_EQ(o.choice.direct_files, 1u);
  EXPECT_THAT(o.reasons[0], HasSubstr("GPUDirect Storage: cuFile"));
  EXPECT_THAT(o.reasons[1], HasSubstr("100% in page cache"));
  EXPECT_THAT(o.reasons[1], HasSubstr("pinned staging"));
  EXPECT_THAT(o.reasons[2], HasSubstr("tensor 'w' is converted and starts at byte offset"));
  EXPECT_THAT(o.reasons[3], HasSubstr("network file system"));
  EXPECT_EQ(o.tensors.size(), 5u * 3 + 2);

  // --gds on: the hot file too; off: none; a refused registration stages that file.
  Outcome on = Run(plan, {Cold(), Hot(), Cold(), net}, "", GpuDirect::kOn);
  FL_ASSERT_OK(on.status);
  EXPECT_EQ(on.choice.direct_files, 3u);  // without conversion the odd file qualifies too
  Outcome off = Run(plan, {Cold(), Hot(), Cold(), net}, "", GpuDirect::kOff);
  FL_ASSERT_OK(off.status);
  EXPECT_EQ(off.choice.direct_files, 0u);
  EXPECT_THAT(off.reasons[0], HasSubstr("turned off"));
  EXPECT_FALSE(driver_opened_);
  // No file eligible (all hot, auto): the driver is never opened.
  Outcome hot = Run(plan, {Hot(), Hot(), Hot(), net}, "");
  FL_ASSERT_OK(hot.status);
  EXPECT_EQ(hot.choice.direct_files, 0u);
  EXPECT_FALSE(driver_opened_);
  fake_.set("refuse_register", 1);
  Outcome refused = Run(plan, {Cold(), Hot(), Cold(), net}, "");
  FL_ASSERT_OK(refused.status);
  EXPECT_EQ(refused.choice.direct_files, 0u);
  EXPECT_THAT(refused.reasons[0], HasSubstr("cuFileHandleRegister refused"));
  EXPECT_THAT(refused.reasons[0], HasSubstr("cold.safetensors"));
  EXPECT_EQ(fake_.get("handles"), 0);
}

TEST_F(CuFileTest, ACompatibilityModeDriverStagesEveryFile) {
  ASSERT_NE(fake_.set, nullptr);
  fake_.set("nvfs_major", 0);
  fake_.set("nvfs_minor", 0);
  plan::LoadPlan plan;
  plan.files.push_back(WriteModel("m.safetensors", AlignedTensors()));
  const long long reads_before = fake_.get("reads");
  Outcome o = Run(plan, {Cold()}, "", GpuDirect::kOn);
  FL_ASSERT_OK(o.status);
  EXPECT_EQ(o.choice.direct_files, 0u);
  EXPECT_THAT(o.reasons[0], HasSubstr("compatibility mode"));
  EXPECT_EQ(fake_.get("reads"), reads_before);
  ExpectTensorsMatchFile(o, plan.files[0], "");
}

TEST_F(CuFileTest, TheSourceRefusesHostReadsAndRequestsOffTheGrid) {
  ASSERT_NE(fake_.set, nullptr);
  plan::FilePlan f = WriteModel("m.safetensors", AlignedTensors());
  auto d = Driver();
  auto engine = GpuStandIn();
  FL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Source> s, d->OpenSource(f.path, BindTo(engine), {}));
  EXPECT_EQ(s->backend(), "cufile");
  EXPECT_TRUE(s->caps().direct_io);
  std::vector<std::byte> buf(4096);
  EXPECT_THAT(s->ReadAt(0, buf),
              StatusIs(StatusCode::kFailedPrecondition, HasSubstr("only into device memory")));
  // Requests off the 4096-byte grid, or without a buffer, are refused before any read.
  alignas(4096) static std::byte device[8192];
  const long long reads = fake_.get("reads");
  for (const ReadRequest& bad :
       {ReadRequest{100, 4096, device, 0}, ReadRequest{0, 100, device, 0},
        ReadRequest{0, 4096, device + 8, 0}, ReadRequest{0, 4096, nullptr, 0}}) {
    EXPECT_THAT(s->Submit(std::span(&bad, 1)), StatusIs(StatusCode::kInvalidArgument))
        << bad.offset << " " << bad.length;
  }
  EXPECT_EQ(fake_.get("reads"), reads);
  s.reset();
  EXPECT_EQ(fake_.get("handles"), 0);
  EXPECT_THAT(d->OpenSource(dir_.File("missing.safetensors"), BindTo(engine), {}),
              StatusIs(StatusCode::kNotFound));
}

TEST(ParseGpuDirectTest, AcceptsAutoOnOff) {
  FL_ASSERT_OK_AND_ASSIGN(GpuDirect a, ParseGpuDirect("auto"));
  EXPECT_EQ(a, GpuDirect::kAuto);
  FL_ASSERT_OK_AND_ASSIGN(GpuDirect on, ParseGpuDirect("on"));
  EXPECT_EQ(on, GpuDirect::kOn);
  FL_ASSERT_OK_AND_ASSIGN(GpuDirect off, ParseGpuDirect("off"));
  EXPECT_EQ(off, GpuDirect::kOff);
  EXPECT_THAT(ParseGpuDirect("yes"), StatusIs(StatusCode::kInvalidArgument,
                                              HasSubstr("'yes' (expected auto, on or off)")));
}

}  // namespace
}  // namespace flashload::sink
