"""CLI end to end on a network file system: tools/slowfs, a FUSE file system that answers every read
after a delay and serves one descriptor's requests one at a time (GCSFuse's behaviour)."""

import json
import os
import subprocess

import pytest

import servers

FLASHLOAD = os.environ.get("FLASHLOAD_BIN") or os.path.join(servers.REPO, "build", "flashload")


def flashload(*args, check=True):
    proc = subprocess.run([FLASHLOAD, *args], capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"flashload {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def model_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("netfs-src")
    flashload("gen", "tiny", str(root / "tiny"))
    return root


def load_json(path, *extra):
    """`flashload load --json --verify`: every tensor's hash against an independent plain read."""
    proc = flashload("load", path, "--json", "--verify", *extra)
    report = json.loads(proc.stdout)
    assert report["verify"]["mismatches"] == 0, report
    return report


def test_auto_reads_a_fuse_file_system_with_the_network_strategy(model_root):
    with servers.slowfs_mount(str(model_root), latency_ms=2) as mnt:
        report = load_json(os.path.join(mnt.path, "tiny"))
        assert report["files"], report
        for f in report["files"]:
            assert f["strategy"].startswith("network (pread"), f
            assert "network file system" in f["reason"], f


def test_direct_on_a_file_system_refusing_o_direct_falls_back_with_the_reason(model_root):
    with servers.slowfs_mount(str(model_root), latency_ms=1, refuse_direct=True) as mnt:
        report = load_json(os.path.join(mnt.path, "tiny"), "--strategy", "direct")
        for f in report["files"]:
            assert f["strategy"].startswith("buffered"), f
            assert "O_DIRECT failed" in f["reason"] and "does not support O_DIRECT" in f["reason"], f


@pytest.mark.parametrize("strategy", ["network", "buffered", "mmap"])
def test_every_strategy_reads_identical_bytes_through_fuse(model_root, strategy):
    with servers.slowfs_mount(str(model_root), latency_ms=1) as mnt:
        report = load_json(os.path.join(mnt.path, "tiny", "unet"), "--strategy", strategy)
        assert report["bytes"] > 0
        assert report["verify"]["tensors_checked"] == report["tensors"] > 0, report
        assert report["verify"]["mismatches"] == 0, report
