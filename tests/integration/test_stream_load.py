"""Plain (not seekable) .tar.zst archives made by GNU tar (`tar -I zstd -cf`) load by streaming
them front to back, through the CLI: locally and over HTTP (tools/range_server.py), the tensors
saved from the archive (--save) equal, byte for byte, those saved from the folder; `--dry-run`
says there is no plan; a GPU load or a dtype conversion, a truncated and a damaged archive are
clear errors, never a model.
"""

import json
import os
import subprocess

import pytest

import servers

FLASHLOAD = os.environ.get("FLASHLOAD_BIN") or os.path.join(servers.REPO, "build", "flashload")
STREAM = "stream (plain zstd: read front to back)"


def run(*args):
    return subprocess.run([FLASHLOAD, *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def ok(*args):
    proc = run(*args)
    assert proc.returncode == 0, f"flashload {args}: {proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    tiny = root / "folder" / "tiny"
    ok("gen", "tiny", tiny)
    bucket = root / "http" / "models"
    bucket.mkdir(parents=True)
    paths = {"folder": tiny}
    # As people make them: GNU tar piping through zstd (one stream, checksums, no seek table).
    paths["plain"] = bucket / "tiny.tar.zst"
    subprocess.run(["tar", "-I", "zstd", "-cf", paths["plain"], "-C", tiny, "."], check=True)
    # Several frames: zstd streams concatenated (what `cat a.zst b.zst` or pzstd give), cut
    # anywhere in the tar, not at member boundaries.
    tar = root / "tiny.tar"
    subprocess.run(["tar", "-cf", tar, "-C", tiny, "."], check=True)
    data = tar.read_bytes()
    paths["frames"] = bucket / "tiny-frames.tar.zst"
    with open(paths["frames"], "wb") as out:
        for at in range(0, len(data), 1_000_003):
            out.write(subprocess.run(["zstd", "-q", "-3", "-c"], input=data[at:at + 1_000_003],
                                     capture_output=True, check=True).stdout)
    # Packed under its folder name, as `tar -C parent tiny` does.
    paths["nested"] = bucket / "tiny-nested.tar.zst"
    subprocess.run(["tar", "--zstd", "-cf", paths["nested"], "-C", tiny.parent, "tiny"],
                   check=True)
    return root, paths


def saved(tmp_path, source, name, *extra):
    out = tmp_path / f"{name}.safetensors"
    proc = ok("load", source, "--json", "--save", out, *extra)
    return json.loads(proc.stdout), out.read_bytes()


@pytest.mark.parametrize("kind", ["plain", "frames", "nested"])
def test_gnu_tar_zstd_archive_loads_the_same_tensors_as_the_folder(models, tmp_path, kind):
    _, paths = models
    want_report, want = saved(tmp_path, paths["folder"], "folder")
    report, got = saved(tmp_path, paths[kind], kind)
    assert report["tensors"] == want_report["tensors"] > 0
    assert got == want
    assert all(f["path"].startswith("tar:/") for f in report["files"]), report["files"]
    assert all(f["strategy"] == STREAM for f in report["files"]), report["files"]


def test_plain_archive_over_http_loads_the_same_tensors(models, tmp_path):
    root, paths = models
    _, want = saved(tmp_path, paths["folder"], "folder")
    with servers.range_server(root / "http") as srv:
        url = srv.object_url("models", paths["plain"].name)
        report, got = saved(tmp_path, url, "http")
        assert got == want
        assert report["files"][0]["path"].startswith("tar:http://"), report["files"][0]
        # Transient errors are retried by the registry's policy for http.
        srv.control("status=503:every=4")
        _, retried = saved(tmp_path, url, "retried", "--retry-base-ms", "1")
        assert retried == want


def test_dry_run_says_there_is_no_plan(models):
    _, paths = models
    proc = ok("load", paths["plain"], "--dry-run")
    assert "no plan to print" in proc.stdout, proc.stdout


@pytest.mark.parametrize("flags", [["--dtype", "bf16"]])
def test_conversion_is_refused_with_what_to_do(models, flags):
    _, paths = models
    proc = run("load", paths["plain"], *flags)
    assert proc.returncode == 1
    assert "FAILED_PRECONDITION" in proc.stderr and "flashload pack" in proc.stderr, proc.stderr


def test_truncated_and_damaged_archives_are_data_loss(models, tmp_path):
    _, paths = models
    data = open(paths["plain"], "rb").read()
    cut = tmp_path / "cut.tar.zst"
    cut.write_bytes(data[: len(data) * 2 // 3])
    proc = run("load", cut)
    assert proc.returncode == 1
    assert "DATA_LOSS" in proc.stderr and "truncated" in proc.stderr, proc.stderr
    assert str(cut) in proc.stderr
    damaged = bytearray(data)
    mid = len(damaged) // 2
    damaged[mid:mid + 4] = bytes(b ^ 0x5A for b in damaged[mid:mid + 4])
    bad = tmp_path / "damaged.tar.zst"
    bad.write_bytes(bytes(damaged))
    proc = run("load", bad)
    assert proc.returncode == 1
    assert "DATA_LOSS" in proc.stderr and str(bad) in proc.stderr, proc.stderr


AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
            "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
            "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_NO_SIGN_REQUEST")


def test_plain_archive_on_s3_loads_the_same_tensors(models, tmp_path):
    _, paths = models
    _, want = saved(tmp_path, paths["folder"], "folder")
    with servers.moto_server() as srv:
        s3 = srv.client()
        s3.create_bucket(Bucket="weights")
        s3.upload_file(str(paths["plain"]), "weights", "archives/tiny.tar.zst")
        env = {k: v for k, v in os.environ.items() if k not in AWS_VARS}
        env.update({"AWS_ACCESS_KEY_ID": srv.access_key, "AWS_SECRET_ACCESS_KEY": srv.secret_key,
                    "AWS_ENDPOINT_URL": srv.url, "AWS_REGION": srv.region,
                    "HOME": str(tmp_path)})
        out = tmp_path / "s3.safetensors"
        proc = subprocess.run([FLASHLOAD, "load", "s3://weights/archives/tiny.tar.zst", "--json",
                               "--save", str(out)], capture_output=True, text=True, timeout=300,
                              env=env)
        assert proc.returncode == 0, proc.stderr
        assert out.read_bytes() == want
        files = json.loads(proc.stdout)["files"]
        assert files[0]["path"].startswith("tar:s3://weights/archives/"), files[0]
        assert files[0]["strategy"] == STREAM, files[0]
