"""flashload.load_model_dir: whole models (diffusers folders, sharded checkpoints) in one engine run,
checked file by file against the reference safetensors package."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy as ref_np

import flashload

REPO = Path(__file__).resolve().parents[2]
FLASHLOAD_BIN = os.environ.get("FLASHLOAD_BIN", str(REPO / "build" / "flashload"))


def generate(kind: str, out: Path) -> Path:
    subprocess.run([FLASHLOAD_BIN, "gen", kind, str(out)], check=True, capture_output=True)
    return out


def reference_component(folder: Path) -> dict:
    tensors = {}
    for f in sorted(folder.glob("*.safetensors")):
        tensors.update(ref_np.load_file(str(f)))
    return tensors


def assert_same(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        ours = got[name]
        assert ours.dtype == value.dtype, name
        assert ours.shape == value.shape, name
        assert ours.tobytes() == value.tobytes(), name


def test_diffusers_folder_gives_one_dict_per_component(tmp_path):
    root = generate("tiny", tmp_path / "tiny")
    model = flashload.load_model_dir(root, framework="np")
    components = [c for c in json.loads((root / "model_index.json").read_text())
                  if (root / c).is_dir() and any((root / c).glob("*.safetensors"))]
    assert sorted(model) == sorted(components)
    for component in components:
        want = {k: v for k, v in reference_component(root / component).items()}
        # bf16 and friends come back as ml_dtypes arrays; compare the bytes of the rest.
        assert_same({k: v for k, v in model[component].items() if k in want}, want)


def test_sharded_checkpoint_is_one_model(tmp_path):
    root = generate("llm-tiny", tmp_path / "llm")
    model = flashload.load_model_dir(root, framework="np", strategy="direct")
    assert list(model) == ["model"]
    want = reference_component(root)
    assert len(model["model"]) == len(want)
    for name, value in want.items():
        assert np.asarray(model["model"][name]).tobytes() == value.tobytes(), name


def test_a_shard_missing_from_the_index_is_an_error(tmp_path):
    root = generate("llm-tiny", tmp_path / "llm")
    shards = sorted(root.glob("*.safetensors"))
    shards[-1].unlink()
    with pytest.raises((flashload.SafetensorError, FileNotFoundError)) as error:
        flashload.load_model_dir(root, framework="np")
    assert shards[-1].name in str(error.value)


def test_tensors_outlive_the_model_and_torch_variant(tmp_path):
    root = generate("llm-tiny", tmp_path / "llm")
    first = flashload.load_model_dir(root, framework="np")["model"]
    name, value = next(iter(first.items()))
    copy = np.asarray(value).tobytes()
    del first
    import gc
    gc.collect()
    assert np.asarray(value).tobytes() == copy
    torch = pytest.importorskip("torch")
    pt = flashload.load_model_dir(root)["model"]
    assert isinstance(pt[name], torch.Tensor)
