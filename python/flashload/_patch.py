"""flashload.patch() / flashload.unpatch(): route the safetensors API through flashload.

After patch(), code that calls ``safetensors.safe_open``, ``safetensors.numpy.load_file`` /
``load`` or ``safetensors.torch.load_file`` / ``load`` (and so ``safetensors.torch.load_model``)
— diffusers' and transformers' ``from_pretrained`` among them — loads through flashload unchanged,
with every argument the reference (safetensors 0.8.0) takes, ``backend=`` included. Names already
bound elsewhere (``from safetensors.torch import load_file as safe_load_file`` in a module
imported before patch()) are found in ``sys.modules`` and replaced too. unpatch() restores every
replaced name. Both are idempotent and thread-compatible (call them from one thread, at start-up);
the patched functions themselves may be called from any thread.

A call flashload cannot serve — a framework other than numpy/torch ("flax", "tf", "mlx",
"paddle"), or arguments the reference does not take either — goes to the original function, so
patching never takes a capability away. It is never silent: each distinct reason warns once
(:class:`PatchFallbackWarning`, naming the call) and is counted in :func:`patch_report`; with
``patch(strict=True)`` it raises :class:`PatchFallbackError` instead.

Setting ``FLASHLOAD_PATCH=1`` in the environment patches at interpreter start-up (a ``.pth`` hook
installed with the package), for code one cannot edit.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import sys
import threading
import warnings
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

__all__ = ["patch", "unpatch", "is_patched", "patch_report", "PatchReport", "PatchFallbackError",
           "PatchFallbackWarning"]


class PatchFallbackWarning(UserWarning):
    """A patched safetensors call went to safetensors, not flashload (once per distinct reason)."""


class PatchFallbackError(RuntimeError):
    """Raised under ``patch(strict=True)`` by a call that would have gone to safetensors.

    Deliberately not a ``safetensors.SafetensorError``: code that catches the reference's errors
    to try another format must not swallow it.
    """


@dataclasses.dataclass(frozen=True)
class PatchReport:
    """What the patched safetensors functions did since patch() was first called (or the last
    ``patch_report(reset=True)``).

    Attributes:
        files: path of each file flashload opened or loaded (absolute for local files, URIs as
            given) -> how many calls did.
        calls: patched entry point ("safetensors.safe_open", "safetensors.torch.load_file", ...)
            -> calls flashload served.
        fallbacks: reason (the warning's text, naming the call) -> calls that went to safetensors.
        fallback_files: path of each file a call that went to safetensors named -> how many.
    """

    files: Dict[str, int]
    calls: Dict[str, int]
    fallbacks: Dict[str, int]
    fallback_files: Dict[str, int]

    @property
    def fallback_count(self) -> int:
        """Calls that went to safetensors, all reasons together."""
        return sum(self.fallbacks.values())


_lock = threading.Lock()  # guards everything below
# (owner object, attribute, original value) for every name replaced, in replacement order.
_replaced: List[Tuple[Any, str, Any]] = []
# id(original callable) -> its flashload replacement
_replacements: Dict[int, Any] = {}
_strict = False
_files: Dict[str, int] = {}
_calls: Dict[str, int] = {}
_fallbacks: Dict[str, int] = {}
_fallback_files: Dict[str, int] = {}
_warned: Set[str] = set()  # reasons warned about


# The reference's signatures (safetensors 0.8.0): a call that binds to one of these is served by
# flashload with exactly these arguments.
def _safe_open_arguments(filename: Any, framework: Any, device: Any = "cpu", *,
                         backend: Any = "mmap") -> None: ...


def _numpy_load_file_arguments(filename: Any, *, backend: Any = "mmap") -> None: ...


def _torch_load_file_arguments(filename: Any, device: Any = "cpu", *,
                               backend: Any = "mmap") -> None: ...


def _load_arguments(data: Any) -> None: ...


def _file_key(filename: Any) -> str:
    try:
        path = os.fspath(filename)
    except TypeError:
        return repr(filename)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    return path if "://" in path else os.path.abspath(path)


def _count(table: Dict[str, int], key: str) -> None:
    table[key] = table.get(key, 0) + 1


def _served(entry: str, filename: Any = None) -> None:
    with _lock:
        _count(_calls, entry)
        if filename is not None:
            _count(_files, _file_key(filename))


def _read_ahead(filename: Any) -> None:
    """A framework loads a weight file whole: read the files its model loads next ahead
    (flashload._prefetch)."""
    from flashload import _prefetch
    try:
        path = os.fspath(filename)
    except TypeError:
        return
    if isinstance(path, str):
        _prefetch.note_use(path)


def _fall_back(reason: str, filename: Any, original: Callable[..., Any], args: Tuple[Any, ...],
               kwargs: Dict[str, Any]) -> Any:
    """Counts the call, warns once per reason (or raises when strict), then calls `original`."""
    with _lock:
        strict = _strict
        first = not strict and reason not in _warned
        if first:
            _warned.add(reason)
        _count(_fallbacks, reason)
        if filename is not None:
            _count(_fallback_files, _file_key(filename))
    if strict:
        raise PatchFallbackError(f"{reason} (flashload.patch(strict=True) raises instead of "
                                 "falling back)")
    if first:
        warnings.warn(f"{reason} (flashload.patch_report() counts these calls; "
                      "flashload.patch(strict=True) raises instead)", PatchFallbackWarning,
                      stacklevel=3)
    return original(*args, **kwargs)


def _bind(signature: inspect.Signature, args: Tuple[Any, ...],
          kwargs: Dict[str, Any]) -> Tuple[Optional[Dict[str, Any]], str]:
    """The arguments by name with defaults applied, or (None, why they do not bind)."""
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as error:
        return None, str(error)
    bound.apply_defaults()
    return bound.arguments, ""


def _first_argument(args: Tuple[Any, ...], kwargs: Dict[str, Any], name: str) -> Any:
    return args[0] if args else kwargs.get(name)


def _safe_open_replacement(entry: str, original: Callable[..., Any]) -> Callable[..., Any]:
    from flashload import _NUMPY_NAMES, _TORCH_NAMES, safe_open
    signature = inspect.signature(_safe_open_arguments)

    @functools.wraps(original, updated=())
    def patched_safe_open(*args: Any, **kwargs: Any) -> Any:
        arguments, why = _bind(signature, args, kwargs)
        filename = _first_argument(args, kwargs, "filename")
        if arguments is None:
            return _fall_back(f"{entry}() went to safetensors: flashload does not take these "
                              f"arguments ({why})", filename, original, args, kwargs)
        framework = arguments["framework"]
        if isinstance(framework, str) and framework not in _NUMPY_NAMES + _TORCH_NAMES:
            return _fall_back(f"{entry}(framework={framework!r}) went to safetensors: flashload "
                              "serves the numpy and torch frameworks only", filename, original,
                              args, kwargs)
        handle = safe_open(**arguments)
        _served(entry, filename)
        return handle

    patched_safe_open.__flashload_original__ = original  # type: ignore[attr-defined]
    return patched_safe_open


def _load_file_replacement(entry: str, original: Callable[..., Any], ours: Callable[..., Any],
                           signature_of: Callable[..., None]) -> Callable[..., Any]:
    signature = inspect.signature(signature_of)

    @functools.wraps(original, updated=())
    def patched_load_file(*args: Any, **kwargs: Any) -> Any:
        arguments, why = _bind(signature, args, kwargs)
        filename = _first_argument(args, kwargs, "filename")
        if arguments is None:
            return _fall_back(f"{entry}() went to safetensors: flashload does not take these "
                              f"arguments ({why})", filename, original, args, kwargs)
        _read_ahead(filename)
        tensors = ours(**arguments)
        _served(entry, filename)
        return tensors

    patched_load_file.__flashload_original__ = original  # type: ignore[attr-defined]
    return patched_load_file


def _load_replacement(entry: str, original: Callable[..., Any],
                      ours: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(_load_arguments)

    @functools.wraps(original, updated=())
    def patched_load(*args: Any, **kwargs: Any) -> Any:
        arguments, why = _bind(signature, args, kwargs)
        if arguments is None:
            return _fall_back(f"{entry}() went to safetensors: flashload does not take these "
                              f"arguments ({why})", None, original, args, kwargs)
        tensors = ours(**arguments)
        _served(entry)
        return tensors

    patched_load.__flashload_original__ = original  # type: ignore[attr-defined]
    return patched_load


def _targets() -> List[Tuple[Any, str, Callable[[Any], Any]]]:
    """(module, attribute, make_replacement) for every safetensors entry point importable here."""
    import safetensors
    import safetensors.numpy

    import flashload.numpy

    targets: List[Tuple[Any, str, Callable[[Any], Any]]] = [
        (safetensors, "safe_open",
         lambda orig: _safe_open_replacement("safetensors.safe_open", orig)),
        (safetensors.numpy, "load_file",
         lambda orig: _load_file_replacement("safetensors.numpy.load_file", orig,
                                             flashload.numpy.load_file,
                                             _numpy_load_file_arguments)),
        (safetensors.numpy, "load",
         lambda orig: _load_replacement("safetensors.numpy.load", orig, flashload.numpy.load)),
    ]
    try:
        import safetensors.torch
    except ImportError:  # no torch: nothing to patch there
        return targets
    import flashload.torch

    targets += [
        (safetensors.torch, "safe_open",
         lambda orig: _safe_open_replacement("safetensors.torch.safe_open", orig)),
        (safetensors.torch, "load_file",
         lambda orig: _load_file_replacement("safetensors.torch.load_file", orig,
                                             flashload.torch.load_file,
                                             _torch_load_file_arguments)),
        (safetensors.torch, "load",
         lambda orig: _load_replacement("safetensors.torch.load", orig, flashload.torch.load)),
    ]
    return targets


def _replace(owner: Any, attribute: str, value: Any) -> None:
    _replaced.append((owner, attribute, getattr(owner, attribute)))
    setattr(owner, attribute, value)


def patch(strict: bool = False) -> None:
    """Routes safetensors' loading functions through flashload (see the module docstring).

    Args:
        strict: raise :class:`PatchFallbackError` for a call flashload cannot serve, instead of
            warning and passing it to safetensors. Calling patch() again changes only this.
    """
    global _strict
    from flashload import _prefetch
    _prefetch.activate(True)
    with _lock:
        _strict = bool(strict)
        if _replaced:
            return
        for module, attribute, make in _targets():
            original = getattr(module, attribute)
            if getattr(original, "__flashload_original__", None) is not None:
                continue
            replacement = _replacements.get(id(original))
            if replacement is None:
                replacement = make(original)
                _replacements[id(original)] = replacement
            _replace(module, attribute, replacement)
        # Names bound before patch() by `from safetensors... import ...` in other modules
        # (safetensors.flax and the other framework modules of the reference included, so that
        # their calls are counted too).
        originals = {id(orig): orig for _, _, orig in _replaced}
        for name, module in list(sys.modules.items()):
            if module is None or name.startswith("flashload") or name == "safetensors._safetensors_rust":
                continue
            namespace = getattr(module, "__dict__", None)
            if not isinstance(namespace, dict):
                continue
            for attribute, value in list(namespace.items()):
                if id(value) in originals and value is originals[id(value)]:
                    _replace(module, attribute, _replacements[id(value)])


def unpatch() -> None:
    """Restores every name patch() replaced."""
    global _strict
    from flashload import _prefetch
    _prefetch.activate(False)
    with _lock:
        _strict = False
        while _replaced:
            owner, attribute, original = _replaced.pop()
            setattr(owner, attribute, original)


def is_patched() -> bool:
    """True between patch() and unpatch()."""
    return bool(_replaced)


def patch_report(reset: bool = False) -> PatchReport:
    """What the patched functions did: files served by flashload, and calls that went to
    safetensors by reason (see :class:`PatchReport`). ``reset`` starts the counts afresh, and
    warns again for reasons already warned about."""
    with _lock:
        report = PatchReport(files=dict(_files), calls=dict(_calls), fallbacks=dict(_fallbacks),
                             fallback_files=dict(_fallback_files))
        if reset:
            for table in (_files, _calls, _fallbacks, _fallback_files, _warned):
                table.clear()
    return report
