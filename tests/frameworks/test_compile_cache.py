"""The torch.compile cache carried with the model (flashload.torch.save_compile_cache /
restore_compile_cache), with the real torch and diffusers: a tiny UNet compiled regionally
(compile_repeated_blocks(fullgraph=True), as diffusers recommends) in one process whose inductor
cache folder is empty, the cache saved into the model folder; then fresh processes, each with an
empty inductor cache folder of its own, restore it (from the folder, and from the archive
`flashload pack` made of it) and compile: the same output as without the cache, in less time
(printed, not asserted: tests do not time things). Refusals: an entry made by another torch, an
entry whose manifest was edited, a damaged entry, and an archive packed with --no-compile-cache.

Each process runs this file as a script (the __main__ part at the bottom).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

HERE = Path(__file__).resolve()
REPO = HERE.parents[2]
OPTIONS = {"fullgraph": True, "regional": True}


def _flashload_bin() -> str:
    return os.environ.get("FLASHLOAD_BIN") or str(REPO / "build" / "flashload")


def _child(mode: str, model: Path, inductor: Path, out: Path, extra: str = "") -> Dict[str, Any]:
    env = dict(os.environ)
    env["TORCHINDUCTOR_CACHE_DIR"] = str(inductor)  # empty: a fresh start has no compiler cache
    env.pop("TRITON_CACHE_DIR", None)
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run([sys.executable, str(HERE), mode, str(model), str(out), extra], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{mode} child failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"{mode} child printed no result:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1])


def _report(request: Any, text: str) -> None:
    """Prints a timing beside the results (not asserted: tests do not time things)."""
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():
            print(f"\n  {text}")
    request.node.user_properties.append(("timing", text))


@pytest.fixture(scope="module")
def saved(models, tmp_path_factory) -> Dict[str, Any]:
    """The tiny pipeline's folder with the compile cache saved by a cold compile."""
    root = tmp_path_factory.mktemp("compile-cache")
    model = root / "sd"
    shutil.copytree(models.sd, model)
    result = _child("save", model, root / "inductor-save", root / "cold.pt")
    entries = [p for p in (model / ".flashload" / "compile-cache").iterdir() if p.is_dir()]
    assert len(entries) == 1, entries
    return {"root": root, "model": model, "cold": result, "entry": entries[0],
            "output": root / "cold.pt"}


def _same_output(a: Path, b: Path) -> None:
    import torch
    x, y = torch.load(a), torch.load(b)
    assert torch.equal(x["compiled"], y["compiled"])
    # and the compiled model computes what the eager one does
    assert torch.allclose(x["compiled"], y["eager"], rtol=1e-4, atol=1e-5)


def test_saved_entry_has_a_key_a_manifest_and_the_compiled_kernels(saved):
    entry = saved["entry"]
    manifest = json.loads((entry / "manifest.json").read_text())
    fields = manifest["fields"]
    import torch
    assert fields["torch"] == str(torch.__version__)
    assert fields["python"] == f"{sys.implementation.name}-{sys.version_info.major}." \
                               f"{sys.version_info.minor}"
    assert fields["device"] == "cpu" and fields["cpu_isa"]
    assert entry.name == saved["cold"]["key"]
    assert manifest["blob"]["size"] == (entry / "inductor.tar").stat().st_size
    names = [f["name"] for f in manifest["files"]]
    assert any(n.endswith(".so") for n in names), names  # the compiled C++ kernels travel
    assert not any(n.startswith("locks/") for n in names)
    index = json.loads((entry.parent / "index.json").read_text())
    assert [e["key"] for e in index["entries"]] == [entry.name]


def test_restored_cache_gives_the_same_output_in_less_time(saved, request, tmp_path):
    warm = _child("restore", saved["model"], tmp_path / "inductor", tmp_path / "warm.pt")
    assert warm["restored"] is True, warm
    assert warm["warnings"] == []
    _same_output(saved["output"], tmp_path / "warm.pt")
    cold = saved["cold"]
    _report(request, f"compile cache, tiny UNet, fresh processes: compile + first forward "
                     f"{cold['compile_forward_s']:.2f} s with an empty inductor cache, "
                     f"{warm['restore_s']:.2f} s restore + {warm['compile_forward_s']:.2f} s with "
                     f"the restored one")


def test_restore_from_the_packed_archive(saved, request, tmp_path):
    archive = tmp_path / "sd.tar.zst"
    subprocess.run([_flashload_bin(), "pack", str(saved["model"]), "-o", str(archive), "--quiet"],
                   check=True)
    warm = _child("restore", saved["model"], tmp_path / "inductor", tmp_path / "warm.pt",
                  str(archive))
    assert warm["restored"] is True, warm
    assert warm["warnings"] == []
    _same_output(saved["output"], tmp_path / "warm.pt")
    _report(request, f"compile cache from the packed archive: {warm['restore_s']:.2f} s restore "
                     f"+ {warm['compile_forward_s']:.2f} s compile + first forward")


def _refusals(saved: Dict[str, Any], tmp_path: Path) -> Dict[str, Any]:
    """Several refused restores, in one process (no compile: restore only)."""
    model = saved["model"]
    entry_rel = saved["entry"].relative_to(model)

    def copy(name: str) -> Path:
        target = tmp_path / name
        shutil.copytree(model, target)
        return target

    edited = copy("edited")
    manifest_path = edited / entry_rel / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["fields"]["torch"] = "2.99.0"
    manifest_path.write_text(json.dumps(manifest))

    flipped = copy("flipped")
    blob = flipped / entry_rel / "inductor.tar"
    data = bytearray(blob.read_bytes())
    data[len(data) // 3] ^= 0x40
    blob.write_bytes(bytes(data))

    truncated = copy("truncated")
    blob = truncated / entry_rel / "inductor.tar"
    blob.write_bytes(blob.read_bytes()[:-1000])

    not_json = copy("not-json")
    (not_json / entry_rel / "manifest.json").write_text("{\"format\": 1, ")

    no_cache = tmp_path / "no-cache.tar"
    subprocess.run([_flashload_bin(), "pack", str(model), "-o", str(no_cache), "--quiet",
                    "--no-compile-cache"], check=True)
    cases = {"other_torch": str(model), "edited": str(edited), "flipped": str(flipped),
             "truncated": str(truncated), "not_json": str(not_json),
             "no_cache_archive": str(no_cache), "empty_folder": str(tmp_path / "nothing")}
    return _child("refuse", model, tmp_path / "inductor", tmp_path / "unused.pt",
                  json.dumps(cases))


@pytest.fixture(scope="module")
def refused(saved, tmp_path_factory) -> Dict[str, Any]:
    return _refusals(saved, tmp_path_factory.mktemp("refusals"))


@pytest.mark.parametrize("case, says", [
    ("other_torch", ["torch 2.15", "this process: 2.99.0", "never used"]),
    ("edited", ["key fields differ", "torch 2.99.0", "never used"]),
    ("flipped", ["SHA-256", "damaged"]),
    ("truncated", ["bytes, the manifest says", "damaged"]),
    ("not_json", ["not JSON", "damaged"]),
    ("no_cache_archive", ["no compile cache entry", "none at all"]),
    ("empty_folder", ["no compile cache entry", "none at all"]),
])
def test_a_mismatched_or_damaged_cache_is_refused_with_one_warning(refused, case, says):
    result = refused["cases"][case]
    assert result["restored"] is False, result
    assert len(result["warnings"]) == 1, result["warnings"]
    message = result["warnings"][0]
    assert message.startswith("flashload: compile cache not used: ")
    for text in says:
        assert text in message, message
    # nothing was written into the inductor cache folder
    assert result["inductor_files"] == [], result["inductor_files"]


def _fake_inductor(folder: Path, tag: str) -> Path:
    """A stand-in for inductor's cache folder: results, a lock, a temporary file."""
    (folder / "ab").mkdir(parents=True)
    (folder / "ab" / f"cab{tag}.py").write_text(f"# kernel {tag}\n")
    (folder / "ab" / f"cab{tag}.so").write_bytes(tag.encode() * 100)
    (folder / "fxgraph" / "x").mkdir(parents=True)
    (folder / "fxgraph" / "x" / tag).write_bytes(b"\x00\x01" + tag.encode())
    (folder / "locks").mkdir()
    (folder / "locks" / "cab.lock").write_text("")
    (folder / "ab" / "tmpq1w2e3").write_text("half written")
    return folder


def test_several_keys_live_side_by_side_and_the_options_pick_one(tmp_path):
    import warnings
    import flashload.torch as fltorch
    model = tmp_path / "model"
    model.mkdir()
    first = fltorch.save_compile_cache(model, {"fullgraph": True},
                                       cache_dir=_fake_inductor(tmp_path / "i1", "one"))
    second = fltorch.save_compile_cache(model, {"fullgraph": False},
                                        cache_dir=_fake_inductor(tmp_path / "i2", "two"))
    assert first != second
    root = model / ".flashload" / "compile-cache"
    assert sorted(p.name for p in root.iterdir()) == sorted(
        ["index.json", Path(first).name, Path(second).name])
    index = json.loads((root / "index.json").read_text())
    assert sorted(e["key"] for e in index["entries"]) == sorted(
        [Path(first).name, Path(second).name])
    names = [f["name"] for f in json.loads((Path(second) / "manifest.json").read_text())["files"]]
    assert names == ["ab/cabtwo.py", "ab/cabtwo.so", "fxgraph/x/two"]  # no lock, no temporary

    target = tmp_path / "target"
    assert fltorch.restore_compile_cache(model, {"fullgraph": False}, cache_dir=target)
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()) == names
    assert (target / "ab" / "cabtwo.so").read_bytes() == b"two" * 100
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not fltorch.restore_compile_cache(model, {"mode": "max-autotune"},
                                                 cache_dir=tmp_path / "other")
    assert len(caught) == 1 and "options" in str(caught[0].message), caught
    assert not (tmp_path / "other").exists() or not any((tmp_path / "other").rglob("*"))


def test_saving_a_key_again_replaces_its_entry_and_leaves_no_temporaries(tmp_path):
    import flashload.torch as fltorch
    model = tmp_path / "model"
    model.mkdir()
    a = fltorch.save_compile_cache(model, cache_dir=_fake_inductor(tmp_path / "i1", "one"))
    b = fltorch.save_compile_cache(model, cache_dir=_fake_inductor(tmp_path / "i2", "two"))
    assert a == b
    root = model / ".flashload" / "compile-cache"
    assert sorted(p.name for p in root.iterdir()) == sorted(["index.json", Path(a).name])
    names = [f["name"] for f in json.loads((Path(a) / "manifest.json").read_text())["files"]]
    assert "ab/cabtwo.so" in names and "ab/cabone.so" not in names


def test_saving_with_nothing_compiled_says_so(tmp_path):
    import flashload.torch as fltorch
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no compiled file"):
        fltorch.save_compile_cache(tmp_path / "model", cache_dir=tmp_path / "empty")
    assert not (tmp_path / "model").exists()


# ---------------------------------------------------------------------------------------------
# The child processes


def _tiny_unet(model: Path) -> Any:
    import torch
    from diffusers import UNet2DConditionModel
    unet = UNet2DConditionModel.from_pretrained(str(model), subfolder="unet",
                                                torch_dtype=torch.float32)
    return unet.eval()


def _inputs() -> List[Any]:
    import torch
    g = torch.Generator().manual_seed(1)
    return [torch.randn(1, 4, 8, 8, generator=g), torch.tensor([10]),
            torch.randn(1, 4, 16, generator=g)]


def _files(folder: str) -> List[str]:
    return sorted(os.path.relpath(os.path.join(d, f), folder)
                  for d, _, fs in os.walk(folder) for f in fs) if os.path.isdir(folder) else []


def _main(mode: str, model: str, out: str, extra: str) -> None:
    import time
    import warnings
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    import torch
    import flashload.torch as fltorch
    inductor = os.environ["TORCHINDUCTOR_CACHE_DIR"]
    result: Dict[str, Any] = {"mode": mode}
    if mode == "refuse":
        cases = json.loads(extra)

        def refuse(where: str) -> Dict[str, Any]:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                restored = fltorch.restore_compile_cache(where, OPTIONS)
            return {"restored": restored,
                    "warnings": [str(w.message) for w in caught
                                 if issubclass(w.category, fltorch.CompileCacheWarning)],
                    "inductor_files": _files(inductor)}

        result["cases"] = {case: refuse(where) for case, where in cases.items()
                           if case != "other_torch"}
        # Another torch: this process calls itself 2.99.0; the entry saved by the real one is
        # there, under the real one's key.
        real = torch.__version__
        torch.__version__ = "2.99.0"  # type: ignore[assignment]
        result["cases"]["other_torch"] = refuse(cases["other_torch"])
        torch.__version__ = real
        print(json.dumps(result))
        return
    unet = _tiny_unet(Path(model))
    inputs = _inputs()
    with torch.no_grad():
        eager = unet(inputs[0], inputs[1], encoder_hidden_states=inputs[2]).sample
    t0 = time.perf_counter()
    if mode == "restore":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result["restored"] = fltorch.restore_compile_cache(extra or model, OPTIONS)
        result["warnings"] = [str(w.message) for w in caught
                              if issubclass(w.category, fltorch.CompileCacheWarning)]
    t1 = time.perf_counter()
    unet.compile_repeated_blocks(fullgraph=True)
    with torch.no_grad():
        compiled = unet(inputs[0], inputs[1], encoder_hidden_states=inputs[2]).sample
    t2 = time.perf_counter()
    result["restore_s"] = t1 - t0
    result["compile_forward_s"] = t2 - t1
    if mode == "save":
        entry = fltorch.save_compile_cache(model, OPTIONS)
        result["key"] = os.path.basename(entry)
    torch.save({"compiled": compiled, "eager": eager}, out)
    print(json.dumps(result))


if __name__ == "__main__":
    _main(*sys.argv[1:5])
