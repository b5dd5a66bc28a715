"""flashload push / pull / cp end to end: moto's S3 with SigV4 checking on (uploads, multipart,
aborts, manifests, the cache) and tools/range_server.py (http:// sources, faults, a server that dies
mid-download)."""

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

import servers

FLASHLOAD = os.environ.get("FLASHLOAD_BIN") or os.path.join(servers.REPO, "build", "flashload")
AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
            "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
            "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_NO_SIGN_REQUEST",
            "FLASHLOAD_STORE", "FLASHLOAD_CACHE")
MIB = 1 << 20


def env_for(srv=None, extra=None):
    env = {k: v for k, v in os.environ.items() if k not in AWS_VARS}
    env["HOME"] = "/nonexistent"
    if srv is not None:
        env.update({"AWS_ACCESS_KEY_ID": srv.access_key, "AWS_SECRET_ACCESS_KEY": srv.secret_key,
                    "AWS_ENDPOINT_URL": srv.url, "AWS_REGION": srv.region})
    env.update(extra or {})
    return env


def run(*args, srv=None, extra=None, timeout=300):
    return subprocess.run([FLASHLOAD, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env_for(srv, extra))


def popen(*args, srv=None, extra=None):
    return subprocess.Popen([FLASHLOAD, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env_for(srv, extra))


def random_file(path, size, seed):
    data = hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1)
    # Not periodic in 32 bytes: mix in the position, so a misplaced part is caught.
    block = bytearray(data[:size])
    for i in range(0, size, 4096):
        block[i:i + 8] = i.to_bytes(8, "little")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(block))
    return bytes(block)


def entries(cache):
    """Names of the cache entries that look valid: folders directly under the cache."""
    if not cache.exists():
        return []
    return sorted(p.name for p in cache.iterdir() if p.is_dir() and not p.name.startswith("."))


@pytest.fixture(scope="module")
def moto():
    with servers.moto_server() as srv:
        srv.client().create_bucket(Bucket="models")
        yield srv


def test_push_a_file_and_pull_it_back_bit_identical_also_by_reference(moto, tmp_path):
    data = random_file(tmp_path / "models--acme--tiny--fp16.tar.zst", 3 * MIB + 17, seed=1)
    proc = run("push", tmp_path / "models--acme--tiny--fp16.tar.zst", "s3://models/store/",
               "--json", srv=moto)
    assert proc.returncode == 0, proc.stderr
    pushed = json.loads(proc.stdout)
    assert pushed["url"] == "s3://models/store/models--acme--tiny--fp16.tar.zst"
    assert pushed["files"][0]["sha256"] == hashlib.sha256(data).hexdigest()
    manifest = json.loads(moto.client().get_object(
        Bucket="models", Key="store/models--acme--tiny--fp16.tar.zst.manifest.json")["Body"].read())
    assert manifest["format"] == 1
    assert manifest["files"] == [{"name": "models--acme--tiny--fp16.tar.zst", "size": len(data),
                                  "sha256": hashlib.sha256(data).hexdigest()}]

    cache = tmp_path / "cache"
    proc = run("pull", "s3://models/store/models--acme--tiny--fp16.tar.zst", "--cache", cache,
               srv=moto)
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip())
    assert path.read_bytes() == data
    assert "verified" in proc.stderr

    # The short reference resolves under FLASHLOAD_STORE to the same object, hence the same entry.
    proc = run("pull", "acme/tiny@fp16", "--json", srv=moto,
               extra={"FLASHLOAD_STORE": "s3://models/store", "FLASHLOAD_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["path"] == str(path) and report["downloaded"] is False
    assert entries(cache) == [path.parent.name]


def test_push_a_folder_and_pull_it_back_bit_identical(moto, tmp_path):
    folder = tmp_path / "tiny"
    files = {"model_index.json": b'{"a": 1}', "unet/weights.safetensors": None,
             "vae/config.json": b"{}", "empty.txt": b""}
    for name, content in files.items():
        if content is None:
            files[name] = random_file(folder / name, 2 * MIB + 5, seed=2)
        else:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(content)
    proc = run("push", folder, "s3://models/folders/", "--json", srv=moto)
    assert proc.returncode == 0, proc.stderr
    pushed = json.loads(proc.stdout)
    assert pushed["url"] == "s3://models/folders/tiny/"
    assert sorted(f["name"] for f in pushed["files"]) == sorted(files)

    cache = tmp_path / "cache"
    proc = run("pull", "s3://models/folders/tiny/", "--cache", cache, srv=moto)
    assert proc.returncode == 0, proc.stderr
    root = Path(proc.stdout.strip())
    for name, content in files.items():
        assert (root / name).read_bytes() == content, name


def test_multipart_upload_is_reassembled_exactly(moto, tmp_path):
    data = random_file(tmp_path / "big.bin", 23 * MIB + 123, seed=3)
    proc = run("push", tmp_path / "big.bin", "s3://models/mp/big.bin", "--part-mib", 5,
               "--parallel", 3, "--json", srv=moto)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["parts"] == 5
    s3 = moto.client()
    assert s3.get_object(Bucket="models", Key="mp/big.bin")["Body"].read() == data
    head = s3.head_object(Bucket="models", Key="mp/big.bin")
    assert head["ETag"].strip('"').endswith("-5")  # S3's multipart ETag: "<md5 of md5s>-<parts>"
    assert not s3.list_multipart_uploads(Bucket="models").get("Uploads")

    proc = run("pull", "s3://models/mp/big.bin", "--cache", tmp_path / "cache", "--range-mib", 2,
               srv=moto)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).read_bytes() == data


def test_a_failure_mid_upload_aborts_the_multipart_upload(moto, tmp_path):
    root = tmp_path / "http"
    random_file(root / "b" / "big.bin", 21 * MIB, seed=4)
    # The source fails with a non-retryable 403 on its third request (the second ranged read),
    # after CreateMultipartUpload and while parts are in flight.
    with servers.range_server(root, faults="status=403:every=3") as http:
        proc = run("cp", http.object_url("b", "big.bin"), "s3://models/aborted/big.bin",
                   "--part-mib", 5, "--parallel", 1, srv=moto)
    assert proc.returncode == 1
    assert "aborted" in proc.stderr, proc.stderr
    s3 = moto.client()
    assert not s3.list_multipart_uploads(Bucket="models").get("Uploads")
    assert "Contents" not in s3.list_objects_v2(Bucket="models", Prefix="aborted/")


def test_a_bad_bucket_fails_cleanly_and_leaves_no_upload(moto, tmp_path):
    random_file(tmp_path / "big.bin", 11 * MIB, seed=5)
    proc = run("push", tmp_path / "big.bin", "s3://no-such-bucket-here/x.bin", "--part-mib", 5,
               srv=moto)
    assert proc.returncode == 1
    assert "NoSuchBucket" in proc.stderr, proc.stderr
    assert moto.secret_key not in proc.stderr


def test_two_concurrent_pulls_leave_one_entry_and_download_once(moto, tmp_path):
    data = random_file(tmp_path / "models--acme--race--fp16.tar.zst", 12 * MIB, seed=6)
    assert run("push", tmp_path / "models--acme--race--fp16.tar.zst", "s3://models/race/",
               srv=moto).returncode == 0
    cache = tmp_path / "cache"
    log_before = len(moto.log())
    procs = [popen("pull", "s3://models/race/models--acme--race--fp16.tar.zst", "--cache", cache,
                   "--json", srv=moto) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    reports = [json.loads(o[0]) for o in outs]
    assert sorted(r["downloaded"] for r in reports) == [False, True]
    assert reports[0]["path"] == reports[1]["path"]
    assert Path(reports[0]["path"]).read_bytes() == data
    assert len(entries(cache)) == 1
    # The server saw the manifest fetched once: the second process found the entry.
    log = moto.log()[log_before:]
    assert len(re.findall(r'GET /models/race/[^ ]*\.manifest\.json', log)) == 1, log


def test_a_pull_whose_server_dies_leaves_nothing_valid_and_a_later_pull_succeeds(tmp_path):
    root = tmp_path / "http"
    data = random_file(root / "b" / "slow.bin", 16 * MIB, seed=7)
    digest = hashlib.sha256(data).hexdigest()
    (root / "b" / "slow.bin.manifest.json").write_text(json.dumps(
        {"format": 1, "files": [{"name": "slow.bin", "size": len(data), "sha256": digest}]}))
    cache = tmp_path / "cache"
    with servers.range_server(root, bandwidth_per_conn=2e6) as http:
        port = http.port
        url = http.object_url("b", "slow.bin")
        pull = popen("pull", url, "--cache", cache, "--attempts", 1, "--range-mib", 2)
        time.sleep(1.5)
    # The server is gone (stopped mid-transfer).
    out, err = pull.communicate(timeout=120)
    assert pull.returncode == 1, (out, err)
    assert entries(cache) == []

    # A pull killed mid-way leaves only a partial folder too.
    with servers.range_server(root, bandwidth_per_conn=2e6, port=port) as http:
        assert http.object_url("b", "slow.bin") == url
        pull = popen("pull", url, "--cache", cache)
        time.sleep(1.5)
        pull.send_signal(signal.SIGKILL)
        pull.wait(timeout=30)
    assert entries(cache) == []
    assert list((cache / ".partial").iterdir()), "expected the killed pull's partial folder"

    with servers.range_server(root, port=port) as http:
        proc = run("pull", url, "--cache", cache, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["downloaded"] and report["verified"]
    assert Path(report["path"]).read_bytes() == data
    assert len(entries(cache)) == 1
    assert list((cache / ".partial").iterdir()) == []  # the leftovers were removed


def test_a_corrupted_object_is_refused_and_nothing_is_left(moto, tmp_path):
    random_file(tmp_path / "models--acme--bad--fp16.tar.zst", 2 * MIB, seed=8)
    assert run("push", tmp_path / "models--acme--bad--fp16.tar.zst", "s3://models/bad/",
               srv=moto).returncode == 0
    # The object is replaced (same size, other bytes) without its manifest.
    other = random_file(tmp_path / "other", 2 * MIB, seed=9)
    moto.client().put_object(Bucket="models", Key="bad/models--acme--bad--fp16.tar.zst", Body=other)
    cache = tmp_path / "cache"
    proc = run("pull", "s3://models/bad/models--acme--bad--fp16.tar.zst", "--cache", cache,
               srv=moto)
    assert proc.returncode == 1
    assert "SHA-256" in proc.stderr and "DATA_LOSS" in proc.stderr, proc.stderr
    assert proc.stdout == ""
    assert entries(cache) == []
    assert list((cache / ".partial").iterdir()) == []


def test_an_object_without_a_manifest_is_pulled_unverified(moto, tmp_path):
    data = random_file(tmp_path / "plain.bin", MIB + 3, seed=10)
    moto.client().put_object(Bucket="models", Key="plain/plain.bin", Body=data)
    cache = tmp_path / "cache"
    proc = run("pull", "s3://models/plain/plain.bin", "--cache", cache, srv=moto)
    assert proc.returncode == 0, proc.stderr
    assert "unverified: no manifest on the server" in proc.stderr
    path = Path(proc.stdout.strip())
    assert path.read_bytes() == data
    recorded = json.loads((path.parent / ".flashload-manifest.json").read_text())
    assert recorded["verified"] is False
    assert recorded["files"][0]["sha256"] == hashlib.sha256(data).hexdigest()


def test_verify_rehashes_an_entry_and_removes_a_damaged_one(moto, tmp_path):
    random_file(tmp_path / "models--acme--v--fp16.tar.zst", MIB, seed=11)
    assert run("push", tmp_path / "models--acme--v--fp16.tar.zst", "s3://models/v/",
               srv=moto).returncode == 0
    cache = tmp_path / "cache"
    url = "s3://models/v/models--acme--v--fp16.tar.zst"
    path = Path(run("pull", url, "--cache", cache, srv=moto).stdout.strip())
    proc = run("pull", url, "--cache", cache, "--verify", "--json", srv=moto)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rehashed"] is True
    with open(path, "r+b") as f:
        f.seek(1000)
        f.write(b"\xff")
    proc = run("pull", url, "--cache", cache, "--verify", srv=moto)
    assert proc.returncode == 1 and "removed" in proc.stderr, proc.stderr
    assert entries(cache) == []
    proc = run("pull", url, "--cache", cache, "--json", srv=moto)
    assert proc.returncode == 0 and json.loads(proc.stdout)["downloaded"] is True


def test_cp_local_to_s3_to_local_round_trip_is_bit_identical(moto, tmp_path):
    data = random_file(tmp_path / "a.bin", 12 * MIB + 1, seed=12)
    up = run("cp", tmp_path / "a.bin", "s3://models/cp/a.bin", "--part-mib", 5, "--json",
             srv=moto)
    assert up.returncode == 0, up.stderr
    down = run("cp", "s3://models/cp/a.bin", tmp_path / "b.bin", "--range-mib", 2, "--json",
               srv=moto)
    assert down.returncode == 0, down.stderr
    assert (tmp_path / "b.bin").read_bytes() == data
    assert json.loads(up.stdout)["sha256"] == json.loads(down.stdout)["sha256"] == \
        hashlib.sha256(data).hexdigest()
    assert [p.name for p in tmp_path.iterdir() if "flashload-tmp" in p.name] == []


def test_cp_from_http_and_refuses_http_as_a_destination(tmp_path):
    root = tmp_path / "http"
    data = random_file(root / "b" / "x.bin", 9 * MIB + 7, seed=13)
    with servers.range_server(root) as http:
        proc = run("cp", http.object_url("b", "x.bin"), tmp_path / "x.bin", "--range-mib", 2,
                   "--parallel", 4)
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / "x.bin").read_bytes() == data
        proc = run("cp", http.object_url("b", "x.bin"), tmp_path / "direct.bin", "--direct")
        if "refuses O_DIRECT" in proc.stderr:
            pytest.skip("the temporary folder's file system refuses O_DIRECT")
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / "direct.bin").read_bytes() == data
        proc = run("cp", tmp_path / "x.bin", http.object_url("b", "y.bin"))
        assert proc.returncode == 1 and "read only" in proc.stderr, proc.stderr


def test_cp_into_a_missing_folder_leaves_nothing(tmp_path):
    random_file(tmp_path / "a.bin", 1000, seed=14)
    proc = run("cp", tmp_path / "a.bin", tmp_path / "missing" / "a.bin")
    assert proc.returncode == 1 and "missing" in proc.stderr, proc.stderr
    assert not (tmp_path / "missing").exists()


def test_ctrl_c_during_an_upload_aborts_the_multipart_upload(moto, tmp_path):
    root = tmp_path / "http"
    random_file(root / "b" / "slow.bin", 30 * MIB, seed=15)
    # A slow source keeps the upload in flight long enough to interrupt it.
    with servers.range_server(root, bandwidth_per_conn=4e6) as http:
        proc = popen("cp", http.object_url("b", "slow.bin"), "s3://models/interrupted/slow.bin",
                     "--part-mib", 5, "--parallel", 2, srv=moto)
        time.sleep(2.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, (out, err)
    assert "CANCELLED" in err and "aborted" in err, err
    s3 = moto.client()
    assert not s3.list_multipart_uploads(Bucket="models").get("Uploads")
    assert "Contents" not in s3.list_objects_v2(Bucket="models", Prefix="interrupted/")


def test_push_to_a_bare_bucket_keeps_the_local_name(moto, tmp_path):
    data = random_file(tmp_path / "root-level.bin", 1000, seed=16)
    proc = run("push", tmp_path / "root-level.bin", "s3://models", "--json", srv=moto)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["url"] == "s3://models/root-level.bin"
    assert moto.client().get_object(Bucket="models", Key="root-level.bin")["Body"].read() == data


def test_pack_push_pull_load_round_trip_is_bit_identical(moto, tmp_path):
    """The whole chain on signed S3: a model folder packed to a seekable .tar.zst, pushed, pulled by
    its short reference into the cache, then loaded (from the pulled archive, in place, and from the
    model on the store, straight out of S3): every tensor's bytes equal the folder's."""
    model = tmp_path / "model"
    assert run("gen", "tiny", model, "--values", "weights").returncode == 0
    packed = tmp_path / "out"
    packed.mkdir()
    proc = run("pack", model, "-o", packed, "--name", "acme/chain", "--quiet")
    assert proc.returncode == 0, proc.stderr
    archive = packed / "models--acme--chain--fp16.tar.zst"
    assert archive.exists()
    proc = run("push", archive, "s3://models/chain/", "--quiet", srv=moto)
    assert proc.returncode == 0, proc.stderr
    cache = tmp_path / "cache"
    proc = run("pull", "acme/chain@fp16", "--quiet", srv=moto,
               extra={"FLASHLOAD_STORE": "s3://models/chain/", "FLASHLOAD_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr
    pulled = Path(proc.stdout.strip())
    assert pulled.read_bytes() == archive.read_bytes()

    def hashes(target, srv=None):
        proc = run("inspect", target, "--hash", "--json", srv=srv)
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        out = {}
        for f in report["files"]:
            for t in f["tensors"]:
                out[(f["component"], t["name"])] = t["xxh3"]
        return out

    want = hashes(model)
    assert len(want) > 900
    assert hashes(pulled) == want
    assert hashes("s3://models/chain/models--acme--chain--fp16.tar.zst", srv=moto) == want
    for target, srv in ((pulled, None),
                        ("s3://models/chain/models--acme--chain--fp16.tar.zst", moto)):
        proc = run("load", target, "--verify", "--json", srv=srv)
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert report["tensors"] == len(want)
        assert report["verify"] == {"tensors_checked": len(want), "mismatches": 0}
