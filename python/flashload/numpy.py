"""safetensors.numpy, backed by flashload: the same functions, arguments and return types.

Arrays returned are zero-copy views of memory loaded by flashload's engine; they stay valid after
the file is closed. BF16 and FP8 tensors are returned with ml_dtypes' types (bfloat16,
float8_e4m3fn, ...) when ml_dtypes is installed, else a SafetensorError names the package to
install. Sub-byte types (F4, F6) have no numpy representation and raise SafetensorError.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from flashload import (SafetensorError, _check_backend, _check_save_arguments, _open_file,
                       _save_to_file)
from flashload._core import File as _File
from flashload._core import default_budget_mib as _DEFAULT_BUDGET_MIB
from flashload._core import serialize as _serialize

__all__ = ["load_file", "save_file", "load", "save"]

_NATIVE = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "C64": np.complex64,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}
# safetensors dtype -> attribute of ml_dtypes.
_ML_DTYPES = {
    "BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "F8_E8M0": "float8_e8m0fnu",
}
_SUPPORTED = ("bool, int8, uint8, int16, uint16, int32, uint32, int64, uint64, float16, float32, "
              "float64, complex64, and with ml_dtypes: bfloat16, float8_e4m3fn, float8_e4m3fnuz, "
              "float8_e5m2, float8_e5m2fnuz, float8_e8m0fnu")


def _numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype of a safetensors dtype name; SafetensorError when numpy has none."""
    if name in _NATIVE:
        return np.dtype(_NATIVE[name])
    if name in _ML_DTYPES:
        try:
            import ml_dtypes
        except ImportError:
            raise SafetensorError(f"dtype {name} needs the ml_dtypes package in numpy: "
                                  "pip install ml_dtypes") from None
        found = getattr(ml_dtypes, _ML_DTYPES[name], None)
        if found is not None:
            return np.dtype(found)
    raise SafetensorError(f"dtype {name} has no numpy representation (use framework='pt')")


def _safetensors_dtype(dtype: np.dtype) -> str:
    """The safetensors name of a numpy dtype; SafetensorError for one the format cannot hold."""
    for name, native in _NATIVE.items():
        if dtype == np.dtype(native):
            return name
    try:
        import ml_dtypes
    except ImportError:
        ml_dtypes = None
    if ml_dtypes is not None:
        for name, attribute in _ML_DTYPES.items():
            found = getattr(ml_dtypes, attribute, None)
            if found is not None and dtype == np.dtype(found):
                return name
    raise SafetensorError(f'Unknown dtype "{dtype.name}". Supported dtypes: {_SUPPORTED}')


def _check_dtype(name: str) -> None:
    """Raises SafetensorError when numpy cannot hold the safetensors dtype `name`."""
    _numpy_dtype(name)


def _from_array(get: Callable[[bool], Any], dtype_name: str, device: Any = "cpu") -> np.ndarray:
    """The array `get(raw)` returns as a zero-copy numpy array (device must be the host)."""
    dtype = _numpy_dtype(dtype_name)
    storage = np.from_dlpack(get(True))
    return storage.view(dtype)


def _from_file(file: _File, name: str, device: Any = "cpu") -> np.ndarray:
    """Tensor `name` of a file as a zero-copy numpy array (loads the file if not loaded yet)."""
    return _from_array(lambda raw: file.get(name, raw), file.info(name)[0], device)


def _to_write(tensor_dict: Dict[str, np.ndarray]) -> List[Tuple[str, str, List[int], np.ndarray]]:
    """The arrays to write; raises as the reference does, in its order: AttributeError for a
    value without a dtype, SafetensorError for a dtype the format cannot hold (names, filename
    and metadata are checked after, by _check_save_arguments)."""
    items = []
    for name, value in tensor_dict.items():
        value.dtype  # noqa: B018  (the reference's AttributeError for a value that is no array)
        array = np.asarray(value)
        dtype_name = _safetensors_dtype(array.dtype.newbyteorder("="))
        if array.dtype.byteorder == (">" if sys.byteorder == "little" else "<"):
            array = array.astype(array.dtype.newbyteorder("<"))
        storage = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        items.append((name, dtype_name, [int(d) for d in array.shape], storage))
    return items


def save(tensor_dict: Dict[str, np.ndarray], metadata: Optional[Dict[str, str]] = None) -> bytes:
    """The safetensors bytes of `tensor_dict` (reference layout: dtype descending, then name).

    Arrays need not be contiguous or little-endian (they are converted). Raises SafetensorError
    for a dtype safetensors cannot hold.
    """
    items = _to_write(tensor_dict)
    _check_save_arguments([item[0] for item in items], metadata=metadata)
    return _serialize(items, metadata)


def save_file(tensor_dict: Dict[str, np.ndarray], filename: Union[str, os.PathLike],
              metadata: Optional[Dict[str, str]] = None) -> None:
    """Writes `tensor_dict` to `filename` atomically (a temporary file renamed over it)."""
    items = _to_write(tensor_dict)
    path = _check_save_arguments([item[0] for item in items], filename, metadata)
    _save_to_file(items, path, metadata)


def load(data: bytes) -> Dict[str, np.ndarray]:
    """Tensors of an in-memory safetensors image, in file order (copied once, then viewed)."""
    file = _File.from_bytes(bytes(data))
    return {name: _from_file(file, name) for name in file.offset_keys()}


def load_file(filename: Union[str, os.PathLike], *, backend: str = "mmap", dtype: Any = None,
              strategy: str = "auto", threads: int = 0,
              budget_mib: int = _DEFAULT_BUDGET_MIB) -> Dict[str, np.ndarray]:
    """Every tensor of `filename`, in file order, loaded by flashload's engine.

    `backend` ("mmap" or "pread") is checked as safetensors checks it, then ignored: `strategy`
    chooses how the file is read ("auto" picks per file). `dtype` ("fp16", np.float32,
    "F32=BF16", ...) converts floating tensors on the way, as flashload.safe_open describes.
    """
    _check_backend(backend)
    file = _open_file(filename, strategy, threads, budget_mib, dtype=dtype)
    return {name: _from_file(file, name) for name in file.offset_keys()}
