"""safetensors.torch, backed by flashload: the same functions, arguments and return types.

PyTorch is imported lazily; without it these functions raise ModuleNotFoundError saying so.
Tensors are zero-copy views of the memory flashload loaded: host memory for device "cpu", GPU
memory for a CUDA device (the engine stages reads in pinned memory and copies them into one device
allocation per file; the load returns once every copy has completed, so the tensors are ready on
any stream). Other devices (mps, xpu...) get copies made by torch from host tensors. Dtypes the
installed torch lacks (uint16/32/64 before 2.3, float8 before 2.1) raise SafetensorError.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from flashload import (SafetensorError, _check_backend, _check_save_arguments, _open_file,
                       _save_to_file)
from flashload._core import File as _File
from flashload._core import default_budget_mib as _DEFAULT_BUDGET_MIB
from flashload._core import cuda_built as _cuda_built
from flashload._core import serialize as _serialize

__all__ = ["load_file", "save_file", "load", "save", "save_model", "load_model"]

# safetensors dtype -> torch attribute; exported exactly through DLPack.
_EXACT = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "C64": "complex64",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
    "U16": "uint16", "U32": "uint32", "U64": "uint64",
}
# safetensors dtype -> torch attribute; exported as uint8 storage and viewed.
_VIEWED = {
    "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "F8_E8M0": "float8_e8m0fnu",
}


def _require_torch() -> Any:
    """The torch module; ModuleNotFoundError with what to do when it is not installed."""
    try:
        import torch
    except ImportError as error:
        raise ModuleNotFoundError(
            "flashload: framework 'pt' needs PyTorch, which is not installed "
            "(pip install torch, or use framework='np')", name="torch") from error
    return torch


def _torch_dtype(torch: Any, name: str) -> Any:
    attribute = _EXACT.get(name) or _VIEWED.get(name)
    found = getattr(torch, attribute, None) if attribute else None
    if found is None:
        raise SafetensorError(f"dtype {name} is not supported by torch {torch.__version__}")
    return found


def _check_dtype(name: str) -> None:
    """Raises SafetensorError when the installed torch has no dtype for `name`."""
    _torch_dtype(_require_torch(), name)


def _native_device(device: Any) -> str:
    """The device flashload's engine loads into for the torch `device`: "cuda:N" for a CUDA device
    (an int N means "cuda:N", "cuda" the current device, as in safetensors), "cpu" for anything
    else, whose tensors torch then moves. Without CUDA in this build of flashload: "cpu".
    A device torch does not know raises the reference's SafetensorError."""
    if device is None:
        return "cpu"
    torch = _require_torch()
    if isinstance(device, int) and not isinstance(device, bool):
        device = f"cuda:{device}"
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise SafetensorError(f"device {device} is invalid") from None
    if target.type != "cuda" or not _cuda_built:
        return "cpu"
    index = target.index
    if index is None:
        index = torch.cuda.current_device() if torch.cuda.is_available() else 0
    return f"cuda:{index}"


def _from_array(get: Callable[[bool], Any], dtype_name: str, device: Any = "cpu") -> Any:
    """The array `get(raw)` returns as a torch tensor on `device` (zero-copy on "cpu")."""
    torch = _require_torch()
    dtype = _torch_dtype(torch, dtype_name)
    if dtype_name in _EXACT:
        tensor = torch.from_dlpack(get(False))
    else:
        tensor = torch.from_dlpack(get(True)).view(dtype)
    if device is not None and device != "cpu":
        tensor = tensor.to(device)  # no copy when flashload loaded it there already
    return tensor


def _from_file(file: _File, name: str, device: Any = "cpu") -> Any:
    """Tensor `name` of a file as a torch tensor on `device` (loads the file if not loaded yet)."""
    return _from_array(lambda raw: file.get(name, raw), file.info(name)[0], device)


def _storage(tensor: Any) -> Any:
    return tensor.untyped_storage() if hasattr(tensor, "untyped_storage") else tensor.storage()


def _storage_key(tensor: Any) -> Tuple[int, int]:
    return _storage(tensor).data_ptr(), tensor.device.index or 0


def _storage_bytes(tensor: Any) -> int:
    """Bytes of the storage under `tensor` (0 for meta tensors, which have none)."""
    if tensor.device.type == "meta":
        return 0
    storage = _storage(tensor)
    try:
        return int(storage.nbytes())
    except (AttributeError, NotImplementedError):
        return int(storage.size()) * tensor.element_size()


def _to_write(tensors: Dict[str, Any]) -> Tuple[List[Tuple[str, str, List[int], Any]], List[Any]]:
    """The tensors to write, and the host copies to keep alive while writing. Raises as the
    reference does, in its order: ValueError for a non-dict or a value that is no tensor, sparse
    tensors, RuntimeError for tensors sharing memory, ValueError for a non-contiguous tensor."""
    torch = _require_torch()
    if not isinstance(tensors, dict):
        raise ValueError(f"Expected a dict of [str, torch.Tensor] but received {type(tensors)}")
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"Key `{name}` is invalid, expected torch.Tensor but received "
                             f"{type(tensor)}")
    names = {getattr(torch, a): n for n, a in {**_EXACT, **_VIEWED}.items() if hasattr(torch, a)}
    sparse = [k for k, v in tensors.items() if v.layout != torch.strided]
    if sparse:
        raise ValueError(f"You are trying to save a sparse tensors: `{sparse}` which this library "
                         "does not support. You can make it a dense tensor before saving with "
                         "`.to_dense()` but be aware this might make a much larger file than "
                         "needed.")
    shared: Dict[Tuple[int, int], List[str]] = {}
    for name, tensor in tensors.items():
        if tensor.numel() > 0 and tensor.device.type != "meta":
            shared.setdefault(_storage_key(tensor), []).append(name)
    groups = [sorted(g) for g in shared.values() if len(g) > 1]
    if groups:
        raise RuntimeError(
            f"Some tensors share memory, this will lead to duplicate memory on disk and potential "
            f"differences when loading them again: {groups}.\nA potential way to correctly save "
            "your model is to use `save_model`.\nMore information at "
            "https://huggingface.co/docs/safetensors/torch_shared_tensors")
    items, keep = [], []
    for name, tensor in tensors.items():
        if not tensor.is_contiguous():
            raise ValueError(f"You are trying to save a non contiguous tensor: `{name}` which is "
                             "not allowed. It either means you are trying to save tensors which "
                             "are reference of each other in which case it's recommended to save "
                             "only the full tensors, and reslice at load time, or simply call "
                             "`.contiguous()` on your tensor to pack it before saving.")
        if tensor.dtype not in names:
            raise SafetensorError(f"dtype {tensor.dtype} cannot be stored in safetensors")
        host = tensor.detach().to("cpu")
        storage = host.reshape(-1).view(torch.uint8).numpy()
        keep.append(host)
        items.append((name, names[tensor.dtype], [int(d) for d in tensor.shape], storage))
    return items, keep


def save(tensors: Dict[str, Any], metadata: Optional[Dict[str, str]] = None) -> bytes:
    """The safetensors bytes of `tensors` (dense, contiguous, not sharing memory)."""
    items, _keep = _to_write(tensors)
    _check_save_arguments(list(tensors), metadata=metadata)
    return _serialize(items, metadata)


def save_file(tensors: Dict[str, Any], filename: Union[str, os.PathLike],
              metadata: Optional[Dict[str, str]] = None) -> None:
    """Writes `tensors` to `filename` atomically (a temporary file renamed over it)."""
    items, _keep = _to_write(tensors)
    path = _check_save_arguments(list(tensors), filename, metadata)
    _save_to_file(items, path, metadata)


def load(data: bytes) -> Dict[str, Any]:
    """Tensors of an in-memory safetensors image on the host, in file order."""
    file = _File.from_bytes(bytes(data))
    return {name: _from_file(file, name) for name in file.offset_keys()}


def load_file(filename: Union[str, os.PathLike], device: Union[str, int] = "cpu", *,
              backend: str = "mmap", dtype: Any = None, strategy: str = "auto", threads: int = 0,
              budget_mib: int = _DEFAULT_BUDGET_MIB, process_group: Any = None,
              shard: str = "llama", shard_mode: str = "auto", share_window_mib: int = 0,
              timeout_s: Optional[float] = None) -> Dict[str, Any]:
    """Every tensor of `filename`, in file order, on `device`, loaded by flashload's engine.

    A CUDA `device` ("cuda", "cuda:N", N, torch.device) loads straight into that GPU. `dtype`
    (torch.bfloat16, "bf16", "F32=F16", ...) converts floating tensors on the way (on the GPU for
    a CUDA device), as flashload.safe_open describes.
    `backend` ("mmap" or "pread") is checked as safetensors checks it, then ignored: `strategy`
    chooses how the file is read.

    Tensor parallelism: with a torch.distributed `process_group`, every rank of the group calls
    load_file with the same arguments and gets only its shard of each tensor:
    ``torch.tensor_split(full, world, dim)[rank]`` along the dimension the `shard` rules name
    ("llama": q/k/v/gate/up/embeddings/lm_head by rows, o_proj/down_proj by columns, norms whole;
    "none": everything whole; or a rules file, docs/shard-rules.md), the whole tensor where they
    replicate it. `filename` may then also be a sharded checkpoint or a model folder.
    `shard_mode`: "local" (each rank reads its own ranges), "share" (the job reads the model once
    and the ranks exchange over the group: for S3, HTTP, network file systems) or "auto".
    `timeout_s` (default 300): how long a rank waits for the others at each step. A failure on any
    rank raises on every rank, naming the rank (FileNotFoundError or SafetensorError); a rank that
    does not arrive in time makes the others raise TimeoutError. flashload.distributed.load_sharded
    returns the same tensors with every rank's report (bytes read, mode).
    """
    if process_group is not None:
        from flashload.distributed import load_sharded
        _check_backend(backend)
        return load_sharded(filename, process_group, framework="pt", device=device, shard=shard,
                            shard_mode=shard_mode, share_window_mib=share_window_mib,
                            timeout_s=timeout_s, dtype=dtype, strategy=strategy, threads=threads,
                            budget_mib=budget_mib).tensors
    native_device = _native_device(device)
    _check_backend(backend)  # after the device, as the reference checks them
    file = _open_file(filename, strategy, threads, budget_mib, device=native_device, dtype=dtype)
    return {name: _from_file(file, name, device) for name in file.offset_keys()}


# ---- models with shared tensors (tied weights) ----------------------------------------------------

def _shared_groups(state_dict: Dict[str, Any]) -> List[List[str]]:
    """Names whose tensors overlap in memory, one sorted list per group (every tensor with storage
    is in exactly one group; most groups have one name).

    Tensors on the same device and storage belong together when their byte ranges overlap, directly
    or through a chain of overlapping tensors.
    """
    by_storage: Dict[Tuple[str, int, int], List[str]] = {}
    for name, tensor in state_dict.items():
        if tensor.device.type == "meta":
            continue
        pointer, size = _storage(tensor).data_ptr(), _storage_bytes(tensor)
        if pointer == 0 or size == 0:
            continue
        by_storage.setdefault((str(tensor.device), pointer, size), []).append(name)
    groups: List[List[str]] = []
    for names in by_storage.values():
        areas = []
        for name in names:
            tensor = state_dict[name]
            begin = tensor.data_ptr()
            end = begin + tensor.numel() * tensor.element_size() if tensor.numel() else begin
            areas.append((begin, end, name))
        areas.sort()
        group_end = None
        for begin, end, name in areas:
            if group_end is None or begin >= group_end:
                groups.append([name])
                group_end = end
            else:
                groups[-1].append(name)
                group_end = max(group_end, end)
    return [sorted(g) for g in groups]


def _covers_its_storage(tensor: Any) -> bool:
    return (tensor.data_ptr() == _storage(tensor).data_ptr()
            and tensor.numel() * tensor.element_size() == _storage_bytes(tensor))


def _names_to_drop(state_dict: Dict[str, Any], preferred: Optional[Any] = None) -> Dict[str, List[str]]:
    """{name kept: [names dropped]} for every group of tensors sharing memory.

    The name kept covers the whole storage: the first in sort order, or the first of `preferred`
    (the names in a file being loaded) when one of them qualifies. Raises RuntimeError when no
    tensor of a group covers its whole storage (saving would store more, or other, bytes than the
    tensors hold).
    """
    preferred = set(preferred or ())
    dropped: Dict[str, List[str]] = {}
    for group in _shared_groups(state_dict):
        complete = [name for name in group if _covers_its_storage(state_dict[name])]
        if not complete:
            raise RuntimeError(
                f"Cannot save or load tensors {group} as one: they share memory, and none of them "
                "covers the entire storage they live in, so no single name can stand for the "
                "others (None is covering the entire storage). Make the shared tensor a whole "
                "parameter (e.g. clone the views into their own storage) before saving; see "
                "https://huggingface.co/docs/safetensors/torch_shared_tensors")
        keep = ([n for n in complete if n in preferred] or complete)[0]
        others = [name for name in group if name != keep]
        if others:
            dropped[keep] = others
    return dropped


def save_model(model: Any, filename: Union[str, os.PathLike], metadata: Optional[Dict[str, str]] = None,
               force_contiguous: bool = True) -> None:
    """Saves `model.state_dict()` to `filename`, each shared (tied) tensor once.

    Of tensors sharing memory, one name is kept (one covering the whole storage, first in sort
    order) and the others are dropped; each dropped name is recorded in the metadata as
    ``{dropped: kept}`` unless `metadata` already has that key. With `force_contiguous` every tensor
    is made contiguous first. Raises RuntimeError when tensors share memory but none covers the
    whole storage, ValueError for a non-contiguous tensor without `force_contiguous`.
    """
    state_dict = model.state_dict()
    for kept, dropped in _names_to_drop(state_dict).items():
        for name in dropped:
            metadata = {} if metadata is None else metadata
            metadata.setdefault(name, kept)
            del state_dict[name]
    if force_contiguous:
        state_dict = {name: tensor.contiguous() for name, tensor in state_dict.items()}
    try:
        save_file(state_dict, filename, metadata=metadata)
    except ValueError as error:
        raise ValueError(f"{error} Or use save_model(..., force_contiguous=True), read the docs "
                         "for potential caveats.") from None


def load_model(model: Any, filename: Union[str, os.PathLike], strict: bool = True,
               device: Union[str, int] = "cpu", *, backend: str = "mmap", strategy: str = "auto",
               threads: int = 0,
               budget_mib: int = _DEFAULT_BUDGET_MIB) -> Tuple[Any, List[str]]:
    """Loads `filename` into `model` with ``load_state_dict``, shared tensors included.

    Names of `model` that share memory with a tensor in the file (tied weights saved once by
    save_model) are restored through it and count neither as missing nor as unexpected.

    Returns:
        ``(missing, unexpected)`` as the reference returns them: the set of the model's names the
        file did not provide, and the list of names in the file (or tied names) the model did not
        take. With `strict`, either being non-empty raises RuntimeError listing them.
    """
    state_dict = load_file(filename, device=device, backend=backend, strategy=strategy,
                           threads=threads, budget_mib=budget_mib)
    dropped = _names_to_drop(model.state_dict(), preferred=state_dict.keys())
    missing_keys, unexpected = model.load_state_dict(state_dict, strict=False)
    missing = set(missing_keys)
    for names in dropped.values():
        for name in names:
            if name in missing:
                missing.remove(name)
            else:
                unexpected.append(name)
    if strict and (missing or unexpected):
        error = f"Error(s) in loading state_dict for {model.__class__.__name__}:"
        if missing:
            error += "\n    Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in sorted(missing))
        if unexpected:
            error += ("\n    Unexpected key(s) in state_dict: "
                      + ", ".join(f'"{k}"' for k in sorted(unexpected)))
        raise RuntimeError(error)
    return missing, unexpected


from flashload.compile_cache import (CompileCacheWarning, restore_compile_cache,  # noqa: E402
                                     save_compile_cache)
