"""flashload: load safetensors weights as fast as the storage allows.

A drop-in for the `safetensors` API:

    from flashload import safe_open
    with safe_open("model.safetensors", framework="pt") as f:
        weight = f.get_tensor("embed.weight")

    from flashload.torch import load_file      # or flashload.numpy
    state_dict = load_file("model.safetensors")

Contracts shared by the whole package:
- ``load_file`` loads a file whole, once, by flashload's engine (GIL released; Ctrl-C cancels the
  load with KeyboardInterrupt). ``safe_open`` reads and validates only the header when it opens.
  Before the file is loaded, ``get_tensor`` reads just that tensor, and once the tensors read that
  way add up to a quarter of the file's data, all the others in one engine load (so reading every
  key in turn costs about one load of the file); ``get_tensors`` — or ``get_slice(name)[...]`` of
  a whole tensor, as transformers does from several threads — loads the whole file (what is not
  read yet) once; a partial ``get_slice`` reads only the bytes of the box it touches.
  ``File.bytes_read`` counts what was read. Engine options are keyword arguments
  whose defaults need no tuning: ``strategy`` ("auto", "direct", "buffered", "mmap", "network",
  "mapped"), ``threads`` (0: automatic) and ``budget_mib`` (memory for reads in flight).
- With ``strategy="auto"`` a file entirely in the page cache is mapped instead of copied, as
  safetensors does: its tensors are copy-on-write views of the cache (writes stay private; the
  file must not be truncated while they live). ``strategy="buffered"`` always copies.
- Tensors are zero-copy views of the loaded memory, handed over through DLPack. They stay valid
  after the file is closed and garbage collected; flashload never writes to them afterwards.
- Errors in the file raise :class:`SafetensorError` (an ``Exception``) with flashload's diagnosis
  (file, tensor, byte offset, and what the file really is); a missing file raises
  ``FileNotFoundError``, a folder ``IsADirectoryError``. Where the reference package is
  installed, :class:`SafetensorError` also derives from ``safetensors.SafetensorError``, so code
  written against the reference catches flashload's errors unchanged.
"""

from __future__ import annotations

import errno
import operator
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from flashload import _core, _prefetch
from flashload._core import File as _File
from flashload._core import default_budget_mib as _DEFAULT_BUDGET_MIB
from flashload._core import load_model as _load_model

__all__ = ["SafetensorError", "safe_open", "load_model_dir", "release_cached_memory", "patch",
           "unpatch", "is_patched", "patch_report", "PatchReport", "PatchFallbackError",
           "PatchFallbackWarning", "__version__"]
__version__ = "0.1.0"


def _reference_error_class() -> Tuple[type, ...]:
    """(safetensors.SafetensorError,) where the reference package is installed, else ()."""
    try:
        from safetensors import SafetensorError as reference
    except ImportError:
        return ()
    return (reference,) if isinstance(reference, type) and issubclass(reference, Exception) else ()


class SafetensorError(_core.SafetensorError, *_reference_error_class()):  # type: ignore[misc]
    """An error in a safetensors file or in a call (file, tensor and what to do in the message).

    Derives from ``safetensors.SafetensorError`` where the reference package is installed, so
    ``except safetensors.SafetensorError`` catches flashload's errors, under patch() too. Every
    error flashload raises for a file, native or not, is this class.
    """


SafetensorError.__module__ = "flashload"
_core._set_error_class(SafetensorError)

_BACKENDS = ("mmap", "pread")


def _not_str(value: Any) -> str:
    """How the reference names a value that is not a str in its TypeErrors."""
    return "'None'" if value is None else f"'{type(value).__name__}' object"


def _save_to_file(items: List[Any], path: str, metadata: Optional[Dict[str, str]]) -> None:
    """Writes a file for the save_file functions; a missing folder is a SafetensorError there, as
    in the reference (the message names the file flashload tried to create)."""
    try:
        _core.serialize_file(items, path, metadata)
    except FileNotFoundError as error:
        raise SafetensorError(f"Error while serializing: {error}") from None


def _check_save_arguments(names: Sequence[Any], filename: Any = None,
                          metadata: Any = None) -> Optional[str]:
    """The reference's checks of a save call's arguments, in its order and with its TypeErrors:
    tensor names, then the filename (when saving to a file), then the metadata. Returns the
    filename as a path."""
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"argument 'tensor_dict': {_not_str(name)} is not an instance of 'str'")
    path = None
    if filename is not None:
        try:
            path = os.fspath(filename)
        except TypeError:
            raise TypeError("argument 'filename': expected str, bytes or os.PathLike object, not "
                            f"{type(filename).__name__}") from None
        if isinstance(path, bytes):
            path = os.fsdecode(path)
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise TypeError(f"argument 'metadata': {_not_str(metadata)} is not an instance of "
                            "'dict'")
        for key, value in metadata.items():
            for item in (key, value):
                if not isinstance(item, str):
                    raise TypeError(f"argument 'metadata': {_not_str(item)} is not an instance of "
                                    "'str'")
    return path


def _check_backend(backend: Any) -> None:
    """The reference's check of its ``backend`` argument, with its errors (flashload reads every
    file its own way, so a valid value changes nothing)."""
    if not isinstance(backend, str):
        raise TypeError(f"argument 'backend': {_not_str(backend)} is not an instance of 'str'")
    if backend not in _BACKENDS:
        raise SafetensorError(f'backend "{backend}" is invalid (expected one of: "mmap", "pread")')

_NUMPY_NAMES = ("np", "numpy")
_TORCH_NAMES = ("pt", "torch", "pytorch")


def _engine_options(strategy: str, threads: int, budget_mib: int) -> Dict[str, Any]:
    return {"strategy": strategy, "threads": int(threads), "budget_mib": int(budget_mib)}


_DTYPE_NAMES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def _dtype_spec(dtype: Any) -> str:
    """The engine's conversion spec for the ``dtype`` argument: None keeps every stored dtype; a
    string is a spec as the CLI's --dtype takes it ("bf16", "F32=BF16,lm_head.*:keep"); a torch or
    numpy dtype (float32, float16, bfloat16) converts every floating tensor to it."""
    if dtype is None:
        return ""
    if isinstance(dtype, str):
        return dtype
    text = str(dtype)
    if text.startswith("torch."):
        text = text[len("torch."):]
    else:
        import numpy
        try:
            text = numpy.dtype(dtype).name
        except TypeError:
            raise TypeError(f"dtype must be a string, a torch dtype or a numpy dtype, got "
                            f"{type(dtype).__name__}") from None
    if text not in _DTYPE_NAMES:
        raise ValueError(f"dtype {dtype}: flashload converts floating tensors to float32, float16 "
                         "or bfloat16")
    return _DTYPE_NAMES[text]


def _open_file(filename: Union[str, "os.PathLike[str]"], strategy: str = "auto", threads: int = 0,
               budget_mib: int = _DEFAULT_BUDGET_MIB, lazy: bool = False, device: str = "cpu",
               dtype: Any = None) -> _File:
    """Loads one safetensors file with the engine, or with ``lazy`` reads only its header (the
    whole-file load comes on first use). ``device``: "cpu" or "cuda:N", where the engine loads;
    ``dtype``: conversion on the way (see _dtype_spec).

    Raises as described in the module docstring.
    """
    path = os.fspath(filename)
    if not isinstance(path, str):
        raise TypeError(f"argument 'filename': '{type(path).__name__}' object is not an instance "
                        "of 'str'")
    local = not _is_uri(path)
    if local and os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a safetensors file", path)
    default = (strategy == "auto" and int(threads) == 0
               and int(budget_mib) == _DEFAULT_BUDGET_MIB and device == "cpu" and dtype is None)
    if local and default:
        # A file the read-ahead of a framework load (patch()) has loaded, or is loading: handed
        # over, never read twice.
        ahead = _prefetch.claim(path, lazy)
        if ahead is not None:
            if not lazy:
                ahead.load_all()
            return ahead
    try:
        return _File.open(path, **_engine_options(strategy, threads, budget_mib), lazy=lazy,
                          device=device, dtype=_dtype_spec(dtype))
    except FileNotFoundError:
        if not local:
            raise
        # The reference's message, word for word (code may match on it).
        raise FileNotFoundError(f"No such file or directory: {path}") from None


def release_cached_memory() -> int:
    """Frees the memory flashload keeps for later loads of the process: files read ahead for a
    framework load and never opened by it, host memory freed by earlier loads (kept populated),
    and pinned staging. Returns the bytes of kept memory freed (read-ahead files are freed when
    their last tensor goes)."""
    _prefetch.release()
    return _core.release_cached_memory()


def _is_uri(path: str) -> bool:
    """A URI ("s3://...", "https://...", "file://...", or an archive member
    "tar:<archive>!/<member>") goes to the native layer unchanged: it knows the schemes, and
    answers an unknown one with SafetensorError naming the URI."""
    return "://" in path or path.startswith("tar:")


class _Framework:
    """Turns flashload arrays into one framework's tensors on one device."""

    def __init__(self, framework: str, device: Any) -> None:
        if not isinstance(framework, str):
            raise TypeError(f"framework must be a string, got {type(framework).__name__}")
        if framework in _NUMPY_NAMES:
            from flashload import numpy as module
            if device not in ("cpu", None):
                raise SafetensorError(f"Device {device} is not supported for framework numpy "
                                      "(numpy arrays live on the host: use device='cpu')")
            self.name = "numpy"
            self.native_device = "cpu"
        elif framework in _TORCH_NAMES:
            from flashload import torch as module
            module._require_torch()
            self.name = "pytorch"
            self.native_device = module._native_device(device)
        else:
            raise SafetensorError(
                f"framework {framework} is invalid: flashload supports {', '.join(_TORCH_NAMES)} "
                f"(PyTorch) and {', '.join(_NUMPY_NAMES)} (numpy)")
        self._module = module
        self.device = device

    def convert(self, file: _File, name: str) -> Any:
        _prefetch.note_use(file.name)  # a whole file in use: read the model's next files ahead
        return self._module._from_file(file, name, self.device)

    def convert_array(self, array: Any) -> Any:
        """A native array (one tensor already in memory) in this framework, zero-copy on the
        host."""
        return self._module._from_array(lambda raw: array.as_raw() if raw else array, array.dtype,
                                        self.device)

    def convert_box(self, file: _File, name: str, dtype: str, starts: List[int],
                    stops: List[int]) -> Any:
        """The box [starts, stops) of tensor ``name``, read by itself (checks the dtype before
        reading anything)."""
        self._module._check_dtype(dtype)
        return self._module._from_array(lambda raw: file.box(name, starts, stops, raw), dtype,
                                        self.device)

    def convert_rows(self, file: _File, name: str, dtype: str, start: int, stop: int) -> Any:
        """Rows [start, stop) of tensor ``name`` (checks the dtype before reading anything)."""
        self._module._check_dtype(dtype)
        return self._module._from_array(lambda raw: file.rows(name, start, stop, raw), dtype,
                                        self.device)


class safe_open:  # noqa: N801 (the reference's name)
    """Opens a safetensors file; use as a context manager.

    Args:
        filename: path of the file (``str`` or ``os.PathLike``), or a URI string
            (``file://``, and the remote schemes flashload was built with: ``http(s)://``,
            ``s3://``) passed to the native layer unchanged.
        framework: "pt"/"torch"/"pytorch" for torch tensors, "np"/"numpy" for numpy arrays.
        device: where tensors are returned; "cpu" for numpy; for torch anything ``torch.device``
            accepts: a CUDA device ("cuda", "cuda:N", N) is loaded into straight by the engine
            (pinned staging, one device allocation); other devices get tensors loaded to host
            memory, then moved by torch. Slices read before the file is loaded are moved by torch.
        backend: the reference's storage backend, "mmap" or "pread" (keyword only): checked as
            the reference checks it, then ignored, since flashload's engine picks how to read.
        dtype: convert floating tensors on the way (keyword only): torch.bfloat16, "bf16",
            "fp16", "fp32", or rules such as "F32=BF16,lm_head.*:keep"; None (default) keeps the
            stored dtypes. Conversion rounds to nearest even, on the GPU for a CUDA device.
        strategy, threads, budget_mib: engine options (keyword only); the defaults need no tuning.
        process_group: a torch.distributed process group (keyword only; None: no tensor
            parallelism). With a group, every rank of it opens the same file, and get_tensor()
            returns this rank's shard of the tensor: ``torch.tensor_split(full, world, dim)[rank]``
            along the dimension the ``shard`` rules name, or the whole tensor where they replicate
            it (see flashload.distributed). keys() and metadata() still describe the whole file.
            The first get_tensor()/get_tensors()/get_slice() loads all of this rank's shards in
            one tensor-parallel load, a collective: every rank must make such a call. A failure
            on any rank raises on every rank, naming the rank; a rank that does not arrive within
            ``timeout_s`` makes the others raise TimeoutError.
        shard, shard_mode, share_window_mib, timeout_s: the tensor-parallel load's rules ("llama",
            "none" or a rules file), mode ("auto", "local", "share"), read window and per-step
            timeout, as flashload.distributed.load_sharded takes them (keyword only; only with
            ``process_group``).

    Opening reads and validates the header only (a malformed file raises here, as in the
    reference). Before the file is loaded, get_tensor() reads only that tensor (kept for later
    calls); once the tensors read one by one add up to a quarter of the file's data, all the
    others are read in one engine load and every later call is served from memory.
    get_tensors() loads the whole file (what is not read yet) once; so does indexing a get_slice()
    handle with the whole tensor (``[...]``, ``[:]``, slices covering every row), as transformers
    does for every tensor: one engine load, however many threads race to it. A partial slice of a
    tensor not in memory reads only its box: the leading rows it touches when they are contiguous
    or small (one read), otherwise the box through the engine's plan (runs of bytes widened to
    4 KiB, gaps cheaper to read than to skip read too), a step above 1 reading the covering box.
    After the context exits, keys(),
    get_tensor() etc. raise SafetensorError("File is closed"); tensors and slice handles already
    returned stay valid.
    """

    def __init__(self, filename: Union[str, "os.PathLike[str]"], framework: str,
                 device: Any = "cpu", *, backend: str = "mmap", dtype: Any = None,
                 strategy: str = "auto", threads: int = 0,
                 budget_mib: int = _DEFAULT_BUDGET_MIB, process_group: Any = None,
                 shard: str = "llama", shard_mode: str = "auto", share_window_mib: int = 0,
                 timeout_s: Optional[float] = None) -> None:
        self._framework = _Framework(framework, device)
        _check_backend(backend)  # after the framework and device, as the reference checks them
        self._file: Optional[_File] = _open_file(filename, strategy, threads, budget_mib,
                                                 lazy=True,
                                                 device=self._framework.native_device,
                                                 dtype=dtype)
        # Tensor-parallel: the arguments of the one sharded load made on first use, and its result.
        self._sharded: Optional[Dict[str, Any]] = None
        self._shards: Optional[Dict[str, Any]] = None
        if process_group is not None:
            self._sharded = {"process_group": process_group, "framework": framework,
                             "device": device, "shard": shard, "shard_mode": shard_mode,
                             "share_window_mib": share_window_mib, "timeout_s": timeout_s,
                             "dtype": dtype, "strategy": strategy, "threads": threads,
                             "budget_mib": budget_mib}
        else:
            _prefetch.note_lazy_open(self._file.name, self._file)

    def __enter__(self) -> "safe_open":
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        self._file = None

    def _opened(self) -> _File:
        if self._file is None:
            raise SafetensorError("File is closed")
        return self._file

    def keys(self) -> List[str]:
        """Tensor names, sorted."""
        return self._opened().keys()

    def offset_keys(self) -> List[str]:
        """Tensor names in the order of their data in the file."""
        return self._opened().offset_keys()

    def metadata(self) -> Optional[Dict[str, str]]:
        """The header's ``__metadata__``, or None when it has none."""
        return self._opened().metadata()

    def get_tensor(self, name: str) -> Any:
        """The tensor ``name`` in the chosen framework (zero-copy on the host); with a
        process_group, this rank's shard of it.

        Raises SafetensorError when the file has no tensor of that name.
        """
        if self._sharded is not None:
            return self._shard(name)
        return self._framework.convert(self._opened(), name)

    def get_tensors(self) -> Dict[str, Any]:
        """Every tensor, keyed by name, in file order (one engine load of the whole file); with a
        process_group, this rank's shards."""
        file = self._opened()
        if self._sharded is not None:
            return dict(self._load_shards())
        _prefetch.note_use(file.name)
        file.load_all()
        return {name: self._framework.convert(file, name) for name in file.offset_keys()}

    def get_slice(self, name: str) -> Any:
        """A sliceable handle on tensor ``name``: get_shape(), get_dtype(), and indexing; with a
        process_group, on this rank's shard of it."""
        file = self._opened()
        if name not in file:
            raise SafetensorError(
                f"File {_core.redact_url(file.name)} does not contain tensor {name}")
        if self._sharded is not None:
            return _ShardSlice(self._shard(name), file.info(name)[0])
        return _SafeSlice(file, name, self._framework)

    def _load_shards(self) -> Dict[str, Any]:
        """This rank's shards, loaded by one tensor-parallel load on first use."""
        if self._shards is None:
            from flashload.distributed import load_sharded
            options = dict(self._sharded or {})
            group = options.pop("process_group")
            self._shards = load_sharded(self._opened().name, group, **options).tensors
        return self._shards

    def _shard(self, name: str) -> Any:
        file = self._opened()
        if name not in file:
            raise SafetensorError(
                f"File {_core.redact_url(file.name)} does not contain tensor {name}")
        shards = self._load_shards()
        if name not in shards:
            raise SafetensorError(
                f"File {_core.redact_url(file.name)}: this rank holds no part of tensor {name} "
                "(it has fewer indices along its split dimension than the group has ranks)")
        return shards[name]


def load_model_dir(path: Union[str, "os.PathLike[str]"], device: Any = "cpu", framework: str = "pt",
                   *, variant: Optional[str] = None, dtype: Any = None, strategy: str = "auto",
                   threads: int = 0,
                   budget_mib: int = _DEFAULT_BUDGET_MIB) -> Dict[str, Dict[str, Any]]:
    """Loads a whole model in one engine run: one dict of tensors per component.

    Args:
        path: a diffusers folder (``model_index.json`` + component folders), a folder with a
            ``*.safetensors.index.json`` sharded checkpoint or one ``.safetensors`` file, or a file;
            a ``.tar`` or seekable ``.tar.zst`` archive holding any of these (read in place, never
            extracted); or a URI string ("scheme://...", "tar:<archive>!/<member>"), passed to the
            native layer unchanged.
        device, framework: as for :class:`safe_open` ("pt" by default, or "np").
        variant: diffusers variant, e.g. "fp16" for ``*.fp16.safetensors``.
        dtype: conversion on the way, as for :class:`safe_open` (tensor names in rules are
            "component/name" for a diffusers folder).
        strategy, threads, budget_mib: engine options; the defaults need no tuning.

    Returns:
        ``{component: {tensor name: tensor}}``: "unet", "vae", "text_encoder"... for a diffusers
        folder, a single "model" otherwise; tensors in file order. Sharded checkpoints are checked
        against their index (missing, extra or misplaced tensors raise SafetensorError).
    """
    fw = _Framework(framework, device)
    files = _load_model(os.fspath(path), **_engine_options(strategy, threads, budget_mib),
                        variant=variant or "", device=fw.native_device,
                        dtype=_dtype_spec(dtype))
    return {component: {name: fw.convert(file, name) for name in file.offset_keys()}
            for component, file in files.items()}


class _SafeSlice:
    """One tensor of an open file, indexed like the reference's PySafeSlice.

    An index covering the whole tensor (``[...]``, ``[:]``, slices covering every row) loads the
    whole file once (all threads share that one load) and returns a view of it; a partial index
    of a tensor not in memory reads just the box it touches (see safe_open). What an index means
    follows the
    reference, which differs by framework:

    - numpy: ints (negative counts from the end), ``start:stop:step`` slices with a positive step,
      one ``...``, and the empty list (no rows), with the reference's checks and messages: a
      slice's start must lie inside the dimension and its stop not beyond it (out-of-range bounds
      raise, they are not clipped). Where the reference fails outside its own checks, flashload
      does what Python slicing does: negative slice bounds count from the end (the reference
      raises OverflowError) and a slice whose stop is before its start is empty (the reference
      raises SystemError).
    - torch: the reference applies torch's indexing to the tensor, and so does flashload: any
      index torch takes (None, lists, bool and integer tensors; bounds clipped as Python does),
      with torch's errors. Indexes of ints, slices and ``...`` alone read only their box; any
      other reads this one tensor whole, then indexes it.
    """

    def __init__(self, file: _File, name: str, framework: _Framework) -> None:
        self._file = file
        self._name = name
        self._framework = framework
        dtype, shape = file.info(name)
        self._shape = [int(d) for d in shape]
        self._dtype = dtype

    def get_shape(self) -> List[int]:
        """The tensor's shape."""
        return list(self._shape)

    def get_dtype(self) -> str:
        """The safetensors dtype name, e.g. "F32"."""
        return self._dtype

    def _leading_rows_bytes(self, key: Tuple[Any, ...]) -> int:
        """Bytes of the leading rows a normalized ``key`` touches (as stored, or as converted)."""
        if not self._shape:
            return 0
        start, stop, _ = _leading_rows(key, self._shape)
        elements = stop - start
        for size in self._shape[1:]:
            elements *= size
        return elements * _DTYPE_BITS.get(self._dtype, 64) // 8

    def __getitem__(self, index: Any) -> Any:
        if self._framework.name == "pytorch":
            key = _basic_key(index, self._shape)
            if key is None:  # an index only torch knows: index this tensor, read whole
                whole = self._framework.convert_rows(self._file, self._name, self._dtype, 0,
                                                     self._shape[0] if self._shape else 0)
                return whole[index]
        else:
            key = _normalize_index(index, self._shape)
        if _covers_everything(key, self._shape):
            self._file.load_all()  # one whole-file load, however many threads race to it
            return self._framework.convert(self._file, self._name)
        if self._file.in_memory(self._name):
            return self._framework.convert(self._file, self._name)[key]
        if _whole_after_first(key, self._shape) or self._leading_rows_bytes(key) <= _SMALL_READ:
            start, stop, rest = _leading_rows(key, self._shape)
            rows = self._framework.convert_rows(self._file, self._name, self._dtype, start, stop)
            return rows[rest]
        starts, stops, rest = _box(key, self._shape)
        box = self._framework.convert_box(self._file, self._name, self._dtype, starts, stops)
        return box[rest]


# A partial slice whose leading rows take at most this many bytes reads those rows, in one read:
# fewer bytes than the engine's plan of its box (ranges widened to 4 KiB, gaps under 16 KiB read).
_SMALL_READ = 16 << 10

_DTYPE_BITS = {"F64": 64, "I64": 64, "U64": 64, "C64": 64, "F32": 32, "I32": 32, "U32": 32,
               "F16": 16, "BF16": 16, "I16": 16, "U16": 16, "I8": 8, "U8": 8, "BOOL": 8,
               "F8_E4M3": 8, "F8_E5M2": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "F8_E8M0": 8,
               "F6_E2M3": 6, "F6_E3M2": 6, "F4": 4}


def _whole_after_first(key: Tuple[Any, ...], shape: Sequence[int]) -> bool:
    """Whether a normalized ``key`` keeps every dimension after the first whole: its bytes are
    then the leading rows it touches, one contiguous run."""
    return all(isinstance(k, slice) and k.start == 0 and k.stop == size and k.step == 1
               for k, size in zip(key[1:], shape[1:]))


def _box(key: Tuple[Any, ...],
         shape: Sequence[int]) -> Tuple[List[int], List[int], Tuple[Any, ...]]:
    """The box a normalized ``key`` touches — per indexed dimension [start, stop), from its int or
    the first to the last index of its slice (a step above 1 reads the covering range) — and the
    key to apply to that box in memory."""
    starts: List[int] = []
    stops: List[int] = []
    rest: List[Any] = []
    for item, size in zip(key, shape):
        if isinstance(item, slice):
            picked = range(*item.indices(size))
            if not picked:
                starts.append(0)
                stops.append(0)
                rest.append(slice(0, 0))
                continue
            starts.append(picked[0])
            stops.append(picked[-1] + 1)
            rest.append(slice(0, picked[-1] + 1 - picked[0], picked.step))
        else:
            starts.append(item)
            stops.append(item + 1)
            rest.append(0)
    return starts, stops, tuple(rest)


class _ShardSlice:
    """get_slice() of a tensor-parallel safe_open: this rank's shard, already in memory, indexed
    as the framework indexes it."""

    def __init__(self, tensor: Any, dtype: str) -> None:
        self._tensor = tensor
        self._dtype = dtype

    def get_shape(self) -> List[int]:
        """The shape of this rank's shard."""
        return [int(d) for d in self._tensor.shape]

    def get_dtype(self) -> str:
        """The safetensors dtype name, e.g. "F32"."""
        return self._dtype

    def __getitem__(self, index: Any) -> Any:
        return self._tensor[index]


def _basic_key(index: Any, shape: Sequence[int]) -> Optional[Tuple[Any, ...]]:
    """``index`` as a normalized key (ints from 0, slices clipped as Python does, no ``...``) when
    it holds only in-range ints, slices with a positive step and at most one ``...``, within the
    tensor's dimensions: an index whose meaning is the same in torch and in that key. None for any
    other index (torch then decides what it means, or which error it is)."""
    import numpy
    items = index if isinstance(index, tuple) else (index,)
    if sum(1 for i in items if i is Ellipsis) > 1:
        return None
    explicit = len(items) - (1 if any(i is Ellipsis for i in items) else 0)
    if explicit > len(shape):
        return None
    key: List[Any] = []
    dim = 0
    for item in items:
        if item is Ellipsis:
            key.extend(slice(0, size, 1) for size in shape[dim:dim + len(shape) - explicit])
            dim += len(shape) - explicit
            continue
        size = shape[dim]
        if isinstance(item, slice):
            try:
                start, stop, step = item.indices(size)
            except TypeError:
                return None
            if item.step is not None and step <= 0:
                return None
            key.append(slice(start, max(start, stop), step))
        elif isinstance(item, int) and not isinstance(item, bool) or isinstance(item, numpy.integer):
            value = int(item)
            if not -size <= value < size:
                return None
            key.append(value + size if value < 0 else value)
        else:  # None, bools, lists, tensors...
            return None
        dim += 1
    return tuple(key)


def _covers_everything(key: Tuple[Any, ...], shape: Sequence[int]) -> bool:
    """Whether a normalized ``key`` selects the whole tensor, unchanged in shape."""
    return all(isinstance(k, slice) and k.start == 0 and k.stop == size and k.step == 1
               for k, size in zip(key, shape))


def _leading_rows(key: Tuple[Any, ...], shape: Sequence[int]) -> Tuple[int, int, Tuple[Any, ...]]:
    """The rows [start, stop) of the first dimension that a normalized ``key`` touches, and the key
    to apply to just those rows. A 0-d tensor is read whole."""
    if not shape:
        return 0, 0, key
    if not key:
        return 0, shape[0], key
    first = key[0]
    if isinstance(first, slice):
        rows = range(*first.indices(shape[0]))
        if not rows:
            return 0, 0, (slice(0, 0),) + key[1:]
        start, stop = rows[0], rows[-1] + 1
        return start, stop, (slice(0, stop - start, rows.step),) + key[1:]
    return first, first + 1, (0,) + key[1:]


_INT32 = range(-(2**31), 2**31)


def _as_int(item: Any) -> Optional[int]:
    """``item`` as an index when the reference takes it as one (a Python or numpy integer, a bool,
    within 32 bits), else None."""
    if isinstance(item, (slice, list, tuple, float, str, bytes)) or item is None or item is Ellipsis:
        return None
    try:
        value = operator.index(item)
    except TypeError:
        return None
    return value if value in _INT32 else None


def _describe(key: Sequence[Any]) -> str:
    """A key as the reference prints it in its messages: "[0:2, 3, :9:2]"."""
    def one(item: Any) -> str:
        if not isinstance(item, slice):
            return str(item)
        text = ":".join("" if v is None else str(v) for v in (item.start, item.stop))
        return text if item.step in (None, 1) else f"{text}:{item.step}"
    return "[" + ", ".join(one(i) for i in key) + "]"


def _normalize_index(index: Any, shape: Sequence[int]) -> Tuple[Any, ...]:
    """Checks ``index`` against ``shape`` with the reference's rules, in the reference's order, and
    returns an in-range key: ints from 0, slices with explicit start, stop and step, no ``...``.

    Order (the first failure raises, with the reference's message): more than one ``...``; then,
    with ``...`` expanded, per position: an item that is no int, slice or ``...``, a negative int
    beyond its dimension, a step that is not positive; more items than dimensions; then, from the
    last dimension indexed to the first, an int or a slice start not inside the dimension, or a
    slice stop beyond it.
    """
    if isinstance(index, list):
        if index:
            raise SafetensorError("Non empty lists are not implemented")
        items: Tuple[Any, ...] = (slice(0, 0),)
    else:
        items = index if isinstance(index, tuple) else (index,)
    if sum(1 for i in items if i is Ellipsis) > 1:
        raise SafetensorError("Only one ellipsis (...) is allowed in slice index")
    expanded: List[Any] = []
    for item in items:
        if item is Ellipsis:
            expanded.extend([slice(None)] * max(0, len(shape) - (len(items) - 1)))
        else:
            expanded.append(item)
    key: List[Any] = []
    shown: List[Any] = []
    for dim, item in enumerate(expanded):
        size = shape[dim] if dim < len(shape) else 0
        if not isinstance(item, slice) and _as_int(item) is None:
            raise SafetensorError(f"Unsupported slice index at position {dim}: expected slice, int, "
                                  "or ellipsis")
        if isinstance(item, slice):
            step = 1 if item.step is None else operator.index(item.step)
            if step <= 0:
                raise SafetensorError(f"Slice step must be a positive integer, got {step}")
            start = 0 if item.start is None else operator.index(item.start)
            stop = size if item.stop is None else operator.index(item.stop)
            start = start + size if start < 0 else start  # the reference: OverflowError
            stop = stop + size if stop < 0 else stop
            key.append(slice(start, stop, step))
            shown.append(slice(item.start if item.start is None else start,
                               item.stop if item.stop is None else stop, step))
        else:
            value = _as_int(item)
            assert value is not None
            if value < 0:
                if value < -size:
                    raise SafetensorError(f"Invalid index {value} for dimension {dim} of size "
                                          f"{size}")
                value += size
            key.append(value)
            shown.append(value)
    where = f"Error during slicing {_describe(shown)} with shape {list(shape)}"
    if len(key) > len(shape):
        raise SafetensorError(f"{where}: more slicing indexes than dimensions in tensor")
    for dim in reversed(range(len(key))):
        item, size = key[dim], shape[dim]
        if isinstance(item, slice):
            bad = item.start if item.start >= size else (item.stop - 1 if item.stop > size else None)
        else:
            bad = item if item >= size else None
        if bad is not None:
            raise SafetensorError(f"{where}: index {bad} out of bounds for tensor dimension #{dim} "
                                  f"of size {size}")
    # In range: a stop before its start selects nothing (the reference raises SystemError).
    return tuple(slice(k.start, max(k.start, k.stop), k.step) if isinstance(k, slice) else k
                 for k in key)


from flashload._patch import (  # noqa: E402  (needs the names above)
    PatchFallbackError, PatchFallbackWarning, PatchReport, is_patched, patch, patch_report, unpatch)
