"""Fault-injection matrix for the network side of flashload's hardening: secrets never leave their
host or reach a message.

Every case runs the CLI against tools/range_server.py (127.0.0.1, and 127.0.0.2 as "another host")
or moto, with credentials in all three places a user puts them: the URL's user info, credential
query parameters (X-Amz-Signature, token) and a --header. Each asserts the exact outcome: exit code,
error kind, the (redacted) URL and the other names the message must carry, that no secret reaches
stdout or stderr, and that a failed load leaves no --save file behind. The cases that already held
(Range ignored, short bodies, ETag change, 503 retries, S3 wrong secret) are kept here so they stay
holding with the secrets in play.
"""

import json
import os
import subprocess

import pytest

import servers

FLASHLOAD = os.environ.get("FLASHLOAD_BIN") or os.path.join(servers.REPO, "build", "flashload")
UNET = "tiny/unet/diffusion_pytorch_model.safetensors"

PASSWORD = "PASSWORD-9f3e1c"
SIGNATURE = "SIGNATURE-77aa01"
TOKEN = "TOKEN-5b2c88"
HEADER_SECRET = "HEADER-SECRET-d41d8c"
SECRETS = (PASSWORD, SIGNATURE, TOKEN, HEADER_SECRET)


def run(*args):
    return subprocess.run([FLASHLOAD, *args], capture_output=True, text=True, timeout=300)


def secret_url(srv, key, query=True):
    """The object's URL with a password and (unless `query` is false: an index, whose shards are
    joined to its path) credential query parameters, and how messages show it."""
    host = srv.url.split("://", 1)[1]
    url = "http://alice:%s@%s/models/%s" % (PASSWORD, host, key)
    shown = "http://%s/models/%s" % (host, key)
    if query:
        url += "?X-Amz-Signature=%s&token=%s&v=1" % (SIGNATURE, TOKEN)
        shown += "?X-Amz-Signature=<redacted>&token=<redacted>&v=1"
    return url, shown


def assert_no_secret(proc, *extra):
    for secret in SECRETS + extra:
        assert secret not in proc.stdout, "secret %s in stdout:\n%s" % (secret, proc.stdout)
        assert secret not in proc.stderr, "secret %s in stderr:\n%s" % (secret, proc.stderr)
    assert "alice" not in proc.stdout + proc.stderr, "user info shown"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening-root")
    for kind, name in (("tiny", "tiny"), ("llm-tiny", "llm")):
        proc = run("gen", kind, str(root / "models" / name))
        assert proc.returncode == 0, proc.stderr
    return root


@pytest.fixture
def srv(root):
    with servers.range_server(root) as s:
        yield s


def load_fails(srv, key, tmp_path, *extra, kind, names=(), query=True):
    """A load that must fail with `kind`, naming the redacted URL and `names`, leaving no file."""
    url, shown = secret_url(srv, key, query)
    out = tmp_path / "out.safetensors"
    proc = run("load", url, "--range-mib", "1", "--attempts", "2", "--save", str(out),
               "--header", "X-Api-Key: " + HEADER_SECRET, *extra)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout == "", "nothing is reported as loaded"
    assert proc.stderr.startswith("flashload load: %s: " % kind), proc.stderr
    for name in (shown,) + tuple(names):
        assert name in proc.stderr, "%r not named in:\n%s" % (name, proc.stderr)
    assert_no_secret(proc)
    assert not out.exists() and os.listdir(tmp_path) == [], "a failed load leaves no file"
    return proc.stderr


# ---- item 1: a URL's credentials never reach a report line or a message -------------------------

def test_report_lines_of_load_inspect_validate_and_dry_run_show_the_url_redacted(srv):
    url, shown = secret_url(srv, UNET)
    header = ("--header", "X-Api-Key: " + HEADER_SECRET)
    proc = run("load", url, "--json", "--verify", *header)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["path"] == shown and report["files"][0]["path"] == shown
    assert report["verify"]["mismatches"] == 0
    assert_no_secret(proc)

    proc = run("load", url, *header)
    assert proc.returncode == 0 and ("  %s: " % shown) in proc.stdout, proc.stdout + proc.stderr
    assert_no_secret(proc)

    proc = run("load", url, "--dry-run", *header)
    assert proc.returncode == 0 and proc.stdout.startswith(shown + ": "), proc.stdout
    assert_no_secret(proc)

    proc = run("inspect", url, *header)
    assert proc.returncode == 0 and proc.stdout.startswith(shown + "\n"), proc.stdout
    assert_no_secret(proc)
    proc = run("inspect", url, "--json", *header)
    assert proc.returncode == 0 and json.loads(proc.stdout)["path"] == shown
    assert_no_secret(proc)

    proc = run("validate", url, *header)
    assert proc.returncode == 0 and proc.stdout.startswith("OK       %s (" % shown), proc.stdout
    assert_no_secret(proc)
    missing, missing_shown = secret_url(srv, "tiny/nope.safetensors")
    proc = run("validate", missing, *header)
    assert proc.returncode == 1
    assert proc.stdout.startswith("INVALID  %s\n         NOT_FOUND: %s: not found (HTTP 404)"
                                  % (missing_shown, missing_shown)), proc.stdout
    proc_json = run("validate", missing, "--json", *header)
    entry = json.loads(proc_json.stdout)["files"][0]
    assert entry["path"] == missing_shown and entry["code"] == "NOT_FOUND"
    assert_no_secret(proc)
    assert_no_secret(proc_json)


def test_a_sharded_index_lists_its_shards_redacted(srv):
    url, _ = secret_url(srv, "llm/model.safetensors.index.json", query=False)
    proc = run("load", url, "--json")
    assert proc.returncode == 0, proc.stderr
    paths = [f["path"] for f in json.loads(proc.stdout)["files"]]
    assert len(paths) == 3 and all(p.startswith(srv.url + "/models/llm/model-") for p in paths)
    assert_no_secret(proc)


def test_a_missing_object_is_not_found_naming_the_redacted_url(srv, tmp_path):
    load_fails(srv, "tiny/nope.safetensors", tmp_path, kind="NOT_FOUND",
               names=("not found (HTTP 404)", "NoSuchKey"))


# ---- the faults that already held, with secrets in play ----------------------------------------

def test_a_server_ignoring_range_is_a_clear_error(srv, tmp_path):
    srv.control("ignore-range")
    load_fails(srv, UNET, tmp_path, kind="FAILED_PRECONDITION",
               names=("server ignores Range requests", "byte offset 0"))


def test_a_content_range_that_does_not_match_the_request_is_data_loss(srv, tmp_path):
    # Every range, the opening one included, comes back one byte late: refused, never retried.
    srv.control("shift-range:path=unet")
    load_fails(srv, UNET, tmp_path, kind="DATA_LOSS",
               names=("Content-Range 'bytes 1-", "does not match the requested bytes 0-"))


def test_a_body_cut_short_every_time_gives_up_after_the_attempts(srv, tmp_path):
    srv.control("short")
    load_fails(srv, UNET, tmp_path, kind="UNAVAILABLE",
               names=("bytes remaining to read", "gave up after 2 attempts"))


def test_an_etag_change_mid_load_is_data_loss_naming_tensor_and_offset(srv, tmp_path):
    # The opening GET and the first ranges see one ETag, later ranges another: an error during the
    # load, after the open, built by the engine around the raw URL.
    srv.control("etag-change:after=2")
    load_fails(srv, UNET, tmp_path, kind="DATA_LOSS",
               names=("object changed during the load", "HTTP 412", "at byte offset"))


def test_a_few_503s_are_retried_and_the_bytes_are_identical(srv):
    srv.control("status=503:first=2,slowdown:every=5")
    url, shown = secret_url(srv, UNET)
    proc = run("load", url, "--json", "--verify", "--range-mib", "1", "--attempts", "4",
               "--header", "X-Api-Key: " + HEADER_SECRET)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["verify"]["mismatches"] == 0 and report["path"] == shown
    assert srv.stats()["faults_injected"] >= 3
    assert_no_secret(proc)


def test_persistent_503s_give_up_naming_the_status(srv, tmp_path):
    srv.control("status=503")
    load_fails(srv, UNET, tmp_path, kind="UNAVAILABLE",
               names=("HTTP 503", "ServiceUnavailable", "gave up after 2 attempts"))


# ---- item 2: headers stay with their host; no header injection ----------------------------------

def headers_seen(server, name):
    return [v for hs in server.stats()["request_headers"] for n, v in hs if n.lower() == name]


@pytest.mark.parametrize("status", [301, 302, 307])
def test_a_redirect_to_another_host_does_not_forward_the_headers(root, status):
    with servers.range_server(root, host="127.0.0.2") as other, \
            servers.range_server(root, redirect_to=other.url, redirect_status=status) as first:
        url, _ = secret_url(first, UNET)
        proc = run("load", url, "--json", "--verify", "--range-mib", "1",
                   "--header", "X-Api-Key: " + HEADER_SECRET)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["verify"]["mismatches"] == 0
        assert first.stats()["redirects"] > 3, "every range was redirected"
        assert headers_seen(first, "x-api-key") and \
            set(headers_seen(first, "x-api-key")) == {HEADER_SECRET}
        assert headers_seen(other, "x-api-key") == [], "the other host got the header"
        assert headers_seen(other, "authorization") == [], "the URL's user info went along"
        assert other.stats()["requests"] > 3
        assert_no_secret(proc)


def test_header_on_redirect_forwards_them_when_the_user_trusts_the_redirect(root):
    with servers.range_server(root, host="127.0.0.2") as other, \
            servers.range_server(root, redirect_to=other.url) as first:
        proc = run("load", first.url + "/models/" + UNET, "--json", "--range-mib", "1",
                   "--header", "X-Api-Key: " + HEADER_SECRET, "--header-on-redirect")
        assert proc.returncode == 0, proc.stderr
        seen = headers_seen(other, "x-api-key")
        assert seen and set(seen) == {HEADER_SECRET}
        assert_no_secret(proc)


def test_a_redirect_loop_stops_with_a_clear_error(srv, tmp_path):
    srv.redirect_to("/loop")
    load_fails(srv, UNET, tmp_path, kind="FAILED_PRECONDITION",
               names=("more than 5 redirects", "(the last to %s/loop/loop" % srv.url))


# (A NUL cannot pass through argv: the library's refusal of it is CheckRequestHeadersTest.)
@pytest.mark.parametrize("header", ["Authorization: Bearer %s\nX-Injected: y" % HEADER_SECRET,
                                    "Authorization: Bearer %s\r\nX-Injected: y" % HEADER_SECRET,
                                    "X-Api-Key: %s\r" % HEADER_SECRET])
@pytest.mark.parametrize("command", ["load", "inspect", "validate"])
def test_a_header_with_cr_or_lf_is_a_usage_error_and_nothing_is_sent(srv, command, header):
    before = srv.stats()["requests"]
    url, _ = secret_url(srv, UNET)
    proc = run(command, url, "--header", header)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--header: a header holds a CR, LF or NUL byte" in proc.stderr, proc.stderr
    assert proc.stdout == ""
    assert_no_secret(proc)
    assert srv.stats()["requests"] == before + 1, "only this stats request reached the server"


# ---- item 3: percent-encoded dot segments in an index ------------------------------------------

@pytest.mark.parametrize("shard", ["%2e%2e/llm/model-00001-of-00003.safetensors",
                                   "%2E%2E/llm/model-00001-of-00003.safetensors",
                                   ".%2e/llm/model-00001-of-00003.safetensors"])
def test_an_index_with_a_percent_encoded_dot_segment_is_refused(root, srv, shard, tmp_path):
    evil = root / "models" / "evil"
    evil.mkdir(exist_ok=True)
    (evil / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": {"model.embed_tokens.weight": shard}}))
    before = srv.stats()["requests"]
    stderr = load_fails(srv, "evil/model.safetensors.index.json", tmp_path, kind="DATA_LOSS",
                        names=("weight_map entry 'model.embed_tokens.weight' names shard '%s'"
                               % shard, "outside the index's folder"), query=False)
    assert stderr.count("\n") == 1
    # The index was read (one request); no shard outside its folder was asked for.
    assert srv.stats()["requests"] == before + 2, "index GET and this stats request only"


# ---- S3: a wrong secret is refused and never printed --------------------------------------------

def test_s3_wrong_secret_is_access_denied_and_never_printed(root, tmp_path):
    wrong = "wrongSECRETwrongSECRETwrongSECRETwrongSEC"
    with servers.moto_server() as moto:
        s3 = moto.client()
        s3.create_bucket(Bucket="weights")
        s3.upload_file(str(root / "models" / UNET), "weights", "unet.safetensors")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update({"AWS_ACCESS_KEY_ID": moto.access_key, "AWS_SECRET_ACCESS_KEY": wrong,
                    "AWS_ENDPOINT_URL": moto.url, "AWS_REGION": moto.region, "HOME": str(tmp_path)})
        out = tmp_path / "out.safetensors"
        proc = subprocess.run([FLASHLOAD, "load", "s3://weights/unet.safetensors", "--save",
                               str(out)], capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 1
        assert proc.stderr.startswith("flashload load: FAILED_PRECONDITION: "), proc.stderr
        for name in ("access denied (HTTP 403)", "SignatureDoesNotMatch", "check the credentials"):
            assert name in proc.stderr, proc.stderr
        assert wrong not in proc.stderr + proc.stdout
        assert moto.secret_key not in proc.stderr + proc.stdout
        assert proc.stdout == "" and not out.exists()
