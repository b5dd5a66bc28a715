"""servers.moto_server(): moto on loopback with SigV4 checking on, gone afterwards."""

import socket
import urllib.error
import urllib.request

import pytest

import servers

boto3 = pytest.importorskip("boto3")  # moto's own dependency; absent only without moto
from botocore.exceptions import ClientError  # noqa: E402


def error_of(call):
    with pytest.raises(ClientError) as info:
        call()
    response = info.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def test_signed_requests_work_and_bad_signatures_are_refused():
    with servers.moto_server() as moto:
        assert moto.url.startswith("http://127.0.0.1:")
        s3 = moto.client()
        s3.create_bucket(Bucket="flashload-test")
        s3.put_object(Bucket="flashload-test", Key="k", Body=b"0123456789")
        got = s3.get_object(Bucket="flashload-test", Key="k", Range="bytes=2-5")
        assert got["Body"].read() == b"2345"
        assert got["ContentRange"] == "bytes 2-5/10"

        wrong_secret = moto.client(secret_key=moto.secret_key + "x")
        assert error_of(lambda: wrong_secret.get_object(Bucket="flashload-test", Key="k")) == (
            403, "SignatureDoesNotMatch")
        unknown_key = moto.client(access_key="AKIA" + "Z" * 16, secret_key="x")
        assert error_of(lambda: unknown_key.list_objects_v2(Bucket="flashload-test")) == (
            403, "InvalidAccessKeyId")
        with pytest.raises(urllib.error.HTTPError) as info:  # unsigned
            urllib.request.urlopen(moto.url + "/flashload-test/k", timeout=10)
        assert info.value.code == 403
        proc, port = moto.proc, moto.port
    assert proc.poll() is not None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
