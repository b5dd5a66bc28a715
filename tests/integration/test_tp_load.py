"""`flashload load --tp N` under mpirun, 2 and 4 ranks on one machine.

Every rank saves its shards (--save 'r{rank}.safetensors'); each must equal numpy.array_split of
the full tensor (torch.tensor_split semantics) along the dimension the Llama rules name: rows
(q/k/v/gate/up, embeddings, lm_head), columns (o_proj, down_proj), uneven sizes (vocab 1001,
intermediate 1378), replicated norms. The per-rank reports must match the mode: shard-local reads
about the sum of the shards in total, read-once-then-share about the model once. A read fault
injected on one rank fails every rank promptly, naming that rank and the file.
"""

import json
import os
import shutil
import struct
import subprocess
import time

import numpy as np
import pytest

BIN = os.environ.get("FLASHLOAD_BIN", "build/flashload")
MPIRUN = shutil.which("mpirun")
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1")

ELEMENT = {"BF16": np.uint16, "F16": np.uint16, "F32": np.uint32, "I64": np.uint64, "U8": np.uint8}


def read_raw(path):
    """{name: array} of a safetensors file, elements as unsigned integers of their width."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        out[name] = np.frombuffer(data[begin:end], dtype=ELEMENT[info["dtype"]]).reshape(
            info["shape"])
    return out


def read_model(folder):
    tensors = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            tensors.update(read_raw(os.path.join(folder, name)))
    return tensors


def split_dim(name):
    """The dimension the llama preset splits, or None (replicated)."""
    for suffix in ("q_proj.weight", "k_proj.weight", "v_proj.weight", "gate_proj.weight",
                   "up_proj.weight", "embed_tokens.weight", "lm_head.weight"):
        if name.endswith(suffix):
            return 0
    if name.endswith("o_proj.weight") or name.endswith("down_proj.weight"):
        return 1
    return None


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    assert MPIRUN, "mpirun not found: scripts/install-deps.sh installs openmpi-bin"
    folder = str(tmp_path_factory.mktemp("tp") / "llama")
    subprocess.run([BIN, "gen", "llm", folder, "--shape",
                    "hidden=512,layers=2,intermediate=1378,vocab=1001,heads=8,kv_heads=2,"
                    "shard_mb=4"], check=True, capture_output=True)
    return folder


def run_tp(model, world, mode, save_dir, extra_rank1=()):
    common = ["load", model, "--tp", str(world), "--shard", "llama", "--shard-mode", mode,
              "--save", os.path.join(save_dir, "r{rank}.safetensors"), "--json",
              "--tp-timeout", "20"]
    if extra_rank1:
        cmd = [MPIRUN, "-n", "1", BIN] + common + [":", "-n", str(world - 1), BIN] + common + \
              list(extra_rank1)
    else:
        cmd = [MPIRUN, "-n", str(world), BIN] + common
    start = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=120)
    return p, time.monotonic() - start


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("mode", ["local", "share"])
def test_every_rank_holds_the_tensor_split_slices(model, tmp_path, world, mode):
    p, _ = run_tp(model, world, mode, str(tmp_path))
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout.strip().splitlines()[-1])
    assert report["world"] == world and len(report["ranks"]) == world
    full = read_model(model)
    seen = {"rows": 0, "columns": 0, "uneven": 0, "replicated": 0}
    for rank in range(world):
        shards = read_raw(os.path.join(tmp_path, "r%d.safetensors" % rank))
        assert sorted(shards) == sorted(full)
        for name, whole in full.items():
            dim = split_dim(name)
            want = whole if dim is None else np.array_split(whole, world, axis=dim)[rank]
            np.testing.assert_array_equal(shards[name], want, err_msg="%s rank %d" % (name, rank))
            if dim is None:
                seen["replicated"] += 1
            else:
                seen["rows" if dim == 0 else "columns"] += 1
                seen["uneven"] += whole.shape[dim] % world != 0
    assert all(n > 0 for n in seen.values()), seen
    ranks = report["ranks"]
    model_bytes = sum(t.nbytes for t in full.values())
    shard_total = sum(r["shard_bytes"] for r in ranks)
    read_total = sum(r["bytes_read"] for r in ranks)
    assert all(r["mode"] == ("shard-local" if mode == "local" else "read-once-share")
               for r in ranks)
    if mode == "share":
        # Each needed byte once across the job, plus page alignment at the edges of each piece.
        assert model_bytes <= read_total <= model_bytes + world * 4 * 2 * 4096 * 2
        assert all(abs(r["bytes_read"] - model_bytes / world) <= model_bytes / world * 0.05 +
                   8 * 4096 for r in ranks), [r["bytes_read"] for r in ranks]
    else:
        # Each rank its own shards (column shards read once between the ranks and shared).
        assert all(r["strided_shared"] == 4 for r in ranks)
        assert shard_total <= read_total <= shard_total * 1.05 + world * 64 * 4096, \
            (read_total, shard_total)


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("mode", ["local", "share"])
def test_a_read_fault_on_one_rank_fails_every_rank_promptly(model, tmp_path, world, mode):
    # Rank 0 runs clean; ranks 1.. inject EIO into every read after each file's first.
    p, seconds = run_tp(model, world, mode, str(tmp_path),
                        extra_rank1=["--inject-read-fault-after", "1"])
    assert p.returncode != 0
    assert seconds < 30, seconds
    lines = [l for l in p.stderr.splitlines() if l.startswith("flashload load: rank")]
    assert any(l.startswith("flashload load: rank 0 of %d:" % world) and "rank 1: " in l
               and ".safetensors" in l for l in lines), p.stderr
    assert not any(os.path.exists(os.path.join(tmp_path, "r%d.safetensors" % r))
                   for r in range(world))


def test_tp_needs_as_many_ranks_as_it_names(model):
    p = subprocess.run([BIN, "load", model, "--tp", "2"], capture_output=True, text=True, env=ENV)
    assert p.returncode == 2
    assert "mpirun -n 2" in p.stderr


def test_bad_rules_fail_every_rank_naming_the_rule(model, tmp_path):
    rules = tmp_path / "rules.txt"
    rules.write_text("*.q_proj.weight split 2\n")
    p = subprocess.run([MPIRUN, "-n", "2", BIN, "load", model, "--tp", "2", "--shard", str(rules)],
                       capture_output=True, text=True, env=ENV, timeout=60)
    assert p.returncode == 1
    for rank in (0, 1):
        assert any(l.startswith("flashload load: rank %d of 2:" % rank) and "q_proj" in l
                   and "rules.txt:1" in l for l in p.stderr.splitlines()), p.stderr
