"""Loading straight out of archives through the CLI: `flashload load/inspect/validate` on a .tar
made by GNU tar, on a zstd seekable .tar.zst made by the writer below (independent zstd frames cut
at every tar header and every FRAME bytes, a seek table in a skippable frame) and on archives made
by `flashload pack`, locally, over HTTP (tools/range_server.py) and on S3 (moto, SigV4 checked).
The tensors saved from an archive (--save) equal, byte for byte, those saved from the unpacked
folder; a plain (not seekable) .tar.zst and a damaged one are clear errors.
"""

import json
import os
import struct
import subprocess
import tarfile

import pytest

import servers

FLASHLOAD = os.environ.get("FLASHLOAD_BIN") or os.path.join(servers.REPO, "build", "flashload")
FRAME = 256 << 10


def run(*args):
    return subprocess.run([FLASHLOAD, *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def ok(*args):
    proc = run(*args)
    assert proc.returncode == 0, f"flashload {args}: {proc.stdout}\n{proc.stderr}"
    return proc


def _xxh64_low32(data):
    """The low 32 bits of XXH64(data, seed 0), or None without the xxhash package (the table is
    then written without checksums, which the format allows)."""
    try:
        import xxhash
    except ImportError:
        return None
    return xxhash.xxh64_intdigest(data) & 0xFFFFFFFF


def write_seekable(tar_path, out_path, frame=FRAME):
    """Compresses `tar_path` as a zstd seekable stream: a frame starts at every member's header and
    every `frame` bytes of data; each frame is one `zstd` run."""
    data = open(tar_path, "rb").read()
    cuts = set()
    with tarfile.open(tar_path) as tf:
        for m in tf.getmembers():
            cuts.add(m.offset)
            for at in range(m.offset_data, m.offset_data + m.size, frame):
                cuts.add(at)
    cuts = sorted(c for c in cuts | {0} if c < len(data)) + [len(data)]
    entries, checksums = [], []
    with open(out_path, "wb") as out:
        for begin, end in zip(cuts, cuts[1:]):
            piece = data[begin:end]
            comp = subprocess.run(["zstd", "-q", "-1", "-c"], input=piece, capture_output=True,
                                  check=True).stdout
            out.write(comp)
            entries.append((len(comp), len(piece)))
            checksums.append(_xxh64_low32(piece))
        with_sums = all(c is not None for c in checksums)
        body = b"".join(struct.pack("<II", c, d) + (struct.pack("<I", s) if with_sums else b"")
                        for (c, d), s in zip(entries, checksums))
        body += struct.pack("<IBI", len(entries), 0x80 if with_sums else 0, 0x8F92EAB1)
        out.write(struct.pack("<II", 0x184D2A5E, len(body)) + body)
    return len(entries)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("archives")
    tiny = root / "folder" / "tiny"
    ok("gen", "tiny", tiny)
    bucket = root / "http" / "models"
    bucket.mkdir(parents=True)
    paths = {"folder": tiny}
    for fmt in ("gnu", "pax"):
        path = bucket / f"tiny-{fmt}.tar"
        subprocess.run(["tar", f"--format={fmt}", "-cf", path, "-C", tiny, "."], check=True)
        paths[fmt] = path
    paths["zst"] = bucket / "models--org--tiny--fp32.tar.zst"
    assert write_seekable(paths["gnu"], paths["zst"]) > 4
    # A plain zstd stream of the same tar: not seekable.
    paths["plain"] = bucket / "plain.tar.zst"
    subprocess.run(["zstd", "-q", "-f", paths["gnu"], "-o", paths["plain"]], check=True)
    return root, paths


def saved(tmp_path, source, name, *extra):
    out = tmp_path / f"{name}.safetensors"
    proc = ok("load", source, "--json", "--save", out, *extra)
    return json.loads(proc.stdout), open(out, "rb").read()


@pytest.mark.parametrize("kind", ["gnu", "pax", "zst"])
def test_local_archive_loads_the_same_tensors_as_the_folder(models, tmp_path, kind):
    _, paths = models
    want_report, want = saved(tmp_path, paths["folder"], "folder")
    report, got = saved(tmp_path, paths[kind], kind)
    assert report["tensors"] == want_report["tensors"] > 0
    assert got == want
    assert all(f["path"].startswith("tar:/") for f in report["files"]), report["files"]


@pytest.mark.parametrize("fmt", ["tar.zst", "tar"])
def test_archive_written_by_flashload_pack_loads_the_same_tensors(models, tmp_path, fmt):
    _, paths = models
    _, want = saved(tmp_path, paths["folder"], "folder")
    archive = tmp_path / f"packed.{fmt}"
    ok("pack", paths["folder"], "-o", archive, "--frame-mib", "1", "--quiet")
    _, got = saved(tmp_path, archive, "packed")
    assert got == want


def test_inspect_and_validate_read_the_archive(models):
    _, paths = models
    folder = json.loads(ok("inspect", paths["folder"], "--json").stdout)
    for kind in ("gnu", "zst"):
        got = json.loads(ok("inspect", paths[kind], "--json").stdout)
        assert got["tensors"] == folder["tensors"]
        proc = ok("validate", paths[kind])
        assert proc.returncode == 0


def test_archive_over_http_loads_the_same_tensors(models, tmp_path):
    root, paths = models
    _, want = saved(tmp_path, paths["folder"], "folder")
    with servers.range_server(root / "http") as srv:
        for kind in ("gnu", "zst"):
            url = srv.object_url("models", paths[kind].name)
            report, got = saved(tmp_path, url, kind)
            assert got == want, kind
            assert report["files"][0]["path"].startswith("tar:http://"), report["files"][0]
        url = srv.object_url("models", paths["zst"].name)
        got = json.loads(ok("inspect", url, "--json").stdout)
        assert got["tensors"]


AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
            "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
            "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_NO_SIGN_REQUEST")


def test_archive_on_s3_loads_the_same_tensors(models, tmp_path):
    _, paths = models
    _, want = saved(tmp_path, paths["folder"], "folder")
    with servers.moto_server() as srv:
        s3 = srv.client()
        s3.create_bucket(Bucket="weights")
        s3.upload_file(str(paths["zst"]), "weights", "archives/" + paths["zst"].name)
        env = {k: v for k, v in os.environ.items() if k not in AWS_VARS}
        env.update({"AWS_ACCESS_KEY_ID": srv.access_key, "AWS_SECRET_ACCESS_KEY": srv.secret_key,
                    "AWS_ENDPOINT_URL": srv.url, "AWS_REGION": srv.region,
                    "HOME": str(tmp_path)})
        out = tmp_path / "s3.safetensors"
        uri = "s3://weights/archives/" + paths["zst"].name
        proc = subprocess.run([FLASHLOAD, "load", uri, "--json", "--save", str(out)],
                              capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr
        assert out.read_bytes() == want
        files = json.loads(proc.stdout)["files"]
        assert files[0]["path"].startswith("tar:s3://weights/archives/"), files[0]


def test_plain_zstd_archive_is_refused_in_place_with_what_to_do(models):
    """inspect needs random access, which a plain zstd stream has not: refused, saying what to do
    (`load` streams such an archive instead: test_stream_load.py)."""
    _, paths = models
    proc = run("inspect", paths["plain"])
    assert proc.returncode == 1
    assert "not in the zstd seekable format" in proc.stderr and "flashload unpack" in proc.stderr


def test_damaged_frame_is_data_loss_naming_the_frame(models, tmp_path):
    _, paths = models
    data = bytearray(open(paths["zst"], "rb").read())
    mid = len(data) // 2
    data[mid:mid + 8] = bytes(b ^ 0x55 for b in data[mid:mid + 8])
    damaged = tmp_path / "damaged.tar.zst"
    damaged.write_bytes(bytes(data))
    proc = run("load", damaged)
    assert proc.returncode == 1
    assert "DATA_LOSS" in proc.stderr and "zstd frame" in proc.stderr, proc.stderr
