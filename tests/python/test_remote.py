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
