"""
flashload native module: loads and writes safetensors files; see flashload.safe_open
"""

from collections.abc import Mapping


class SafetensorError(Exception):
    pass

class Array:
    """
    One loaded tensor; exported without a copy through DLPack. Holds a share of the loaded memory, which stays valid after its file is closed.
    """

    @property
    def dtype(self) -> str:
        """safetensors dtype name, e.g. 'BF16'"""

    @property
    def shape(self) -> list[int]: ...

    @property
    def nbytes(self) -> int: ...

    def __dlpack__(self, *args, **kwargs) -> object:
        """
        DLPack capsule (legacy 'dltensor'); stream, max_version and copy are accepted and ignored (host memory, never copied).
        """

    def __dlpack_device__(self) -> tuple: ...

class File:
    """One safetensors file, loaded whole by flashload's engine."""

    @staticmethod
    def open(path: str, strategy: str = 'auto', threads: int = 0, budget_mib: int = 256) -> File:
        """Loads the file at `path` (GIL released; Ctrl-C cancels)."""

    @staticmethod
    def from_bytes(data: bytes) -> File:
        """Parses and copies an in-memory safetensors image."""

    def keys(self) -> list[str]:
        """Tensor names, sorted."""

    def offset_keys(self) -> list[str]:
        """Tensor names in file order."""

    def metadata(self) -> dict[str, str] | None:
        """__metadata__, or None."""

    def __contains__(self, arg: str, /) -> bool: ...

    def get(self, name: str, raw: bool = False) -> Array:
        """The tensor `name` (raw: as unsigned storage of the element width)."""

    @property
    def name(self) -> str: ...

    @property
    def header_length(self) -> int: ...

def load_model(path: str, strategy: str = 'auto', threads: int = 0, budget_mib: int = 256, variant: str = '') -> dict[str, File]:
    """
    Loads a file, sharded checkpoint or diffusers folder in one engine run: {component: File} ('model' for a model without components). GIL released; Ctrl-C cancels.
    """

def serialize(tensors: list, metadata: Mapping[str, str] | None = None) -> bytes:
    """
    safetensors bytes of [(name, dtype, shape, buffer)], laid out as the reference does.
    """

def serialize_file(tensors: list, path: str, metadata: Mapping[str, str] | None = None) -> None:
    """Writes [(name, dtype, shape, buffer)] to `path` atomically."""
