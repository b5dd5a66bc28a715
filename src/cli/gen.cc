#include "cli/gen.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>

#include "flashload/convert.h"
#include "flashload/writer.h"

namespace flashload::cli {
namespace {

namespace fs = std::filesystem;

// ---- Plans ------------------------------------------------------------------------------------

// Appends tensors under a name prefix, in state-dict order.
class TensorList {
 public:
  TensorList(std::vector<PlannedTensor>* out, Dtype dtype) : out_(out), dtype_(dtype) {}

  void Add(const std::string& name, std::vector<uint64_t> shape) {
    out_->push_back({name, dtype_, std::move(shape)});
  }
  void Linear(const std::string& name, uint64_t out, uint64_t in, bool bias = true) {
    Add(name + ".weight", {out, in});
    if (bias) Add(name + ".bias", {out});
  }
  void Conv(const std::string& name, uint64_t out, uint64_t in, uint64_t k) {
    Add(name + ".weight", {out, in, k, k});
    Add(name + ".bias", {out});
  }
  void Norm(const std::string& name, uint64_t c) {
    Add(name + ".weight", {c});
    Add(name + ".bias", {c});
  }

 private:
  std::vector<PlannedTensor>* out_;
  Dtype dtype_;
};

// diffusers ResnetBlock2D; temb == 0 for the VAE's blocks (no time embedding).
void AddResnet(TensorList& t, const std::string& p, uint64_t in, uint64_t out, uint64_t temb) {
  t.Norm(p + ".norm1", in);
  t.Conv(p + ".conv1", out, in, 3);
  if (temb) t.Linear(p + ".time_emb_proj", out, temb);
  t.Norm(p + ".norm2", out);
  t.Conv(p + ".conv2", out, out, 3);
  if (in != out) t.Conv(p + ".conv_shortcut", out, in, 1);
}

// diffusers Transformer2DModel with one BasicTransformerBlock (self-attn, cross-attn, GEGLU).
void AddTransformer(TensorList& t, const std::string& p, uint64_t c, uint64_t cross, bool linear) {
  t.Norm(p + ".norm", c);
  auto proj = [&](const std::string& name) {
    if (linear) {
      t.Linear(name, c, c);
    } else {
      t.Conv(name, c, c, 1);
    }
  };
  proj(p + ".proj_in");
  const std::string b = p + ".transformer_blocks.0";
  for (int a = 1; a <= 2; ++a) {
    const std::string attn = fmt::format("{}.attn{}", b, a);
    const uint64_t kv_in = a == 1 ? c : cross;
    t.Norm(fmt::format("{}.norm{}", b, a), c);
    t.Linear(attn + ".to_q", c, c, false);
    t.Linear(attn + ".to_k", c, kv_in, false);
    t.Linear(attn + ".to_v", c, kv_in, false);
    t.Linear(attn + ".to_out.0", c, c);
  }
  t.Norm(b + ".norm3", c);
  t.Linear(b + ".ff.net.0.proj", 8 * c, c);  // GEGLU: 2 x (4c)
  t.Linear(b + ".ff.net.2", c, 4 * c);
  proj(p + ".proj_out");
}

struct UnetConfig {
  std::vector<uint64_t> channels;
  uint64_t layers_per_block = 2;
  uint64_t cross_attention_dim = 768;
  uint64_t in_channels = 4;
  bool linear_projection = false;
  std::string attention_head_dim;  // as written in config.json: "8" or "[5, 10, 20, 20]"
  uint64_t sample_size = 64;
};

void PlanUnet(const UnetConfig& c, TensorList& t) {
  const size_t n = c.channels.size();
  const uint64_t temb = 4 * c.channels[0];
  t.Conv("conv_in", c.channels[0], c.in_channels, 3);
  t.Linear("time_embedding.linear_1", temb, c.channels[0]);
  t.Linear("time_embedding.linear_2", temb, temb);
  uint64_t out = c.channels[0];
  for (size_t i = 0; i < n; ++i) {  // CrossAttnDownBlock2D x (n-1), DownBlock2D
    const uint64_t in = out;
    out = c.channels[i];
    const bool attn = i + 1 < n;
    for (uint64_t j = 0; j < c.layers_per_block; ++j) {
      AddResnet(t, fmt::format("down_blocks.{}.resnets.{}", i, j), j == 0 ? in : out, out, temb);
      if (attn) {
        AddTransformer(t, fmt::format("down_blocks.{}.attentions.{}", i, j), out,
                       c.cross_attention_dim, c.linear_projection);
      }
    }
    if (i + 1 < n) t.Conv(fmt::format("down_blocks.{}.downsamplers.0.conv", i), out, out, 3);
  }
  const uint64_t mid = c.channels.back();
  AddResnet(t, "mid_block.resnets.0", mid, mid, temb);
  AddTransformer(t, "mid_block.attentions.0", mid, c.cross_attention_dim, c.linear_projection);
  AddResnet(t, "mid_block.resnets.1", mid, mid, temb);
  uint64_t prev = mid;
  for (size_t i = 0; i < n; ++i) {  // UpBlock2D, CrossAttnUpBlock2D x (n-1)
    const uint64_t up_out = c.channels[n - 1 - i];
    const uint64_t up_in = c.channels[n - 1 - std::min(i + 1, n - 1)];
    const bool attn = i > 0;
    for (uint64_t j = 0; j <= c.layers_per_block; ++j) {
      const uint64_t skip = j == c.layers_per_block ? up_in : up_out;
      const uint64_t res_in = j == 0 ? prev : up_out;
      AddResnet(t, fmt::format("up_blocks.{}.resnets.{}", i, j), res_in + skip, up_out, temb);
      if (attn) {
        AddTransformer(t, fmt::format("up_blocks.{}.attentions.{}", i, j), up_out,
                       c.cross_attention_dim, c.linear_projection);
      }
    }
    if (i + 1 < n) t.Conv(fmt::format("up_blocks.{}.upsamplers.0.conv", i), up_out, up_out, 3);
    prev = up_out;
  }
  t.Norm("conv_norm_out", c.channels[0]);
  t.Conv("conv_out", c.in_channels, c.channels[0], 3);
}

std::string JsonList(const std::vector<std::string>& items, bool quote) {
  std::string s = "[";
  for (size_t i = 0; i < items.size(); ++i) {
    s += (i ? ", " : "") + (quote ? "\"" + items[i] + "\"" : items[i]);
  }
  return s + "]";
}

std::vector<std::string> ToStrings(const std::vector<uint64_t>& v) {
  std::vector<std::string> s;
  for (uint64_t x : v) s.push_back(std::to_string(x));
  return s;
}

std::string UnetConfigJson(const UnetConfig& c) {
  const size_t n = c.channels.size();
  std::vector<std::string> down(n - 1, "CrossAttnDownBlock2D"), up(n - 1, "CrossAttnUpBlock2D");
  down.push_back("DownBlock2D");
  up.insert(up.begin(), "UpBlock2D");
  return fmt::format(
      "{{\n  \"_class_name\": \"UNet2DConditionModel\",\n  \"_diffusers_version\": \"0.21.0\",\n"
      "  \"act_fn\": \"silu\",\n  \"attention_head_dim\": {},\n  \"block_out_channels\": {},\n"
      "  \"center_input_sample\": false,\n  \"cross_attention_dim\": {},\n"
      "  \"down_block_types\": {},\n  \"downsample_padding\": 1,\n  \"flip_sin_to_cos\": true,\n"
      "  \"freq_shift\": 0,\n  \"in_channels\": {},\n  \"layers_per_block\": {},\n"
      "  \"mid_block_scale_factor\": 1,\n  \"norm_eps\": 1e-05,\n  \"norm_num_groups\": 32,\n"
      "  \"out_channels\": {},\n  \"sample_size\": {},\n  \"up_block_types\": {},\n"
      "  \"use_linear_projection\": {}\n}}\n",
      c.attention_head_dim, JsonList(ToStrings(c.channels), false), c.cross_attention_dim,
      JsonList(down, true), c.in_channels, c.layers_per_block, c.in_channels, c.sample_size,
      JsonList(up, true), c.linear_projection ? "true" : "false");
}

// diffusers AutoencoderKL (Encoder + Decoder with mid-block attention, quant convs).
struct VaeConfig {
  std::vector<uint64_t> channels;
  uint64_t layers_per_block = 2;
  uint64_t latent = 4;
};

void AddVaeMid(TensorList& t, const std::string& p, uint64_t c) {
  AddResnet(t, p + ".resnets.0", c, c, 0);
  const std::string a = p + ".attentions.0";
  t.Norm(a + ".group_norm", c);
  for (const char* proj : {".to_q", ".to_k", ".to_v", ".to_out.0"}) t.Linear(a + proj, c, c);
  AddResnet(t, p + ".resnets.1", c, c, 0);
}

void PlanVae(const VaeConfig& c, TensorList& t) {
  const size_t n = c.channels.size();
  t.Conv("encoder.conv_in", c.channels[0], 3, 3);
  uint64_t out = c.channels[0];
  for (size_t i = 0; i < n; ++i) {
    const uint64_t in = out;
    out = c.channels[i];
    for (uint64_t j = 0; j < c.layers_per_block; ++j) {
      AddResnet(t, fmt::format("encoder.down_blocks.{}.resnets.{}", i, j), j == 0 ? in : out, out,
                0);
    }
    if (i + 1 < n)
      t.Conv(fmt::format("encoder.down_blocks.{}.downsamplers.0.conv", i), out, out, 3);
  }
  AddVaeMid(t, "encoder.mid_block", out);
  t.Norm("encoder.conv_norm_out", out);
  t.Conv("encoder.conv_out", 2 * c.latent, out, 3);
  t.Conv("decoder.conv_in", c.channels.back(), c.latent, 3);
  AddVaeMid(t, "decoder.mid_block", c.channels.back());
  uint64_t prev = c.channels.back();
  for (size_t i = 0; i < n; ++i) {
    const uint64_t up_out = c.channels[n - 1 - i];
    for (uint64_t j = 0; j <= c.layers_per_block; ++j) {
      AddResnet(t, fmt::format("decoder.up_blocks.{}.resnets.{}", i, j), j == 0 ? prev : up_out,
                up_out, 0);
    }
    if (i + 1 < n) {
      t.Conv(fmt::format("decoder.up_blocks.{}.upsamplers.0.conv", i), up_out, up_out, 3);
    }
    prev = up_out;
  }
  t.Norm("decoder.conv_norm_out", c.channels[0]);
  t.Conv("decoder.conv_out", 3, c.channels[0], 3);
  t.Conv("quant_conv", 2 * c.latent, 2 * c.latent, 1);
  t.Conv("post_quant_conv", c.latent, c.latent, 1);
}

std::string VaeConfigJson(const VaeConfig& c) {
  const size_t n = c.channels.size();
  return fmt::format(
      "{{\n  \"_class_name\": \"AutoencoderKL\",\n  \"_diffusers_version\": \"0.21.0\",\n"
      "  \"act_fn\": \"silu\",\n  \"block_out_channels\": {},\n  \"down_block_types\": {},\n"
      "  \"in_channels\": 3,\n  \"latent_channels\": {},\n  \"layers_per_block\": {},\n"
      "  \"norm_num_groups\": 32,\n  \"out_channels\": 3,\n  \"sample_size\": 512,\n"
      "  \"scaling_factor\": 0.18215,\n  \"up_block_types\": {}\n}}\n",
      JsonList(ToStrings(c.channels), false),
      JsonList(std::vector<std::string>(n, "DownEncoderBlock2D"), true), c.latent,
      c.layers_per_block, JsonList(std::vector<std::string>(n, "UpDecoderBlock2D"), true));
}

// transformers CLIPTextModel.
struct ClipTextConfig {
  uint64_t hidden = 768;
  uint64_t layers = 12;
  uint64_t heads = 12;
  uint64_t intermediate = 3072;
  uint64_t vocab = 49408;
  uint64_t positions = 77;
  uint64_t projection_dim = 768;
  std::string act = "quick_gelu";
};

void PlanClipText(const ClipTextConfig& c, TensorList& t) {
  t.Add("text_model.embeddings.token_embedding.weight", {c.vocab, c.hidden});
  t.Add("text_model.embeddings.position_embedding.weight", {c.positions, c.hidden});
  for (uint64_t l = 0; l < c.layers; ++l) {
    const std::string p = fmt::format("text_model.encoder.layers.{}", l);
    for (const char* proj : {"k_proj", "v_proj", "q_proj", "out_proj"}) {
      t.Linear(fmt::format("{}.self_attn.{}", p, proj), c.hidden, c.hidden);
    }
    t.Norm(p + ".layer_norm1", c.hidden);
    t.Linear(p + ".mlp.fc1", c.intermediate, c.hidden);
    t.Linear(p + ".mlp.fc2", c.hidden, c.intermediate);
    t.Norm(p + ".layer_norm2", c.hidden);
  }
  t.Norm("text_model.final_layer_norm", c.hidden);
}

std::string ClipTextConfigJson(const ClipTextConfig& c) {
  return fmt::format(
      "{{\n  \"architectures\": [\"CLIPTextModel\"],\n  \"attention_dropout\": 0.0,\n"
      "  \"bos_token_id\": 0,\n  \"eos_token_id\": 2,\n  \"hidden_act\": \"{}\",\n"
      "  \"hidden_size\": {},\n  \"initializer_factor\": 1.0,\n  \"initializer_range\": 0.02,\n"
      "  \"intermediate_size\": {},\n  \"layer_norm_eps\": 1e-05,\n"
      "  \"max_position_embeddings\": {},\n  \"model_type\": \"clip_text_model\",\n"
      "  \"num_attention_heads\": {},\n  \"num_hidden_layers\": {},\n  \"pad_token_id\": 1,\n"
      "  \"projection_dim\": {},\n  \"torch_dtype\": \"float16\",\n"
      "  \"transformers_version\": \"4.33.0\",\n  \"vocab_size\": {}\n}}\n",
      c.act, c.hidden, c.intermediate, c.positions, c.heads, c.layers, c.projection_dim, c.vocab);
}

struct DiffusersConfig {
  UnetConfig unet;
  VaeConfig vae;
  ClipTextConfig text;
  std::string scheduler = "PNDMScheduler";
  std::string prediction_type = "epsilon";
};

void PlanDiffusers(const DiffusersConfig& c, GenPlan& plan) {
  auto add_file = [&](const std::string& component, const std::string& file) -> TensorList {
    plan.files.push_back({component, component + "/" + file, {}});
    return TensorList(&plan.files.back().tensors, Dtype::kF16);
  };
  {
    TensorList t = add_file("unet", "diffusion_pytorch_model.safetensors");
    PlanUnet(c.unet, t);
  }
  {
    TensorList t = add_file("vae", "diffusion_pytorch_model.safetensors");
    PlanVae(c.vae, t);
  }
  {
    TensorList t = add_file("text_encoder", "model.safetensors");
    PlanClipText(c.text, t);
  }
  plan.texts.push_back({"unet/config.json", UnetConfigJson(c.unet)});
  plan.texts.push_back({"vae/config.json", VaeConfigJson(c.vae)});
  plan.texts.push_back({"text_encoder/config.json", ClipTextConfigJson(c.text)});
  plan.texts.push_back(
      {"scheduler/scheduler_config.json",
       fmt::format("{{\n  \"_class_name\": \"{}\",\n  \"_diffusers_version\": \"0.21.0\",\n"
                   "  \"beta_end\": 0.012,\n  \"beta_schedule\": \"scaled_linear\",\n"
                   "  \"beta_start\": 0.00085,\n  \"num_train_timesteps\": 1000,\n"
                   "  \"prediction_type\": \"{}\",\n  \"set_alpha_to_one\": false,\n"
                   "  \"skip_prk_steps\": true,\n  \"steps_offset\": 1\n}}\n",
                   c.scheduler, c.prediction_type)});
  plan.texts.push_back(
      {"tokenizer/tokenizer_config.json",
       fmt::format("{{\n  \"add_prefix_space\": false,\n  \"bos_token\": \"<|startoftext|>\",\n"
                   "  \"do_lower_case\": true,\n  \"eos_token\": \"<|endoftext|>\",\n"
                   "  \"model_max_length\": {},\n  \"pad_token\": \"<|endoftext|>\",\n"
                   "  \"tokenizer_class\": \"CLIPTokenizer\",\n"
                   "  \"unk_token\": \"<|endoftext|>\"\n}}\n",
                   c.text.positions)});
  plan.texts.push_back(
      {"model_index.json",
       fmt::format("{{\n  \"_class_name\": \"StableDiffusionPipeline\",\n"
                   "  \"_diffusers_version\": \"0.21.0\",\n"
                   "  \"feature_extractor\": [null, null],\n  \"requires_safety_checker\": false,\n"
                   "  \"safety_checker\": [null, null],\n"
                   "  \"scheduler\": [\"diffusers\", \"{}\"],\n"
                   "  \"text_encoder\": [\"transformers\", \"CLIPTextModel\"],\n"
                   "  \"tokenizer\": [\"transformers\", \"CLIPTokenizer\"],\n"
                   "  \"unet\": [\"diffusers\", \"UNet2DConditionModel\"],\n"
                   "  \"vae\": [\"diffusers\", \"AutoencoderKL\"]\n}}\n",
                   c.scheduler)});
}

DiffusersConfig Sd15Config() {
  DiffusersConfig c;
  c.unet.channels = {320, 640, 1280, 1280};
  c.unet.attention_head_dim = "8";
  c.vae.channels = {128, 256, 512, 512};
  return c;
}

DiffusersConfig Sd21Config() {
  DiffusersConfig c = Sd15Config();
  c.unet.cross_attention_dim = 1024;
  c.unet.linear_projection = true;
  c.unet.attention_head_dim = "[5, 10, 20, 20]";
  c.unet.sample_size = 96;
  c.text = {.hidden = 1024,
            .layers = 23,
            .heads = 16,
            .intermediate = 4096,
            .vocab = 49408,
            .positions = 77,
            .projection_dim = 512,
            .act = "gelu"};
  c.scheduler = "DDIMScheduler";
  c.prediction_type = "v_prediction";
  return c;
}

DiffusersConfig TinyConfig() {
  DiffusersConfig c;
  c.unet.channels = {32, 64, 128, 128};
  c.unet.cross_attention_dim = 64;
  c.unet.attention_head_dim = "8";
  c.unet.sample_size = 32;
  c.vae.channels = {32, 64, 64, 64};
  c.text = {.hidden = 64,
            .layers = 2,
            .heads = 4,
            .intermediate = 256,
            .vocab = 1000,
            .positions = 77,
            .projection_dim = 64};
  return c;
}

LlmShape TinyLlmShape() {
  return {.hidden = 256,
          .layers = 6,
          .intermediate = 688,
          .vocab = 8192,
          .heads = 8,
          .kv_heads = 4,
          .shard_bytes = 8'000'000};
}

std::string LlmConfigJson(const LlmShape& s) {
  return fmt::format(
      "{{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"attention_bias\": false,\n"
      "  \"bos_token_id\": 1,\n  \"eos_token_id\": 2,\n  \"head_dim\": {},\n"
      "  \"hidden_act\": \"silu\",\n  \"hidden_size\": {},\n  \"initializer_range\": 0.02,\n"
      "  \"intermediate_size\": {},\n  \"max_position_embeddings\": 8192,\n"
      "  \"model_type\": \"llama\",\n  \"num_attention_heads\": {},\n"
      "  \"num_hidden_layers\": {},\n  \"num_key_value_heads\": {},\n  \"rms_norm_eps\": 1e-05,\n"
      "  \"rope_theta\": 500000.0,\n  \"tie_word_embeddings\": {},\n  \"torch_dtype\": \"{}\",\n"
      "  \"transformers_version\": \"4.44.0\",\n  \"vocab_size\": {}\n}}\n",
      s.hidden / s.heads, s.hidden, s.intermediate, s.heads, s.layers, s.kv_heads,
      s.tie_embeddings ? "true" : "false", s.dtype == Dtype::kBF16 ? "bfloat16" : "float16",
      s.vocab);
}

Status PlanLlm(const LlmShape& s, GenPlan& plan) {
  if (s.hidden == 0 || s.layers == 0 || s.intermediate == 0 || s.vocab == 0 || s.heads == 0 ||
      s.kv_heads == 0 || s.hidden % s.heads != 0 || s.heads % s.kv_heads != 0 ||
      s.shard_bytes == 0) {
    return InvalidArgumentError(fmt::format(
        "bad llm shape: hidden {} must be a multiple of heads {}, heads a multiple of kv_heads {}, "
        "and every size > 0",
        s.hidden, s.heads, s.kv_heads));
  }
  std::vector<PlannedTensor> all;
  TensorList t(&all, s.dtype);
  const uint64_t kv = s.hidden / s.heads * s.kv_heads;
  t.Add("model.embed_tokens.weight", {s.vocab, s.hidden});
  for (uint64_t l = 0; l < s.layers; ++l) {
    const std::string p = fmt::format("model.layers.{}", l);
    t.Add(p + ".self_attn.q_proj.weight", {s.hidden, s.hidden});
    t.Add(p + ".self_attn.k_proj.weight", {kv, s.hidden});
    t.Add(p + ".self_attn.v_proj.weight", {kv, s.hidden});
    t.Add(p + ".self_attn.o_proj.weight", {s.hidden, s.hidden});
    t.Add(p + ".mlp.gate_proj.weight", {s.intermediate, s.hidden});
    t.Add(p + ".mlp.up_proj.weight", {s.intermediate, s.hidden});
    t.Add(p + ".mlp.down_proj.weight", {s.hidden, s.intermediate});
    t.Add(p + ".input_layernorm.weight", {s.hidden});
    t.Add(p + ".post_attention_layernorm.weight", {s.hidden});
  }
  t.Add("model.norm.weight", {s.hidden});
  if (!s.tie_embeddings) t.Add("lm_head.weight", {s.vocab, s.hidden});

  // Shards as transformers' save_pretrained cuts them: a new shard when the next tensor would push
  // the current one past the target.
  std::vector<std::vector<PlannedTensor>> shards(1);
  uint64_t shard_size = 0;
  for (PlannedTensor& x : all) {
    if (shard_size > 0 && shard_size + x.bytes() > s.shard_bytes) {
      shards.emplace_back();
      shard_size = 0;
    }
    shard_size += x.bytes();
    shards.back().push_back(std::move(x));
  }
  const size_t n = shards.size();
  std::map<std::string, std::string> weight_map;
  for (size_t i = 0; i < n; ++i) {
    std::string file = fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, n);
    for (const PlannedTensor& x : shards[i]) weight_map[x.name] = file;
    plan.files.push_back({"", std::move(file), std::move(shards[i])});
  }
  std::string index =
      fmt::format("{{\n  \"metadata\": {{\n    \"total_size\": {}\n  }},\n", plan.bytes());
  index += "  \"weight_map\": {\n";
  size_t k = 0;
  for (const auto& [name, file] : weight_map) {
    index += fmt::format("    \"{}\": \"{}\"{}\n", name, file, ++k < weight_map.size() ? "," : "");
  }
  index += "  }\n}\n";
  plan.texts.push_back({"config.json", LlmConfigJson(s)});
  plan.texts.push_back({"generation_config.json",
                        "{\n  \"bos_token_id\": 1,\n  \"eos_token_id\": 2,\n"
                        "  \"transformers_version\": \"4.44.0\"\n}\n"});
  plan.texts.push_back({"model.safetensors.index.json", std::move(index)});
  return Status::Ok();
}

// ---- Content ----------------------------------------------------------------------------------

inline uint64_t Mix64(uint64_t x) {  // the SplitMix64 / Murmur3 finalizer
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Clearing the top exponent bit keeps every float finite with |x| < 2 (F16, BF16, F32, F64).
uint64_t FiniteMask(Dtype dtype) {
  switch (dtype) {
    case Dtype::kF16:
    case Dtype::kBF16:
      return 0xBFFFBFFFBFFFBFFFULL;
    case Dtype::kF32:
      return 0xBFFFFFFFBFFFFFFFULL;
    case Dtype::kF64:
      return 0xBFFFFFFFFFFFFFFFULL;
    default:
      return ~uint64_t{0};
  }
}

// ---- Files ------------------------------------------------------------------------------------

Status WriteTextAtomically(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoToStatus(errno, "open", tmp);
  size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return ErrnoToStatus(err, "write", tmp, static_cast<int64_t>(done));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return ErrnoToStatus(err, "fsync", tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return ErrnoToStatus(err, "rename", path);
  }
  return Status::Ok();
}

Status PrepareOutDir(const GenOptions& o) {
  if (o.out_dir.empty()) return InvalidArgumentError("gen: no output folder given");
  std::error_code ec;
  const fs::file_status st = fs::status(o.out_dir, ec);
  if (fs::exists(st)) {
    if (!fs::is_directory(st)) {
      return InvalidArgumentError(fmt::format("gen: {} exists and is not a folder", o.out_dir));
    }
    if (!o.force && !fs::is_empty(o.out_dir, ec)) {
      return FailedPreconditionError(fmt::format(
          "gen: {} is not empty; pick an empty folder or pass --force to overwrite", o.out_dir));
    }
  }
  fs::create_directories(o.out_dir, ec);
  if (ec) return ErrnoToStatus(ec.value(), "mkdir", o.out_dir);
  return Status::Ok();
}

// Serializes progress reports from fill callbacks (which the writer may call from its threads).
class ProgressReporter {
 public:
  ProgressReporter(const std::function<void(uint64_t, uint64_t)>& fn, uint64_t total)
      : fn_(fn), total_(total) {}
  void Add(uint64_t n) {
    const uint64_t done = done_.fetch_add(n, std::memory_order_relaxed) + n;
    if (!fn_ || (done >> 26) == ((done - n) >> 26)) return;  // every 64 MiB
    std::lock_guard<std::mutex> lock(mu_);
    fn_(done, total_);
  }
  void Finish() {
    if (!fn_) return;
    std::lock_guard<std::mutex> lock(mu_);
    fn_(done_.load(), total_);
  }

 private:
  const std::function<void(uint64_t, uint64_t)>& fn_;
  const uint64_t total_;
  std::atomic<uint64_t> done_{0};
  std::mutex mu_;
};

Result<uint64_t> ParseU64(std::string_view key, std::string_view v) {
  uint64_t x = 0;
  auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
  if (ec != std::errc() || ptr != v.data() + v.size()) {
    return InvalidArgumentError(fmt::format("llm shape: {}={} is not a number", key, v));
  }
  return x;
}

}  // namespace

uint64_t PlannedTensor::elements() const {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;
  return n;
}
uint64_t PlannedTensor::bytes() const { return elements() * DtypeBits(dtype) / 8; }

uint64_t PlannedFile::params() const {
  uint64_t n = 0;
  for (const PlannedTensor& t : tensors) n += t.elements();
  return n;
}
uint64_t PlannedFile::bytes() const {
  uint64_t n = 0;
  for (const PlannedTensor& t : tensors) n += t.bytes();
  return n;
}

uint64_t GenPlan::params() const {
  uint64_t n = 0;
  for (const PlannedFile& f : files) n += f.params();
  return n;
}
uint64_t GenPlan::bytes() const {
  uint64_t n = 0;
  for (const PlannedFile& f : files) n += f.bytes();
  return n;
}
uint64_t GenPlan::tensors() const {
  uint64_t n = 0;
  for (const PlannedFile& f : files) n += f.tensors.size();
  return n;
}

Result<LlmShape> ParseLlmShape(std::string_view spec, LlmShape s) {
  while (!spec.empty()) {
    const size_t comma = spec.find(',');
    const std::string_view item = spec.substr(0, comma);
    spec = comma == std::string_view::npos ? std::string_view() : spec.substr(comma + 1);
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      return InvalidArgumentError(fmt::format("llm shape: expected key=value, got '{}'", item));
    }
    const std::string_view key = item.substr(0, eq);
    FL_ASSIGN_OR_RETURN(const uint64_t v, ParseU64(key, item.substr(eq + 1)));
    if (key == "hidden") {
      s.hidden = v;
    } else if (key == "layers") {
      s.layers = v;
    } else if (key == "intermediate") {
      s.intermediate = v;
    } else if (key == "vocab") {
      s.vocab = v;
    } else if (key == "heads") {
      s.heads = v;
    } else if (key == "kv_heads") {
      s.kv_heads = v;
    } else if (key == "shard_mb") {
      s.shard_bytes = v * 1'000'000;
    } else if (key == "tie") {
      s.tie_embeddings = v != 0;
    } else {
      return InvalidArgumentError(fmt::format(
          "llm shape: unknown key '{}' (hidden, layers, intermediate, vocab, heads, kv_heads, "
          "shard_mb, tie)",
          key));
    }
  }
  return s;
}

std::vector<GenKind> GenKinds() {
  return {
      {"sd15",
       "Stable Diffusion 1.5 diffusers folder, fp16: UNet 860M + VAE 84M + CLIP-L 123M (~2.1 GB)"},
      {"sd21",
       "Stable Diffusion 2.1 diffusers folder, fp16: UNet 866M + VAE 84M + OpenCLIP-H 340M (~2.6 "
       "GB)"},
      {"tiny", "small diffusers folder with the sd15 structure (~20 MB), for tests"},
      {"llm", "Llama-style sharded bf16 checkpoint; shape from --llm key=value (default: llm-5g)"},
      {"llm-5g",
       "Llama-style bf16, hidden 3072, 18 layers, GQA 24/8, vocab 128256 (~5.2 GB, 3 shards)"},
      {"llm-tiny", "Llama-style bf16, hidden 256, 6 layers (~17 MB, 3 shards), for tests"},
  };
}

Result<GenPlan> PlanModel(const GenOptions& o) {
  GenPlan plan;
  plan.kind = o.kind;
  if (o.kind == "sd15") {
    PlanDiffusers(Sd15Config(), plan);
  } else if (o.kind == "sd21") {
    PlanDiffusers(Sd21Config(), plan);
  } else if (o.kind == "tiny") {
    PlanDiffusers(TinyConfig(), plan);
  } else if (o.kind == "llm") {
    FL_RETURN_IF_ERROR(PlanLlm(o.llm.value_or(LlmShape{}), plan));
  } else if (o.kind == "llm-5g") {
    FL_RETURN_IF_ERROR(PlanLlm(LlmShape{}, plan));
  } else if (o.kind == "llm-tiny") {
    FL_RETURN_IF_ERROR(PlanLlm(TinyLlmShape(), plan));
  } else {
    std::string names;
    for (const GenKind& k : GenKinds()) names += (names.empty() ? "" : ", ") + k.name;
    return InvalidArgumentError(fmt::format("gen: unknown kind '{}' (one of: {})", o.kind, names));
  }
  return plan;
}

GenSummary SummarizePlan(const GenPlan& plan) {
  GenSummary s;
  s.kind = plan.kind;
  for (const PlannedFile& f : plan.files) {
    const std::string name = f.component.empty() ? "model" : f.component;
    if (s.components.empty() || s.components.back().name != name) s.components.push_back({name});
    GenComponent& c = s.components.back();
    c.files += 1;
    c.tensors += f.tensors.size();
    c.params += f.params();
    c.bytes += f.bytes();
    s.files += 1;
    s.tensors += f.tensors.size();
    s.params += f.params();
    s.bytes += f.bytes();
  }
  return s;
}

void FillSynthetic(std::span<std::byte> dst, uint64_t offset, uint64_t key, Dtype dtype) {
  const uint64_t mask = FiniteMask(dtype);
  auto word = [&](uint64_t w) { return Mix64(key + w * 0x9e3779b97f4a7c15ULL) & mask; };
  size_t i = 0;
  uint64_t p = offset;
  for (; i < dst.size() && (p & 7) != 0; ++i, ++p) {
    dst[i] = static_cast<std::byte>(word(p >> 3) >> ((p & 7) * 8));
  }
  const size_t words = (dst.size() - i) / 8;
  std::byte* out = dst.data() + i;
  const uint64_t w0 = p >> 3;
  for (size_t k = 0; k < words; ++k) {
    const uint64_t w = word(w0 + k);
    std::memcpy(out + 8 * k, &w, 8);
  }
  i += 8 * words;
  p += 8 * words;
  for (; i < dst.size(); ++i, ++p) {
    dst[i] = static_cast<std::byte>(word(p >> 3) >> ((p & 7) * 8));
  }
}

// Trained-weight-like values: element e of a tensor is the sum of four 16-bit uniforms drawn from
// a hash of (key, e), centred and scaled to about N(0, 0.02) (Irwin-Hall: bounded at +-3.5 sigma),
// then rounded to the tensor's dtype. By element index, so any split of a tensor into chunks gives
// the same bytes.
void FillWeights(std::span<std::byte> dst, uint64_t offset, uint64_t key, Dtype dtype) {
  const uint64_t es = DtypeBits(dtype) / 8;
  constexpr size_t kBatch = 4096;
  float values[kBatch];
  std::byte converted[kBatch * 4];
  const uint64_t first = offset / es;
  const uint64_t last = (offset + dst.size() + es - 1) / es;
  for (uint64_t e0 = first; e0 < last; e0 += kBatch) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kBatch, last - e0));
    for (size_t i = 0; i < n; ++i) {
      const uint64_t h = Mix64(key ^ ((e0 + i) * 0x9e3779b97f4a7c15ULL));
      const double sum = static_cast<double>(h & 0xffff) + static_cast<double>((h >> 16) & 0xffff) +
                         static_cast<double>((h >> 32) & 0xffff) + static_cast<double>(h >> 48);
      // Four U(0, 65535): mean 131070, variance 4 * 65536^2 / 12.
      values[i] = static_cast<float>((sum - 131070.0) / (65536.0 / std::sqrt(3.0)) * 0.02);
    }
    (void)ConvertElements(Dtype::kF32, dtype, values, converted, n);
    const uint64_t begin = e0 * es;
    const uint64_t lo = std::max(begin, offset);
    const uint64_t hi = std::min(begin + n * es, offset + dst.size());
    std::memcpy(dst.data() + (lo - offset), converted + (lo - begin), hi - lo);
  }
}

Result<GenSummary> GenerateModel(const GenOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  FL_ASSIGN_OR_RETURN(GenPlan plan, PlanModel(o));
  FL_RETURN_IF_ERROR(PrepareOutDir(o));
  GenSummary summary = SummarizePlan(plan);
  summary.out_dir = o.out_dir;
  ProgressReporter progress(o.progress, plan.bytes());

  WriteOptions write_options;
  write_options.alignment = o.alignment;
  write_options.metadata = std::map<std::string, std::string>{{"format", "pt"}};
  for (const PlannedFile& f : plan.files) {
    const std::string path = o.out_dir + "/" + f.path;
    std::error_code ec;
    fs::create_directories(fs::path(path).parent_path(), ec);
    if (ec) return ErrnoToStatus(ec.value(), "mkdir", fs::path(path).parent_path().string());
    std::vector<TensorToWrite> tensors;
    tensors.reserve(f.tensors.size());
    for (const PlannedTensor& t : f.tensors) {
      const std::string id = f.path + "/" + t.name;
      const uint64_t key = XXH3_64bits_withSeed(id.data(), id.size(), o.seed);
      TensorToWrite w;
      w.name = t.name;
      w.dtype = t.dtype;
      w.shape = t.shape;
      const bool weights = o.weight_values && (t.dtype == Dtype::kF32 || t.dtype == Dtype::kF16 ||
                                               t.dtype == Dtype::kBF16);
      w.fill = [key, weights, dtype = t.dtype, &progress](std::span<std::byte> dst,
                                                          uint64_t offset) {
        if (weights) {
          FillWeights(dst, offset, key, dtype);
        } else {
          FillSynthetic(dst, offset, key, dtype);
        }
        progress.Add(dst.size());
      };
      tensors.push_back(std::move(w));
    }
    FL_RETURN_IF_ERROR(WriteSafetensors(path, tensors, write_options).WithContext("gen"));
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) summary.disk_bytes += static_cast<uint64_t>(st.st_size);
  }
  for (const PlannedText& t : plan.texts) {
    const std::string path = o.out_dir + "/" + t.path;
    std::error_code ec;
    fs::create_directories(fs::path(path).parent_path(), ec);
    if (ec) return ErrnoToStatus(ec.value(), "mkdir", fs::path(path).parent_path().string());
    FL_RETURN_IF_ERROR(WriteTextAtomically(path, t.content));
  }
  progress.Finish();
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

}  // namespace flashload::cli
