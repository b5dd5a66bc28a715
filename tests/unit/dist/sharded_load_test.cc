// LoadSharded() with ranks as threads: in both modes every rank's tensors equal
// torch.tensor_split of the full tensor (rows, columns, uneven, fused, replicated), the bytes read
// match the mode, and a read fault on one rank fails every rank naming the rank and the file.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "dist/shard_rules.h"
#include "dist/share_plan.h"
#include "dist/thread_communicator.h"
#include "flashload/convert.h"
#include "flashload/dist.h"
#include "flashload/loader.h"
#include "flashload/writer.h"
#include "io/fault_source.h"
#include "io/registry.h"
#include "support/range_server.h"
#include "support/status_matchers.h"
#include "support/tensor_slices.h"
#include "support/test_files.h"

namespace flashload {
namespace {

// A small Llama-style model: 2 layers, uneven sizes so that splits are uneven too.
struct Spec {
  std::string name;
  Dtype dtype;
  std::vector<uint64_t> shape;
};
std::vector<Spec> LlamaSpecs() {
  std::vector<Spec> s = {{"model.embed_tokens.weight", Dtype::kBF16, {101, 24}},
                         {"model.norm.weight", Dtype::kF32, {24}},
                         {"lm_head.weight", Dtype::kBF16, {101, 24}}};
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    s.push_back({p + "self_attn.q_proj.weight", Dtype::kBF16, {24, 24}});
    s.push_back({p + "self_attn.k_proj.weight", Dtype::kBF16, {10, 24}});
    s.push_back({p + "self_attn.v_proj.weight", Dtype::kBF16, {10, 24}});
    s.push_back({p + "self_attn.o_proj.weight", Dtype::kBF16, {24, 24}});
    s.push_back({p + "mlp.gate_up_proj.weight", Dtype::kF32, {2 * 66, 24}});
    s.push_back({p + "mlp.down_proj.weight", Dtype::kF32, {24, 66}});
    s.push_back({p + "input_layernorm.weight", Dtype::kF32, {24}});
  }
  return s;
}

class ShardedLoadTest : public ::testing::TestWithParam<ShardMode> {
 protected:
  void SetUp() override {
    // Two shards with an index, as transformers writes them.
    const std::vector<Spec> specs = LlamaSpecs();
    std::string weight_map;
    for (int shard = 0; shard < 2; ++shard) {
      std::vector<TensorToWrite> ts;
      const std::string file = "model-0000" + std::to_string(shard + 1) + "-of-00002.safetensors";
      for (size_t i = shard; i < specs.size(); i += 2) {
        ts.push_back(
            testing::PositionalTensor(specs[i].name, specs[i].dtype, specs[i].shape, 500 + i));
        weight_map +=
            (weight_map.empty() ? "" : ",") + ("\"" + specs[i].name + "\":\"" + file + "\"");
      }
      FL_ASSERT_OK(WriteSafetensors(dir_.File(file), ts));
    }
    testing::WriteFile(dir_.File("model.safetensors.index.json"),
                       "{\"metadata\":{},\"weight_map\":{" + weight_map + "}}");
    path_ = dir_.path();
    FL_ASSERT_OK_AND_ASSIGN(LoadedModel whole, Load(dir_.path()));
    for (auto& [name, t] : whole.tensors) {
      const auto* p = static_cast<const std::byte*>(t.data());
      whole_[name] = std::vector<std::byte>(p, p + t.byte_size());
      shapes_[name] = t.shape();
      elem_[name] = DtypeBits(t.dtype()) / 8;
    }
  }

  // Every rank's result, run as threads.
  std::vector<Result<ShardedModel>> RunRanks(int world, TensorParallelOptions o) {
    auto comms = dist::ThreadWorld::CreateCommunicators(world);
    EXPECT_TRUE(comms.ok());
    std::vector<Result<ShardedModel>> out(world, InternalError("not run"));
    std::vector<std::thread> threads;
    for (int r = 0; r < world; ++r) {
      threads.emplace_back([&, r] { out[r] = LoadSharded(path_, *(*comms)[r], o); });
    }
    for (auto& t : threads) t.join();
    return out;
  }

  void ExpectShards(int world, const std::vector<Result<ShardedModel>>& results) {
    FL_ASSERT_OK_AND_ASSIGN(dist::ShardRules rules, dist::ShardRules::Preset("llama"));
    for (int r = 0; r < world; ++r) {
      ASSERT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r].status().ToString();
      const ShardedModel& m = *results[r];
      ASSERT_EQ(m.tensors.size(), whole_.size());
      for (const auto& [name, bytes] : whole_) {
        SCOPED_TRACE(name + " rank " + std::to_string(r));
        FL_ASSERT_OK_AND_ASSIGN(
            TensorPart part, rules.PartFor(name, shapes_[name], world, static_cast<uint32_t>(r)));
        const Tensor& t = m.tensors.at(name);
        const auto* p = static_cast<const std::byte*>(t.data());
        EXPECT_EQ(std::vector<std::byte>(p, p + t.byte_size()),
                  testing::SliceOf(bytes, shapes_[name], elem_[name], part));
      }
      EXPECT_EQ(m.reports.size(), static_cast<size_t>(world));
    }
  }

  uint64_t ModelBytes() const {
    uint64_t n = 0;
    for (const auto& [name, b] : whole_) n += b.size();
    return n;
  }

  testing::TempDir dir_;
  std::string path_;  // what the ranks load: the folder, or a URL of it
  std::map<std::string, std::vector<std::byte>> whole_;
  std::map<std::string, std::vector<uint64_t>> shapes_;
  std::map<std::string, uint64_t> elem_;
};

class ShardedLoadAutoTest : public ShardedLoadTest {
 protected:
  testing::TempDir root_;
  testing::TempDir work_;
};

TEST_P(ShardedLoadTest, EveryRankHoldsItsTensorSplitSlices) {
  for (int world : {1, 2, 3, 4}) {
    SCOPED_TRACE("world " + std::to_string(world));
    TensorParallelOptions o;
    o.mode = GetParam();
    o.share_window_bytes = 8192;  // many rounds, windows cutting tensors anywhere
    auto results = RunRanks(world, o);
    ExpectShards(world, results);
    if (!results[0].ok()) return;
    uint64_t read = 0;
    uint64_t shards = 0;
    for (const RankReport& rr : results[0]->reports) {
      read += rr.bytes_read;
      shards += rr.shard_bytes;
      EXPECT_EQ(rr.mode, ShardModeName(GetParam()));
    }
    if (GetParam() == ShardMode::kReadOnceShare) {
      // Each byte once across the job (plus alignment at the edges of each rank's pieces).
      EXPECT_GE(read, ModelBytes());
      EXPECT_LE(read, ModelBytes() + results[0]->report.rounds * world * 2 * 4096 + 8 * 4096);
    } else {
      // Each rank its shards: the small test tensors sit in a few pages, so bound by pages.
      EXPECT_GE(read, shards);
    }
  }
}

TEST_P(ShardedLoadTest, AReadFaultOnOneRankFailsEveryRankNamingRankAndFile) {
  const int world = 3;
  TensorParallelOptions o;
  o.mode = GetParam();
  o.share_window_bytes = 8192;
  o.timeout = std::chrono::seconds(20);
  auto comms = dist::ThreadWorld::CreateCommunicators(world);
  ASSERT_TRUE(comms.ok());
  std::vector<Result<ShardedModel>> out(world, InternalError("not run"));
  std::vector<std::thread> threads;
  const auto start = std::chrono::steady_clock::now();
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      TensorParallelOptions mine = o;
      if (r == 1) {
        // Rank 1's reads of tensor data fail with EIO (its first read, the header, succeeds).
        mine.load.opener = [](const std::string& uri,
                              const OpenOptions& open) -> Result<std::unique_ptr<Source>> {
          FL_ASSIGN_OR_RETURN(std::unique_ptr<Source> src, OpenSource(uri, open));
          FaultOptions faults;
          faults.after_requests = 1;  // the header read goes through
          return std::unique_ptr<Source>(NewFaultSource(std::move(src), faults));
        };
      }
      out[r] = LoadSharded(dir_.path(), *(*comms)[r], mine);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(15));
  for (int r = 0; r < world; ++r) {
    ASSERT_FALSE(out[r].ok()) << "rank " << r << " succeeded";
    const std::string msg(out[r].status().message());
    if (r != 1) {
      EXPECT_NE(msg.find("rank 1: "), std::string::npos) << msg;
    }
    EXPECT_NE(msg.find("safetensors"), std::string::npos) << msg;
  }
}

TEST_P(ShardedLoadTest, ConvertingRanksReadTheirColumnShardsThemselves) {
  TensorParallelOptions o;
  o.mode = GetParam();
  o.load.dtype = "F32=BF16";
  auto results = RunRanks(2, o);
  FL_ASSERT_OK_AND_ASSIGN(dist::ShardRules rules, dist::ShardRules::Preset("llama"));
  for (int r = 0; r < 2; ++r) {
    ASSERT_TRUE(results[r].ok()) << results[r].status().ToString();
    EXPECT_EQ(results[r]->report.strided_shared, 0u);
    // Every F32 shard arrives as BF16 with the engine's rounding; the others unchanged.
    for (const auto& [name, bytes] : whole_) {
      SCOPED_TRACE(name);
      FL_ASSERT_OK_AND_ASSIGN(TensorPart part,
                              rules.PartFor(name, shapes_[name], 2, static_cast<uint32_t>(r)));
      std::vector<std::byte> want = testing::SliceOf(bytes, shapes_[name], elem_[name], part);
      const Tensor& t = results[r]->tensors.at(name);
      if (elem_[name] == 4) {
        std::vector<std::byte> converted(want.size() / 2);
        FL_ASSERT_OK(ConvertElements(Dtype::kF32, Dtype::kBF16, want.data(), converted.data(),
                                     want.size() / 4));
        want = converted;
        EXPECT_EQ(t.dtype(), Dtype::kBF16);
      }
      const auto* p = static_cast<const std::byte*>(t.data());
      EXPECT_EQ(std::vector<std::byte>(p, p + t.byte_size()), want);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, ShardedLoadTest,
                         ::testing::Values(ShardMode::kShardLocal, ShardMode::kReadOnceShare),
                         [](const auto& info) {
                           return info.param == ShardMode::kShardLocal ? "ShardLocal" : "Share";
                         });

TEST_F(ShardedLoadAutoTest, LocalFilesAreReadShardLocalRemoteOnesReadOnceAndShared) {
  TensorParallelOptions o;  // mode auto
  auto local = RunRanks(2, o);
  ExpectShards(2, local);
  ASSERT_TRUE(local[0].ok());
  EXPECT_EQ(local[0]->report.mode, "shard-local");
  EXPECT_NE(local[0]->report.mode_reason.find("local storage"), std::string::npos);
  // The same model over HTTP (the index names its shards relative to itself).
  std::filesystem::create_directories(root_.File("bucket"));
  std::filesystem::copy(dir_.path(), root_.File("bucket/llama"));
  FL_ASSERT_OK_AND_ASSIGN(auto server, testing::RangeServer::Start(testing::RangeServerScript(),
                                                                   root_.path(), work_.path()));
  path_ = server->Url("bucket/llama/model.safetensors.index.json");
  auto remote = RunRanks(2, o);
  ExpectShards(2, remote);
  ASSERT_TRUE(remote[1].ok());
  EXPECT_EQ(remote[1]->report.mode, "read-once-share");
  EXPECT_NE(remote[1]->report.mode_reason.find("is remote"), std::string::npos)
      << remote[1]->report.mode_reason;
}

TEST(SharePlanTest, ReadsPartitionTheNeededBytesAndTransfersCoverEveryNeed) {
  // Rank 0 needs [0, 100) and [300, 400) of file 0; rank 1 needs [50, 350) of file 0 and [0, 10)
  // of file 1.
  std::vector<std::vector<std::vector<dist::Destination>>> needs = {
      {{{0, 100, 0}, {300, 100, 100}}, {}},
      {{{50, 300, 0}}, {{0, 10, 300}}},
  };
  dist::SharePlan plan(needs, 64);
  EXPECT_EQ(plan.needed_bytes(), 410u);
  EXPECT_EQ(plan.rounds(), 7u);
  std::map<std::pair<uint32_t, uint64_t>, int> read_count;
  std::vector<std::vector<int>> got(2, std::vector<int>(400, 0));
  for (uint32_t k = 0; k < plan.rounds(); ++k) {
    for (uint32_t r = 0; r < 2; ++r) {
      for (const auto& b : plan.Reads(k, r))
        for (uint64_t i = 0; i < b.bytes; ++i) ++read_count[{b.file, b.offset + i}];
      for (uint32_t q = 0; q < 2; ++q)
        for (const auto& t : plan.Transfers(k, r, q))
          for (uint64_t i = 0; i < t.bytes; ++i) ++got[q][t.out + i];
    }
  }
  EXPECT_EQ(read_count.size(), 410u);
  for (const auto& [at, n] : read_count) EXPECT_EQ(n, 1) << at.first << ":" << at.second;
  for (int i = 0; i < 200; ++i) EXPECT_EQ(got[0][i], 1) << i;
  for (int i = 0; i < 310; ++i) EXPECT_EQ(got[1][i], 1) << i;
}

}  // namespace
}  // namespace flashload
