"""Whole-model read-ahead for framework loads under patch().

A framework loads a model folder one weight file at a time, and builds each component (a diffusers
pipeline's text encoder, UNet, VAE; a sharded checkpoint's shards) between the reads. While
patch() is in force, when a call loads a local weight file whole (``load_file``, or the first
``get_tensor`` / whole-tensor ``get_slice`` of a ``safe_open`` handle) and the file belongs to a
larger model — a shard listed in a ``*.safetensors.index.json`` beside it, or a component of a
diffusers folder (``model_index.json`` one level up) — the model's other files are loaded in the
background, one at a time (those after it in the model's order first, then those before it:
frameworks do not always follow that order), while the framework builds what it already has. A file the framework has already opened lazily (transformers opens every shard with
``safe_open`` before reading any) is loaded into that very handle:

- **Within a budget**: bytes loaded ahead and not yet used by the framework stay under ``FLASHLOAD_PREFETCH_MIB``
  (default: the smaller of 4 GiB and half the memory available when the read-ahead starts); the
  next file waits until the framework has claimed enough.
- **Nothing read twice**: a file being read ahead is handed to the framework's call as it is (the
  call waits for the rest of its load instead of reading it again).
- **Memory never read is released**: a file read ahead but not opened by the framework within
  ``FLASHLOAD_PREFETCH_IDLE_S`` seconds (default 30) of the last claim is dropped, and so is
  everything held when ``flashload.release_cached_memory()`` is called.

``FLASHLOAD_PREFETCH=0`` turns read-ahead off. Only loads with the default options (host memory,
stored dtypes, automatic strategy) are read ahead or served from it.

Thread-safety: every function may be called from any thread.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

__all__ = ["activate", "note_lazy_open", "note_use", "claim", "release", "stats"]

_WEIGHT_SUFFIX = ".safetensors"


def _enabled() -> bool:
    return os.environ.get("FLASHLOAD_PREFETCH", "1") not in ("0", "off", "false", "no")


def _budget_bytes() -> int:
    env = os.environ.get("FLASHLOAD_PREFETCH_MIB")
    if env:
        try:
            return max(0, int(env)) << 20
        except ValueError:
            pass
    available = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        available = 0
    cap = 4 << 30
    return min(cap, available // 2) if available > 0 else cap


def _idle_seconds() -> float:
    try:
        return float(os.environ.get("FLASHLOAD_PREFETCH_IDLE_S", "30"))
    except ValueError:
        return 30.0


def _variant_of(name: str) -> str:
    """"diffusion_pytorch_model.fp16.safetensors" -> "fp16"; no variant -> ""."""
    parts = name[: -len(_WEIGHT_SUFFIX)].split(".")
    return parts[-1] if len(parts) >= 2 else ""


def _resolve(path: str, variant: str) -> Tuple[str, List[str]]:
    """(kind, files) as flashload's own model resolution sees ``path``; ("", []) when it does not
    resolve (the framework's own call reports whatever is wrong)."""
    from flashload import _core
    try:
        kind, files = _core.model_files(path, variant)
    except Exception:  # noqa: BLE001 (a model that does not resolve is not read ahead)
        return "", []
    return kind, [os.path.abspath(f) for f in files]


def model_files(path: str) -> List[str]:
    """Every weight file of the model ``path`` belongs to, in load order (``path`` among them), or
    [] when it is a model of its own: a component of a diffusers folder (``model_index.json`` one
    level up) or a shard of a ``*.safetensors.index.json`` beside it, resolved by the loader's own
    model resolution (variants, index checks and all)."""
    path = os.path.abspath(path)
    if not path.endswith(_WEIGHT_SUFFIX):
        return []
    folder = os.path.dirname(path)
    variant = _variant_of(os.path.basename(path))
    root = os.path.dirname(folder)
    if os.path.isfile(os.path.join(root, "model_index.json")):
        kind, files = _resolve(root, variant)
        if kind == "diffusers" and path in files and len(files) > 1:
            return files
    kind, files = _resolve(folder, variant)
    if kind == "sharded" and path in files and len(files) > 1:
        return files
    return []


class _Entry:
    def __init__(self, path: str, size: int) -> None:
        self.path = path
        self.size = size
        self.file: Any = None
        self.error: Optional[BaseException] = None
        self.opened = threading.Event()
        self.done = threading.Event()


class _ReadAhead:
    """See the module docstring. Files move: queued -> loading (an _Entry; the caller's own lazy
    handle when it has one, else a File opened here) -> claimed by a caller or dropped. Bytes
    loaded ahead count against the budget until the caller uses the file (note_use)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: List[str] = []
        self._entries: Dict[str, _Entry] = {}  # loaded ahead without a caller's handle
        self._handles: Dict[str, Any] = {}  # callers' lazy handles of model files, not loaded
        self._ahead: Dict[str, int] = {}  # loaded ahead, not yet used: path -> bytes
        self._done: set = set()  # used by the caller, queued or loaded once: never queued again
        self._used: set = set()  # used by the caller
        self._thread: Optional[threading.Thread] = None
        # Whether the worker still serves the queue: cleared under the lock as it decides to
        # exit (a thread that is still alive may already have decided not to look again).
        self._running = False
        self._opener: Optional[Callable[[str], Any]] = None
        self._budget = 0
        self._last_use = time.monotonic()
        self.active = False
        self.served = 0
        self.dropped = 0
        self.loaded = 0

    def note_lazy_open(self, path: str, file: Any) -> None:
        if not self.active or not _enabled() or "://" in path:
            return
        path = os.path.abspath(path)
        with self._cond:
            if path in self._queue or path not in self._done:
                self._handles[path] = file  # a read-ahead of this file loads this very handle
                self._last_use = time.monotonic()

    def note_use(self, path: str, opener: Callable[[str], Any]) -> None:  # noqa: C901
        if not self.active or not _enabled() or "://" in path:
            return
        path = os.path.abspath(path)
        with self._cond:
            if time.monotonic() - self._last_use > _idle_seconds() and not self._queue:
                self._used.clear()  # a new load (the same model may be loaded again)
                self._done.clear()
            self._last_use = time.monotonic()
            if path in self._used:
                return  # every later call on the same file: nothing to do
            self._used.add(path)
        files = model_files(path)
        with self._cond:
            self._done.add(path)
            self._ahead.pop(path, None)
            self._handles.pop(path, None)
            if path in self._queue:
                self._queue.remove(path)  # the caller reads it now: never read twice
            self._last_use = time.monotonic()
            if files:
                self._budget = _budget_bytes()  # the settings and free memory of now
                # The files after this one first, then those before it: frameworks do not always
                # load a model's files in its own order (diffusers sometimes starts with the VAE).
                at = files.index(path)
                for f in files[at + 1:] + files[:at]:
                    if f not in self._done:
                        self._done.add(f)
                        self._queue.append(f)
                self._opener = opener
                if self._queue and not self._running:
                    self._running = True
                    self._thread = threading.Thread(target=self._run, daemon=True,
                                                    name="flashload-read-ahead")
                    self._thread.start()
            self._cond.notify_all()

    def claim(self, path: str, lazy: bool) -> Any:
        """The file read ahead for ``path`` (loaded, or still loading: its load_all() waits), or
        None. A lazy open of a file still queued gets None and keeps it queued (its handle is
        then loaded ahead, note_lazy_open); any other open takes it off the queue."""
        if "://" in path:
            return None
        path = os.path.abspath(path)
        with self._cond:
            entry = self._entries.pop(path, None)
            if entry is None and not lazy and path in self._queue:
                self._queue.remove(path)  # not started: the caller reads it now
            self._cond.notify_all()
        if entry is None:
            return None
        (entry.opened if lazy else entry.done).wait()
        if entry.error is not None or entry.file is None:
            return None  # the caller opens it again and gets the error itself
        with self._cond:
            self.served += 1
        return entry.file

    def release(self) -> int:
        with self._cond:
            dropped = len(self._entries) + len(self._queue)
            self._queue.clear()
            self._entries.clear()
            self._handles.clear()
            self._ahead.clear()
            self._used.clear()
            self._done.clear()
            self.dropped += dropped
            self._cond.notify_all()
            return dropped

    def _held_bytes(self) -> int:
        return sum(self._ahead.values())

    def _drop_idle(self) -> None:
        if time.monotonic() - self._last_use < _idle_seconds():
            return
        for path in [p for p, e in self._entries.items() if e.done.is_set()]:
            del self._entries[path]
            self._ahead.pop(path, None)
            self.dropped += 1
        # Files loaded into the caller's own handles and never used: the caller holds them; they
        # no longer count against the budget, and the worker may end.
        for path in [p for p in self._ahead if p not in self._entries]:
            del self._ahead[path]
        self._handles.clear()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    self._drop_idle()
                    if self._queue:
                        path = self._queue[0]
                        try:
                            size = os.path.getsize(path)
                        except OSError:
                            self._queue.pop(0)
                            continue
                        if path in self._used:
                            self._queue.pop(0)  # the caller is reading it
                            continue
                        if not self._ahead or self._held_bytes() + size <= self._budget:
                            self._queue.pop(0)
                            entry = _Entry(path, size)
                            handle = self._handles.pop(path, None)
                            if handle is None:
                                self._entries[path] = entry
                            self._ahead[path] = size
                            opener = self._opener
                            break
                    elif not self._entries and not self._ahead:
                        self._running = False
                        return  # nothing to read, nothing held
                    self._cond.wait(timeout=1.0)
            try:
                file = handle
                if file is None:
                    assert opener is not None
                    file = opener(path)
                entry.file = file
                entry.opened.set()
                file.load_all()
                with self._cond:
                    self.loaded += 1
                    if handle is not None:
                        self.served += 1  # loaded into the caller's own handle
            except BaseException as e:  # noqa: BLE001 (the claimant opens it again, and sees it)
                entry.error = e
                with self._cond:
                    self._ahead.pop(path, None)
            entry.opened.set()
            entry.done.set()
            with self._cond:
                self._cond.notify_all()

    def stats(self) -> Dict[str, int]:
        with self._cond:
            return {"loaded": self.loaded, "served": self.served, "dropped": self.dropped,
                    "held": len(self._entries), "queued": len(self._queue),
                    "held_bytes": sum(e.size for e in self._entries.values()),
                    "ahead_bytes": self._held_bytes()}


_read_ahead = _ReadAhead()


@atexit.register
def _at_exit() -> None:
    # Files held or loading hold native objects: let them go before the interpreter tears down
    # (a read-ahead in flight finishes its one file first).
    _read_ahead.release()
    thread = _read_ahead._thread
    if thread is not None and thread.is_alive():
        thread.join(timeout=30)


def activate(on: bool) -> None:
    """Read-ahead runs only while patch() is in force (framework loads)."""
    with _read_ahead._cond:
        _read_ahead.active = on
    if not on:
        _read_ahead.release()


def note_lazy_open(path: str, file: Any) -> None:
    """A framework call opened ``path`` lazily (header only): if it is queued for read-ahead,
    this handle is the one loaded ahead (no second open, no second read)."""
    _read_ahead.note_lazy_open(path, file)


def _open_lazily(path: str) -> Any:
    from flashload._core import File
    return File.open(path, lazy=True)  # every engine option at its default


def note_use(path: str) -> None:
    """A framework call loads ``path`` whole: read the files its model loads next ahead."""
    _read_ahead.note_use(path, _open_lazily)


def claim(path: str, lazy: bool = False) -> Any:
    """The File read ahead for ``path``, or None; never returns the same File twice."""
    return _read_ahead.claim(path, lazy)


def release() -> int:
    """Drops every file read ahead and not claimed, and what is queued; returns how many."""
    return _read_ahead.release()


def stats() -> Dict[str, int]:
    """Files read ahead (loaded), handed to a framework call (served), dropped unclaimed, held
    without a caller (held, held_bytes), loaded ahead and not yet used (ahead_bytes)."""
    return _read_ahead.stats()
