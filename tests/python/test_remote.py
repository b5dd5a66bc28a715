"""URIs through the Python API: http(s):// and s3:// objects and prefixes served by
tools/range_server.py on 127.0.0.1 give the same tensors as the local files, and a lazy safe_open()
reads only what get_slice() needs over the network too."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy as ref_np

import flashload
import flashload.numpy as fl_np
from flashload import SafetensorError, safe_open

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
import servers  # noqa: E402


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote")
    rng = np.random.default_rng(7)
    model = root / "bucket" / "model"
    for component, n in (("unet", 12), ("vae", 5)):
        (model / component).mkdir(parents=True)
        tensors = {f"{component}.w{i}": rng.standard_normal((64 + i, 96)).astype(np.float16)
                   for i in range(n)}
        ref_np.save_file(tensors, str(model / component / "diffusion_pytorch_model.safetensors"))
    (model / "model_index.json").write_text(
        '{"unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}')
    return root


@pytest.fixture(scope="module")
def server(root):
    with servers.range_server(root) as srv:
        yield srv


def local(root, component):
    return str(root / "bucket" / "model" / component / "diffusion_pytorch_model.safetensors")


def assert_same(got, want):
    assert list(got) == list(want)
    for name in want:
        assert got[name].dtype == want[name].dtype and got[name].shape == want[name].shape
        assert np.array_equal(got[name], want[name])


@pytest.fixture
def s3_env(server, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
    monkeypatch.setenv("AWS_NO_SIGN_REQUEST", "true")


def test_load_file_over_http_equals_the_local_file(root, server):
    url = server.object_url("bucket", "model/unet/diffusion_pytorch_model.safetensors")
    assert_same(fl_np.load_file(url), ref_np.load_file(local(root, "unet")))


def test_lazy_safe_open_over_http_reads_only_the_slice(root, server):
    url = server.object_url("bucket", "model/unet/diffusion_pytorch_model.safetensors")
    want = ref_np.load_file(local(root, "unet"))
    with safe_open(url, "np") as f:
        assert f.keys() == sorted(want)
        part = f.get_slice("unet.w3")[10:12]
        assert np.array_equal(part, want["unet.w3"][10:12])
        assert f._file.bytes_read == 2 * 96 * 2, "two rows of 96 fp16 values"
        assert np.array_equal(f.get_tensor("unet.w0"), want["unet.w0"])


def test_s3_object_and_prefix_through_the_environment(root, s3_env):
    assert_same(fl_np.load_file("s3://bucket/model/vae/diffusion_pytorch_model.safetensors"),
                ref_np.load_file(local(root, "vae")))
    components = flashload.load_model_dir("s3://bucket/model/", framework="np")
    assert sorted(components) == ["unet", "vae"]
    for component in ("unet", "vae"):
        assert_same(components[component], ref_np.load_file(local(root, component)))


def test_missing_remote_object_raises_naming_it(server, s3_env):
    with pytest.raises((SafetensorError, FileNotFoundError), match="nope"):
        fl_np.load_file("s3://bucket/model/nope.safetensors")


# Regression: a password in a URL reached the exception text of errors raised during a load (the
# ones raised while opening were already redacted).
SECRETS = ("PASSWORD-4e1f", "SIG-90ab", "alice")


def secret_url(server, key):
    host = server.url.split("://", 1)[1]
    return ("http://alice:PASSWORD-4e1f@%s/bucket/model/%s?X-Amz-Signature=SIG-90ab&v=1" % (host, key),
            "http://%s/bucket/model/%s?X-Amz-Signature=<redacted>&v=1" % (host, key))


def assert_redacted(error, shown):
    text = str(error)
    assert shown in text, text
    for secret in SECRETS:
        assert secret not in text, text


def test_exceptions_show_urls_without_their_credentials(server):
    url, shown = secret_url(server, "unet/nope.safetensors")
    with pytest.raises(FileNotFoundError) as e:
        fl_np.load_file(url)
    assert_redacted(e.value, shown)

    url, shown = secret_url(server, "unet/diffusion_pytorch_model.safetensors")
    with safe_open(url, "np") as f:
        with pytest.raises(SafetensorError) as e:
            f.get_slice("unet.nope")
        assert_redacted(e.value, "File %s does not contain tensor unet.nope" % shown)

    # An error during the load itself: a file larger than the opening GET's 1 MiB, whose ETag
    # changes after that GET, so the next range fails (412).
    big = Path(server.root) / "bucket" / "model" / "big"
    big.mkdir(exist_ok=True)
    ref_np.save_file({"w": np.arange(3 << 20, dtype=np.uint8).reshape(3, -1)},
                     str(big / "model.safetensors"))
    url, shown = secret_url(server, "big/model.safetensors")
    server.control("etag-change:after=1:path=big")
    try:
        with pytest.raises(SafetensorError) as e:
            fl_np.load_file(url)
        assert "object changed during the load" in str(e.value)
        assert_redacted(e.value, "reading %s at byte offset" % shown)
    finally:
        server.control("")
    assert flashload._core.redact_url(url) == shown
