"""
flashload native module: loads and writes safetensors files; see flashload.safe_open
"""

from collections.abc import Mapping, Sequence


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

    def as_raw(self) -> Array:
        """
        The same tensor exported as unsigned storage of the element width (sub-byte types: the packed bytes); no copy.
        """

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
        The tensor `name` (raw: as unsigned storage of the element width). Before the file is loaded, a host load reads just this tensor, and once the tensors read this way add up to a quarter of the file's data, all the others in one load; a GPU load reads the whole file.
        """

    def rows(self, name: str, start: int, stop: int, raw: bool = False) -> Array:
        """
        Rows [start, stop) of tensor `name` along its first dimension (a 0-d tensor: whole). Served from memory once the file is loaded, else by one read of just those bytes.
        """

    def box(self, name: str, starts: Sequence[int], stops: Sequence[int], raw: bool = False) -> Array:
        """
        The box [starts[d], stops[d]) of tensor `name` (later dimensions whole) in host memory, read by one engine load of just its bytes (added to bytes_read). Raises when the tensor is in memory already (index get() then).
        """

    def in_memory(self, name: str) -> bool:
        """
        Whether tensor `name` is in memory (the file loaded, or the tensor read by get()).
        """

    def load_all(self) -> None:
        """
        Loads every tensor not in memory yet (the whole file when none is), once. GIL released; Ctrl-C cancels.
        """

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

def load_sharded(path: str, communicator: object, shard: str = 'llama', mode: str = 'auto', share_window_mib: int = 0, timeout_s: float = 300.0, strategy: str = 'auto', threads: int = 0, budget_mib: int = 256, variant: str = '', device: str = 'cpu', dtype: str = '') -> tuple:
    """
    Tensor-parallel load of a file, sharded checkpoint or folder: every rank of `communicator` calls it with the same arguments and gets its shard of each tensor (torch.tensor_split(t, world, dim)[rank] along the dimension the `shard` rules name, or the whole tensor when replicated). `communicator`: an object with rank, size, name and the methods agree(code, message, timeout_s) -> (code, message), all_gather(bytes, timeout_s) -> [bytes], all_to_all(send views, recv views, timeout_s) (flashload.distributed). `shard`: 'llama', 'none' or a rules file; `mode`: 'auto', 'local' (each rank reads its shards) or 'share' (the job reads the model once and the ranks exchange); `share_window_mib`: bytes read per round of 'share' (0: budget_mib); `timeout_s`: how long a rank waits for the others at each step. Returns ([(name, Array)] in file order, [report dict per rank]). A failure on any rank raises on every rank (SafetensorError, or FileNotFoundError, naming the rank); a rank that does not arrive in time makes the others raise TimeoutError. GIL released while loading. `strategy` (auto, direct, buffered, mmap, network or mapped; default auto), `threads` (pread workers; 0: automatic) and `budget_mib` (MiB of reads in flight plus staging, at least 1; default 256) are engine options, checked as the CLI's flags are (ValueError naming the argument).
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

def read_object(uri: str, max_bytes: int = 4294967296) -> bytes:
    """
    The whole object `uri` names (a path, file://, http(s)://, s3:// or an archive member tar:<archive>!/<member>) as bytes, read through the source registry. FileNotFoundError when it does not exist; SafetensorError for other errors and for an object larger than max_bytes.
    """
