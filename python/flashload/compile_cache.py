"""The torch.compile cache, carried with the model (flashload.torch.save_compile_cache and
restore_compile_cache). See docs/compile-cache.md.

A cold start of a server that compiles its model (diffusers' regional compilation of the
repeated UNet/transformer blocks, `fullgraph=True`) pays the compile on top of the weights. What
torch's compiler produced (inductor's FX graph and AOTAutograd caches, the generated code, the
compiled C++ kernels and Triton binaries) lives in inductor's cache folder
(TORCHINDUCTOR_CACHE_DIR); carrying those files with the model lets a fresh process skip the
compile: the compiler looks them up by its own keys and finds them.

Layout, inside the model folder (and so inside an archive `flashload pack` makes of it):

    .flashload/compile-cache/index.json        the entries and their key fields (informative)
    .flashload/compile-cache/<key>/manifest.json
    .flashload/compile-cache/<key>/inductor.tar  the cache folder's files, one uncompressed tar

`<key>` names what a cached kernel depends on: torch's version, Python's implementation and
version, the machine, the CPU vector ISA inductor compiles for (or, for CUDA, the GPU's compute
capability, the CUDA and Triton versions) and a hash of the compile options the caller passes.
The manifest holds the same fields, the tar's size and SHA-256 and the list of files (name, size,
SHA-256). One tar rather than a folder of files: a model loaded from an archive reads two members
instead of hundreds.

Restoring refuses, with one CompileCacheWarning saying why and a False return, an entry that is
missing, whose key fields differ from this process's (a cache made by another torch is never
used) or that is damaged (a size or checksum that differs from the manifest, a member the
manifest does not list, a path that leaves the cache folder). Files go into inductor's cache
folder through a temporary name and a rename, so a compiler running beside never reads half a
file; files already there are kept.

Why files and not torch.compiler.save_cache_artifacts(): measured on CPU inductor (torch 2.15), the
artifacts restore the FX graph and AOTAutograd entries but not the compiled C++ kernels, so the
first forward still runs the C++ compiler: 14.6 s against 3.0 s with the files (tiny UNet,
docs/compile-cache.md).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import platform
import shutil
import sys
import tarfile
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

__all__ = ["save_compile_cache", "restore_compile_cache", "compile_cache_key",
           "CompileCacheWarning"]

CACHE_FOLDER = ".flashload/compile-cache"
MANIFEST = "manifest.json"
BLOB = "inductor.tar"
INDEX = "index.json"
FORMAT = 1
# Largest manifest and blob read out of an archive (a blob is a few MB for a UNet's blocks).
_MAX_MANIFEST_BYTES = 64 << 20
_MAX_BLOB_BYTES = 16 << 30
# Inductor's cache files that are no results: locks and files being written.
_SKIPPED_FOLDERS = {"locks"}
_ARCHIVE_SUFFIXES = (".tar", ".tar.zst", ".tzst")

PathLike = Union[str, "os.PathLike[str]"]


class CompileCacheWarning(UserWarning):
    """A compile cache was not used (missing, made for another process kind, or damaged)."""


class _Refused(Exception):
    """Why an entry cannot be used; becomes the one warning restore_compile_cache() gives."""


# ---------------------------------------------------------------------------------------------
# The key


def _cpu_isa() -> str:
    """The vector ISA inductor's C++ kernels are built for, from the CPU's flags, without the
    trial compiles inductor's own pick_vec_isa() runs on its first call (seconds, in a process
    whose cache folder is empty): inductor's candidates in its order of preference, the first whose
    flags the CPU has (x86), or the SVE/NEON capabilities (aarch64); then ATen's CPU capability,
    which caps what inductor picks."""
    import torch
    try:
        capability = str(torch.backends.cpu.get_cpu_capability()).lower()
    except Exception:
        capability = "unknown"
    isa = platform.machine() or "unknown"
    try:
        if isa in ("x86_64", "AMD64"):
            from torch._inductor.cpu_vec_isa import supported_vec_isa_list, x86_isa_checker
            have = set(x86_isa_checker())
            isa = "none"
            for candidate in supported_vec_isa_list:
                if all(flag in have for flag in str(candidate).split()):
                    isa = str(candidate).replace(" ", "+")
                    break
        elif isa == "aarch64":
            caps = torch.cpu.get_capabilities()
            if (caps.get("sve2") or caps.get("sve")) and caps.get("bf16"):
                isa = f"sve{caps.get('sve_max_length', '')}"
            else:
                isa = "asimd"
    except Exception as e:  # an inductor without these names: name it, so the key still differs
        isa = f"{isa}-unknown-{type(e).__name__}"
    return f"{isa}/{capability}"


def _package_version(name: str) -> Optional[str]:
    try:
        from importlib import metadata
        return metadata.version(name)
    except Exception:
        return None


def _options_hash(options: Optional[Dict[str, Any]]) -> Tuple[str, str]:
    text = json.dumps(options or {}, sort_keys=True, default=repr, separators=(",", ":"))
    return text, hashlib.sha256(text.encode()).hexdigest()[:12]


def _resolve_device(torch: Any, device: Optional[str]) -> str:
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind = str(device).split(":")[0]
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r}: the compile cache knows 'cpu' and 'cuda' (ROCm "
                         "builds of torch also use 'cuda')")
    return kind


def compile_cache_key(options: Optional[Dict[str, Any]] = None,
                      device: Optional[str] = None) -> Tuple[str, Dict[str, str]]:
    """(key, fields): what a cached kernel of this process depends on.

    `options`: the compile options (e.g. {"fullgraph": True, "mode": None}), hashed into the key;
    pass the same at save and at restore. `device`: "cpu" or "cuda" (default: "cuda" when torch
    sees a GPU, else "cpu").
    """
    import torch
    v = sys.version_info
    fields: Dict[str, str] = {
        "torch": str(torch.__version__),
        "python": f"{sys.implementation.name}-{v.major}.{v.minor}",
        "machine": platform.machine() or "unknown",
        "device": _resolve_device(torch, device),
        "cpu_isa": _cpu_isa(),
    }
    if fields["device"] == "cuda":
        major, minor = torch.cuda.get_device_capability()
        fields["gpu"] = f"sm{major}{minor}"
        if getattr(torch.version, "hip", None):
            fields["hip"] = str(torch.version.hip)
        else:
            fields["cuda"] = str(torch.version.cuda)
        fields["triton"] = (_package_version("triton") or _package_version("pytorch-triton")
                            or "none")
    fields["options"] = _options_hash(options)[1]
    parts = [f"torch{fields['torch']}", fields["python"], fields["machine"], fields["cpu_isa"]]
    if fields["device"] == "cuda":
        parts += [fields["gpu"], f"cuda{fields.get('cuda', fields.get('hip'))}",
                  f"triton{fields['triton']}"]
    parts.append(f"opt{fields['options']}")
    key = "-".join(parts)
    key = "".join(c if c.isalnum() or c in "._-" else "_" for c in key)
    return key, fields


# ---------------------------------------------------------------------------------------------
# Files


def _inductor_cache_dir() -> str:
    from torch._inductor.runtime.cache_dir_utils import cache_dir
    return cache_dir()


def _sha256_file(path: Path) -> Tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def _fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _cache_files(root: Path) -> List[Path]:
    """Inductor's result files under `root`, relative, sorted (locks and temporaries left out)."""
    out: List[Path] = []
    for folder, dirs, files in os.walk(root):
        rel_folder = Path(folder).relative_to(root)
        if rel_folder == Path("."):
            dirs[:] = [d for d in dirs if d not in _SKIPPED_FOLDERS]
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".lock") or ".tmp" in name or name.startswith("tmp"):
                continue
            path = Path(folder) / name
            if path.is_symlink() or not path.is_file():
                continue
            out.append(rel_folder / name)
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temporaries(root: Path) -> None:
    """Temporary entries of saves whose process is gone (killed mid-save)."""
    for child in root.iterdir():
        name = child.name
        if not (name.startswith(".tmp-") or name.startswith(".old-")) or not child.is_dir():
            continue
        try:
            pid = int(name.rsplit("-", 1)[1])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(child, ignore_errors=True)


def _write_index(root: Path) -> None:
    entries = []
    for child in sorted(root.iterdir()):
        if child.name.startswith(".") or not child.is_dir():
            continue
        try:
            manifest = json.loads((child / MANIFEST).read_text())
            entries.append({"key": child.name, "fields": manifest.get("fields", {}),
                            "bytes": manifest.get("blob", {}).get("size", 0),
                            "created": manifest.get("created", "")})
        except (OSError, ValueError):
            continue
    data = json.dumps({"format": FORMAT, "entries": entries}, indent=1, sort_keys=True) + "\n"
    _write_atomic(root / INDEX, data.encode())


def save_compile_cache(model_dir: PathLike, options: Optional[Dict[str, Any]] = None, *,
                       device: Optional[str] = None,
                       cache_dir: Optional[PathLike] = None) -> str:
    """Stores what torch's compiler cached in this process into the model folder.

    Call after a warm-up (compile, then one forward with the shapes the server uses). Writes
    `model_dir/.flashload/compile-cache/<key>/` (see compile_cache_key()) from every result file of
    inductor's cache folder (`cache_dir`, default: TORCHINDUCTOR_CACHE_DIR or inductor's default
    folder), so warm up with TORCHINDUCTOR_CACHE_DIR set to a fresh folder to store only this
    model's entries. Atomic: the entry is built in a temporary folder beside and renamed into
    place, replacing an older entry of the same key; entries of other keys stay. Returns the
    entry's path. Raises OSError (naming the file) when it cannot write, ValueError when inductor's
    cache folder holds no file (nothing compiled yet).
    """
    key, fields = compile_cache_key(options, device)
    options_text, _ = _options_hash(options)
    source = Path(cache_dir) if cache_dir is not None else Path(_inductor_cache_dir())
    files = _cache_files(source) if source.is_dir() else []
    if not files:
        raise ValueError(f"{source}: inductor's cache folder holds no compiled file; compile the "
                         "model and run one forward in this process before save_compile_cache()")
    root = Path(model_dir) / CACHE_FOLDER
    root.mkdir(parents=True, exist_ok=True)
    dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX)  # one save at a time per model folder
        _remove_stale_temporaries(root)
        tmp = root / f".tmp-{key}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            listed = []
            blob = tmp / BLOB
            with open(blob, "wb") as raw:
                with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    for rel in files:
                        path = source / rel
                        data = path.read_bytes()
                        info = tarfile.TarInfo(rel.as_posix())
                        info.size = len(data)
                        info.mode = 0o644
                        info.mtime = 0
                        tar.addfile(info, io.BytesIO(data))
                        listed.append({"name": rel.as_posix(), "size": len(data),
                                       "sha256": hashlib.sha256(data).hexdigest()})
                raw.flush()
                os.fsync(raw.fileno())
            blob_size, blob_sha = _sha256_file(blob)
            manifest = {
                "format": FORMAT, "created_by": "flashload", "key": key, "fields": fields,
                "options": options_text,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "blob": {"name": BLOB, "size": blob_size, "sha256": blob_sha},
                "files": listed,
            }
            _write_atomic(tmp / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
            _fsync_path(tmp, directory=True)
            final = root / key
            old = root / f".old-{key}-{os.getpid()}"
            if final.exists():
                os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _write_index(root)
        _fsync_path(root, directory=True)
    finally:
        os.close(dir_fd)  # releases the lock
    return str(root / key)


# ---------------------------------------------------------------------------------------------
# Reading an entry, from a folder or from an archive


def _is_archive(where: str) -> bool:
    if where.startswith("tar:"):
        return True
    base = where.split("?", 1)[0]
    return base.endswith(_ARCHIVE_SUFFIXES)


class _FolderReader:
    def __init__(self, model_dir: str) -> None:
        self.root = Path(model_dir) / CACHE_FOLDER
        self.where = str(self.root)

    def name(self, rel: str) -> str:
        return str(self.root / rel)

    def read(self, rel: str, max_bytes: int) -> Optional[bytes]:
        path = self.root / rel
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise _Refused(f"{path} is {size} bytes, more than the {max_bytes} allowed")
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        except OSError as e:
            raise _Refused(f"{path}: {e.strerror or e}") from e

    def keys(self) -> Optional[List[str]]:
        if not self.root.is_dir():
            return []
        return sorted(c.name for c in self.root.iterdir() if c.is_dir() and not
                      c.name.startswith("."))


class _ArchiveReader:
    def __init__(self, archive: str) -> None:
        if not archive.startswith("tar:") and "://" not in archive:
            archive = os.path.abspath(archive)
        self.archive = archive
        self.where = f"{archive} ({CACHE_FOLDER}/)"

    def name(self, rel: str) -> str:
        return f"{self.archive} member {CACHE_FOLDER}/{rel}"

    def read(self, rel: str, max_bytes: int) -> Optional[bytes]:
        from flashload import _core
        uri = f"tar:{self.archive}!/{CACHE_FOLDER}/{rel}"
        try:
            return _core.read_object(uri, max_bytes)
        except FileNotFoundError:
            return None
        except Exception as e:  # SafetensorError: damaged archive, too large, unreachable
            raise _Refused(f"{_core.redact_url(uri)}: {e}") from e

    def keys(self) -> Optional[List[str]]:
        return None  # an archive is not listed; the index names its entries


def _reader(model_dir: PathLike) -> Any:
    where = os.fspath(model_dir)
    if os.path.isdir(where):
        return _FolderReader(where)
    if _is_archive(where):
        return _ArchiveReader(where)
    return _FolderReader(where)  # a missing folder: "no compile cache" below


def _difference(ours: Dict[str, str], theirs: Dict[str, Any]) -> List[str]:
    out = []
    for name in sorted(set(ours) | set(theirs)):
        if str(theirs.get(name)) != str(ours.get(name)):
            out.append(f"{name} {theirs.get(name, '(none)')} (this process: "
                       f"{ours.get(name, '(none)')})")
    return out


def _explain_missing(reader: Any, key: str, fields: Dict[str, str]) -> str:
    entries: List[Tuple[str, Dict[str, Any]]] = []
    index = None
    try:
        data = reader.read(INDEX, _MAX_MANIFEST_BYTES)
        index = json.loads(data) if data is not None else None
    except (_Refused, ValueError):
        index = None
    if isinstance(index, dict):
        for e in index.get("entries", []):
            if isinstance(e, dict) and isinstance(e.get("fields"), dict):
                entries.append((str(e.get("key")), e["fields"]))
    listed = reader.keys()
    if listed is not None:
        known = {k for k, _ in entries}
        for k in listed:
            if k in known:
                continue
            try:
                m = json.loads(reader.read(f"{k}/{MANIFEST}", _MAX_MANIFEST_BYTES) or b"null")
                entries.append((k, m.get("fields", {}) if isinstance(m, dict) else {}))
            except (_Refused, ValueError):
                entries.append((k, {}))
    base = f"{reader.where} holds no compile cache entry for this process (key {key})"
    if not entries:
        return (f"{base}; it holds none at all. Compile and run one forward, then call "
                "save_compile_cache() to add one")
    nearest = min(entries, key=lambda e: len(_difference(fields, e[1])))
    diff = _difference(fields, nearest[1])
    return (f"{base}; the nearest of its {len(entries)} entries, {nearest[0]}, was made with "
            f"{'; '.join(diff) if diff else 'the same fields under another name'}. A cache made "
            "for another torch, Python, CPU/GPU or compile options is never used: compile here "
            "and call save_compile_cache() to add an entry for this kind of process")


def _safe_member(name: str) -> bool:
    if not name or name.startswith("/") or "\\" in name or "\0" in name:
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def _load_entry(reader: Any, key: str, fields: Dict[str, str]) -> Tuple[Dict[str, Any], bytes]:
    """The manifest and the blob of entry `key`, checked; _Refused saying why otherwise."""
    raw = reader.read(f"{key}/{MANIFEST}", _MAX_MANIFEST_BYTES)
    if raw is None:
        raise _Refused(_explain_missing(reader, key, fields))
    where = reader.name(f"{key}/{MANIFEST}")
    try:
        manifest = json.loads(raw)
    except ValueError as e:
        raise _Refused(f"{where} is not JSON ({e}): the entry is damaged; save it again") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise _Refused(f"{where}: format {found!r}, expected {FORMAT}: made by another flashload; "
                       "save it again")
    theirs = manifest.get("fields")
    if not isinstance(theirs, dict) or _difference(fields, theirs):
        diff = _difference(fields, theirs if isinstance(theirs, dict) else {})
        raise _Refused(f"{where}: the entry's key fields differ from this process's: "
                       f"{'; '.join(diff)}. A cache made for another process kind is never used")
    blob_info = manifest.get("blob")
    files = manifest.get("files")
    if (not isinstance(blob_info, dict) or not isinstance(blob_info.get("size"), int)
            or not isinstance(blob_info.get("sha256"), str) or not isinstance(files, list)):
        raise _Refused(f"{where}: no valid 'blob' or 'files': the entry is damaged; save it again")
    blob = reader.read(f"{key}/{BLOB}", max(_MAX_BLOB_BYTES, blob_info["size"]))
    blob_where = reader.name(f"{key}/{BLOB}")
    if blob is None:
        raise _Refused(f"{blob_where} is missing: the entry is damaged; save it again")
    if len(blob) != blob_info["size"]:
        raise _Refused(f"{blob_where} is {len(blob)} bytes, the manifest says {blob_info['size']}:"
                       " the entry is damaged (truncated or replaced); save it again")
    digest = hashlib.sha256(blob).hexdigest()
    if digest != blob_info["sha256"]:
        raise _Refused(f"{blob_where}: SHA-256 {digest}, the manifest says {blob_info['sha256']}: "
                       "the entry is damaged; save it again")
    return manifest, blob


def _install(manifest: Dict[str, Any], blob: bytes, target: Path, where: str) -> int:
    """Writes the blob's files into inductor's cache folder; returns how many were new."""
    expected = {}
    for f in manifest["files"]:
        if not isinstance(f, dict) or not _safe_member(str(f.get("name", ""))):
            raise _Refused(f"{where}: the manifest lists an unsafe or malformed file {f!r}")
        expected[f["name"]] = (f.get("size"), f.get("sha256"))
    written = 0
    seen = set()
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:") as tar:
        members = tar.getmembers()
        for m in members:
            if not m.isfile() or m.name not in expected or m.name in seen:
                raise _Refused(f"{where}: member {m.name!r} at byte offset {m.offset} is not a "
                               "file the manifest lists once: the entry is damaged")
            size, sha = expected[m.name]
            if m.size != size:
                raise _Refused(f"{where}: member {m.name!r} at byte offset {m.offset} is {m.size}"
                               f" bytes, the manifest says {size}: the entry is damaged")
            seen.add(m.name)
        if seen != set(expected):
            missing = sorted(set(expected) - seen)[:3]
            raise _Refused(f"{where}: files the manifest lists are not in {BLOB} ({missing}...)")
        # Checked whole before anything is written: a damaged entry leaves the cache folder as it
        # was.
        contents = []
        for m in members:
            f = tar.extractfile(m)
            data = f.read() if f is not None else b""
            if hashlib.sha256(data).hexdigest() != expected[m.name][1]:
                raise _Refused(f"{where}: member {m.name!r} at byte offset {m.offset}: SHA-256 "
                               "differs from the manifest: the entry is damaged")
            contents.append((m.name, data))
    for name, data in contents:
        path = target / name
        if path.exists() and path.stat().st_size == len(data):
            continue  # inductor's files are named by their content's key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.flashload-tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as out:
                out.write(data)
            os.chmod(tmp, 0o755 if name.endswith(".so") else 0o644)
            os.replace(tmp, path)
        except BaseException:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise
        written += 1
    return written


def restore_compile_cache(model_dir: PathLike, options: Optional[Dict[str, Any]] = None, *,
                          device: Optional[str] = None,
                          cache_dir: Optional[PathLike] = None) -> bool:
    """Makes torch's compiler use the cache stored with the model; call before the first compile.

    `model_dir`: the model folder, or its archive (.tar, .tar.zst; a path or URI, read through
    flashload's archive support). `options`, `device`: as given to save_compile_cache(). Finds
    the entry whose key matches this process and writes its files into inductor's cache folder
    (`cache_dir`, default: TORCHINDUCTOR_CACHE_DIR or inductor's default). Returns True when it
    did; otherwise gives one CompileCacheWarning saying why (no entry for this process, an entry
    whose key fields differ, a damaged entry) and returns False: the model then compiles as
    without a cache. Raises only for errors writing inductor's cache folder (OSError).

    A compile cache is code (compiled kernels and generated Python that torch loads and runs): the
    checks catch damaged or mismatched entries, not malicious ones. Restore only from models whose
    code you would run (docs/compile-cache.md, "Trust").
    """
    key, fields = compile_cache_key(options, device)
    reader = _reader(model_dir)
    try:
        manifest, blob = _load_entry(reader, key, fields)
        where = reader.name(f"{key}/{BLOB}")
        target = Path(cache_dir) if cache_dir is not None else Path(_inductor_cache_dir())
        target.mkdir(parents=True, exist_ok=True)
        try:
            _install(manifest, blob, target, where)
        except tarfile.TarError as e:
            raise _Refused(f"{where}: not a readable tar ({e}): the entry is damaged") from e
    except _Refused as why:
        warnings.warn(f"flashload: compile cache not used: {why}", CompileCacheWarning,
                      stacklevel=2)
        return False
    return True
