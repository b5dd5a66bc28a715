"""`flashload pack` / `flashload unpack` end to end: a small diffusers-like folder packed twice gives
the same bytes; `zstd -d` + `tar -x`, `bsdtar -x` and Python's tarfile read the archive and give the
folder back; --precision fp16 equals numpy's astype(float16) (round to nearest even) and says so in
the metadata; unpack round-trips; archives built with Python's tarfile that try to escape the target
(traversal, absolute path, symlink, hard link, device) are refused with exit 1 and nothing written.
"""

import io
import json
import os
import shutil
import subprocess
import tarfile

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load as st_load
from safetensors.numpy import save_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLASHLOAD = os.environ.get("FLASHLOAD_BIN") or os.path.join(REPO, "build", "flashload")


def flashload(*args, check=True):
    proc = subprocess.run([FLASHLOAD, *map(str, args)], capture_output=True, text=True,
                          timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"flashload {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def tree(root):
    """{relative path: bytes, or None for a folder} of everything under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for d in dirnames:
            out[os.path.normpath(os.path.join(rel, d))] = None
        for f in filenames:
            with open(os.path.join(dirpath, f), "rb") as fh:
                out[os.path.normpath(os.path.join(rel, f))] = fh.read()
    return out


@pytest.fixture
def model(tmp_path):
    rng = np.random.default_rng(7)
    root = tmp_path / "sd-tiny"
    for sub in ("unet", "text_encoder", "vae", "scheduler", "tokenizer"):
        (root / sub).mkdir(parents=True)
    save_file({
        "conv_in.weight": (rng.standard_normal((32, 4, 3, 3)) * 0.02).astype(np.float32),
        "down_blocks.0.attn.to_q.weight": rng.standard_normal((64, 64)).astype(np.float32),
        # values at float16's edges: ties, subnormals, beyond the range
        "edge": np.array([1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11, 6.0e-8, 1e-7, 70000.0, -1e9,
                          65504.0, 65520.0], dtype=np.float32),
        "time_embedding.counts": np.arange(10, dtype=np.int64),
    }, str(root / "unet" / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
    save_file({
        "text_model.embeddings.token_embedding.weight":
            rng.standard_normal((100, 16)).astype(np.float16),
        "text_model.embeddings.position_ids": np.arange(77, dtype=np.int64).reshape(1, 77),
    }, str(root / "text_encoder" / "model.safetensors"))
    save_file({
        "decoder.conv_out.weight": rng.standard_normal((3, 8, 3, 3)).astype(np.float32),
    }, str(root / "vae" / "diffusion_pytorch_model.safetensors"))
    (root / "model_index.json").write_text(json.dumps(
        {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}))
    (root / "scheduler" / "scheduler_config.json").write_text('{"num_train_timesteps": 1000}')
    (root / "tokenizer" / "vocab.json").write_text('{"a": 0, "b": 1}')
    (root / "tokenizer" / "merges.txt").write_text("#version: 0.2\na b\n")
    return root


def test_packing_twice_gives_identical_bytes(model, tmp_path):
    for ext in ("tar.zst", "tar"):
        a, b = tmp_path / f"a.{ext}", tmp_path / f"b.{ext}"
        flashload("pack", model, "-o", a, "--quiet")
        os.utime(model / "model_index.json", (1, 1))  # times never reach the archive
        flashload("pack", model, "-o", b, "--quiet", "--threads", "3")
        assert a.read_bytes() == b.read_bytes(), ext


def test_standard_tools_read_the_archive(model, tmp_path):
    archive = tmp_path / "m.tar.zst"
    out = json.loads(flashload("pack", model, "-o", archive, "--json").stdout)
    assert out["members"] == 12 and out["files"] == 7 and out["directories"] == 5
    assert out["bytes_out"] == archive.stat().st_size
    tar = tmp_path / "m.tar"
    subprocess.run(["zstd", "-q", "-d", str(archive), "-o", str(tar)], check=True)
    assert tar.stat().st_size == out["tar_bytes"]

    gnu = tmp_path / "gnu"
    gnu.mkdir()
    subprocess.run(["tar", "-xf", str(tar), "-C", str(gnu)], check=True)
    assert tree(gnu) == tree(model)

    bsd = tmp_path / "bsd"
    bsd.mkdir()
    subprocess.run(["bsdtar", "-xf", str(archive), "-C", str(bsd)], check=True)
    assert tree(bsd) == tree(model)

    with tarfile.open(tar) as t:
        members = t.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names, key=lambda n: n.encode())
    assert set(names) == set(tree(model))
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", ""), m.name
        assert m.mode == (0o755 if m.isdir() else 0o644), m.name
        assert m.isdir() or m.isfile(), m.name


def test_precision_fp16_rounds_like_numpy_and_records_it(model, tmp_path):
    archive = tmp_path / "m.tar"
    out = json.loads(flashload("pack", model, "-o", archive, "--precision", "fp16",
                               "--json").stdout)
    assert out["precision"] == "fp16"
    assert out["converted_files"] == 2  # the text encoder is fp16 already
    with tarfile.open(archive) as t:
        files = {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}
    for rel in ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"):
        original = st_load((model / rel).read_bytes())
        packed = st_load(files[rel])
        assert set(packed) == set(original)
        for name, arr in original.items():
            if arr.dtype == np.float32:
                assert packed[name].dtype == np.float16, name
                with np.errstate(over="ignore"):  # 70000 and -1e9 become infinities
                    want = arr.astype(np.float16)
                assert packed[name].tobytes() == want.tobytes(), name
            else:
                assert packed[name].dtype == arr.dtype and np.array_equal(packed[name], arr)
        path = tmp_path / "check.safetensors"
        path.write_bytes(files[rel])
        with safe_open(str(path), "np") as f:
            meta = f.metadata()
        assert meta["flashload.precision"] == "fp16"
        if rel.startswith("unet"):
            assert meta["format"] == "pt"  # existing metadata is kept
    # an unconverted file is packed byte for byte
    assert files["text_encoder/model.safetensors"] == \
        (model / "text_encoder" / "model.safetensors").read_bytes()


def test_output_folder_names_the_archive(model, tmp_path):
    outdir = tmp_path / "store"
    outdir.mkdir()
    proc = flashload("pack", model, "-o", outdir, check=False)
    assert proc.returncode == 1 and "--name" in proc.stderr
    flashload("pack", model, "-o", outdir, "--name", "acme/sd-tiny", "--precision", "fp16",
              "--quiet")
    assert sorted(os.listdir(outdir)) == ["models--acme--sd-tiny--fp16.tar.zst"]
    proc = flashload("pack", model, "-o", outdir, "--name", "acme/sd-tiny", "--precision", "fp16",
                     check=False)
    assert proc.returncode == 1 and "--force" in proc.stderr


def test_unpack_round_trips(model, tmp_path):
    for ext in ("tar.zst", "tar"):
        archive = tmp_path / f"m.{ext}"
        flashload("pack", model, "-o", archive, "--quiet", "--frame-mib", "1")
        out = tmp_path / f"out-{ext}"
        flashload("unpack", archive, "-o", out, "--quiet")
        assert tree(out) == tree(model)
    # a plain (not seekable) zstd stream of a tar made by other tools
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as t:
        t.add(model, arcname=".")
    subprocess.run(["zstd", "-q", "-19", str(plain), "-o", str(tmp_path / "plain.tar.zst")],
                   check=True)
    flashload("unpack", tmp_path / "plain.tar.zst", "-o", tmp_path / "out-plain", "--quiet")
    assert tree(tmp_path / "out-plain") == tree(model)


def test_pack_refuses_a_symlink_and_writes_nothing(model, tmp_path):
    os.symlink("/etc/passwd", model / "tokenizer" / "passwd")
    proc = flashload("pack", model, "-o", tmp_path / "m.tar.zst", check=False)
    assert proc.returncode == 1
    assert "passwd is a symbolic link" in proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["sd-tiny"]


def malicious(kind):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        ok = tarfile.TarInfo("ok.txt")
        ok.size = 2
        t.addfile(ok, io.BytesIO(b"ok"))
        info = tarfile.TarInfo({"traversal": "../evil", "absolute": "/tmp/evil",
                                "deep-traversal": "a/../../evil"}.get(kind, "bad"))
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc"
        elif kind == "symlink-relative":
            info.type, info.linkname = tarfile.SYMTYPE, "../../.."
        elif kind == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, "/etc/passwd"
        elif kind == "device":
            info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
        elif kind == "fifo":
            info.type = tarfile.FIFOTYPE
        else:
            info.size = 4
        t.addfile(info, io.BytesIO(b"evil") if info.size else None)
        if kind.startswith("symlink"):
            through = tarfile.TarInfo("bad/passwd")  # a file written through the link
            through.size = 4
            t.addfile(through, io.BytesIO(b"evil"))
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["traversal", "deep-traversal", "absolute", "symlink",
                                  "symlink-relative", "hardlink", "device", "fifo"])
@pytest.mark.parametrize("compress", [False, True])
def test_unpack_refuses_escapes_and_writes_nothing(kind, compress, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    archive = work / ("evil.tar.zst" if compress else "evil.tar")
    data = malicious(kind)
    archive.write_bytes(data)
    if compress:
        (work / "evil.tar").write_bytes(data)
        subprocess.run(["zstd", "-q", "--rm", "-f", str(work / "evil.tar"), "-o", str(archive)],
                       check=True)
    proc = flashload("unpack", archive, "-o", work / "out", check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert str(archive) in proc.stderr
    assert "byte offset" in proc.stderr
    assert os.listdir(work) == [archive.name]
    assert not os.path.exists(tmp_path / "evil") and not os.path.exists("/tmp/evil")


def add_compile_cache(model):
    """The layout flashload.torch.save_compile_cache() writes (contents stand-ins)."""
    entry = model / ".flashload" / "compile-cache" / "torch2.15.0-cpython-3.11-x86_64-avx2-opt1"
    entry.mkdir(parents=True)
    (entry / "manifest.json").write_text('{"format": 1}\n')
    (entry / "inductor.tar").write_bytes(bytes(range(256)) * 40)
    (entry.parent / "index.json").write_text('{"format": 1, "entries": []}\n')
    return entry


def test_the_compile_cache_travels_in_the_archive_and_unpacks(model, tmp_path):
    entry = add_compile_cache(model)
    archive = tmp_path / "m.tar.zst"
    out = json.loads(flashload("pack", model, "-o", archive, "--json").stdout)
    assert out["compile_cache_files"] == 3 and out["compile_cache_left_out"] is False
    text = flashload("pack", model, "-o", tmp_path / "m2.tar", "--force").stdout
    assert "the compile cache's 3 files included" in text
    flashload("unpack", archive, "-o", tmp_path / "out", "--quiet")
    assert tree(tmp_path / "out") == tree(model)
    rel = entry.relative_to(model).as_posix()
    with tarfile.open(tmp_path / "m2.tar") as t:
        assert t.extractfile(f"{rel}/inductor.tar").read() == (entry / "inductor.tar").read_bytes()
    # the model in the archive loads as it did without the cache folder beside it
    loaded = flashload("load", archive)
    assert loaded.returncode == 0


def test_no_compile_cache_leaves_it_out(model, tmp_path):
    add_compile_cache(model)
    without = tmp_path / "without.tar.zst"
    out = json.loads(flashload("pack", model, "-o", without, "--json",
                               "--no-compile-cache").stdout)
    assert out["compile_cache_files"] == 0 and out["compile_cache_left_out"] is True
    text = flashload("pack", model, "-o", tmp_path / "w2.tar", "--no-compile-cache").stdout
    assert "the compile cache left out" in text
    flashload("unpack", without, "-o", tmp_path / "out", "--quiet")
    expected = {k: v for k, v in tree(model).items() if not k.startswith(".flashload")}
    assert tree(tmp_path / "out") == expected
    # byte for byte the archive of the folder without it
    shutil.rmtree(model / ".flashload")
    flashload("pack", model, "-o", tmp_path / "plain.tar.zst", "--quiet")
    assert (tmp_path / "plain.tar.zst").read_bytes() == without.read_bytes()
