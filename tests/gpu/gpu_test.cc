// GPU tests: need a CUDA GPU, so they are a separate binary (gpu_tests, `make gpu-test`), built
// whenever nvcc is found and run on a machine with a GPU. Without one every test fails with the
// "no CUDA device" error: a missing GPU is never reported as passing.
//
// What they prove: bytes on the device equal the file's; the GPU conversion kernels are
// bit-identical to the CPU twin for every 16-bit and every fp8 pattern (and a sweep of F32
// patterns); conversion during a load equals converting the file on the CPU; device tensors
// outlive the loader; peak device memory stays within the model bytes plus the staging budget;
// GPUDirect Storage (or its per-file fallback) loads the same bytes; device-to-device copies.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "flashload/convert.h"
#include "flashload/loader.h"
#include "flashload/writer.h"
#include "sink/convert_cuda.h"
#include "sink/copy_engine.h"
#include "sink/cuda_copy_engine.h"
#include "support/status_matchers.h"
#include "support/test_files.h"

namespace flashload {
namespace {

using sink::cuda::CopyDeviceToHost;

std::vector<std::byte> DeviceBytes(const Tensor& t) {
  std::vector<std::byte> out(t.byte_size());
  Status st = CopyDeviceToHost(out.data(), t.data(), t.byte_size());
  EXPECT_THAT(st, IsOk());
  return out;
}

// Writes a file by hand so tensors sit at odd offsets (a U8 tensor of odd length first), which the
// writer's reference ordering would never produce.
std::vector<std::byte> OddOffsetFile(const std::string& path) {
  const std::string json =
      R"({"odd":{"dtype":"U8","shape":[1001],"data_offsets":[0,1001]},)"
      R"("f32":{"dtype":"F32","shape":[300001],"data_offsets":[1001,1201005]},)"
      R"("f16":{"dtype":"F16","shape":[77777],"data_offsets":[1201005,1356559]},)"
      R"("e4m3":{"dtype":"F8_E4M3","shape":[4099],"data_offsets":[1356559,1360658]}})";
  std::vector<std::byte> file(8 + json.size() + 1360658);
  const uint64_t n = json.size();
  std::memcpy(file.data(), &n, 8);
  std::memcpy(file.data() + 8, json.data(), n);
  testing::FillPositional(std::span(file).subspan(8 + n), 0, 7);
  testing::WriteFile(path, file);
  return file;
}

class GpuTest : public ::testing::Test {
 protected:
  GpuTest() { setenv("TMPDIR", "/var/tmp", 1); }
  void SetUp() override { ASSERT_THAT(sink::cuda::DeviceCount(), IsOk()); }
  testing::TempDir dir_;
};

TEST_F(GpuTest, BytesOnTheDeviceEqualTheFile) {
  const std::string path = dir_.File("odd.safetensors");
  const std::vector<std::byte> file = OddOffsetFile(path);
  LoadOptions o;
  o.device = Device{DeviceType::kCuda, 0};
  o.chunk_bytes = 64 << 10;  // many chunks, cutting elements
  o.memory_budget = 1 << 20;
  FL_ASSERT_OK_AND_ASSIGN(LoadedModel m, Load(path, o));
  const Header& h = m.headers.at(path);
  for (const TensorInfo& t : h.tensors) {
    const Tensor& d = m.tensors.at(t.name);
    EXPECT_EQ(d.device(), (Device{DeviceType::kCuda, 0}));
    EXPECT_EQ(reinterpret_cast<uintptr_t>(d.data()) % 256, 0u) << t.name;
    const std::vector<std::byte> got = DeviceBytes(d);
    const std::byte* want = file.data() + h.data_offset() + t.data_begin;
    EXPECT_EQ(std::memcmp(got.data(), want, t.byte_size()), 0) << t.name;
  }
  EXPECT_EQ(m.report.device, "cuda:0");
}

TEST_F(GpuTest, ConversionDuringALoadEqualsConvertingTheFileOnTheCpu) {
  const std::string path = dir_.File("odd.safetensors");
  const std::vector<std::byte> file = OddOffsetFile(path);
  for (const char* spec : {"bf16", "fp16", "fp32"}) {
    LoadOptions o;
    o.device = Device{DeviceType::kCuda, 0};
    o.dtype = spec;
    o.chunk_bytes = 64 << 10;
    o.memory_budget = 1 << 20;
    FL_ASSERT_OK_AND_ASSIGN(LoadedModel m, Load(path, o));
    FL_ASSERT_OK_AND_ASSIGN(ConvertSpec cs, ParseConvertSpec(spec));
    const Header& h = m.headers.at(path);
    for (const TensorInfo& t : h.tensors) {
      FL_ASSERT_OK_AND_ASSIGN(Dtype to, TargetDtype(t.name, t.dtype, cs));
      const Tensor& d = m.tensors.at(t.name);
      ASSERT_EQ(d.dtype(), to) << t.name;
      std::vector<std::byte> want(t.element_count() * DtypeBits(to) / 8);
      FL_ASSERT_OK(ConvertElements(t.dtype, to, file.data() + h.data_offset() + t.data_begin,
                                   want.data(), t.element_count()));
      EXPECT_EQ(DeviceBytes(d), want) << spec << " " << t.name;
    }
    EXPECT_GT(m.report.tensors_converted, 0u) << spec;
  }
}

// Every input pattern of a dtype pair through the kernel and through the CPU twin.
void ExpectKernelMatchesCpu(Dtype from, Dtype to, const std::vector<std::byte>& in) {
  const uint64_t in_size = DtypeBits(from) / 8;
  const uint64_t out_size = DtypeBits(to) / 8;
  const uint64_t count = in.size() / in_size;
  std::vector<std::byte> cpu(count * out_size);
  FL_ASSERT_OK(ConvertElements(from, to, in.data(), cpu.data(), count));
  FL_ASSERT_OK_AND_ASSIGN(void* src, sink::cuda::DeviceAlloc(in.size() + 16));
  FL_ASSERT_OK_AND_ASSIGN(void* dst, sink::cuda::DeviceAlloc(cpu.size() + 16));
  FL_ASSERT_OK(sink::cuda::CopyHostToDevice(src, in.data(), in.size()));
  // Aligned (vector path) and misaligned by one element (scalar path).
  for (uint64_t shift : {uint64_t{0}, uint64_t{1}}) {
    const uint64_t n = count - shift;
    FL_ASSERT_OK(sink::LaunchConvert(from, to, static_cast<std::byte*>(src) + shift * in_size,
                                     static_cast<std::byte*>(dst) + shift * out_size, n, nullptr));
    FL_ASSERT_OK(sink::cuda::DeviceSynchronize());
    std::vector<std::byte> gpu(n * out_size);
    FL_ASSERT_OK(
        CopyDeviceToHost(gpu.data(), static_cast<std::byte*>(dst) + shift * out_size, gpu.size()));
    EXPECT_EQ(std::memcmp(gpu.data(), cpu.data() + shift * out_size, gpu.size()), 0)
        << DtypeName(from) << " -> " << DtypeName(to) << " shift " << shift;
  }
  sink::cuda::DeviceFree(0, src);
  sink::cuda::DeviceFree(0, dst);
}

TEST_F(GpuTest, KernelsAreBitIdenticalToTheCpuForEvery16BitAndFp8Pattern) {
  std::vector<std::byte> all16(65536 * 2);
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t v = static_cast<uint16_t>(i);
    std::memcpy(all16.data() + 2 * i, &v, 2);
  }
  for (Dtype from : {Dtype::kF16, Dtype::kBF16}) {
    for (Dtype to : {Dtype::kF32, Dtype::kF16, Dtype::kBF16}) {
      if (from != to) ExpectKernelMatchesCpu(from, to, all16);
    }
  }
  std::vector<std::byte> all8(256);
  for (uint32_t i = 0; i < 256; ++i) all8[i] = static_cast<std::byte>(i);
  for (Dtype from : {Dtype::kF8E4M3, Dtype::kF8E5M2, Dtype::kF8E4M3Fnuz, Dtype::kF8E5M2Fnuz}) {
    for (Dtype to : {Dtype::kF32, Dtype::kF16, Dtype::kBF16})
      ExpectKernelMatchesCpu(from, to, all8);
  }
  // F32 sources: every 2^32 pattern is too many for a test; every pattern whose low 12 bits are
  // one of a few values (all exponents, signs and top fraction bits; rounding ties and sticky
  // bits through the low values).
  std::vector<std::byte> f32;
  for (uint64_t hi = 0; hi < (uint64_t{1} << 20); ++hi) {
    for (uint32_t lo : {0x000u, 0x001u, 0x7ffu, 0x800u, 0x801u, 0xfffu}) {
      const uint32_t v = static_cast<uint32_t>(hi << 12) | lo;
      const auto* b = reinterpret_cast<const std::byte*>(&v);
      f32.insert(f32.end(), b, b + 4);
    }
  }
  ExpectKernelMatchesCpu(Dtype::kF32, Dtype::kF16, f32);
  ExpectKernelMatchesCpu(Dtype::kF32, Dtype::kBF16, f32);
}

TEST_F(GpuTest, DeviceTensorsOutliveTheLoaderAndTheFile) {
  const std::string path = dir_.File("odd.safetensors");
  const std::vector<std::byte> file = OddOffsetFile(path);
  Tensor kept;
  uint64_t at = 0;
  {
    LoadOptions o;
    o.device = Device{DeviceType::kCuda, 0};
    FL_ASSERT_OK_AND_ASSIGN(LoadedModel m, Load(path, o));
    kept = m.tensors.at("f16");
    at = m.headers.at(path).data_offset() + m.headers.at(path).Find("f16")->data_begin;
  }
  std::remove(path.c_str());
  const std::vector<std::byte> got = DeviceBytes(kept);
  EXPECT_EQ(std::memcmp(got.data(), file.data() + at, got.size()), 0);
}

TEST_F(GpuTest, PeakDeviceMemoryIsTheModelPlusAtMostTheBudget) {
  const std::string path = dir_.File("odd.safetensors");
  OddOffsetFile(path);
  for (const char* spec : {"", "bf16", "fp32"}) {
    LoadOptions o;
    o.device = Device{DeviceType::kCuda, 0};
    o.dtype = spec;
    o.chunk_bytes = 64 << 10;
    o.memory_budget = 512 << 10;
    FL_ASSERT_OK_AND_ASSIGN(LoadedModel m, Load(path, o));
    uint64_t model = 0;
    for (const auto& [name, t] : m.tensors) model += (t.byte_size() + 255) / 256 * 256;
    EXPECT_GE(m.report.peak_device_bytes, m.report.output_bytes) << spec;
    EXPECT_LE(m.report.peak_device_bytes, model + o.memory_budget) << spec;
  }
}

// GPUDirect Storage asked for on every file (--gds on): whichever path each file took (cuFile
// straight into device scratch, or staging with the reason), the bytes and conversions are right,
// the report says which, and device memory stays within the model plus the budget.
TEST_F(GpuTest, GpuDirectStorageOrItsFallbackLoadsTheSameBytes) {
  const std::string path = dir_.File("odd.safetensors");
  const std::vector<std::byte> file = OddOffsetFile(path);
  for (const char* spec : {"", "bf16"}) {
    LoadOptions o;
    o.device = Device{DeviceType::kCuda, 0};
    o.gpu_direct = GpuDirect::kOn;
    o.dtype = spec;
    o.memory_budget = 1 << 20;
    FL_ASSERT_OK_AND_ASSIGN(LoadedModel m, Load(path, o));
    ASSERT_EQ(m.report.files.size(), 1u);
    const std::string& how = m.report.files[0].gpu_direct_storage;
    std::printf("[ gds      ] %s: %s\n", spec[0] ? spec : "no conversion", how.c_str());
    EXPECT_TRUE(how.starts_with("GPUDirect Storage: cuFile") || how.starts_with("pinned staging"))
        << how;
    FL_ASSERT_OK_AND_ASSIGN(ConvertSpec cs, ParseConvertSpec(spec));
    const Header& h = m.headers.at(path);
    uint64_t model = 0;
    for (const TensorInfo& t : h.tensors) {
      FL_ASSERT_OK_AND_ASSIGN(Dtype to, TargetDtype(t.name, t.dtype, cs));
      const Tensor& d = m.tensors.at(t.name);
      std::vector<std::byte> want(t.element_count() * DtypeBits(to) / 8);
      FL_ASSERT_OK(ConvertElements(t.dtype, to, file.data() + h.data_offset() + t.data_begin,
                                   want.data(), t.element_count()));
      EXPECT_EQ(DeviceBytes(d), want) << spec << " " << t.name;
      model += (d.byte_size() + 255) / 256 * 256;
    }
    EXPECT_LE(m.report.peak_device_bytes, model + o.memory_budget) << spec;
  }
}

TEST_F(GpuTest, DeviceToDeviceCopiesOnTheEngine) {
  FL_ASSERT_OK_AND_ASSIGN(std::unique_ptr<sink::CopyEngine> e, sink::OpenCudaCopyEngine(0, 2));
  std::vector<std::byte> host = testing::PositionalBytes(3 << 20, 11);
  FL_ASSERT_OK_AND_ASSIGN(std::shared_ptr<void> pinned, e->AllocatePinned(host.size()));
  std::memcpy(pinned.get(), host.data(), host.size());
  FL_ASSERT_OK_AND_ASSIGN(std::shared_ptr<void> a, e->AllocateDevice(host.size()));
  FL_ASSERT_OK_AND_ASSIGN(std::shared_ptr<void> b, e->AllocateDevice(host.size()));
  FL_ASSERT_OK(e->CopyToDevice(0, a.get(), pinned.get(), host.size()));
  FL_ASSERT_OK(e->Synchronize());
  FL_ASSERT_OK(e->CopyOnDevice(1, static_cast<std::byte*>(b.get()) + 1,
                               static_cast<std::byte*>(a.get()) + 7, host.size() - 7));
  FL_ASSERT_OK(e->Synchronize());
  std::vector<std::byte> got(host.size() - 7);
  FL_ASSERT_OK(CopyDeviceToHost(got.data(), static_cast<std::byte*>(b.get()) + 1, got.size()));
  EXPECT_EQ(std::memcmp(got.data(), host.data() + 7, got.size()), 0);
}

}  // namespace
}  // namespace flashload
