"""safetensors.torch, backed by flashload: the same functions, arguments and return types.

PyTorch is imported lazily; without it these functions raise ModuleNotFoundError saying so.
Tensors are zero-copy views of the memory flashload loaded (device "cpu"), or copies on the
requested device. Dtypes the installed torch lacks (uint16/32/64 before 2.3, float8 before 2.1)
raise SafetensorError.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from flashload import SafetensorError, _open_file
from flashload._core import File as _File
from flashload._core import serialize as _serialize
from flashload._core import serialize_file as _serialize_file

__all__ = ["load_file", "save_file", "load", "save"]

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


def _from_array(get: Callable[[bool], Any], dtype_name: str, device: Any = "cpu") -> Any:
    """The array `get(raw)` returns as a torch tensor on `device` (zero-copy on "cpu")."""
    torch = _require_torch()
    dtype = _torch_dtype(torch, dtype_name)
    if dtype_name in _EXACT:
        tensor = torch.from_dlpack(get(False))
    else:
        tensor = torch.from_dlpack(get(True)).view(dtype)
    if device is not None and device != "cpu":
        tensor = tensor.to(device)
    return tensor


def _from_file(file: _File, name: str, device: Any = "cpu") -> Any:
    """Tensor `name` of a file as a torch tensor on `device` (loads the file if not loaded yet)."""
    return _from_array(lambda raw: file.get(name, raw), file.info(name)[0], device)


def _storage_key(tensor: Any) -> Tuple[int, int]:
    storage = tensor.untyped_storage() if hasattr(tensor, "untyped_storage") else tensor.storage()
    return storage.data_ptr(), tensor.device.index or 0


def _to_write(tensors: Dict[str, Any]) -> Tuple[List[Tuple[str, str, List[int], Any]], List[Any]]:
    torch = _require_torch()
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
            "your model is to use `save_model`.")
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
    return _serialize(items, metadata)


def save_file(tensors: Dict[str, Any], filename: Union[str, os.PathLike],
              metadata: Optional[Dict[str, str]] = None) -> None:
    """Writes `tensors` to `filename` atomically (a temporary file renamed over it)."""
    items, _keep = _to_write(tensors)
    _serialize_file(items, os.fspath(filename), metadata)


def load(data: bytes) -> Dict[str, Any]:
    """Tensors of an in-memory safetensors image on the host, in file order."""
    file = _File.from_bytes(bytes(data))
    return {name: _from_file(file, name) for name in file.offset_keys()}


def load_file(filename: Union[str, os.PathLike], device: Union[str, int] = "cpu", *,
              backend: str = "mmap", strategy: str = "auto", threads: int = 0,
              budget_mib: int = 256) -> Dict[str, Any]:
    """Every tensor of `filename`, in file order, on `device`, loaded by flashload's engine.

    `backend` is accepted for compatibility with safetensors and ignored: `strategy` chooses how
    the file is read.
    """
    _require_torch()
    file = _open_file(filename, strategy, threads, budget_mib)
    return {name: _from_file(file, name, device) for name in file.offset_keys()}
