"""Tensor-parallel loading from Python on torch.distributed (gloo, CPU): 2 and 4 processes, each a
rank of a process group initialized through a file in a temporary folder (no environment
variables), loading a small Llama-style model written here.

Each rank checks its tensors against ``torch.tensor_split(full, world, dim)[rank]`` of the tensors
the reference safetensors package loads (rows, columns, uneven splits, replicated norms), in both
modes and through every entry point (flashload.distributed.load_sharded, flashload.torch.load_file,
flashload.safe_open), and reports its bytes read; a rank given a damaged copy of the model, or a
rank that never joins, makes every rank fail within a deadline (each run has a hard timeout).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import numpy as np

from flashload import SafetensorError, _core, _Framework

try:
    import torch
    import torch.distributed
    _GLOO = torch.distributed.is_available() and torch.distributed.is_gloo_available()
except ImportError:
    torch = None
    _GLOO = False
# The process-group tests need torch with gloo; the native binding's tests below them (ranks as
# threads with a communicator written in Python) run everywhere.
needs_gloo = pytest.mark.skipif(not _GLOO, reason="needs torch with torch.distributed (gloo)")

HIDDEN, KV, INTERMEDIATE, VOCAB, LAYERS = 250, 90, 690, 1001, 2

# name -> split dim under the llama preset (None: replicated).
def model_spec():
    if torch is None:
        pytest.skip("needs torch")
    spec = {"model.embed_tokens.weight": ([VOCAB, HIDDEN], torch.float32, 0),
            "model.norm.weight": ([HIDDEN], torch.float32, None),
            "lm_head.weight": ([VOCAB, HIDDEN], torch.bfloat16, 0)}
    for layer in range(LAYERS):
        p = f"model.layers.{layer}."
        spec.update({
            p + "self_attn.q_proj.weight": ([HIDDEN, HIDDEN], torch.float32, 0),
            p + "self_attn.k_proj.weight": ([KV, HIDDEN], torch.float32, 0),
            p + "self_attn.v_proj.weight": ([KV, HIDDEN], torch.float16, 0),
            p + "self_attn.o_proj.weight": ([HIDDEN, HIDDEN], torch.float32, 1),
            p + "mlp.gate_proj.weight": ([INTERMEDIATE, HIDDEN], torch.float32, 0),
            p + "mlp.up_proj.weight": ([INTERMEDIATE, HIDDEN], torch.float32, 0),
            p + "mlp.down_proj.weight": ([HIDDEN, INTERMEDIATE], torch.float32, 1),
            p + "input_layernorm.weight": ([HIDDEN], torch.float32, None),
            p + "post_attention_layernorm.weight": ([HIDDEN], torch.float32, None),
        })
    return spec


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    if not _GLOO:
        pytest.skip("needs torch with torch.distributed (gloo)")
    """(path of the model file, bytes of its data section)."""
    from safetensors.torch import save_file
    folder = tmp_path_factory.mktemp("llama")
    generator = torch.Generator().manual_seed(7)
    tensors = {name: torch.randn(shape, generator=generator).to(dtype)
               for name, (shape, dtype, _) in model_spec().items()}
    path = folder / "model.safetensors"
    save_file(tensors, str(path))
    data_bytes = sum(t.numel() * t.element_size() for t in tensors.values())
    return path, data_bytes


# The program each rank runs: initializes gloo through `init_file`, runs the steps it is given,
# and writes {"ok": ..., "steps": [...]} or {"error": type, "message": ..., "seconds": ...} to
# `out`. Checks of the tensors happen in the rank (it has them); the test checks the reports.
WORKER = textwrap.dedent(r'''
    import datetime, json, sys, time, traceback
    import torch
    import torch.distributed as dist

    init_file, rank, world, path, reference, steps, out, timeout_s = sys.argv[1:9]
    rank, world, timeout_s = int(rank), int(world), float(timeout_s)
    steps = steps.split(",")
    split_dims = json.loads(sys.argv[9])
    result = {"rank": rank, "steps": []}

    def expected(full, name):
        dim = split_dims[name]
        return full if dim is None else torch.tensor_split(full, world, dim)[rank]

    def check(tensors, full):
        bad = []
        for name, whole in full.items():
            want = expected(whole, name)
            if want.numel() == 0 and name not in tensors:
                continue
            got = tensors.get(name)
            if got is None or got.dtype != want.dtype or got.shape != want.shape \
                    or not torch.equal(got, want):
                bad.append(name)
        extra = sorted(set(tensors) - set(full))
        return bad + extra

    try:
        dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank,
                                world_size=world, timeout=datetime.timedelta(seconds=120))
        import flashload, flashload.distributed, flashload.torch
        from safetensors.torch import load_file as reference_load
        full = reference_load(reference)
        group = dist.group.WORLD
        for step in steps:
            start = time.monotonic()
            if step == "exit":  # this rank leaves without loading
                result["steps"].append({"step": step})
                break
            if step == "sleep":  # this rank stays in the group but never joins the load
                time.sleep(timeout_s * 4)
                result["steps"].append({"step": step})
                break
            api, mode = step.split(":")
            report = None
            if api == "sharded":
                loaded = flashload.distributed.load_sharded(path, group, shard_mode=mode,
                                                            timeout_s=timeout_s)
                tensors, report = loaded.tensors, loaded.reports
            elif api == "load_file":
                tensors = flashload.torch.load_file(path, process_group=group, shard="llama",
                                                    shard_mode=mode, timeout_s=timeout_s)
            elif api == "safe_open":
                with flashload.safe_open(path, framework="pt", process_group=group,
                                         shard_mode=mode, timeout_s=timeout_s) as f:
                    keys = f.keys()
                    assert keys == sorted(full), "keys() lists every tensor of the file"
                    tensors = {k: f.get_tensor(k) for k in keys}
                    sl = f.get_slice("model.layers.0.self_attn.o_proj.weight")
                    assert sl.get_shape() == list(tensors[
                        "model.layers.0.self_attn.o_proj.weight"].shape)
            result["steps"].append({"step": step, "bad": check(tensors, full),
                                    "reports": report, "seconds": time.monotonic() - start})
        result["ok"] = True
    except BaseException as error:
        result["error"] = type(error).__name__
        result["message"] = str(error)
        result["traceback"] = traceback.format_exc()
        result["seconds"] = time.monotonic() - start if "start" in dir() else None
    with open(out, "w") as f:
        json.dump(result, f)
    # A broken group may not shut down cleanly: leave without waiting for it.
    sys.stdout.flush()
    import os
    os._exit(0)
''')


def run_ranks(tmp_path, world, paths, steps, reference, timeout_s=30.0, hard_timeout=240):
    """Runs `world` rank processes; `paths[r]` is the model path rank r loads, `steps[r]` its
    steps. Returns each rank's result dict. Fails the test when a rank outlives `hard_timeout`."""
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    init_file = tmp_path / f"init-{time.monotonic_ns()}"
    split_dims = json.dumps({name: dim for name, (_, _, dim) in model_spec().items()})
    env = dict(os.environ)
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # ranks on this host only
    env["OMP_NUM_THREADS"] = "1"
    procs, outs = [], []
    for rank in range(world):
        out = tmp_path / f"rank{rank}-{time.monotonic_ns()}.json"
        outs.append(out)
        procs.append(subprocess.Popen(
            [sys.executable, str(worker), str(init_file), str(rank), str(world), str(paths[rank]),
             str(reference), ",".join(steps[rank]), str(out), str(timeout_s), split_dims],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env))
    deadline = time.monotonic() + hard_timeout
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"a rank hung: no result within {hard_timeout} s")
    results = []
    for rank, out in enumerate(outs):
        assert out.exists(), f"rank {rank} wrote no result: {logs[rank].decode(errors='replace')}"
        results.append(json.loads(out.read_text()))
    return results


def shard_bytes(world, rank):
    """Stored bytes of rank `rank`'s shards under the llama preset."""
    total = 0
    for shape, dtype, dim in model_spec().values():
        elems = 1
        for d in shape:
            elems *= d
        size = torch.empty((), dtype=dtype).element_size()
        if dim is not None:
            n = shape[dim]
            part = n // world + (1 if rank < n % world else 0)
            elems = elems // n * part
        total += elems * size
    return total


def assert_ok(results):
    for r in results:
        assert r.get("ok"), f"rank {r['rank']}: {r.get('error')}: {r.get('message')}\n" \
                            f"{r.get('traceback')}"
        for step in r["steps"]:
            assert step["bad"] == [], f"rank {r['rank']} {step['step']}: wrong shards {step['bad']}"


@needs_gloo
@pytest.mark.parametrize("world", [2, 4])
def test_every_rank_gets_its_tensor_split_in_both_modes(tmp_path, model, world):
    path, data_bytes = model
    steps = ["sharded:local", "sharded:share"]
    results = run_ranks(tmp_path, world, [path] * world, [steps] * world, path)
    assert_ok(results)
    by_mode = {}
    for mode_step in (0, 1):
        reports = results[0]["steps"][mode_step]["reports"]
        assert [r["rank"] for r in reports] == list(range(world))
        # Every rank sees the same reports.
        for other in results[1:]:
            assert [x["bytes_read"] for x in other["steps"][mode_step]["reports"]] == \
                [x["bytes_read"] for x in reports]
        by_mode[steps[mode_step]] = reports
    for reports in by_mode.values():
        for r in reports:
            assert r["world"] == world and r["communicator"] == "torch.distributed (gloo)"
            assert r["shard_bytes"] == shard_bytes(world, r["rank"]), r
    local, share = by_mode["sharded:local"], by_mode["sharded:share"]
    assert all(r["mode"] == "shard-local" for r in local)
    assert all(r["mode"] == "read-once-share" for r in share)
    for r in local:
        # Its shards, the rows covering its column shards, and the small gaps merged between
        # ranges; far less than the model.
        assert r["shard_bytes"] <= r["bytes_read"], r
        assert r["bytes_read"] <= r["shard_bytes"] * 1.05 + r["covering_bytes"] + 128 * 1024, r
        assert r["bytes_read"] < data_bytes * (1.2 / world) + 128 * 1024, (r, data_bytes)
    # Read once across the job, each rank a part of it.
    total = sum(r["bytes_read"] for r in share)
    assert data_bytes <= total <= data_bytes * 1.05 + 64 * 1024, (total, data_bytes)
    assert max(r["bytes_read"] for r in share) < data_bytes * (1.5 / world) + 64 * 1024
    assert sum(r["bytes_received"] for r in share) > 0


@needs_gloo
def test_load_file_and_safe_open_take_a_process_group(tmp_path, model):
    path, _ = model
    steps = ["load_file:local", "safe_open:share", "load_file:auto"]
    results = run_ranks(tmp_path, 2, [path] * 2, [steps] * 2, path)
    assert_ok(results)


@needs_gloo
def test_load_file_takes_a_model_folder(tmp_path, model):
    path, _ = model
    folder = tmp_path / "folder"
    folder.mkdir()
    os.link(path, folder / "model.safetensors")
    results = run_ranks(tmp_path, 2, [folder] * 2, [["load_file:local"]] * 2, path)
    assert_ok(results)


@needs_gloo
@pytest.mark.parametrize("mode,world", [("local", 2), ("share", 4)])
def test_damaged_file_on_one_rank_fails_every_rank_naming_it(tmp_path, model, mode, world):
    path, _ = model
    damaged = tmp_path / "damaged.safetensors"
    data = path.read_bytes()
    damaged.write_bytes(data[: len(data) - 4096])  # truncated: the header promises more
    paths = [path] * world
    paths[1] = damaged
    started = time.monotonic()
    results = run_ranks(tmp_path, world, paths, [[f"sharded:{mode}"]] * world, path,
                        timeout_s=60.0)
    assert time.monotonic() - started < 60, "the failure took as long as the timeout"
    for r in results:
        assert not r.get("ok"), f"rank {r['rank']} succeeded with a damaged rank 1"
        assert r["error"] == "SafetensorError", r
        assert "rank 1" in r["message"] or r["rank"] == 1, r["message"]
        assert "damaged.safetensors" in r["message"], r["message"]


@needs_gloo
def test_missing_file_on_one_rank_is_file_not_found_everywhere(tmp_path, model):
    path, _ = model
    paths = [path, tmp_path / "nowhere.safetensors"]
    results = run_ranks(tmp_path, 2, paths, [["load_file:local"]] * 2, path)
    for r in results:
        assert r["error"] == "FileNotFoundError", r
        assert "nowhere.safetensors" in r["message"]
    assert results[0]["message"].startswith("rank 1: ")


@needs_gloo
def test_rank_that_leaves_makes_the_others_fail_at_once(tmp_path, model):
    path, _ = model
    steps = [["sharded:share"], ["exit"]]
    results = run_ranks(tmp_path, 2, [path] * 2, steps, path, timeout_s=30.0, hard_timeout=120)
    r = results[0]
    assert not r.get("ok") and r["error"] in ("TimeoutError", "SafetensorError"), r
    assert "rank 0" in r["message"] and "torch.distributed (gloo)" in r["message"], r["message"]
    assert r["seconds"] is not None and r["seconds"] < 30, r


@needs_gloo
@pytest.mark.parametrize("mode", ["local", "share"])
def test_rank_that_never_joins_makes_the_others_time_out(tmp_path, model, mode):
    path, _ = model
    steps = [[f"sharded:{mode}"], ["sleep"]]
    results = run_ranks(tmp_path, 2, [path] * 2, steps, path, timeout_s=3.0, hard_timeout=120)
    r = results[0]
    assert not r.get("ok") and r["error"] == "TimeoutError", r
    assert "did not join" in r["message"] or "in time" in r["message"], r["message"]
    assert 2.5 <= r["seconds"] < 30, r


# ---- the native binding with a communicator written in Python (no torch) -------------------------

class ThreadGroup:
    """Ranks as Python threads: every collective is an exchange of one value per rank through a
    barrier (flashload releases the GIL while it loads, so the ranks' threads run side by side)."""

    def __init__(self, size):
        self.size = size
        self.slots = [None] * size
        self.barrier = threading.Barrier(size)

    def exchange(self, rank, value, timeout_s):
        try:
            self.slots[rank] = value
            self.barrier.wait(timeout_s)
            values = list(self.slots)
            self.barrier.wait(timeout_s)
        except threading.BrokenBarrierError:
            raise TimeoutError(f"rank {rank}: the other ranks did not arrive") from None
        return values


class ThreadComm:
    """The communicator protocol of _core.load_sharded on a ThreadGroup."""

    def __init__(self, group, rank, fail=None):
        self.group, self.rank, self.size, self.name = group, rank, group.size, "python threads"
        self.fail = fail  # {collective: exception to raise}
        self.calls = []

    def _maybe_fail(self, collective):
        self.calls.append(collective)
        if self.fail and collective in self.fail:
            raise self.fail[collective]

    def agree(self, code, message, timeout_s):
        self._maybe_fail("agree")
        for rank, (c, m) in enumerate(self.group.exchange(self.rank, (code, message), timeout_s)):
            if c != 0:
                return c, m if rank == self.rank else f"rank {rank}: {m}"
        return 0, ""

    def all_gather(self, data, timeout_s):
        self._maybe_fail("all_gather")
        return self.group.exchange(self.rank, bytes(data), timeout_s)

    def all_to_all(self, send, recv, timeout_s):
        self._maybe_fail("all_to_all")
        everyone = self.group.exchange(self.rank, [bytes(s) for s in send], timeout_s)
        for source, buffer in enumerate(recv):
            memoryview(buffer).cast("B")[:] = everyone[source][self.rank]


SPLITS = {"model.embed_tokens.weight": 0, "model.layers.0.self_attn.q_proj.weight": 0,
          "model.layers.0.self_attn.o_proj.weight": 1, "model.layers.0.mlp.down_proj.weight": 1,
          "model.norm.weight": None}


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    import safetensors.numpy as ref_np
    rng = np.random.default_rng(3)
    tensors = {"model.embed_tokens.weight": rng.standard_normal((101, 24), dtype=np.float32),
               "model.layers.0.self_attn.q_proj.weight": rng.standard_normal((25, 24)).astype(
                   np.float16),
               "model.layers.0.self_attn.o_proj.weight": rng.standard_normal(
                   (24, 25), dtype=np.float32),
               "model.layers.0.mlp.down_proj.weight": rng.integers(-9, 9, (24, 67), dtype=np.int32),
               "model.norm.weight": rng.standard_normal(24, dtype=np.float32)}
    path = tmp_path_factory.mktemp("small") / "model.safetensors"
    ref_np.save_file(tensors, path)
    return path, tensors


def run_threads(world, target):
    results, threads = [None] * world, []

    def one(rank):
        try:
            results[rank] = ("ok", target(rank))
        except BaseException as error:  # checked by the caller
            results[rank] = ("error", error)

    for rank in range(world):
        threads.append(threading.Thread(target=one, args=(rank,)))
        threads[-1].start()
    for t in threads:
        t.join(120)
        assert not t.is_alive(), "a rank hung"
    return results


@pytest.mark.parametrize("mode", ["local", "share"])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_python_communicator_ranks_get_their_array_split(small_model, mode, world):
    path, full = small_model
    group = ThreadGroup(world)
    numpy_fw = _Framework("np", "cpu")

    def load(rank):
        arrays, reports = _core.load_sharded(str(path), ThreadComm(group, rank), shard="llama",
                                             mode=mode, timeout_s=30)
        return {name: numpy_fw.convert_array(a) for name, a in arrays}, reports

    for rank, (status, value) in enumerate(run_threads(world, load)):
        assert status == "ok", value
        tensors, reports = value
        for name, whole in full.items():
            dim = SPLITS[name]
            want = whole if dim is None else np.array_split(whole, world, axis=dim)[rank]
            assert tensors[name].dtype == want.dtype and tensors[name].shape == want.shape, name
            assert tensors[name].tobytes() == want.tobytes(), name
        assert [r["rank"] for r in reports] == list(range(world))
        assert reports[rank]["communicator"] == "python threads"
        assert reports[rank]["mode"] == ("shard-local" if mode == "local" or world == 1
                                         else "read-once-share") or world == 1


def test_ranks_that_get_none_of_a_tensor_get_an_empty_one(tmp_path):
    # Two rows split four ways: ranks 2 and 3 get (0, 24) arrays, as numpy.array_split gives them.
    import safetensors.numpy as ref_np
    whole = np.arange(48, dtype=np.float32).reshape(2, 24)
    path = tmp_path / "two_rows.safetensors"
    ref_np.save_file({"model.layers.0.self_attn.k_proj.weight": whole}, path)
    group = ThreadGroup(4)
    numpy_fw = _Framework("np", "cpu")

    def load(rank):
        arrays, _ = _core.load_sharded(str(path), ThreadComm(group, rank), shard="llama",
                                       mode="local", timeout_s=30)
        return {name: numpy_fw.convert_array(a) for name, a in arrays}

    for rank, (status, value) in enumerate(run_threads(4, load)):
        assert status == "ok", value
        got = value["model.layers.0.self_attn.k_proj.weight"]
        want = np.array_split(whole, 4, axis=0)[rank]
        assert got.shape == want.shape and got.tobytes() == want.tobytes(), rank


def test_a_python_timeout_is_a_timeout_error_on_every_rank(small_model):
    path, _ = small_model
    group = ThreadGroup(2)
    comms = [ThreadComm(group, 0), ThreadComm(group, 1, fail={"agree": TimeoutError("late")})]
    results = run_threads(2, lambda r: _core.load_sharded(str(path), comms[r], timeout_s=2))
    assert isinstance(results[1][1], TimeoutError), results[1]
    assert "python threads, rank 1: agree() raised TimeoutError: late" in str(results[1][1])
    # Rank 0 waited for rank 1 at the barrier until its own deadline.
    assert isinstance(results[0][1], TimeoutError), results[0]


def test_a_python_exception_in_a_collective_is_a_safetensor_error_naming_it(small_model):
    path, _ = small_model
    comm = ThreadComm(ThreadGroup(1), 0, fail={"all_gather": RuntimeError("link down")})
    with pytest.raises(SafetensorError, match=r"rank 0: all_gather\(\) raised RuntimeError: "
                                              r"link down"):
        _core.load_sharded(str(path), comm, timeout_s=5)


def test_keyboard_interrupt_in_a_collective_comes_back_as_itself(small_model):
    path, _ = small_model
    comm = ThreadComm(ThreadGroup(1), 0, fail={"agree": KeyboardInterrupt()})
    with pytest.raises(KeyboardInterrupt):
        _core.load_sharded(str(path), comm, timeout_s=5)


def test_a_failure_on_one_python_rank_reaches_every_rank(small_model, tmp_path):
    path, _ = small_model
    group = ThreadGroup(2)
    paths = [str(path), str(tmp_path / "missing.safetensors")]
    results = run_threads(2, lambda r: _core.load_sharded(paths[r], ThreadComm(group, r),
                                                          timeout_s=30))
    for status, error in results:
        assert status == "error" and isinstance(error, FileNotFoundError), error
        assert "missing.safetensors" in str(error)
    assert str(results[0][1]).startswith("rank 1: ")


def test_bad_arguments_raise_before_any_collective(small_model):
    path, _ = small_model
    comm = ThreadComm(ThreadGroup(1), 0)
    with pytest.raises(ValueError, match="mode"):
        _core.load_sharded(str(path), comm, mode="sideways")
    with pytest.raises(ValueError, match="timeout_s"):
        _core.load_sharded(str(path), comm, timeout_s=0)
    assert comm.calls == []
