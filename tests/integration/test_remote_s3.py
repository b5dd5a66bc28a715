"""CLI end to end on S3: moto's S3 with SigV4 checking on (API conformance: our signed requests are
accepted, a wrong secret is refused), and tools/range_server.py as an S3-compatible store (unsigned
requests, faults)."""

import json
import os
import subprocess
from pathlib import Path

import pytest

import servers

FLASHLOAD = os.environ.get("FLASHLOAD_BIN") or os.path.join(servers.REPO, "build", "flashload")
AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
            "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
            "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_NO_SIGN_REQUEST")


def run(*args, env_extra=None, home=None):
    env = {k: v for k, v in os.environ.items() if k not in AWS_VARS}
    env["HOME"] = str(home) if home else env.get("HOME", "/nonexistent")
    env.update(env_extra or {})
    return subprocess.run([FLASHLOAD, *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("s3-models")
    proc = run("gen", "tiny", str(root / "models" / "tiny"))
    assert proc.returncode == 0, proc.stderr
    return root


@pytest.fixture(scope="module")
def moto(model):
    with servers.moto_server() as srv:
        s3 = srv.client()
        s3.create_bucket(Bucket="weights")
        base = model / "models" / "tiny"
        for path in sorted(base.rglob("*")):
            if path.is_file():
                s3.upload_file(str(path), "weights", "sd/tiny/" + str(path.relative_to(base)))
        yield srv


def signed_env(srv, secret=None):
    return {"AWS_ACCESS_KEY_ID": srv.access_key,
            "AWS_SECRET_ACCESS_KEY": secret or srv.secret_key,
            "AWS_ENDPOINT_URL": srv.url, "AWS_REGION": srv.region}


def test_moto_accepts_our_signed_requests_for_a_whole_diffusers_prefix(moto):
    proc = run("load", "s3://weights/sd/tiny/", "--json", "--verify", env_extra=signed_env(moto))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert {f["component"] for f in report["files"]} == {"unet", "vae", "text_encoder"}
    assert report["verify"]["mismatches"] == 0 and report["verify"]["tensors_checked"] > 0


def test_moto_refuses_a_wrong_secret_and_the_secret_is_never_printed(moto):
    wrong = "wrongSECRETwrongSECRETwrongSECRETwrongSEC"
    proc = run("load", "s3://weights/sd/tiny/", env_extra=signed_env(moto, secret=wrong))
    assert proc.returncode == 1
    assert "SignatureDoesNotMatch" in proc.stderr, proc.stderr
    assert wrong not in proc.stderr and moto.secret_key not in proc.stderr
    assert proc.stdout == ""


def test_credentials_from_a_profile_in_the_aws_files(moto, tmp_path):
    aws = tmp_path / ".aws"
    aws.mkdir()
    (aws / "credentials").write_text(
        f"[bench]\naws_access_key_id = {moto.access_key}\n"
        f"aws_secret_access_key = {moto.secret_key}\n")
    (aws / "config").write_text(f"[profile bench]\nregion = {moto.region}\n"
                                f"endpoint_url = {moto.url}\n")
    proc = run("inspect", "s3://weights/sd/tiny/vae/diffusion_pytorch_model.safetensors",
               "--json", env_extra={"AWS_PROFILE": "bench"}, home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["tensors"]


def test_a_missing_object_and_a_missing_bucket_are_named(moto):
    proc = run("load", "s3://weights/sd/nope.safetensors", env_extra=signed_env(moto))
    assert proc.returncode == 1 and "NOT_FOUND" in proc.stderr, proc.stderr
    proc = run("load", "s3://no-such-bucket/x/", env_extra=signed_env(moto))
    assert proc.returncode == 1 and "no-such-bucket" in proc.stderr, proc.stderr


def test_an_empty_prefix_says_nothing_is_there(moto):
    proc = run("load", "s3://weights/nothing/", env_extra=signed_env(moto))
    assert proc.returncode == 1 and "no such file or folder" in proc.stderr, proc.stderr


def test_anonymous_range_server_with_faults_gives_identical_bytes(model):
    with servers.range_server(model, faults="reset:every=4,slowdown:every=7") as srv:
        proc = run("load", "s3://models/tiny/", "--json", "--verify", "--range-mib", "1",
                   "--endpoint", srv.url, "--anonymous", "--addressing", "path",
                   "--attempts", "8")
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert report["verify"]["mismatches"] == 0
        assert srv.stats()["faults_injected"] > 0


def test_an_object_replaced_mid_load_is_an_error(model):
    with servers.range_server(model, faults="etag-change:after=3") as srv:
        proc = run("load", "s3://models/tiny/unet/diffusion_pytorch_model.safetensors",
                   "--range-mib", "1", "--endpoint", srv.url, "--anonymous")
        assert proc.returncode == 1
        assert "changed" in proc.stderr and "ETag" in proc.stderr, proc.stderr


def test_a_prefix_listed_over_many_pages_resolves_the_same_model(model):
    """Two keys per ListObjectsV2 page: the client must follow every continuation token. The same
    load costs exactly one request per extra page more than with one page."""
    keys = sum(1 for p in (model / "models" / "tiny").rglob("*") if p.is_file())
    assert keys > 4

    def load_counting_requests(**options):
        with servers.range_server(model, **options) as srv:
            before = srv.stats()["requests"]
            proc = run("load", "s3://models/tiny/", "--json", "--verify", "--endpoint", srv.url,
                       "--anonymous")
            assert proc.returncode == 0, proc.stderr
            report = json.loads(proc.stdout)
            assert {f["component"] for f in report["files"]} == {"unet", "vae", "text_encoder"}
            assert report["verify"]["mismatches"] == 0
            return srv.stats()["requests"] - before

    one_page = load_counting_requests()
    two_per_page = load_counting_requests(page_keys=2)
    assert two_per_page - one_page == (keys + 1) // 2 - 1
