"""Tensor-parallel loading on a torch.distributed process group.

Every rank of a job loads only its shard of each tensor, the way the ranks of a tensor-parallel
engine hold the model:

    import torch.distributed as dist
    import flashload.torch

    dist.init_process_group("gloo", ...)              # or a gloo group beside an NCCL one
    shards = flashload.torch.load_file("/models/llama", process_group=dist.group.WORLD,
                                       shard="llama")   # {name: this rank's shard}

What a shard is: ``torch.tensor_split(full, world, dim)[rank]`` along the dimension the shard rules
name for that tensor (``shard="llama"``: q/k/v/gate/up/embeddings/lm_head by rows (dim 0), o_proj
and down_proj by columns (dim 1), fused qkv/gate_up block by block), or the whole tensor where the
rules replicate it (norms, biases of row-parallel layers, everything else). With ``n`` indices
along the split dimension the first ``n % world`` ranks get ``n // world + 1`` of them and the
others ``n // world``. ``shard`` is a preset ("llama", "none": every tensor whole) or the path of a
rules file (docs/shard-rules.md). A tensor with fewer indices along its split dimension than there
are ranks is an empty tensor (0 along that dimension) on the ranks that get none of it, as
torch.tensor_split gives it.

Modes (``shard_mode``):

- ``"local"``: each rank reads only its own ranges from storage (column shards whose runs per row
  are short are read once across the ranks and shared, when the tensors land in host memory as
  stored). Best on fast local disks.
- ``"share"``: the job reads the model's bytes once, each rank reading a part, and the ranks
  exchange what the others need over the process group (all_to_all), each ending with exactly
  its shards; staging is bounded by ``share_window_mib`` per round. Best on S3, HTTP and network
  file systems. The shards are assembled in host memory, then converted (``dtype``) and copied to
  the rank's GPU (``device``) when asked.
- ``"auto"`` (default): "share" when a file is remote or on a network file system and the group
  has more than one rank, else "local". The reports say which was used, and why.

Errors: every rank calls the load with the same path and options. A failure on any rank (a
missing or damaged file, a bad rules file, a read error) raises on every rank, its message
starting with "rank R: " for the rank that failed: FileNotFoundError for a missing file,
:class:`flashload.SafetensorError` otherwise. A rank that does not reach a step within
``timeout_s`` seconds makes the others raise TimeoutError; the process group may be unusable after
that (destroy it, or end the job). No rank waits forever on a rank that failed.

The process group must carry CPU tensors: a "gloo" group (or a group created with both backends,
"cpu:gloo,cuda:nccl"). With an NCCL-only group, create a gloo group for loading:
``dist.new_group(backend="gloo")``.
"""

from __future__ import annotations

import struct
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = ["TorchDistributedCommunicator", "ShardedLoad", "load_sharded"]

# flashload's status codes, as the native layer numbers them (include/flashload/status.h).
_OK = 0


class TorchDistributedCommunicator:
    """flashload's three collectives (agree, all_gather, all_to_all) on a torch.distributed group.

    The native loader calls these methods, every rank in the same order; each returns within its
    ``timeout_s`` or raises TimeoutError (the native side turns that into a deadline error).
    Collectives are issued with ``async_op=True`` and polled until done or until the deadline, so a
    rank that never arrives cannot hold the others beyond it.

    Thread-safety: one collective at a time (the loader calls them from one thread).
    """

    def __init__(self, process_group: Any = None) -> None:
        import torch
        import torch.distributed as dist
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("flashload: torch.distributed is not initialized; call "
                               "torch.distributed.init_process_group() on every rank first")
        self._torch = torch
        self._dist = dist
        self._group = process_group if process_group is not None else dist.group.WORLD
        self.rank = dist.get_rank(self._group)
        self.size = dist.get_world_size(self._group)
        if self.rank < 0:
            raise ValueError("flashload: this process is not a member of the process group it "
                             "was given")
        backend = str(dist.get_backend(self._group))
        if "gloo" not in backend and backend != "mpi":
            raise ValueError(
                f"flashload: process group backend {backend!r} cannot exchange host memory; "
                "create a gloo group for loading (torch.distributed.new_group(backend='gloo')) "
                "and pass that")
        self.name = f"torch.distributed ({backend})"

    # ---- the collectives the native loader calls -------------------------------------------------

    def agree(self, code: int, message: str, timeout_s: float) -> Tuple[int, str]:
        """The first failure across the ranks: (0, "") when every rank passed code 0, else the
        code and message of the lowest failing rank, "rank R: " before the message unless R is
        this rank."""
        payload = struct.pack("<i", int(code)) + message.encode("utf-8", "replace")
        gathered = self.all_gather(payload, timeout_s)
        for rank, data in enumerate(gathered):
            (their_code,) = struct.unpack("<i", data[:4])
            if their_code != _OK:
                text = data[4:].decode("utf-8", "replace")
                return their_code, text if rank == self.rank else f"rank {rank}: {text}"
        return _OK, ""

    def all_gather(self, data: bytes, timeout_s: float) -> List[bytes]:
        """Every rank's ``data``, by rank."""
        torch = self._torch
        deadline = time.monotonic() + float(timeout_s)
        length = torch.tensor([len(data)], dtype=torch.int64)
        lengths = [torch.zeros(1, dtype=torch.int64) for _ in range(self.size)]
        self._wait(self._dist.all_gather(lengths, length, group=self._group, async_op=True),
                   deadline, "all_gather")
        sizes = [int(t.item()) for t in lengths]
        width = max(1, max(sizes))
        mine = torch.zeros(width, dtype=torch.uint8)
        if data:
            mine[:len(data)] = torch.tensor(bytearray(data), dtype=torch.uint8)
        out = [torch.empty(width, dtype=torch.uint8) for _ in range(self.size)]
        self._wait(self._dist.all_gather(out, mine, group=self._group, async_op=True), deadline,
                   "all_gather")
        return [bytes(t[:n].numpy().tobytes()) for t, n in zip(out, sizes)]

    def all_to_all(self, send: Sequence[Any], recv: Sequence[Any], timeout_s: float) -> None:
        """send[q] goes to rank q; recv[r] (writable buffers) is filled from rank r."""
        import numpy as np
        torch = self._torch
        deadline = time.monotonic() + float(timeout_s)
        in_sizes = [memoryview(s).nbytes for s in send]
        out_sizes = [memoryview(r).nbytes for r in recv]
        if sum(in_sizes):
            staged = np.concatenate([np.frombuffer(s, dtype=np.uint8) for s in send])
        else:
            staged = np.empty(0, dtype=np.uint8)
        inp = torch.from_numpy(staged)
        out = torch.empty(sum(out_sizes), dtype=torch.uint8)
        work = self._dist.all_to_all_single(out, inp, output_split_sizes=out_sizes,
                                            input_split_sizes=in_sizes, group=self._group,
                                            async_op=True)
        self._wait(work, deadline, "all_to_all")
        received = out.numpy()
        offset = 0
        for r, n in zip(recv, out_sizes):
            if n:
                memoryview(r).cast("B")[:] = received[offset:offset + n]
            offset += n

    # ---- helpers ---------------------------------------------------------------------------------

    def _wait(self, work: Any, deadline: float, what: str) -> None:
        """Waits for ``work`` until ``deadline`` (time.monotonic()), polling; TimeoutError after.
        A failed collective raises its own error from work.wait()."""
        pause = 50e-6
        while not work.is_completed():
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{self.name} {what} on rank {self.rank} of {self.size}: not complete by its "
                    "deadline (another rank did not join it)")
            time.sleep(pause)
            pause = min(pause * 2, 5e-3)
        work.wait()


class ShardedLoad:
    """This rank's part of a tensor-parallel load.

    Attributes:
        tensors: {name: this rank's shard}, in file order.
        reports: one dict per rank, by rank: rank, world, communicator, mode ("shard-local" or
            "read-once-share"), mode_reason, rules, tensors, split, shard_bytes (stored bytes of
            the rank's shards), bytes_read (bytes the rank read from storage), bytes_sent,
            bytes_received, rounds, seconds, read_seconds, share_seconds, covering_reads,
            covering_bytes, summary (one line).
        report: this rank's dict.
    """

    def __init__(self, tensors: Dict[str, Any], reports: List[Dict[str, Any]], rank: int) -> None:
        self.tensors = tensors
        self.reports = reports
        self.report = reports[rank] if 0 <= rank < len(reports) else {}


def _timeout_seconds(timeout_s: Optional[float]) -> float:
    if timeout_s is None:
        return 300.0
    value = float(timeout_s)
    if not value > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    return value


def load_sharded(path: Any, process_group: Any = None, *, framework: str = "pt",
                 device: Any = "cpu", shard: str = "llama", shard_mode: str = "auto",
                 share_window_mib: int = 0, timeout_s: Optional[float] = None, dtype: Any = None,
                 variant: Optional[str] = None, strategy: str = "auto", threads: int = 0,
                 budget_mib: Optional[int] = None) -> ShardedLoad:
    """Loads this rank's shards of the model at ``path`` (a file, a sharded checkpoint, a folder,
    or a URI) on ``process_group`` (None: the default group). Every rank of the group calls it
    with the same arguments.

    Args:
        framework: "pt" for torch tensors, "np" for numpy arrays.
        device: as for flashload.safe_open ("cpu"; a CUDA device with shard_mode="local").
        shard: "llama", "none" or the path of a rules file (module docstring).
        shard_mode: "auto", "local" or "share" (module docstring).
        share_window_mib: MiB of the model read per round of "share" across the job (0: the
            budget).
        timeout_s: how long a rank waits for the others at each step (default 300).
        dtype, variant, strategy, threads, budget_mib: as for flashload.load_model_dir.

    Returns:
        A :class:`ShardedLoad` (tensors and every rank's report).

    Raises:
        As described in the module docstring; ValueError for a bad argument (on the rank that
        passed it, before any collective: give every rank the same arguments).
    """
    import os
    from flashload import _DEFAULT_BUDGET_MIB, _Framework, _core, _dtype_spec, _engine_options
    communicator = TorchDistributedCommunicator(process_group)
    fw = _Framework(framework, device)
    options = _engine_options(strategy, threads,
                              _DEFAULT_BUDGET_MIB if budget_mib is None else budget_mib)
    arrays, reports = _core.load_sharded(
        os.fspath(path), communicator, shard=str(shard), mode=str(shard_mode),
        share_window_mib=int(share_window_mib), timeout_s=_timeout_seconds(timeout_s),
        variant=variant or "", device=fw.native_device, dtype=_dtype_spec(dtype), **options)
    tensors = {name: fw.convert_array(array) for name, array in arrays}
    return ShardedLoad(tensors, reports, communicator.rank)
