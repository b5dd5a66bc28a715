"""flashload.patch() / flashload.unpatch(): route the safetensors API through flashload.

After patch(), code that calls ``safetensors.safe_open``, ``safetensors.numpy.load_file`` or
``safetensors.torch.load_file`` — diffusers' and transformers' ``from_pretrained`` among them —
loads through flashload unchanged. Names already bound elsewhere (``from safetensors.torch import
load_file as safe_load_file`` in a module imported before patch()) are found in ``sys.modules`` and
replaced too. unpatch() restores every replaced name. Both are idempotent and thread-compatible
(call them from one thread, at start-up).

Calls flashload cannot serve — a framework other than numpy/torch ("flax", "tf", "mlx", "paddle")
— go to the original function, so patching never takes a capability away.

Setting ``FLASHLOAD_PATCH=1`` in the environment patches at interpreter start-up (a ``.pth`` hook
installed with the package), for code one cannot edit.
"""

from __future__ import annotations

import functools
import sys
import threading
from typing import Any, Callable, Dict, List, Tuple

__all__ = ["patch", "unpatch", "is_patched"]

_lock = threading.Lock()
# (owner object, attribute, original value) for every name replaced, in replacement order.
_replaced: List[Tuple[Any, str, Any]] = []
# original callable -> its flashload replacement
_replacements: Dict[int, Any] = {}


def _safe_open_replacement(original: Callable[..., Any]) -> Callable[..., Any]:
    from flashload import _NUMPY_NAMES, _TORCH_NAMES, safe_open

    @functools.wraps(original)
    def patched_safe_open(filename: Any, framework: str, device: Any = "cpu", *args: Any,
                          **kwargs: Any) -> Any:
        if args or kwargs or framework not in _NUMPY_NAMES + _TORCH_NAMES:
            return original(filename, framework, device, *args, **kwargs)
        return safe_open(filename, framework, device)

    patched_safe_open.__flashload_original__ = original  # type: ignore[attr-defined]
    return patched_safe_open


def _load_file_replacement(original: Callable[..., Any], ours: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def patched_load_file(filename: Any, *args: Any, **kwargs: Any) -> Any:
        return ours(filename, *args, **kwargs)

    patched_load_file.__flashload_original__ = original  # type: ignore[attr-defined]
    return patched_load_file


def _targets() -> List[Tuple[Any, str, Callable[[Any], Any]]]:
    """(module, attribute, make_replacement) for every safetensors entry point importable here."""
    import safetensors
    import safetensors.numpy

    import flashload.numpy

    targets: List[Tuple[Any, str, Callable[[Any], Any]]] = [
        (safetensors, "safe_open", _safe_open_replacement),
        (safetensors.numpy, "load_file",
         lambda orig: _load_file_replacement(orig, flashload.numpy.load_file)),
    ]
    try:
        import safetensors.torch
    except ImportError:  # no torch: nothing to patch there
        return targets
    import flashload.torch

    targets += [
        (safetensors.torch, "safe_open", _safe_open_replacement),
        (safetensors.torch, "load_file",
         lambda orig: _load_file_replacement(orig, flashload.torch.load_file)),
    ]
    return targets


def _replace(owner: Any, attribute: str, value: Any) -> None:
    _replaced.append((owner, attribute, getattr(owner, attribute)))
    setattr(owner, attribute, value)


def patch() -> None:
    """Routes safetensors' loading functions through flashload (see the module docstring)."""
    with _lock:
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
        # Names bound before patch() by `from safetensors... import ...` in other modules.
        originals = {id(orig): orig for _, _, orig in _replaced}
        for name, module in list(sys.modules.items()):
            if module is None or name.startswith(("safetensors", "flashload")):
                continue
            namespace = getattr(module, "__dict__", None)
            if not isinstance(namespace, dict):
                continue
            for attribute, value in list(namespace.items()):
                if id(value) in originals and value is originals[id(value)]:
                    _replace(module, attribute, _replacements[id(value)])


def unpatch() -> None:
    """Restores every name patch() replaced."""
    with _lock:
        while _replaced:
            owner, attribute, original = _replaced.pop()
            setattr(owner, attribute, original)


def is_patched() -> bool:
    """True between patch() and unpatch()."""
    return bool(_replaced)
