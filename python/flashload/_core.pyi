"""
flashload native module: loads and writes safetensors files; see flashload.safe_open
"""

from collections.abc import Mapping


class SafetensorError(Exception):
    pass

cuda_built: bool = True

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
        DLPack capsule (legacy 'dltensor'); stream, max_version and copy are accepted and ignored: the data is never copied, and a load returns only after every copy and conversion into it has completed on the device, so it is ready for any stream.
        """

    def __dlpack_device__(self) -> tuple: ...

default_budget_mib: int = 256

class File:
    """
    One safetensors file: loaded whole by flashload's engine, or opened lazily (header only) and loaded on first use.
    """

    @staticmethod
    def open(path: str, strategy: str = 'auto', threads: int = 0, budget_mib: int = 256, lazy: bool = False, device: str = 'cpu', dtype: str = '', _test_delay_ms: int = 0) -> File:
        """
        Opens the file (or URI) at `path`: loads it whole (GIL released; Ctrl-C cancels), or with lazy=True reads and validates only its header. `device`: 'cpu', or 'cuda:N' to load into that GPU (one device allocation, pinned staging). `dtype`: a conversion spec ('bf16', 'F32=F16,lm_head.*:keep'; '' keeps stored dtypes) applied on the way. `strategy` (auto, direct, buffered, mmap, network or mapped; default auto), `threads` (pread workers; 0: automatic) and `budget_mib` (MiB of reads in flight plus staging, at least 1; default 256) are engine options, checked as the CLI's flags are (ValueError naming the argument). _test_delay_ms is for tests only: each engine progress report (about every 64 MiB and at the end) sleeps that long, to make a load slow on purpose.
        """

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

    def info(self, name: str) -> tuple:
        """(dtype name, shape) of tensor `name`, from the header; reads no data."""

    def get(self, name: str, raw: bool = False) -> Array:
        """
        The tensor `name` (raw: as unsigned storage of the element width); loads the whole file first when it is not loaded yet.
        """

    def rows(self, name: str, start: int, stop: int, raw: bool = False) -> Array:
        """
        Rows [start, stop) of tensor `name` along its first dimension (a 0-d tensor: whole). Served from memory once the file is loaded, else by one read of just those bytes.
        """

    def load_all(self) -> None:
        """Loads the whole file (once). GIL released; Ctrl-C cancels."""

    @property
    def name(self) -> str: ...

    @property
    def header_length(self) -> int: ...

    @property
    def loaded(self) -> bool:
        """Whether the whole file is in memory."""

    @property
    def bytes_read(self) -> int:
        """
        Bytes of tensor data read from storage so far (header reads not counted).
        """

def load_model(path: str, strategy: str = 'auto', threads: int = 0, budget_mib: int = 256, variant: str = '', device: str = 'cpu', dtype: str = '', _test_delay_ms: int = 0) -> dict[str, File]:
    """
    Loads a file, sharded checkpoint or diffusers folder in one engine run: {component: File} ('model' for a model without components). GIL released; Ctrl-C cancels. `strategy` (auto, direct, buffered, mmap, network or mapped; default auto), `threads` (pread workers; 0: automatic) and `budget_mib` (MiB of reads in flight plus staging, at least 1; default 256) are engine options, checked as the CLI's flags are (ValueError naming the argument). _test_delay_ms: tests only, as in File.open.
    """

def redact_url(uri: str) -> str:
    """
    `uri` as messages show it: no user info, no credential in the query (local paths as they are).
    """

def release_cached_memory() -> int:
    """
    Frees the memory kept for the next load of the process: pinned staging of GPU loads and host memory freed by earlier loads (kept populated). Returns the bytes freed.
    """

def model_files(path: str, variant: str = '') -> tuple[str, list[str]]:
    """
    (kind, files in load order) of the model a local path names, resolved as loads resolve it (kind: 'diffusers', 'sharded', 'folder' or 'file'). Raises SafetensorError as a load would.
    """

def serialize(tensors: list, metadata: Mapping[str, str] | None = None) -> bytes:
    """
    safetensors bytes of [(name, dtype, shape, buffer)], laid out as the reference does.
    """

def serialize_file(tensors: list, path: str, metadata: Mapping[str, str] | None = None) -> None:
    """Writes [(name, dtype, shape, buffer)] to `path` atomically."""
