"""tools/slowfs (flashload_slowfs), mounted through tests/integration/servers.py.

The binary comes from $FLASHLOAD_SLOWFS, else build/tools/slowfs/flashload_slowfs; a missing binary
fails the tests (it is built with the project). O_DIRECT reads make each read exactly one FUSE
request, so the timings below count requests, not page-cache behaviour.
"""

import errno
import filecmp
import mmap
import os
import threading
import time

import pytest

import servers

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse here")

SIZE = 4 << 20
READ = 4096


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "model.safetensors").write_bytes(os.urandom(SIZE))
    (src / "sub" / "small.bin").write_bytes(b"flashload")
    (src / "empty.bin").write_bytes(b"")
    return src


def direct_reads(path, offsets, fd=None):
    """Reads READ bytes at each offset with O_DIRECT (one FUSE request each); returns the bytes."""
    own = fd is None
    if own:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, READ)  # page-aligned, as O_DIRECT may require
    out = []
    try:
        for offset in offsets:
            n = os.preadv(fd, [buf], offset)
            out.append(bytes(buf[:n]))
    finally:
        buf.close()
        if own:
            os.close(fd)
    return out


def test_mirrors_the_source_byte_for_byte(source):
    with servers.slowfs_mount(source, latency_ms=0) as mount:
        assert sorted(os.listdir(mount.path)) == ["empty.bin", "model.safetensors", "sub"]
        assert os.listdir(os.path.join(mount.path, "sub")) == ["small.bin"]
        for name in ("model.safetensors", "sub/small.bin", "empty.bin"):
            mirrored = os.path.join(mount.path, name)
            assert os.path.getsize(mirrored) == os.path.getsize(source / name)
            assert filecmp.cmp(mirrored, source / name, shallow=False), name
        expected = (source / "model.safetensors").read_bytes()
        with open(os.path.join(mount.path, "model.safetensors"), "rb") as f:
            with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:  # page cache on: mmap works
                assert m[SIZE // 2:SIZE // 2 + 65536] == expected[SIZE // 2:SIZE // 2 + 65536]
        offsets = [0, 12288, SIZE - READ]
        assert direct_reads(os.path.join(mount.path, "model.safetensors"), offsets) == [
            expected[o:o + READ] for o in offsets]
        assert os.statvfs(mount.path).f_bsize > 0
        with pytest.raises(FileNotFoundError):
            open(os.path.join(mount.path, "missing"), "rb")


def test_read_only(source):
    with servers.slowfs_mount(source, latency_ms=0) as mount:
        path = os.path.join(mount.path, "model.safetensors")
        for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_CREAT):
            with pytest.raises(OSError) as info:
                os.open(path, flags)
            assert info.value.errno == errno.EROFS
        with pytest.raises(OSError) as info:
            os.open(os.path.join(mount.path, "new.bin"), os.O_WRONLY | os.O_CREAT)
        assert info.value.errno == errno.EROFS
    assert (source / "model.safetensors").stat().st_size == SIZE


def test_every_request_pays_the_latency(source):
    n = 6
    with servers.slowfs_mount(source, latency_ms=50) as mount:
        path = os.path.join(mount.path, "model.safetensors")
        start = time.monotonic()
        got = direct_reads(path, [i * 100 * READ for i in range(n)])
        elapsed = time.monotonic() - start
    assert [len(chunk) for chunk in got] == [READ] * n
    assert elapsed >= n * 0.050


def test_no_latency_option_is_fast_enough_to_tell_apart(source):
    # The other timing tests are only meaningful if the mount itself adds little.
    with servers.slowfs_mount(source, latency_ms=0) as mount:
        path = os.path.join(mount.path, "model.safetensors")
        start = time.monotonic()
        direct_reads(path, [i * 100 * READ for i in range(6)])
        assert time.monotonic() - start < 6 * 0.050


def parallel_reads(path, fds, reads_per_thread=2):
    """Two threads, each doing reads_per_thread O_DIRECT reads on fds[i]; returns the wall time."""
    errors = []

    def work(i):
        try:
            got = direct_reads(path, [(i * 32 + j) * 16 * READ for j in range(reads_per_thread)],
                               fd=fds[i])
            assert [len(chunk) for chunk in got] == [READ] * reads_per_thread
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return time.monotonic() - start


def test_one_descriptor_is_served_one_request_at_a_time_two_in_parallel(source):
    latency = 0.2
    with servers.slowfs_mount(source, latency_ms=int(latency * 1000)) as mount:
        path = os.path.join(mount.path, "model.safetensors")
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        try:
            shared = parallel_reads(path, [fd, fd])
        finally:
            os.close(fd)
        fds = [os.open(path, os.O_RDONLY | os.O_DIRECT) for _ in range(2)]
        try:
            separate = parallel_reads(path, fds)
        finally:
            for f in fds:
                os.close(f)
    assert shared >= 4 * latency  # 4 requests on one handle: one after the other
    assert separate < 3.5 * latency  # 2 + 2 on two handles: about 2 x latency
    assert separate < shared


def test_bandwidth_per_descriptor(source):
    with servers.slowfs_mount(source, latency_ms=0, bandwidth_per_fd=1 << 20) as mount:
        path = os.path.join(mount.path, "model.safetensors")
        start = time.monotonic()
        direct_reads(path, [i * READ for i in range(64)])  # 256 KiB at 1 MiB/s
        assert time.monotonic() - start >= 0.2


def test_refuse_direct_makes_o_direct_open_fail_with_einval(source):
    with servers.slowfs_mount(source, latency_ms=0, refuse_direct=True) as mount:
        path = os.path.join(mount.path, "model.safetensors")
        with pytest.raises(OSError) as info:
            os.open(path, os.O_RDONLY | os.O_DIRECT)
        assert info.value.errno == errno.EINVAL
        with open(path, "rb") as f:  # buffered reads still work
            assert f.read(16) == (source / "model.safetensors").read_bytes()[:16]


def test_o_direct_is_accepted_without_refuse_direct(source):
    with servers.slowfs_mount(source, latency_ms=0) as mount:
        fd = os.open(os.path.join(mount.path, "model.safetensors"), os.O_RDONLY | os.O_DIRECT)
        os.close(fd)


def test_unmounted_and_stopped_afterwards(source):
    with servers.slowfs_mount(source, latency_ms=0) as mount:
        path, proc = mount.path, mount.proc
        assert servers._is_mounted(path)
    assert not servers._is_mounted(path)
    assert proc.poll() is not None
    assert not os.path.exists(path)


def test_unmounted_when_the_block_raises_with_a_file_open(source):
    with pytest.raises(RuntimeError, match="test failure"):
        with servers.slowfs_mount(source, latency_ms=0) as mount:
            path, proc = mount.path, mount.proc
            f = open(os.path.join(path, "model.safetensors"), "rb")
            try:
                raise RuntimeError("test failure")
            finally:
                f.close()
    assert not servers._is_mounted(path)
    assert proc.poll() is not None


def test_bad_usage_is_reported(source):
    with pytest.raises(servers.ServerError, match="source folder"):
        with servers.slowfs_mount(source / "missing"):
            pass
