"""Test servers and file systems for flashload's tests and benchmarks, as context managers.

  range_server(root, **options)  tools/range_server.py on 127.0.0.1, a free port
  moto_server()                  moto's S3 (and IAM) server on 127.0.0.1 with SigV4 checking on
  slowfs_mount(source, **opts)   tools/slowfs (flashload_slowfs) mounted on a fresh temporary folder

Each one stops what it started when the `with` block ends, also when the block raises: the server
process is terminated (killed if it lingers), the mount is unmounted (`fusermount3 -u`, lazily with
`-z` as a last resort). Nothing listens beyond 127.0.0.1. Standard library only, except that
moto_server() needs moto and boto3 in the running interpreter (or the one passed as `python`).
"""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RANGE_SERVER = os.path.join(REPO, "tools", "range_server.py")
LOOPBACK = "127.0.0.1"


class ServerError(RuntimeError):
    pass


def slowfs_binary():
    """The flashload_slowfs binary: $FLASHLOAD_SLOWFS, else build/tools/slowfs/flashload_slowfs."""
    return os.environ.get("FLASHLOAD_SLOWFS") or os.path.join(
        REPO, "build", "tools", "slowfs", "flashload_slowfs")


def _stop(proc, timeout=5.0):
    """Terminates `proc` (SIGTERM, then SIGKILL) and reaps it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def _read(path):
    try:
        with open(path, "r", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _wait_for(probe, proc, name, log_path, timeout, interval):
    """Polls `probe()` until it returns something true and returns it; ServerError (with the log)
    when `proc` exits first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if proc.poll() is not None:
            raise ServerError("%s exited with %d before listening:\n%s" %
                              (name, proc.returncode, _read(log_path)))
        if time.monotonic() > deadline:
            raise ServerError("%s did not listen within %.0f s:\n%s" %
                              (name, timeout, _read(log_path)))
        time.sleep(interval)


class RangeServer:
    """A running tools/range_server.py."""

    def __init__(self, proc, port, root, log_path, scheme="http", host=LOOPBACK):
        self.proc = proc
        self.port = port
        self.root = root
        self.host = host
        self.url = "%s://%s:%d" % (scheme, host, port)
        self.log_path = log_path

    def object_url(self, bucket, key):
        return "%s/%s/%s" % (self.url, bucket, urllib.request.quote(key))

    def _post(self, body):
        request = urllib.request.Request(self.url + "/__control", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def control(self, spec):
        """Replaces the fault rules (their counters restart); raises on a malformed spec."""
        return self._post({"faults": spec})

    def reset_stats(self):
        return self._post({"reset_stats": True})

    def redirect_to(self, prefix):
        """Answers every object request with a redirect to `prefix` + its path ("" stops)."""
        return self._post({"redirect_to": prefix})

    def stats(self):
        with urllib.request.urlopen(self.url + "/__stats", timeout=10) as response:
            return json.loads(response.read())

    def log(self):
        return _read(self.log_path)


@contextlib.contextmanager
def range_server(root, python=None, startup_timeout=15.0, **options):
    """Starts tools/range_server.py serving `root` on a free loopback port.

    options become flags: bandwidth_per_conn=50e6 -> --bandwidth-per-conn 50000000.0, faults="..."
    -> --faults ..., quiet=False logs requests (default quiet=True), tls_cert/tls_key serve HTTPS
    (then .url is https://; /__control and /__stats are not reachable), host="127.0.0.2" binds
    another loopback address, redirect_to=PREFIX redirects every object request. Yields a
    RangeServer.
    """
    options.setdefault("quiet", True)
    workdir = tempfile.mkdtemp(prefix="flashload-range-server-")
    port_file = os.path.join(workdir, "port")
    log_path = os.path.join(workdir, "log")
    args = [python or sys.executable, RANGE_SERVER, "--root", str(root), "--port", "0",
            "--port-file", port_file]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value not in (None, False):
            args += [flag, str(value)]
    proc = None
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        text = _wait_for(lambda: _read(port_file).strip() or None, proc, "range_server",
                         log_path, startup_timeout, 0.02)
        port = int(text)
        yield RangeServer(proc, port, root, log_path,
                          "https" if options.get("tls_cert") else "http",
                          options.get("host") or LOOPBACK)
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


class MotoServer:
    """A running moto server with one IAM user allowed everything; every request after start-up
    must carry a valid SigV4 signature of that user's keys."""

    region = "us-east-1"

    def __init__(self, proc, port, access_key, secret_key, log_path):
        self.proc = proc
        self.port = port
        self.host = LOOPBACK
        self.url = "http://%s:%d" % (LOOPBACK, port)
        self.endpoint = self.url
        self.access_key = access_key
        self.secret_key = secret_key
        self.log_path = log_path

    def client(self, service="s3", access_key=None, secret_key=None, **kwargs):
        """A boto3 client for this server (path-style addressing), by default with the valid keys."""
        import boto3
        import botocore.config

        config = botocore.config.Config(s3={"addressing_style": "path"},
                                        retries={"max_attempts": 1})
        return boto3.client(service, endpoint_url=self.url, region_name=self.region,
                            aws_access_key_id=access_key or self.access_key,
                            aws_secret_access_key=secret_key or self.secret_key, config=config,
                            **kwargs)

    def log(self):
        return _read(self.log_path)


@contextlib.contextmanager
def moto_server(python=None, startup_timeout=60.0):
    """Starts `python -m moto.server -H 127.0.0.1 -p 0` and turns signature checking on.

    moto picks a free port for -p 0 and prints ` * Running on http://127.0.0.1:PORT`. Authentication
    is moto's IAM emulation: the server starts with INITIAL_NO_AUTH_ACTION_COUNT large, so the
    set-up requests (CreateUser, PutUserPolicy allowing *, CreateAccessKey) pass unsigned; then
    POST /moto-api/reset-auth with body "0" sets the count to 0, after which every request is checked:
    an unknown key gives 403 InvalidAccessKeyId, a wrong secret 403 SignatureDoesNotMatch. Yields a
    MotoServer with the user's access_key / secret_key.
    """
    workdir = tempfile.mkdtemp(prefix="flashload-moto-")
    log_path = os.path.join(workdir, "log")
    env = dict(os.environ)
    env["INITIAL_NO_AUTH_ACTION_COUNT"] = "1000000"
    env.setdefault("AWS_DEFAULT_REGION", MotoServer.region)
    proc = None
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [python or sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", "0"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        pattern = re.compile(r"Running on http://127\.0\.0\.1:(\d+)")
        match = _wait_for(lambda: pattern.search(_read(log_path)), proc, "moto", log_path,
                          startup_timeout, 0.05)
        port = int(match.group(1))
        server = MotoServer(proc, port, None, None, log_path)
        iam = server.client("iam", access_key="AKIAFLASHLOADSETUP00", secret_key="setup")
        iam.create_user(UserName="flashload")
        iam.put_user_policy(UserName="flashload", PolicyName="all", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="flashload")["AccessKey"]
        server.access_key = key["AccessKeyId"]
        server.secret_key = key["SecretAccessKey"]
        # Not form-encoded: moto reads the raw body.
        request = urllib.request.Request(server.url + "/moto-api/reset-auth", data=b"0",
                                         headers={"Content-Type": "text/plain"}, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
        yield server
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def _is_mounted(path):
    path = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and fields[4].replace("\\040", " ") == path:
                    return True
    except OSError:
        pass
    return False


class SlowFsMount:
    def __init__(self, proc, path, source, log_path):
        self.proc = proc
        self.path = path
        self.source = source
        self.log_path = log_path

    def log(self):
        return _read(self.log_path)


def _unmount(path, proc):
    """fusermount3 -u, retried while busy; fusermount3 -u -z as a last resort."""
    for attempt in range(20):
        if not _is_mounted(path):
            return
        result = subprocess.run(["fusermount3", "-u", path], capture_output=True)
        if result.returncode == 0:
            return
        time.sleep(0.1)
    if _is_mounted(path):
        subprocess.run(["fusermount3", "-u", "-z", path], capture_output=True)


@contextlib.contextmanager
def slowfs_mount(source_dir, latency_ms=None, refuse_direct=False, bandwidth_per_fd=None,
                 max_read=None, binary=None, startup_timeout=15.0):
    """Mounts flashload_slowfs mirroring `source_dir` on a new temporary folder; yields a SlowFsMount
    (.path is the mount point). The file system runs in the foreground as a child process; on exit it
    is unmounted, the process reaped and the folder removed."""
    binary = binary or slowfs_binary()
    if not os.access(binary, os.X_OK):
        raise ServerError("flashload_slowfs not found at %s: build it (target flashload_slowfs) or "
                          "set FLASHLOAD_SLOWFS" % binary)
    workdir = tempfile.mkdtemp(prefix="flashload-slowfs-")
    mountpoint = os.path.join(workdir, "mnt")
    os.mkdir(mountpoint)
    log_path = os.path.join(workdir, "log")
    args = [binary, str(source_dir), mountpoint, "-f"]
    if latency_ms is not None:
        args.append("--latency-ms=%d" % latency_ms)
    if refuse_direct:
        args.append("--refuse-direct")
    if bandwidth_per_fd:
        args.append("--bandwidth-per-fd=%d" % bandwidth_per_fd)
    if max_read:
        args.append("--max-read=%d" % max_read)
    proc = None
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + startup_timeout
        while not _is_mounted(mountpoint):
            if proc.poll() is not None:
                raise ServerError("flashload_slowfs exited with %d before mounting:\n%s" %
                                  (proc.returncode, _read(log_path)))
            if time.monotonic() > deadline:
                raise ServerError("flashload_slowfs did not mount within %.0f s:\n%s" %
                                  (startup_timeout, _read(log_path)))
            time.sleep(0.02)
        yield SlowFsMount(proc, mountpoint, str(source_dir), log_path)
    finally:
        _unmount(mountpoint, proc)
        if proc is not None:
            try:
                proc.wait(5)  # a foreground libfuse process exits once unmounted
            except subprocess.TimeoutExpired:
                _stop(proc)
        if not _is_mounted(mountpoint):
            shutil.rmtree(workdir, ignore_errors=True)
