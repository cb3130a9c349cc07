"""The benchmark's Python peer: torch.jit.load + forward, timed like
`run --benchmark`. Prints one line after the first inference (for
cold-start timing), then a JSON summary.

  /usr/bin/python3 python_forward.py MODEL BATCH THREADS WARMUP RUNS
      [DEVICE [ITEM_SHAPE]]

DEVICE (default cpu) is where the model is loaded and run, with PyTorch's
default settings. On a GPU each timed call is what `run --benchmark` does:
the input, held in pinned CPU memory, is copied to the GPU, the model runs,
and the output is copied back. ITEM_SHAPE is one item's shape, default
1,28,28.
"""

import json
import sys
import time

import numpy as np
import torch


def main():
    model_path, batch, threads, warmup, runs = sys.argv[1:6]
    device = torch.device(sys.argv[6] if len(sys.argv) > 6 else "cpu")
    shape = [int(n) for n in (sys.argv[7] if len(sys.argv) > 7
                              else "1,28,28").split(",")]
    if int(threads) > 0:  # 0 keeps PyTorch's default, as `run` does.
        torch.set_num_threads(int(threads))
    start = time.perf_counter()
    module = torch.jit.load(model_path, map_location=device).eval()
    load_ms = (time.perf_counter() - start) * 1000
    x = torch.zeros(int(batch), *shape)
    if device.type == "cuda":
        x = x.pin_memory()

    def run_once():
        begin = time.perf_counter()
        if device.type == "cuda":
            module(x.to(device, non_blocking=True)).cpu()
        else:
            module(x)
        return (time.perf_counter() - begin) * 1000

    with torch.inference_mode():
        first_ms = run_once()
        print("first output", flush=True)
        for _ in range(int(warmup)):
            run_once()
        latencies = np.array([run_once() for _ in range(int(runs))])
    if len(latencies) == 0:
        latencies = np.array([first_ms])
    print(json.dumps({
        "model_load_ms": load_ms,
        "first_inference_ms": first_ms,
        "latency_ms": {
            "count": len(latencies), "min": latencies.min(),
            "avg": latencies.mean(), "std": latencies.std(),
            "p50": np.percentile(latencies, 50),
            "p90": np.percentile(latencies, 90),
            "p99": np.percentile(latencies, 99), "max": latencies.max()},
    }))


if __name__ == "__main__":
    main()
