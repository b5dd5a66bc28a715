#!/usr/bin/env python3
"""A small S3-compatible range server for flashload's tests and benchmarks.

Serves the files below --root over HTTP/1.1 (keep-alive), path-style like S3:

  GET  /BUCKET/KEY        the object; `Range: bytes=a-b | a- | -n` gives 206, no Range gives 200,
                          an unsatisfiable range gives 416 with `Content-Range: bytes */TOTAL`
  HEAD /BUCKET/KEY        the same headers, no body
  GET  /BUCKET?list-type=2&prefix=P&delimiter=D&continuation-token=T&start-after=S&max-keys=N
                          ListObjectsV2 XML, keys sorted (max-keys defaults to 1000, at most
                          --page-keys)
  HEAD /BUCKET            200 when the bucket exists
  POST /__control         JSON body {"faults": "SPEC"} replaces the fault rules (their counters restart);
                          {"reset_stats": true} zeroes the statistics
  GET  /__stats           JSON statistics: requests, bytes_sent, faults_injected (total and per kind),
                          connections (accepted), open_connections, max_concurrent_connections,
                          redirects (answered), and request_headers: the header lines of the last
                          200 object and bucket requests, [[name, value], ...] each, in order

BUCKET is a folder directly below --root, KEY a file path below it. Every object response carries a
quoted ETag derived from the file's size, mtime_ns and inode (so it changes when the file is replaced),
Content-Length, Accept-Ranges and Last-Modified; `If-Match` with another ETag gives 412
PreconditionFailed. Authorization headers are accepted and ignored.

Pacing: bodies go out in pieces through sendfile(2), each piece paced by a token bucket per connection
(--bandwidth-per-conn) and one shared by all connections (--bandwidth-total); --first-byte-latency-ms
sleeps before the status line of every GET.

Faults (--faults or POST /__control): a comma-separated list of rules `KIND[:OPT]...`, where OPT is
`first=K` (the first K eligible requests), `every=K` (every K-th eligible request), `after=N`
(etag-change only) or `path=SUBSTRING` (only requests whose decoded path contains it; the substring
may contain neither ',' nor ':'). A rule without first/every applies to every eligible request.
Kinds:
  status=NNN    answer NNN with an S3 XML error body (500 InternalError, 503 ServiceUnavailable, ...)
                eligible: GET/HEAD of objects and bucket listings
  slowdown      answer 503 with S3's SlowDown error; eligible as status=NNN
  reset         send half of the body, then abort the connection with a TCP RST (SO_LINGER 0)
                eligible: object GETs with a non-empty body
  short         declare the full Content-Length, send half of the body, then close the connection
                eligible: as reset
  ignore-range  answer a ranged GET with 200 and the whole object; eligible: object GETs with a Range
  shift-range   answer a ranged GET with 206, its bytes and Content-Range starting one byte later than
                asked (a cache that mixes up ranges); eligible: object GETs with a Range of 2+ bytes
  etag-change   after=N: once N object GETs (matching path=) have been served, the ETag of every
                matching object changes, so If-Match with the old one fails with 412
Counters are per rule and deterministic (no randomness). Error faults are decided first, then
ignore-range, then shift-range, then reset/short. /__control and /__stats are never faulted.

Redirects (--redirect-to PREFIX, or {"redirect_to": PREFIX} in a /__control body; "" turns it off):
every GET/HEAD of an object or bucket answers 302 with `Location: PREFIX` + the request's path and
query, e.g. PREFIX http://127.0.0.2:PORT to send clients to another loopback address (another
origin), or PREFIX /other to loop. --redirect-status changes 302 to 301, 303, 307 or 308.

Binds a loopback address (127.0.0.0/8: --host, default 127.0.0.1) only. Prints
`listening HOST:PORT` once started; exits on SIGTERM/SIGINT.
Standard library only (Python 3.9+).
"""

import argparse
import base64
import email.utils
import hashlib
import http.server
import ipaddress
import json
import os
import signal
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
import urllib.parse
from xml.sax.saxutils import escape as xml_escape

LOOPBACK = "127.0.0.1"
HEADER_LOG = 200  # request header lists kept for /__stats
MIN_PIECE = 64 * 1024
MAX_PIECE = 1024 * 1024

ERROR_MESSAGES = {
    "NoSuchKey": "The specified key does not exist.",
    "NoSuchBucket": "The specified bucket does not exist.",
    "PreconditionFailed": "At least one of the pre-conditions you specified did not hold.",
    "InvalidRange": "The requested range is not satisfiable.",
    "InvalidArgument": "Invalid argument.",
    "SlowDown": "Please reduce your request rate.",
    "InternalError": "We encountered an internal error. Please try again.",
    "ServiceUnavailable": "Service is unable to handle request.",
    "MethodNotAllowed": "The specified method is not allowed against this resource.",
}

STATUS_CODES = {500: "InternalError", 503: "ServiceUnavailable", 404: "NoSuchKey", 403: "AccessDenied",
                400: "InvalidArgument", 412: "PreconditionFailed"}


class FaultSpecError(ValueError):
    pass


class FaultRule:
    """One parsed rule of a fault spec, with its own deterministic counter."""

    KINDS = ("status", "slowdown", "reset", "short", "ignore-range", "shift-range", "etag-change")

    def __init__(self, text):
        parts = [p.strip() for p in text.split(":")]
        head = parts[0]
        self.text = text
        self.status = None
        if head.startswith("status="):
            self.kind = "status"
            try:
                self.status = int(head[len("status="):])
            except ValueError:
                raise FaultSpecError("fault %r: status needs a number, e.g. status=500" % text)
            if not 400 <= self.status <= 599:
                raise FaultSpecError("fault %r: status must be 400..599" % text)
        elif head in self.KINDS and head != "status":
            self.kind = head
        else:
            raise FaultSpecError("fault %r: unknown kind %r (one of status=NNN, slowdown, reset, "
                                 "short, ignore-range, etag-change)" % (text, head))
        self.first = None
        self.every = None
        self.after = None
        self.path = None
        for opt in parts[1:]:
            key, sep, value = opt.partition("=")
            if not sep:
                raise FaultSpecError("fault %r: option %r is not key=value" % (text, opt))
            if key == "path":
                self.path = value
                continue
            try:
                number = int(value)
            except ValueError:
                raise FaultSpecError("fault %r: %s needs a number" % (text, key))
            if key in ("first", "every", "after") and number < (0 if key != "every" else 1):
                raise FaultSpecError("fault %r: %s=%d is out of range" % (text, key, number))
            if key == "first":
                self.first = number
            elif key == "every":
                self.every = number
            elif key == "after":
                self.after = number
            else:
                raise FaultSpecError("fault %r: unknown option %r" % (text, key))
        if self.kind == "etag-change":
            if self.after is None:
                raise FaultSpecError("fault %r: etag-change needs after=N" % text)
        elif self.after is not None:
            raise FaultSpecError("fault %r: after= applies to etag-change only" % text)
        if self.first is not None and self.every is not None:
            raise FaultSpecError("fault %r: use first= or every=, not both" % text)
        self.count = 0  # eligible requests seen

    def matches(self, path):
        return self.path is None or self.path in path

    def fire(self):
        """Counts one eligible request; returns whether the fault applies to it. Caller holds the lock."""
        self.count += 1
        if self.first is not None:
            return self.count <= self.first
        if self.every is not None:
            return self.count % self.every == 0
        return True


def parse_faults(spec):
    spec = (spec or "").strip()
    if not spec:
        return []
    return [FaultRule(item.strip()) for item in spec.split(",") if item.strip()]


class TokenBucket:
    """A virtual-clock token bucket without burst: reserve(n) books the next n/rate seconds of the
    link and returns how long to wait before sending those n bytes (the start of the booked slot)."""

    def __init__(self, rate):
        self.rate = float(rate)
        self.t = 0.0
        self.lock = threading.Lock()

    def reserve(self, n):
        with self.lock:
            now = time.monotonic()
            start = max(self.t, now)
            self.t = start + n / self.rate
            return start - now


class RangeServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, port, root, per_conn, total, first_byte_latency_s, faults, quiet,
                 host=LOOPBACK, redirect_to="", redirect_status=302):
        self.root = os.path.realpath(root)
        self.host = host
        self.redirect_to = redirect_to
        self.redirect_status = redirect_status
        self.per_conn_rate = per_conn
        self.first_byte_latency_s = first_byte_latency_s
        self.quiet = quiet
        self.page_keys = 1000  # the most keys one ListObjectsV2 page holds (S3: 1000)
        rates = [r for r in (per_conn, total) if r]
        self.piece = MAX_PIECE
        if rates:
            self.piece = int(min(MAX_PIECE, max(MIN_PIECE, min(rates) / 50)))
        self.total_bucket = TokenBucket(total) if total else None
        self.lock = threading.Lock()
        self.rules = parse_faults(faults)
        self.aborted = set()  # sockets to close with an RST, without a FIN first
        self.reset_stats()
        super().__init__((host, port), RangeRequestHandler)

    def reset_stats(self):
        with self.lock:
            self.requests = 0
            self.connections = 0
            self.bytes_sent = 0
            self.faults_injected = 0
            self.faults_by_kind = {}
            self.redirects = 0
            self.request_headers = []
            open_now = getattr(self, "open_connections", 0)
            self.open_connections = open_now
            self.max_concurrent = open_now

    def set_faults(self, spec):
        rules = parse_faults(spec)
        with self.lock:
            self.rules = rules

    def count_fault(self, kind):
        with self.lock:
            self.faults_injected += 1
            self.faults_by_kind[kind] = self.faults_by_kind.get(kind, 0) + 1

    def pick_fault(self, kinds, path):
        """Counts the request against every matching rule of `kinds`; returns the first that fires."""
        chosen = None
        with self.lock:
            for rule in self.rules:
                if rule.kind in kinds and rule.matches(path):
                    if rule.fire() and chosen is None:
                        chosen = rule
        return chosen

    def etag_generation(self, path, counting_get):
        """How many etag-change rules have flipped for `path`; a GET counts towards them first."""
        generation = 0
        flipped = []
        with self.lock:
            for rule in self.rules:
                if rule.kind != "etag-change" or not rule.matches(path):
                    continue
                seen = rule.count
                if counting_get:
                    rule.count += 1
                if seen >= rule.after:
                    generation += 1
                    if counting_get and seen == rule.after:
                        flipped.append(rule)
        for _ in flipped:
            self.count_fault("etag-change")
        return generation

    def stats(self):
        with self.lock:
            return {
                "requests": self.requests,
                "connections": self.connections,
                "bytes_sent": self.bytes_sent,
                "faults_injected": self.faults_injected,
                "faults_by_kind": dict(self.faults_by_kind),
                "open_connections": self.open_connections,
                "max_concurrent_connections": self.max_concurrent,
                "redirects": self.redirects,
                "request_headers": [list(map(list, h)) for h in self.request_headers],
            }

    def shutdown_request(self, request):
        with self.lock:
            aborted = request in self.aborted
            self.aborted.discard(request)
        if aborted:
            # SO_LINGER 0 is set: close() sends an RST. shutdown() would send a FIN first.
            request.close()
        else:
            super().shutdown_request(request)


class RangeRequestHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "flashload-range-server"

    def version_string(self):
        return self.server_version

    # --- connection bookkeeping -----------------------------------------------------------------

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        srv = self.server
        self.conn_bucket = (TokenBucket(srv.per_conn_rate) if srv.per_conn_rate else None)
        with srv.lock:
            srv.connections += 1
            srv.open_connections += 1
            srv.max_concurrent = max(srv.max_concurrent, srv.open_connections)

    def finish(self):
        try:
            super().finish()
        except OSError:
            pass
        with self.server.lock:
            self.server.open_connections -= 1

    def log_message(self, fmt, *args):
        if not self.server.quiet:
            sys.stderr.write("range_server: %s %s\n" % (self.address_string(), fmt % args))

    # --- responses ----------------------------------------------------------------------------------

    def send_xml_error(self, status, code, resource, body=True, extra=None):
        message = ERROR_MESSAGES.get(code, "Injected fault.")
        payload = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code><Message>%s</Message>'
                   '<Resource>%s</Resource><RequestId>flashload-%d</RequestId></Error>\n' %
                   (code, xml_escape(message), xml_escape(resource), self.request_id)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-amz-request-id", "flashload-%d" % self.request_id)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body and self.command != "HEAD":
            self.write_bytes(payload)

    def send_json(self, status, obj):
        payload = (json.dumps(obj) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.write_bytes(payload)

    def write_bytes(self, data):
        self.wfile.write(data)
        with self.server.lock:
            self.server.bytes_sent += len(data)

    def pace(self, n):
        wait = 0.0
        if self.conn_bucket:
            wait = self.conn_bucket.reserve(n)
        if self.server.total_bucket:
            wait = max(wait, self.server.total_bucket.reserve(n))
        if wait > 0:
            time.sleep(wait)

    def send_file_range(self, f, offset, length):
        """Sends `length` bytes of `f` from `offset`, paced; returns the bytes sent."""
        out_fd = self.connection.fileno()
        in_fd = f.fileno()
        piece = self.server.piece
        paced = self.conn_bucket is not None or self.server.total_bucket is not None
        tls = isinstance(self.connection, ssl.SSLSocket)  # sendfile(2) would bypass the TLS layer
        sent = 0
        while sent < length:
            n = min(piece, length - sent)
            if paced:
                self.pace(n)
            done = 0
            while done < n:
                if tls:
                    data = os.pread(in_fd, n - done, offset + sent + done)
                    if data:
                        self.connection.sendall(data)
                    k = len(data)
                else:
                    k = os.sendfile(out_fd, in_fd, offset + sent + done, n - done)
                if k == 0:  # the file shrank under us
                    return sent + done
                done += k
            sent += n
            with self.server.lock:
                self.server.bytes_sent += n
        return sent

    def abort_connection(self):
        """Closes the connection with an RST once the handler returns."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        with self.server.lock:
            self.server.aborted.add(self.connection)

    # --- request routing ----------------------------------------------------------------------------

    def do_GET(self):
        self.route()

    def do_HEAD(self):
        self.route()

    def do_POST(self):
        with self.server.lock:
            self.server.requests += 1
            self.request_id = self.server.requests
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        if url.path != "/__control":
            self.close_connection = True
            self.send_xml_error(405, "MethodNotAllowed", url.path)
            return
        try:
            request = json.loads(body.decode() or "{}")
            if not isinstance(request, dict):
                raise ValueError("the body must be a JSON object")
            if "faults" in request:
                self.server.set_faults(request["faults"])
            if request.get("reset_stats"):
                self.server.reset_stats()
            if "redirect_to" in request:
                if not isinstance(request["redirect_to"], str):
                    raise ValueError("redirect_to must be a string")
                self.server.redirect_to = request["redirect_to"]
        except (ValueError, FaultSpecError) as e:
            self.send_json(400, {"error": str(e)})
            return
        self.send_json(200, {"ok": True, "faults": [r.text for r in self.server.rules]})

    def do_PUT(self):
        self.reject()

    def do_DELETE(self):
        self.reject()

    def reject(self):
        with self.server.lock:
            self.server.requests += 1
            self.request_id = self.server.requests
        self.close_connection = True  # the body, if any, is left unread
        self.send_xml_error(405, "MethodNotAllowed", self.path)

    def route(self):
        srv = self.server
        with srv.lock:
            srv.requests += 1
            self.request_id = srv.requests
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/__stats":
            self.send_json(200, srv.stats())
            return
        with srv.lock:
            srv.request_headers.append(list(self.headers.items()))
            del srv.request_headers[:-HEADER_LOG]
        if srv.redirect_to:
            with srv.lock:
                srv.redirects += 1
            self.send_response(srv.redirect_status)
            self.send_header("Location", srv.redirect_to + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path = urllib.parse.unquote(url.path)
        try:
            if "\0" in path or not path.startswith("/"):
                raise ValueError
            bucket, _, key = path[1:].partition("/")
            if not bucket or any(seg in (".", "..") for seg in path[1:].split("/")):
                raise ValueError
        except ValueError:
            self.send_xml_error(400, "InvalidArgument", path)
            return
        is_get = self.command == "GET"
        if is_get and srv.first_byte_latency_s > 0:
            time.sleep(srv.first_byte_latency_s)
        rule = srv.pick_fault(("status", "slowdown"), path)
        if rule is not None:
            srv.count_fault(rule.kind)
            if rule.kind == "slowdown":
                self.send_xml_error(503, "SlowDown", path)
            else:
                self.send_xml_error(rule.status, STATUS_CODES.get(rule.status, "InjectedFault"), path)
            return
        bucket_dir = os.path.join(srv.root, bucket)
        if not os.path.isdir(bucket_dir):
            self.send_xml_error(404, "NoSuchBucket", "/" + bucket)
            return
        if not key:
            if is_get:
                self.list_objects(bucket, bucket_dir, urllib.parse.parse_qs(url.query))
            else:
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
            return
        self.serve_object(path, bucket_dir, key, is_get)

    # --- objects ------------------------------------------------------------------------------------

    def object_etag(self, st, generation):
        seed = "%d-%d-%d-%d" % (st.st_size, st.st_mtime_ns, st.st_ino, generation)
        return '"%s"' % hashlib.md5(seed.encode()).hexdigest()

    def serve_object(self, path, bucket_dir, key, is_get):
        srv = self.server
        file_path = os.path.join(bucket_dir, *key.split("/"))
        real = os.path.realpath(file_path)
        if not real.startswith(srv.root + os.sep):
            self.send_xml_error(400, "InvalidArgument", path)
            return
        try:
            f = open(real, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError):
            self.send_xml_error(404, "NoSuchKey", path)
            return
        with f:
            st = os.fstat(f.fileno())
            if not os.path.isfile(real):
                self.send_xml_error(404, "NoSuchKey", path)
                return
            total = st.st_size
            etag = self.object_etag(st, srv.etag_generation(path, counting_get=is_get))
            if_match = self.headers.get("If-Match")
            if if_match is not None:
                wanted = [t.strip() for t in if_match.split(",")]
                if "*" not in wanted and etag not in wanted and etag.strip('"') not in wanted:
                    self.send_xml_error(412, "PreconditionFailed", path)
                    return
            start, end, status = 0, total - 1, 200
            range_header = self.headers.get("Range")
            parsed = parse_range(range_header, total) if range_header else None
            if parsed == "unsatisfiable":
                self.send_xml_error(416, "InvalidRange", path,
                                    extra={"Content-Range": "bytes */%d" % total})
                return
            if parsed is not None:
                if is_get and srv.pick_fault(("ignore-range",), path) is not None:
                    srv.count_fault("ignore-range")
                else:
                    start, end = parsed
                    status = 206
                    if is_get and start < end and \
                            srv.pick_fault(("shift-range",), path) is not None:
                        srv.count_fault("shift-range")
                        start += 1  # bytes and Content-Range from one byte later than asked
            length = end - start + 1
            body_fault = None
            if is_get and length > 0:
                body_fault = srv.pick_fault(("reset", "short"), path)
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
            self.send_header("x-amz-request-id", "flashload-%d" % self.request_id)
            if status == 206:
                self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, total))
            self.end_headers()
            if not is_get or length == 0:
                return
            try:
                if body_fault is not None:
                    srv.count_fault(body_fault.kind)
                    self.send_file_range(f, start, length // 2)
                    if body_fault.kind == "reset":
                        self.abort_connection()
                    else:
                        self.close_connection = True
                    return
                self.send_file_range(f, start, length)
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                self.close_connection = True

    # --- listing ------------------------------------------------------------------------------------

    def list_objects(self, bucket, bucket_dir, query):
        def arg(name, default=""):
            values = query.get(name)
            return values[0] if values else default

        prefix = arg("prefix")
        delimiter = arg("delimiter")
        start_after = arg("start-after")
        token = arg("continuation-token")
        try:
            max_keys = int(arg("max-keys", "1000"))
            if max_keys < 0:
                raise ValueError
            max_keys = min(max_keys, self.server.page_keys)
            if token:
                start_after = base64.urlsafe_b64decode(token.encode()).decode()
        except (ValueError, UnicodeDecodeError):
            self.send_xml_error(400, "InvalidArgument", "/" + bucket)
            return
        entries = []  # (key, stat) or (common_prefix, None), sorted
        seen_prefixes = set()
        for key, st in walk_bucket(bucket_dir):
            if not key.startswith(prefix) or key <= start_after:
                continue
            if delimiter:
                cut = key.find(delimiter, len(prefix))
                if cut >= 0:
                    common = key[:cut + len(delimiter)]
                    if common not in seen_prefixes and common > start_after:
                        seen_prefixes.add(common)
                        entries.append((common, None))
                    continue
            entries.append((key, st))
        entries.sort(key=lambda e: e[0])
        page = entries[:max_keys]
        truncated = len(entries) > len(page)
        out = ['<?xml version="1.0" encoding="UTF-8"?>\n',
               '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
               "<Name>%s</Name><Prefix>%s</Prefix>" % (xml_escape(bucket), xml_escape(prefix))]
        if delimiter:
            out.append("<Delimiter>%s</Delimiter>" % xml_escape(delimiter))
        if token:
            out.append("<ContinuationToken>%s</ContinuationToken>" % xml_escape(token))
        if arg("start-after"):
            out.append("<StartAfter>%s</StartAfter>" % xml_escape(arg("start-after")))
        out.append("<KeyCount>%d</KeyCount><MaxKeys>%d</MaxKeys><IsTruncated>%s</IsTruncated>" %
                   (len(page), max_keys, "true" if truncated else "false"))
        if truncated:
            next_token = base64.urlsafe_b64encode(page[-1][0].encode()).decode()
            out.append("<NextContinuationToken>%s</NextContinuationToken>" % next_token)
        for name, st in page:
            if st is None:
                out.append("<CommonPrefixes><Prefix>%s</Prefix></CommonPrefixes>" % xml_escape(name))
                continue
            etag = self.object_etag(st, self.server.etag_generation("/%s/%s" % (bucket, name), False))
            modified = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(st.st_mtime))
            out.append("<Contents><Key>%s</Key><LastModified>%s</LastModified><ETag>%s</ETag>"
                       "<Size>%d</Size><StorageClass>STANDARD</StorageClass></Contents>" %
                       (xml_escape(name), modified, xml_escape(etag), st.st_size))
        out.append("</ListBucketResult>\n")
        payload = "".join(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.write_bytes(payload)


def parse_range(header, total):
    """Returns (start, end) inclusive, "unsatisfiable", or None to ignore the header (RFC 9110)."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            n = int(last)
            if n < 0:
                return None
            if n == 0 or total == 0:
                return "unsatisfiable"
            return max(0, total - n), total - 1
        start = int(first)
        end = int(last) if last != "" else total - 1
    except ValueError:
        return None
    if start < 0 or (last != "" and end < start):
        return None  # syntactically invalid: ignored
    if start >= total:
        return "unsatisfiable"
    return start, min(end, total - 1)


def walk_bucket(bucket_dir):
    for dirpath, dirnames, filenames in os.walk(bucket_dir):
        dirnames.sort()
        rel = os.path.relpath(dirpath, bucket_dir)
        for name in filenames:
            full = os.path.join(dirpath, name)
            try:
                st = os.stat(full)
            except OSError:
                continue
            if not os.path.isfile(full):
                continue
            key = name if rel == "." else "%s/%s" % (rel.replace(os.sep, "/"), name)
            yield key, st


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="folder whose subfolders are the buckets")
    parser.add_argument("--host", default=LOOPBACK,
                        help="a loopback address, 127.0.0.0/8 (default 127.0.0.1)")
    parser.add_argument("--redirect-to", default="",
                        help="answer every object or bucket request with a redirect to this "
                             "prefix + the request's path (see the module docstring)")
    parser.add_argument("--redirect-status", type=int, default=302, choices=(301, 302, 303, 307, 308))
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port-file", help="write the port here once listening")
    parser.add_argument("--bandwidth-per-conn", type=float, default=0, help="bytes/s, 0 = uncapped")
    parser.add_argument("--bandwidth-total", type=float, default=0, help="bytes/s, 0 = uncapped")
    parser.add_argument("--first-byte-latency-ms", type=float, default=0)
    parser.add_argument("--faults", default="", help="fault spec, see the module docstring")
    parser.add_argument("--quiet", action="store_true", help="do not log requests")
    parser.add_argument("--page-keys", type=int, default=1000,
                        help="most keys per ListObjectsV2 page (S3: 1000); small values force "
                             "clients through pagination")
    parser.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate (chain)")
    parser.add_argument("--tls-key", help="the certificate's PEM private key")
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    try:
        loopback = ipaddress.ip_address(args.host) in ipaddress.ip_network("127.0.0.0/8")
    except ValueError:
        loopback = False
    if not loopback:
        parser.error("--host %s refused: the server binds loopback addresses only (127.0.0.0/8, "
                     "e.g. 127.0.0.1)" % args.host)
    if not os.path.isdir(args.root):
        parser.error("--root %s is not a folder" % args.root)
    if args.bandwidth_per_conn < 0 or args.bandwidth_total < 0 or args.first_byte_latency_ms < 0:
        parser.error("bandwidths and latency must not be negative")
    try:
        server = RangeServer(args.port, args.root, args.bandwidth_per_conn, args.bandwidth_total,
                             args.first_byte_latency_ms / 1000.0, args.faults, args.quiet,
                             host=args.host, redirect_to=args.redirect_to,
                             redirect_status=args.redirect_status)
    except FaultSpecError as e:
        parser.error(str(e))

    if args.page_keys < 1:
        parser.error("--page-keys must be at least 1")
    server.page_keys = args.page_keys
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    port = server.server_address[1]
    if args.port_file:
        tmp = "%s.tmp.%d" % (args.port_file, os.getpid())
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, args.port_file)
    sys.stdout.write("listening %s:%d\n" % (args.host, port))
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.05)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
