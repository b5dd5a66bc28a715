"""tools/range_server.py, as a plain HTTP client sees it (http.client, urllib, raw sockets)."""

import http.client
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import pytest

import servers

S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
BUCKET = "models"
KEY = "org/model.safetensors"
SIZE = 1 << 20


def positional_bytes(size, seed=0):
    """Bytes whose every 8-byte word holds its own offset (xor seed): a misplaced byte shows."""
    words = (size + 7) // 8
    data = struct.pack("<%dQ" % words, *((i * 8) ^ seed for i in range(words)))
    return data[:size]


@pytest.fixture
def root(tmp_path):
    bucket = tmp_path / BUCKET
    (bucket / "org").mkdir(parents=True)
    (bucket / KEY).write_bytes(positional_bytes(SIZE))
    (bucket / "empty.bin").write_bytes(b"")
    return tmp_path


@pytest.fixture
def server(root):
    with servers.range_server(root) as srv:
        yield srv


def request(srv, method, path, headers=None, body=None):
    """One request on a fresh connection; returns (status, headers dict, body bytes)."""
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        conn.close()


def raw_get(srv, path, headers=""):
    """A GET over a raw socket (Connection: close), read to the end; returns (header bytes, body
    bytes, the error that ended the reading or None for a clean close)."""
    sock = socket.create_connection((srv.host, srv.port), timeout=30)
    sock.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s\r\n" %
                  (path, headers)).encode())
    data = b""
    error = None
    try:
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    except OSError as e:
        error = e
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body, error


def xml_code(body):
    return ET.fromstring(body).findtext("Code")


# --- start-up and shutdown ----------------------------------------------------------------------


def test_prints_listening_line_and_binds_loopback_only(root, tmp_path):
    port_file = tmp_path / "port"
    proc = subprocess.Popen([sys.executable, servers.RANGE_SERVER, "--root", str(root), "--port-file",
                             str(port_file), "--quiet"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        port = int(port_file.read_text())
        assert line == "listening 127.0.0.1:%d\n" % port
        # /proc/net/tcp lists listening sockets (state 0A) as HEXADDR:HEXPORT.
        with open("/proc/net/tcp") as f:
            listeners = [row.split()[1] for row in list(f)[1:] if row.split()[3] == "0A"]
        ours = [addr for addr in listeners if int(addr.split(":")[1], 16) == port]
        assert ours == ["0100007F:%04X" % port]
        with open("/proc/net/tcp6") as f:
            assert not [r for r in list(f)[1:]
                        if r.split()[3] == "0A" and int(r.split()[1].split(":")[1], 16) == port]
        proc.terminate()
        assert proc.wait(10) == 0  # SIGTERM is a clean exit
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.1", "localhost"])
def test_refuses_any_host_but_loopback(root, host):
    result = subprocess.run([sys.executable, servers.RANGE_SERVER, "--root", str(root), "--host",
                             host], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "127.0.0.1" in result.stderr
    assert "listening" not in result.stdout


def test_server_is_gone_after_the_context_manager(root):
    with servers.range_server(root) as srv:
        proc, port = srv.proc, srv.port
        assert request(srv, "HEAD", "/%s/%s" % (BUCKET, KEY))[0] == 200
    assert proc.poll() is not None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_server_is_gone_when_the_block_raises(root):
    with pytest.raises(RuntimeError, match="test failure"):
        with servers.range_server(root) as srv:
            proc = srv.proc
            raise RuntimeError("test failure")
    assert proc.poll() is not None


def test_startup_failure_is_reported(tmp_path):
    with pytest.raises(servers.ServerError, match="not a folder"):
        with servers.range_server(tmp_path / "missing"):
            pass


# --- objects and ranges -------------------------------------------------------------------------


def test_whole_object_and_headers(server):
    status, headers, body = request(server, "GET", "/%s/%s" % (BUCKET, KEY))
    assert status == 200
    assert body == positional_bytes(SIZE)
    assert headers["content-length"] == str(SIZE)
    assert headers["accept-ranges"] == "bytes"
    assert headers["etag"].startswith('"') and headers["etag"].endswith('"')
    assert "last-modified" in headers
    assert "content-range" not in headers


@pytest.mark.parametrize("spec,start,end", [
    ("bytes=0-0", 0, 0),
    ("bytes=100-4195", 100, 4195),
    ("bytes=1000-", 1000, SIZE - 1),
    ("bytes=-4096", SIZE - 4096, SIZE - 1),
    ("bytes=%d-%d" % (SIZE - 10, SIZE + 5000), SIZE - 10, SIZE - 1),
    ("bytes=-%d" % (SIZE * 2), 0, SIZE - 1),
])
def test_ranges(server, spec, start, end):
    status, headers, body = request(server, "GET", "/%s/%s" % (BUCKET, KEY), {"Range": spec})
    assert status == 206
    assert headers["content-range"] == "bytes %d-%d/%d" % (start, end, SIZE)
    assert headers["content-length"] == str(end - start + 1)
    assert body == positional_bytes(SIZE)[start:end + 1]


@pytest.mark.parametrize("spec", ["bytes=%d-" % SIZE, "bytes=%d-%d" % (SIZE + 1, SIZE + 9),
                                  "bytes=-0"])
def test_unsatisfiable_range_is_416(server, spec):
    status, headers, body = request(server, "GET", "/%s/%s" % (BUCKET, KEY), {"Range": spec})
    assert status == 416
    assert headers["content-range"] == "bytes */%d" % SIZE
    assert xml_code(body) == "InvalidRange"


def test_range_on_empty_object_is_416_and_whole_is_empty(server):
    status, headers, _ = request(server, "GET", "/%s/empty.bin" % BUCKET, {"Range": "bytes=0-9"})
    assert (status, headers["content-range"]) == (416, "bytes */0")
    status, headers, body = request(server, "GET", "/%s/empty.bin" % BUCKET)
    assert (status, headers["content-length"], body) == (200, "0", b"")


def test_invalid_range_header_is_ignored(server):
    for spec in ("bytes=9-3", "items=0-5", "bytes=0-1,4-5"):
        status, _, body = request(server, "GET", "/%s/%s" % (BUCKET, KEY), {"Range": spec})
        assert (status, len(body)) == (200, SIZE), spec


def test_head_has_headers_but_no_body(server):
    status, headers, body = request(server, "HEAD", "/%s/%s" % (BUCKET, KEY))
    assert (status, headers["content-length"], body) == (200, str(SIZE), b"")
    _, get_headers, _ = request(server, "GET", "/%s/%s" % (BUCKET, KEY), {"Range": "bytes=0-0"})
    assert headers["etag"] == get_headers["etag"]


def test_many_ranges_on_one_keep_alive_connection(server):
    data = positional_bytes(SIZE)
    before = server.stats()
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        for i in range(20):
            start = (i * 48271) % SIZE
            length = 1 + (i * 7919) % 100000
            conn.request("GET", "/%s/%s" % (BUCKET, KEY),
                         headers={"Range": "bytes=%d-%d" % (start, start + length - 1)})
            response = conn.getresponse()
            assert response.status == 206
            assert response.read() == data[start:start + length]
    finally:
        conn.close()
    stats = server.stats()
    # Accepted connections, not concurrent ones: the server may still be closing the keep-alive
    # connection when the statistics request arrives on its own.
    assert stats["connections"] - before["connections"] == 2  # all 20 requests, then /__stats
    assert stats["requests"] - before["requests"] == 21


def test_url_encoded_keys(root, server):
    (root / BUCKET / "a b+c.bin").write_bytes(b"spaced")
    status, _, body = request(server, "GET", "/%s/a%%20b%%2Bc.bin" % BUCKET)
    assert (status, body) == (200, b"spaced")


def test_missing_key_and_bucket_are_404_with_s3_codes(server):
    status, headers, body = request(server, "GET", "/%s/nope.bin" % BUCKET)
    assert (status, xml_code(body)) == (404, "NoSuchKey")
    assert headers["content-type"] == "application/xml"
    status, _, body = request(server, "GET", "/nobucket/x")
    assert (status, xml_code(body)) == (404, "NoSuchBucket")
    status, _, body = request(server, "GET", "/%s/org" % BUCKET)  # a folder is no object
    assert (status, xml_code(body)) == (404, "NoSuchKey")


@pytest.mark.parametrize("path", ["/%s/../%s/%s" % (BUCKET, BUCKET, KEY), "/%s/%%2e%%2e/secret" % BUCKET,
                                  "/%s/org/%%2E%%2E/%%2E%%2E/secret" % BUCKET, "/../secret"])
def test_dot_dot_escapes_are_400(root, server, path):
    (root / "secret").write_bytes(b"do not serve")
    status, _, body = request(server, "GET", path)
    assert status == 400
    assert b"do not serve" not in body


def test_symlink_out_of_root_is_refused(root, server, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "secret"
    outside.write_bytes(b"do not serve")
    os.symlink(outside, root / BUCKET / "link")
    status, _, body = request(server, "GET", "/%s/link" % BUCKET)
    assert status == 400
    assert b"do not serve" not in body


# --- ETag and If-Match --------------------------------------------------------------------------


def test_etag_is_stable_and_changes_when_the_file_is_replaced(root, server):
    path = "/%s/%s" % (BUCKET, KEY)
    etag = request(server, "HEAD", path)[1]["etag"]
    assert request(server, "HEAD", path)[1]["etag"] == etag
    replacement = root / BUCKET / "org" / "new"
    replacement.write_bytes(positional_bytes(SIZE, seed=1))  # same size
    os.replace(replacement, root / BUCKET / KEY)
    new_etag = request(server, "HEAD", path)[1]["etag"]
    assert new_etag != etag
    status, _, body = request(server, "GET", path, {"If-Match": etag, "Range": "bytes=0-7"})
    assert (status, xml_code(body)) == (412, "PreconditionFailed")
    status, _, body = request(server, "GET", path, {"If-Match": new_etag, "Range": "bytes=0-7"})
    assert (status, body) == (206, positional_bytes(8, seed=1))


def test_if_match(server):
    path = "/%s/%s" % (BUCKET, KEY)
    etag = request(server, "HEAD", path)[1]["etag"]
    assert request(server, "GET", path, {"If-Match": etag})[0] == 200
    assert request(server, "GET", path, {"If-Match": "*"})[0] == 200
    assert request(server, "GET", path, {"If-Match": '"x", %s' % etag})[0] == 200
    status, headers, body = request(server, "GET", path, {"If-Match": '"0123"'})
    assert (status, xml_code(body)) == (412, "PreconditionFailed")
    assert request(server, "HEAD", path, {"If-Match": '"0123"'})[0] == 412


def test_authorization_header_is_ignored(server):
    auth = ("AWS4-HMAC-SHA256 Credential=AKIA/20240101/us-east-1/s3/aws4_request, "
            "SignedHeaders=host, Signature=00")
    status, _, body = request(server, "GET", "/%s/%s" % (BUCKET, KEY),
                              {"Authorization": auth, "Range": "bytes=0-15"})
    assert (status, body) == (206, positional_bytes(16))


# --- listing ------------------------------------------------------------------------------------


def list_page(srv, query):
    status, headers, body = request(srv, "GET", "/%s?list-type=2&%s" % (BUCKET, query))
    assert status == 200, body
    return ET.fromstring(body)


@pytest.fixture
def listing_root(root):
    names = ["b/x.bin", "a/1.bin", "a/2.bin", "c.bin", "a/sub/3.bin", "odd & <name>.bin"]
    for i, name in enumerate(names):
        path = root / BUCKET / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * (i + 1))
    return root


def test_listing_is_sorted_with_sizes_and_etags(listing_root, server):
    page = list_page(server, "")
    keys = [c.findtext(S3_NS + "Key") for c in page.iter(S3_NS + "Contents")]
    expected = sorted(["b/x.bin", "a/1.bin", "a/2.bin", "c.bin", "a/sub/3.bin", "odd & <name>.bin",
                       KEY, "empty.bin"])
    assert keys == expected
    assert page.findtext(S3_NS + "Name") == BUCKET
    assert page.findtext(S3_NS + "KeyCount") == str(len(expected))
    assert page.findtext(S3_NS + "MaxKeys") == "1000"
    assert page.findtext(S3_NS + "IsTruncated") == "false"
    for contents in page.iter(S3_NS + "Contents"):
        key = contents.findtext(S3_NS + "Key")
        _, headers, _ = request(server, "HEAD", "/%s/%s" % (BUCKET, urllib.request.quote(key)))
        assert contents.findtext(S3_NS + "Size") == headers["content-length"]
        assert contents.findtext(S3_NS + "ETag") == headers["etag"]
        assert contents.findtext(S3_NS + "StorageClass") == "STANDARD"
        assert contents.findtext(S3_NS + "LastModified").endswith("Z")


def test_listing_prefix_and_delimiter(listing_root, server):
    page = list_page(server, "prefix=a/")
    assert [c.findtext(S3_NS + "Key") for c in page.iter(S3_NS + "Contents")] == [
        "a/1.bin", "a/2.bin", "a/sub/3.bin"]
    assert page.findtext(S3_NS + "Prefix") == "a/"
    page = list_page(server, "prefix=a/&delimiter=/")
    assert [c.findtext(S3_NS + "Key") for c in page.iter(S3_NS + "Contents")] == ["a/1.bin",
                                                                                  "a/2.bin"]
    assert [p.findtext(S3_NS + "Prefix") for p in page.iter(S3_NS + "CommonPrefixes")] == ["a/sub/"]


def test_listing_pagination_returns_every_key_once(listing_root, server):
    keys = []
    token = None
    pages = 0
    while True:
        query = "max-keys=3" + ("&continuation-token=" + urllib.request.quote(token) if token else "")
        page = list_page(server, query)
        pages += 1
        batch = [c.findtext(S3_NS + "Key") for c in page.iter(S3_NS + "Contents")]
        assert page.findtext(S3_NS + "KeyCount") == str(len(batch))
        assert len(batch) <= 3
        keys += batch
        if page.findtext(S3_NS + "IsTruncated") == "false":
            assert page.find(S3_NS + "NextContinuationToken") is None
            break
        token = page.findtext(S3_NS + "NextContinuationToken")
        assert token
    assert pages == 3  # 8 keys, 3 per page
    assert keys == sorted(set(keys)) and len(keys) == 8


def test_listing_of_missing_bucket_is_404(server):
    status, _, body = request(server, "GET", "/nobucket?list-type=2")
    assert (status, xml_code(body)) == (404, "NoSuchBucket")


# --- faults -------------------------------------------------------------------------------------


def statuses(srv, n, path="/%s/%s" % (BUCKET, KEY), headers=None):
    return [request(srv, "GET", path, headers or {"Range": "bytes=0-99"})[0] for _ in range(n)]


def test_status_fault_every_k(server):
    server.control("status=500:every=3")
    assert statuses(server, 7) == [206, 206, 500, 206, 206, 500, 206]
    assert request(server, "GET", "/%s/%s" % (BUCKET, KEY))[0] == 200  # the 8th: not faulted
    server.control("status=503:first=1")
    status, _, body = request(server, "GET", "/%s/%s" % (BUCKET, KEY))
    assert (status, xml_code(body)) == (503, "ServiceUnavailable")
    stats = server.stats()
    assert stats["faults_by_kind"]["status"] == 3
    assert stats["faults_injected"] == 3


def test_status_fault_body_is_s3_xml(server):
    server.control("status=500")
    status, headers, body = request(server, "GET", "/%s/%s" % (BUCKET, KEY))
    assert (status, xml_code(body)) == (500, "InternalError")
    assert headers["content-length"] == str(len(body))


def test_slowdown_first_k(server):
    server.control("slowdown:first=2")
    status, _, body = request(server, "GET", "/%s/%s" % (BUCKET, KEY))
    assert (status, xml_code(body)) == (503, "SlowDown")
    assert statuses(server, 3) == [503, 206, 206]


def test_faults_never_touch_control_and_stats(server):
    server.control("status=500,slowdown")
    assert server.stats()["faults_injected"] == 0
    assert statuses(server, 1) == [500]
    assert server.control("")["faults"] == []
    assert statuses(server, 1) == [206]


def test_bad_fault_spec_is_refused(server):
    for spec in ("explode", "status=abc", "reset:every=0", "etag-change", "short:first=1:every=2",
                 "reset:when=3"):
        with pytest.raises(urllib.error.HTTPError) as info:
            server.control(spec)
        assert info.value.code == 400, spec
    assert statuses(server, 2) == [206, 206]  # the previous (empty) rules stay


def test_bad_fault_spec_at_startup_fails(root):
    with pytest.raises(servers.ServerError, match="unknown kind"):
        with servers.range_server(root, faults="explode"):
            pass


def test_faults_from_the_command_line(root):
    with servers.range_server(root, faults="status=500:first=1") as srv:
        assert statuses(srv, 2) == [500, 206]


def test_path_filter(root, server):
    (root / BUCKET / "other.bin").write_bytes(b"o" * 100)
    server.control("status=500:path=other")
    assert statuses(server, 2) == [206, 206]
    assert statuses(server, 2, path="/%s/other.bin" % BUCKET) == [500, 500]


def test_reset_sends_half_then_rst(server):
    server.control("reset:every=2")
    head, body, error = raw_get(server, "/%s/%s" % (BUCKET, KEY))
    assert head.startswith(b"HTTP/1.1 200")
    assert (error, body) == (None, positional_bytes(SIZE))  # the 1st request is not faulted
    head, body, error = raw_get(server, "/%s/%s" % (BUCKET, KEY))
    assert head.startswith(b"HTTP/1.1 200")
    assert isinstance(error, ConnectionResetError)
    assert b"Content-Length: %d" % SIZE in head
    assert len(body) < SIZE
    assert body == positional_bytes(SIZE)[:len(body)]  # what did arrive is intact
    assert server.stats()["faults_by_kind"]["reset"] == 1


def test_reset_seen_by_http_client(server):
    server.control("reset")
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        conn.request("GET", "/%s/%s" % (BUCKET, KEY))
        response = conn.getresponse()
        with pytest.raises((ConnectionResetError, http.client.IncompleteRead)):
            response.read()
    finally:
        conn.close()


def test_short_declares_full_length_and_closes(server):
    server.control("short:every=1")
    head, body, error = raw_get(server, "/%s/%s" % (BUCKET, KEY),
                                "Range: bytes=1000-200999\r\n")
    assert head.startswith(b"HTTP/1.1 206")
    assert b"Content-Length: 200000" in head
    assert error is None  # a clean close (FIN), just early
    assert 0 < len(body) < 200000
    assert body == positional_bytes(SIZE)[1000:1000 + len(body)]
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        conn.request("GET", "/%s/%s" % (BUCKET, KEY))
        with pytest.raises(http.client.IncompleteRead):
            conn.getresponse().read()
    finally:
        conn.close()


def test_ignore_range(server):
    server.control("ignore-range")
    status, headers, body = request(server, "GET", "/%s/%s" % (BUCKET, KEY),
                                    {"Range": "bytes=10-19"})
    assert status == 200
    assert "content-range" not in headers
    assert body == positional_bytes(SIZE)
    assert server.stats()["faults_by_kind"]["ignore-range"] == 1


def test_shift_range(server):
    server.control("shift-range")
    status, headers, body = request(server, "GET", "/%s/%s" % (BUCKET, KEY),
                                    {"Range": "bytes=10-19"})
    assert status == 206
    assert headers["content-range"] == "bytes 11-19/%d" % SIZE
    assert body == positional_bytes(SIZE)[11:20]
    assert server.stats()["faults_by_kind"]["shift-range"] == 1


def test_redirect_to_another_loopback_address_and_the_headers_received(root):
    with servers.range_server(root, host="127.0.0.2") as other, \
            servers.range_server(root, redirect_to=other.url, redirect_status=307) as first:
        assert other.url.startswith("http://127.0.0.2:")
        path = "/%s/%s?x=1" % (BUCKET, KEY)
        status, headers, _ = request(first, "GET", path, {"X-Api-Key": "k1"})
        assert status == 307 and headers["location"] == other.url + path
        status, _, body = request(other, "GET", path, {"X-Api-Key": "k2"})
        assert status == 200 and body == positional_bytes(SIZE)
        assert first.stats()["redirects"] == 1 and other.stats()["redirects"] == 0
        assert ["X-Api-Key", "k1"] in first.stats()["request_headers"][-1]
        assert ["X-Api-Key", "k2"] in other.stats()["request_headers"][-1]
        first.redirect_to("")
        assert request(first, "GET", path)[0] == 200


def test_etag_change_after_n(server):
    server.control("etag-change:after=2")
    path = "/%s/%s" % (BUCKET, KEY)
    etags = [request(server, "GET", path, {"Range": "bytes=0-0"})[1]["etag"] for _ in range(3)]
    assert etags[0] == etags[1] != etags[2]
    status, _, body = request(server, "GET", path, {"If-Match": etags[0]})
    assert (status, xml_code(body)) == (412, "PreconditionFailed")
    assert request(server, "HEAD", path)[1]["etag"] == etags[2]
    assert server.stats()["faults_by_kind"]["etag-change"] == 1


def test_faults_are_deterministic(root):
    runs = []
    for _ in range(2):
        with servers.range_server(root, faults="status=500:every=2,slowdown:every=3") as srv:
            runs.append(statuses(srv, 8))
    assert runs[0] == runs[1]
    assert runs[0] == [206, 500, 503, 500, 206, 500, 206, 500]


# --- pacing -------------------------------------------------------------------------------------


@pytest.fixture
def big_root(root):
    (root / BUCKET / "big.bin").write_bytes(os.urandom(20 * 1000 * 1000))
    return root


def timed_get(srv, path, headers=None):
    start = time.monotonic()
    status, _, body = request(srv, "GET", path, headers)
    return time.monotonic() - start, status, body


def test_bandwidth_per_connection(big_root):
    with servers.range_server(big_root, bandwidth_per_conn=50e6) as srv:
        elapsed, status, body = timed_get(srv, "/%s/big.bin" % BUCKET)
    assert (status, len(body)) == (200, 20 * 1000 * 1000)
    assert elapsed >= 0.35  # 20 MB at 50 MB/s is 0.4 s
    assert elapsed < 10


def test_bandwidth_total_is_shared(big_root):
    results = []
    with servers.range_server(big_root, bandwidth_total=50e6) as srv:
        def fetch(part):
            headers = {"Range": "bytes=%d-%d" % (part * 10**7, part * 10**7 + 10**7 - 1)}
            results.append(timed_get(srv, "/%s/big.bin" % BUCKET, headers))

        start = time.monotonic()
        threads = [threading.Thread(target=fetch, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start
        # Both transfers were open at once (the statistics request may overlap their closing).
        assert srv.stats()["max_concurrent_connections"] >= 2
    assert [(status, len(body)) for _, status, body in results] == [(206, 10**7)] * 2
    assert elapsed >= 0.35  # 2 x 10 MB through one 50 MB/s link


def test_first_byte_latency(root):
    with servers.range_server(root, first_byte_latency_ms=300) as srv:
        elapsed, status, _ = timed_get(srv, "/%s/%s" % (BUCKET, KEY), {"Range": "bytes=0-0"})
        assert status == 206 and elapsed >= 0.28
        start = time.monotonic()
        request(srv, "HEAD", "/%s/%s" % (BUCKET, KEY))
        assert time.monotonic() - start < 0.28  # HEAD is not delayed
