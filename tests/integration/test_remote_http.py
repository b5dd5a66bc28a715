"""CLI end to end over HTTP: tools/range_server.py on 127.0.0.1 serving generated models, with the
faults of a real object store or CDN. Every fault either surfaces as a clear error (exit 1, nothing
loaded) or is recovered with identical bytes (`--verify` compares every tensor with a separate
one-connection read)."""

import json
import os
import subprocess

import pytest

import servers

FLASHLOAD = os.environ.get("FLASHLOAD_BIN") or os.path.join(servers.REPO, "build", "flashload")
UNET = "tiny/unet/diffusion_pytorch_model.safetensors"


def run(*args):
    return subprocess.run([FLASHLOAD, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("http-root")
    proc = run("gen", "tiny", str(root / "models" / "tiny"))
    assert proc.returncode == 0, proc.stderr
    proc = run("gen", "llm-tiny", str(root / "models" / "llm"))
    assert proc.returncode == 0, proc.stderr
    return root


def load_ok(url, *extra):
    proc = run("load", url, "--json", "--verify", "--range-mib", "1", *extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["verify"]["mismatches"] == 0
    assert report["verify"]["tensors_checked"] == report["tensors"] > 0
    return report


def load_fails(url, *extra):
    proc = run("load", url, "--json", "--range-mib", "1", *extra)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout == "", "nothing is reported as loaded"
    return proc.stderr


def test_a_file_loads_with_ranged_gets_and_identical_bytes(root):
    with servers.range_server(root) as srv:
        report = load_ok(srv.object_url("models", UNET))
        assert report["files"][0]["strategy"].startswith("network (http"), report
        assert srv.stats()["max_concurrent_connections"] > 1, "ranges are fetched in parallel"


def test_a_sharded_index_resolves_its_shards_relative_to_the_index_url(root):
    index = next(p for p in os.listdir(root / "models" / "llm") if p.endswith(".index.json"))
    with servers.range_server(root) as srv:
        report = load_ok(srv.object_url("models", "llm/" + index))
        assert len(report["files"]) > 1


def test_inspect_reads_the_header_from_the_first_request(root):
    with servers.range_server(root) as srv:
        before = srv.stats()["requests"]
        proc = run("inspect", srv.object_url("models", UNET), "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["tensors"]
        assert srv.stats()["requests"] - before == 2, "one GET, plus the second /__stats itself"


@pytest.mark.parametrize("faults", ["slowdown:every=3", "status=500:every=4", "reset:every=3",
                                    "short:every=4"])
def test_transient_faults_are_retried_and_resumed_with_identical_bytes(root, faults):
    with servers.range_server(root, faults=faults) as srv:
        load_ok(srv.object_url("models", UNET), "--attempts", "5")
        assert srv.stats()["faults_injected"] > 0


def test_persistent_server_errors_give_up_with_the_attempts_counted(root):
    with servers.range_server(root) as srv:
        url = srv.object_url("models", UNET)
        srv.control("slowdown:first=1000")
        err = load_fails(url, "--attempts", "2")
        assert "503" in err or "SlowDown" in err, err
        assert url in err


def test_an_object_replaced_mid_load_is_an_error_never_mixed_bytes(root):
    with servers.range_server(root, faults="etag-change:after=2") as srv:
        err = load_fails(srv.object_url("models", UNET))
        assert "changed" in err and "ETag" in err, err


def test_a_server_ignoring_range_is_a_clear_error(root):
    with servers.range_server(root, faults="ignore-range") as srv:
        err = load_fails(srv.object_url("models", UNET))
        assert "ignores Range" in err, err


def test_missing_object_names_the_url(root):
    with servers.range_server(root) as srv:
        url = srv.object_url("models", "tiny/nope.safetensors")
        err = load_fails(url)
        assert "NOT_FOUND" in err and url in err, err


def test_authorization_header_is_sent_but_never_printed(root):
    secret = "Bearer s3cr3t-t0ken-value"
    with servers.range_server(root) as srv:
        load_ok(srv.object_url("models", UNET), "--header", "Authorization: " + secret)
        err = load_fails(srv.object_url("models", "tiny/nope.safetensors"),
                         "--header", "Authorization: " + secret)
        assert "s3cr3t" not in err


def test_a_folder_url_says_plain_http_cannot_list(root):
    with servers.range_server(root) as srv:
        err = load_fails(srv.object_url("models", "tiny"))
        assert "cannot list a folder" in err, err
