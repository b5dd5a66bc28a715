"""Writes the small PyTorch checkpoints the C++ tests of `flashload convert` read, and
expected.txt: one line per tensor, `file name dtype shape hex`, where shape is comma-separated
(empty for a scalar) and hex is the tensor's bytes in row-major order (what safetensors holds).

Run with torch installed: python tests/data/checkpoints/make_checkpoints.py
Deterministic: tensor values come from fixed formulas, so rerunning changes no tensor."""

import collections
import os

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
SAFETENSORS_DTYPE = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
    torch.int8: "I8", torch.int16: "I16", torch.int32: "I32", torch.int64: "I64",
    torch.uint8: "U8", torch.bool: "BOOL", torch.complex64: "C64",
    torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}


def ramp(n, dtype):
    return (torch.arange(n, dtype=torch.float64) * 0.75 - 3).to(dtype)


def state_dicts():
    sd = collections.OrderedDict()
    base = ramp(24, torch.float32).reshape(4, 6)
    sd["layer.weight"] = base
    sd["layer.weight_t"] = base.t()                   # non-contiguous view of the same storage
    sd["layer.bias"] = ramp(6, torch.float16)
    sd["tied"] = base                                   # the same tensor under a second name
    sd["strided"] = ramp(20, torch.float32)[2::3]       # storage offset and a step
    sd["emb"] = torch.nn.Parameter(ramp(8, torch.bfloat16).reshape(2, 4))
    sd["f64"] = ramp(3, torch.float64)
    sd["i8"] = torch.tensor([-3, 0, 5], dtype=torch.int8)
    sd["i64"] = torch.tensor([1 << 40, -7], dtype=torch.int64)
    sd["u8"] = torch.tensor([0, 200, 255], dtype=torch.uint8)
    sd["mask"] = torch.tensor([True, False, True])
    sd["c64"] = torch.tensor([1 + 2j, -3.5j], dtype=torch.complex64)
    sd["fp8"] = ramp(4, torch.float8_e4m3fn)
    sd["scalar"] = torch.tensor(2.5)
    sd["empty"] = torch.zeros(0, 3)
    nested = {"model": {"enc": {"w": ramp(4, torch.float32)}, "dec.w": ramp(2, torch.float16)},
              "epoch": 3, "hyper_parameters": {"lr": 0.1, "name": "tiny"}}
    return {"plain": sd, "lightning": {"state_dict": nested["model"], "epoch": 3,
                                       "hyper_parameters": nested["hyper_parameters"]}}


def flat(prefix, obj, out):
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            flat(f"{prefix}.{k}" if prefix else str(k), v, out)


def main():
    lines = []
    for stem, sd in state_dicts().items():
        for fmt, zipped in (("zip", True), ("legacy", False)):
            name = f"{stem}_{fmt}.pt"
            torch.save(sd, os.path.join(HERE, name), _use_new_zipfile_serialization=zipped)
            tensors = {}
            flat("", sd["state_dict"] if "state_dict" in sd else sd, tensors)
            for tname, t in tensors.items():
                t = t.detach().contiguous()
                raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
                shape = ",".join(str(d) for d in t.shape)
                lines.append(f"{name} {tname} {SAFETENSORS_DTYPE[t.dtype]} {shape or '-'} "
                             f"{raw.hex() or '-'}")
    with open(os.path.join(HERE, "expected.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
