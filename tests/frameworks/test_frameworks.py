"""diffusers, transformers and accelerate (tests/frameworks/requirements.txt) loading through
flashload.patch(): every parameter bit-identical to the unpatched load, and every weight file
served by flashload (patch_report(); strict, so that a fallback raises instead of passing by).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import flashload
from loads import LOADS, READS, digests, modules, tensor_bytes, weight_files

HERE = Path(__file__).resolve().parent


def paths_of(models):
    return {"sd": models.sd, "sd_fp16": models.sd_fp16, "llama": models.llama,
            "single_file": models.single_file}


def assert_bit_identical(got: torch.nn.Module, want: torch.nn.Module, where: str) -> None:
    got_state, want_state = got.state_dict(), want.state_dict()
    assert list(got_state) == list(want_state), where
    for name, expected in want_state.items():
        value = got_state[name]
        assert (value.dtype, value.shape, value.device) == (
            expected.dtype, expected.shape, expected.device), f"{where}: {name}"
        assert tensor_bytes(value) == tensor_bytes(expected), f"{where}: {name}"


@pytest.mark.parametrize("load", list(LOADS))
def test_patched_load_is_bit_identical_and_every_weight_file_went_through_flashload(models, load):
    paths = paths_of(models)
    want = modules(LOADS[load](paths))
    assert flashload.patch_report().files == {}  # unpatched: flashload saw nothing
    flashload.patch(strict=True)  # a call that would go to safetensors raises
    got = modules(LOADS[load](paths))
    report = flashload.patch_report()
    flashload.unpatch()
    assert report.fallbacks == {}
    assert sorted(report.files) == weight_files(paths[READS[load]])
    assert set(got) == set(want)
    for name in want:
        assert_bit_identical(got[name], want[name], f"{load}/{name}")


def test_the_patched_pipeline_generates_the_same_image(models):
    from loads import _stable_diffusion

    def image(pipe):
        generator = torch.Generator("cpu").manual_seed(1)
        return pipe("a cat", num_inference_steps=2, height=16, width=16, output_type="np",
                    generator=generator).images

    want = image(_stable_diffusion(models.sd, torch.float32))
    flashload.patch(strict=True)
    got = image(_stable_diffusion(models.sd, torch.float32))
    assert len(flashload.patch_report().files) == 3
    assert got.shape == (1, 16, 16, 3)
    assert got.tobytes() == want.tobytes()


def data_bytes(path: str) -> int:
    with open(path, "rb") as f:
        return os.path.getsize(path) - 8 - int.from_bytes(f.read(8), "little")


def test_transformers_materializes_each_file_with_one_whole_file_load(models, monkeypatch):
    """transformers 5 takes get_slice(k) of every key and materializes `[...]` from a thread pool:
    each shard must be read whole once by the engine, with no per-tensor reads."""
    from flashload._core import File
    seen, rows = {}, []
    real_get, real_rows = File.get, File.rows

    def recording_get(self, *args, **kwargs):
        array = real_get(self, *args, **kwargs)
        seen.setdefault((id(self), self.name), set()).add(self.bytes_read)
        return array

    def recording_rows(self, *args, **kwargs):
        rows.append(self.name)
        return real_rows(self, *args, **kwargs)

    monkeypatch.setattr(File, "get", recording_get)
    monkeypatch.setattr(File, "rows", recording_rows)
    flashload.patch(strict=True)
    LOADS["sharded llama"](paths_of(models))
    assert rows == []  # no partial reads
    shards = weight_files(models.llama)
    assert sorted({name for _, name in seen}) == shards
    for (_, name), bytes_read in seen.items():
        assert bytes_read == {data_bytes(name)}, name  # the whole file, read once


def test_flashload_patch_environment_switch_in_a_fresh_interpreter(models):
    """FLASHLOAD_PATCH=1, unchanged code: the same digests as the unpatched loads in this process,
    every weight file through flashload, no fallback (it would be an error there)."""
    paths = paths_of(models)
    want = {name: digests(load(paths)) for name, load in LOADS.items()}
    env = dict(os.environ, FLASHLOAD_PATCH="1", PYTHONPATH=str(HERE))
    run = subprocess.run([sys.executable, str(HERE / "loads.py"),
                          json.dumps({k: str(v) for k, v in paths.items()})],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["patched"] is True
    assert out["report"]["fallbacks"] == {}
    every_file = sorted(set().union(*(weight_files(p) for p in paths.values())))
    assert sorted(out["report"]["files"]) == every_file
    assert out["loads"] == want


@pytest.mark.parametrize("load", ["stable diffusion", "sharded llama"])
def test_later_weight_files_are_read_ahead_and_handed_over(models, load, monkeypatch):
    """While the framework builds one component (or materializes one shard), the next weight files
    are loaded in the background (flashload._prefetch) and handed over to its calls: nothing read
    twice, nothing read ahead left unclaimed, the same parameters. The tiny models load in
    milliseconds, so the framework is held after its first whole-file load until the read-ahead
    has loaded one file (what a real component's construction time gives it)."""
    from flashload import _prefetch
    paths = paths_of(models)
    want = modules(LOADS[load](paths))
    _prefetch.release()
    before = _prefetch.stats()
    real_note_use = _prefetch._read_ahead.note_use
    held_once = []

    def reading_ahead():
        s = _prefetch.stats()
        return s["loaded"] == before["loaded"] and (s["queued"] > 0 or s["ahead_bytes"] > 0)

    def note_use_then_build(path, opener):
        real_note_use(path, opener)
        if not held_once:  # until one file was read ahead
            deadline = time.monotonic() + 20
            while reading_ahead() and time.monotonic() < deadline:
                time.sleep(0.005)
            if _prefetch.stats()["loaded"] > before["loaded"]:
                held_once.append(path)

    monkeypatch.setattr(_prefetch._read_ahead, "note_use", note_use_then_build)
    flashload.patch(strict=True)
    got = modules(LOADS[load](paths))
    flashload.unpatch()
    after = _prefetch.stats()
    served = after["served"] - before["served"]
    loaded = after["loaded"] - before["loaded"]
    files = len(weight_files(paths[READS[load]]))
    assert 1 <= served <= files - 1, after
    assert loaded == served, f"read ahead but never used: {after}"
    assert after["held"] == 0 and after["queued"] == 0
    for name in want:
        assert_bit_identical(got[name], want[name], f"{load}/{name}")
