"""Python's side of safetensors_interop_test: PyPI's safetensors with torch.

  python safetensors_interop.py write DIR   # DIR/python.safetensors + DIR/<name>.bin
  python safetensors_interop.py check DIR   # DIR/ours.safetensors == the tensors

Every dtype torch and our format share, a 0-dim tensor, an empty one and a
non-contiguous one (saved contiguous, as safetensors does).
"""
import os
import sys

import torch
from safetensors.torch import load_file, save_file


def tensors():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    return {
        "float32": base,
        "float64": base.double(),
        "float16": base.half(),
        "bfloat16": base.bfloat16(),
        "int8": (base * 10).to(torch.int8),
        "uint8": (base * 10).abs().to(torch.uint8),
        "int16": (base * 1000).to(torch.int16),
        "int32": (base * 1e6).to(torch.int32),
        "int64": (base * 1e9).to(torch.int64),
        "bool": base > 0,
        "scalar": torch.tensor(3.25),
        "empty": torch.zeros(0, 3),
        "transposed": base.t().contiguous(),
    }


def raw(t):
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() \
        if t.numel() else b""


def main():
    mode, directory = sys.argv[1], sys.argv[2]
    expected = tensors()
    if mode == "write":
        save_file(expected, os.path.join(directory, "python.safetensors"),
                  metadata={"format": "pt", "producer": "python"})
        for name, t in expected.items():
            with open(os.path.join(directory, name + ".bin"), "wb") as f:
                f.write(raw(t))
        print("torch", torch.__version__)
        return
    loaded = load_file(os.path.join(directory, "ours.safetensors"))
    assert sorted(loaded) == sorted(expected), (sorted(loaded), sorted(expected))
    for name, t in expected.items():
        got = loaded[name]
        assert got.dtype == t.dtype, (name, got.dtype, t.dtype)
        assert list(got.shape) == list(t.shape), (name, got.shape, t.shape)
        assert raw(got) == raw(t), name + ": bytes differ"
    print("python read %d tensors bitwise-equal" % len(loaded))


if __name__ == "__main__":
    main()
