"""Tiny real models, written by the libraries' own save_pretrained, for the frameworks suite.

Everything is built from configs (no network: HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE are set
before the libraries are imported); the CLIP tokenizer's vocabulary is written by hand.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402

import flashload  # noqa: E402  (the package under test: a missing one is an error, not a skip)


@dataclass(frozen=True)
class Models:
    sd: Path            # StableDiffusionPipeline: unet, vae, text_encoder, tokenizer, scheduler
    sd_fp16: Path       # the same pipeline in float16, saved with variant="fp16"
    llama: Path         # LlamaForCausalLM, sharded: an index and several shards
    single_file: Path   # the unet's weights as one file, for from_single_file (config: sd/unet)

    def weight_files(self, folder: Path) -> List[str]:
        """Every .safetensors file under `folder`, as absolute paths."""
        return sorted(str(p.resolve()) for p in folder.rglob("*.safetensors"))


def clip_tokenizer(folder: Path):
    """A CLIP tokenizer with a 56-token vocabulary (letters, no merges)."""
    from transformers import CLIPTokenizer
    folder.mkdir(parents=True, exist_ok=True)
    vocab: Dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for letter in "abcdefghijklmnopqrstuvwxyz":
        vocab[letter] = len(vocab)
        vocab[letter + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                         model_max_length=16)


def stable_diffusion(tokenizer_folder: Path):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4,
        out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
        norm_num_groups=4, attention_head_dim=2)
    vae = AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4, norm_num_groups=4, sample_size=16)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=2,
        vocab_size=64, max_position_embeddings=16, projection_dim=16, bos_token_id=0,
        eos_token_id=1, pad_token_id=1))
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(tokenizer_folder), unet=unet,
        scheduler=DDIMScheduler(clip_sample=False), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> Models:
    from transformers import LlamaConfig, LlamaForCausalLM
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    pipe = stable_diffusion(root / "tokenizer-source")
    pipe.save_pretrained(root / "sd")
    pipe.to(torch.float16).save_pretrained(root / "sd-fp16", variant="fp16")
    single = root / "single" / "unet.safetensors"
    single.parent.mkdir()
    shutil.copyfile(root / "sd" / "unet" / "diffusion_pytorch_model.safetensors", single)
    llama = LlamaForCausalLM(LlamaConfig(
        hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
        num_hidden_layers=3, vocab_size=128, max_position_embeddings=64))
    llama.save_pretrained(root / "llama", max_shard_size="20KB")
    made = Models(sd=root / "sd", sd_fp16=root / "sd-fp16", llama=root / "llama",
                  single_file=single)
    # The shapes the tests rely on: several shards with an index; every component a file.
    assert (made.llama / "model.safetensors.index.json").is_file()
    assert len(made.weight_files(made.llama)) >= 5
    assert len(made.weight_files(made.sd)) == 3
    assert all(".fp16." in f for f in made.weight_files(made.sd_fp16))
    return made


@pytest.fixture(autouse=True)
def unpatched_after():
    """Every test starts and ends unpatched, with an empty report."""
    flashload.unpatch()
    flashload.patch_report(reset=True)
    yield
    flashload.unpatch()
    flashload.patch_report(reset=True)
