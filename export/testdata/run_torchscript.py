"""Runs an exported TorchScript model in Python's torch, for interop tests.

usage: run_torchscript.py MODEL INPUT_RAW N,C,H,W OUTPUT_RAW METADATA_OUT

INPUT_RAW holds float32 little-endian values of shape N,C,H,W; the model's
output bytes go to OUTPUT_RAW and its extra/metadata.json to METADATA_OUT.
One intra-op thread, as in the C++ side of the test, so that results can be
compared bit for bit.
"""
import sys

import numpy as np
import torch


def main():
    model_path, input_path, shape, output_path, metadata_path = sys.argv[1:]
    torch.set_num_threads(1)
    extra_files = {"metadata.json": ""}
    model = torch.jit.load(model_path, _extra_files=extra_files)
    dims = [int(d) for d in shape.split(",")]
    values = np.fromfile(input_path, dtype="<f4").reshape(dims)
    with torch.no_grad():
        output = model(torch.from_numpy(values))
    output.numpy().astype("<f4").tofile(output_path)
    with open(metadata_path, "wb") as f:
        f.write(extra_files["metadata.json"])


if __name__ == "__main__":
    main()
