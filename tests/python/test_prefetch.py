"""Read-ahead of a model's later weight files (flashload._prefetch): order, budget, hand-over
without a second read, release of what is never claimed."""

import json
import os
import threading
import time

import numpy as np
import pytest
from safetensors.numpy import save_file

import flashload
import flashload.numpy
from flashload import _prefetch


def _write(path, seed, rows=64):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    save_file({"w": rng.standard_normal((rows, 256)).astype(np.float32)}, path)


@pytest.fixture
def pipeline(tmp_path):
    """A diffusers-like folder: model_index.json order text_encoder, unet, vae; plus an fp16
    variant beside the plain files and a component without weights."""
    root = tmp_path / "pipe"
    root.mkdir()
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "X"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "safety_checker": [None, None]}))
    (root / "scheduler").mkdir()
    (root / "tokenizer").mkdir()
    files = {}
    for i, (comp, name) in enumerate([("text_encoder", "model"), ("unet", "diffusion_pytorch_model"),
                                      ("vae", "diffusion_pytorch_model")]):
        files[comp] = str(root / comp / f"{name}.safetensors")
        _write(files[comp], i)
        _write(str(root / comp / f"{name}.fp16.safetensors"), 10 + i)
    _prefetch.activate(True)
    yield root, files
    _prefetch.activate(False)


def _wait_for(predicate, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert predicate()


def _started():
    """The read-ahead holds a file (loaded or loading)."""
    return _prefetch.stats()["held"] >= 1


@pytest.fixture
def opened(monkeypatch):
    """The files the read-ahead opens itself, in order."""
    calls = []
    real = _prefetch._open_lazily

    def counting(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(_prefetch, "_open_lazily", counting)
    return calls


def test_model_files_follow_the_pipeline_order_and_variant(pipeline):
    root, files = pipeline
    assert _prefetch.model_files(files["text_encoder"]) == [
        files["text_encoder"], files["unet"], files["vae"]]
    fp16 = str(root / "unet" / "diffusion_pytorch_model.fp16.safetensors")
    assert [os.path.basename(os.path.dirname(p)) for p in _prefetch.model_files(fp16)] == [
        "text_encoder", "unet", "vae"]
    assert all(p.endswith(".fp16.safetensors") for p in _prefetch.model_files(fp16))


def test_shards_of_an_index_in_order(tmp_path):
    shards = [str(tmp_path / f"model-0000{i}-of-00003.safetensors") for i in (1, 2, 3)]
    for i, s in enumerate(shards):
        _write(s, i)
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": {
        "c": os.path.basename(shards[2]), "a": os.path.basename(shards[0]),
        "b": os.path.basename(shards[1])}}))
    # The tensor names must match the shards for the loader's own resolution: one "w" per shard
    # does not, so name them as the index does.
    for name, shard in zip("abc", shards):
        save_file({name: np.full((4, 4), ord(name), dtype=np.float32)}, shard)
    assert _prefetch.model_files(shards[0]) == shards
    # An index naming a file outside its folder is refused by the loader: nothing is read ahead.
    index.write_text(json.dumps({"metadata": {}, "weight_map": {
        "a": os.path.basename(shards[0]), "evil": "../outside.safetensors"}}))
    assert _prefetch.model_files(shards[0]) == []
    # A file of its own is no model: nothing to read ahead.
    lone = str(tmp_path / "lone" / "x.safetensors")
    _write(lone, 9)
    assert _prefetch.model_files(lone) == []


def test_later_files_are_read_ahead_and_handed_over_once(pipeline, opened):
    root, files = pipeline
    calls = opened
    _prefetch.note_use(files["text_encoder"])
    _wait_for(_started)
    unet = _prefetch.claim(files["unet"])
    assert unet is not None
    unet.load_all()  # a no-op or a wait: the read-ahead loads it
    assert unet.loaded
    np.testing.assert_array_equal(flashload.numpy._from_file(unet, "w", "cpu"),
                                  flashload.numpy.load_file(files["unet"])["w"])
    assert _prefetch.claim(files["unet"]) is None, "a file is handed over once"
    _wait_for(_started)
    vae = _prefetch.claim(files["vae"])
    assert vae is not None and (vae.load_all() or vae.loaded)
    assert sorted(calls) == sorted([files["unet"], files["vae"]]), "each file opened once"
    assert _prefetch.claim(files["text_encoder"]) is None, "the opened file is never re-read"


def test_budget_holds_back_the_next_file(pipeline, monkeypatch, opened):
    root, files = pipeline
    monkeypatch.setenv("FLASHLOAD_PREFETCH_MIB", "0")  # one file at a time ahead
    calls = opened
    _prefetch.note_use(files["text_encoder"])
    loaded = _prefetch.stats()["loaded"]
    _wait_for(lambda: _prefetch.stats()["loaded"] > loaded)
    time.sleep(0.2)
    assert calls == [files["unet"]], "the VAE waits until the UNet is used"
    assert _prefetch.claim(files["unet"]) is not None
    time.sleep(0.2)
    assert calls == [files["unet"]], "claimed is not yet used"
    _prefetch.note_use(files["unet"])
    _wait_for(_started)
    assert _prefetch.claim(files["vae"]) is not None
    assert calls == [files["unet"], files["vae"]]


def test_unclaimed_files_are_released(pipeline, monkeypatch):
    root, files = pipeline
    monkeypatch.setenv("FLASHLOAD_PREFETCH_IDLE_S", "0.2")
    dropped = _prefetch.stats()["dropped"]
    _prefetch.note_use(files["text_encoder"])
    _wait_for(lambda: _prefetch.stats()["dropped"] >= dropped + 2)
    s = _prefetch.stats()
    assert s["dropped"] == dropped + 2 and s["held"] == 0 and s["held_bytes"] == 0


def test_release_drops_everything_held(pipeline):
    root, files = pipeline
    _prefetch.note_use(files["text_encoder"])
    _wait_for(_started)
    assert _prefetch.claim(files["unet"]) is not None  # waits for the first read-ahead
    _prefetch.release()
    assert _prefetch.claim(files["vae"]) is None
    assert _prefetch.stats()["held"] == 0


def test_disabled_by_environment_and_without_patch(pipeline, monkeypatch, opened):
    root, files = pipeline
    monkeypatch.setenv("FLASHLOAD_PREFETCH", "0")
    _prefetch.note_use(files["text_encoder"])
    assert _prefetch.claim(files["unet"]) is None
    monkeypatch.delenv("FLASHLOAD_PREFETCH")
    _prefetch.activate(False)  # read-ahead runs only under patch()
    _prefetch.note_use(files["text_encoder"])
    assert _prefetch.claim(files["unet"]) is None
    assert opened == []


def test_a_lazily_opened_handle_is_loaded_ahead_in_place(pipeline, monkeypatch, opened):
    """transformers opens every shard with safe_open before reading any: the read-ahead loads
    those handles themselves, one ahead of the file in use."""
    root, files = pipeline
    monkeypatch.setenv("FLASHLOAD_PREFETCH_MIB", "0")
    handles = {k: flashload.safe_open(files[k], framework="np") for k in ("text_encoder", "unet",
                                                                          "vae")}
    assert not any(h._file.loaded for h in handles.values())
    handles["text_encoder"].get_tensor("w")  # a whole-file load: the next file is read ahead
    _wait_for(lambda: handles["unet"]._file.loaded)
    time.sleep(0.2)
    assert not handles["vae"]._file.loaded, "one file ahead within the budget"
    handles["unet"].get_slice("w")[...]  # in use: the next one follows
    _wait_for(lambda: handles["vae"]._file.loaded)
    assert opened == [], "the callers' own handles were loaded, nothing opened twice"
    want = flashload.numpy.load_file(files["vae"])["w"]
    np.testing.assert_array_equal(handles["vae"].get_tensor("w"), want)


def test_a_read_ahead_error_goes_to_the_claimant(pipeline):
    root, files = pipeline
    with open(files["unet"], "r+b") as f:
        f.truncate(os.path.getsize(files["unet"]) - 10)
    _prefetch.note_use(files["text_encoder"])
    _wait_for(_started)
    assert _prefetch.claim(files["unet"]) is None  # the caller opens it and gets the error
    with pytest.raises(flashload.SafetensorError):
        flashload.numpy.load_file(files["unet"])


def test_handles_loaded_ahead_and_never_used_stop_counting_when_idle(pipeline, monkeypatch):
    """A framework that opened every file lazily but stops after the first: what was loaded into
    its handles leaves the budget once idle, and the read-ahead thread ends."""
    root, files = pipeline
    monkeypatch.setenv("FLASHLOAD_PREFETCH_IDLE_S", "0.2")
    handles = {k: flashload.safe_open(files[k], framework="np") for k in ("text_encoder", "unet",
                                                                          "vae")}
    handles["text_encoder"].get_tensor("w")
    _wait_for(lambda: handles["unet"]._file.loaded and handles["vae"]._file.loaded)
    _wait_for(lambda: _prefetch.stats()["ahead_bytes"] == 0)
    _wait_for(lambda: not _prefetch._read_ahead._running)


def test_a_load_that_starts_with_a_later_file_reads_the_earlier_ones_ahead(pipeline, opened):
    """diffusers does not always load components in model_index.json order."""
    root, files = pipeline
    _prefetch.note_use(files["vae"])
    _wait_for(_started)
    assert _prefetch.claim(files["text_encoder"]) is not None
    _wait_for(_started)
    assert _prefetch.claim(files["unet"]) is not None
    assert opened == [files["text_encoder"], files["unet"]]
