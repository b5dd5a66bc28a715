"""The loads the frameworks suite makes, each through the libraries' own API, shared by the tests
and by the FLASHLOAD_PATCH=1 subprocess (run as a script: prints every parameter's digest and the
patch report as JSON).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import torch  # noqa: E402


def _stable_diffusion(folder: Path, dtype: Any, **kwargs: Any) -> Any:
    from diffusers import StableDiffusionPipeline
    return StableDiffusionPipeline.from_pretrained(str(folder), torch_dtype=dtype, device_map="cpu",
                                                   **kwargs)


def _llama(folder: Path, dtype: Any, **kwargs: Any) -> Any:
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(str(folder), torch_dtype=dtype, **kwargs)


def _single_file(file: Path, config: Path) -> Any:
    from diffusers import UNet2DConditionModel
    return UNet2DConditionModel.from_single_file(str(file), config=str(config), subfolder="unet",
                                                 torch_dtype=torch.float32, device_map="cpu")


def _accelerate(folder: Path) -> Any:
    """accelerate's own loader: an empty model, then its shards dispatched onto the CPU."""
    from accelerate import init_empty_weights, load_checkpoint_and_dispatch
    from transformers import AutoConfig, AutoModelForCausalLM
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(folder)))
    return load_checkpoint_and_dispatch(model, str(folder), device_map={"": "cpu"},
                                        dtype=torch.float32)


# name -> (load(paths), the weight files it must read: a key of `paths` naming a folder or file)
LOADS: Dict[str, Callable[[Dict[str, Path]], Any]] = {
    "stable diffusion": lambda p: _stable_diffusion(p["sd"], torch.float32),
    "stable diffusion to bfloat16": lambda p: _stable_diffusion(p["sd"], torch.bfloat16),
    "stable diffusion fp16 variant": lambda p: _stable_diffusion(p["sd_fp16"], torch.float16,
                                                                 variant="fp16"),
    "sharded llama": lambda p: _llama(p["llama"], torch.float32, device_map="cpu"),
    "sharded llama to bfloat16": lambda p: _llama(p["llama"], torch.bfloat16, device_map="cpu"),
    "sharded llama, no device_map": lambda p: _llama(p["llama"], torch.float32),
    "unet from_single_file": lambda p: _single_file(p["single_file"], p["sd"]),
    "sharded llama through accelerate": lambda p: _accelerate(p["llama"]),
}
READS = {"stable diffusion": "sd", "stable diffusion to bfloat16": "sd",
         "stable diffusion fp16 variant": "sd_fp16", "sharded llama": "llama",
         "sharded llama to bfloat16": "llama", "sharded llama, no device_map": "llama",
         "unet from_single_file": "single_file", "sharded llama through accelerate": "llama"}


def weight_files(path: Path) -> List[str]:
    """Every .safetensors file at `path` (a file or a folder), as absolute paths."""
    path = Path(path)
    files = [path] if path.is_file() else path.rglob("*.safetensors")
    return sorted(os.path.abspath(p) for p in files)


def modules(loaded: Any) -> Dict[str, torch.nn.Module]:
    """The torch modules of a load: a pipeline's components with weights, or the model."""
    if isinstance(loaded, torch.nn.Module):
        return {"model": loaded}
    return {name: getattr(loaded, name) for name in ("unet", "vae", "text_encoder")}


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def digests(loaded: Any) -> Dict[str, Dict[str, str]]:
    """{module: {state dict name: "dtype shape sha256"}} of a load."""
    out: Dict[str, Dict[str, str]] = {}
    for name, module in modules(loaded).items():
        out[name] = {key: f"{value.dtype} {tuple(value.shape)} "
                          f"{hashlib.sha256(tensor_bytes(value)).hexdigest()}"
                     for key, value in module.state_dict().items()}
    return out


def main() -> None:
    """argv[1]: JSON {path name: path}. Prints {"patched", "loads": {load: digests}, "report"}."""
    import warnings

    import flashload
    warnings.simplefilter("error", flashload.PatchFallbackWarning)
    paths = {k: Path(v) for k, v in json.loads(sys.argv[1]).items()}
    loads = {name: digests(load(paths)) for name, load in LOADS.items()}
    report = flashload.patch_report()
    print(json.dumps({"patched": flashload.is_patched(), "loads": loads,
                      "report": {"files": report.files, "fallbacks": report.fallbacks}}))


if __name__ == "__main__":
    main()
