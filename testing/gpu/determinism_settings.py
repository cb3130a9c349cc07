"""What GPU inference reproducibility needs, one setting at a time.

For each model and batch size, runs the frozen TorchScript model in fresh
processes under PyTorch's defaults and under each setting alone, and prints
one line per setting: median latency, its ratio to the defaults, and whether
two processes (and repeated calls within one) gave the same output bytes.

  python3 determinism_settings.py MODEL.pt[:C,H,W] [MODEL2.pt[:C,H,W] ...]
      [--batches=1,64] [--runs=50]

Run on a machine with a CUDA GPU (testing/gpu/gpu_check.sh calls it).
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

SETTINGS = {
    "defaults": {},
    "deterministic_algorithms": {"deterministic_algorithms": True},
    "cudnn.deterministic": {"cudnn_deterministic": True},
    "cudnn.benchmark=True": {"cudnn_benchmark": True},
    "tf32_off": {"tf32": False},
    "tf32_on": {"tf32": True},
    "CUBLAS_WORKSPACE_CONFIG": {"env": {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}},
    # What `run --deterministic` (the default) sets.
    "runner_deterministic": {"deterministic_algorithms": True,
                             "cudnn_deterministic": True},
}


def child(args):
    import torch
    setting = json.loads(args.child)
    if setting.get("deterministic_algorithms"):
        torch.use_deterministic_algorithms(True)
    if setting.get("cudnn_deterministic"):
        torch.backends.cudnn.deterministic = True
    if setting.get("cudnn_benchmark"):
        torch.backends.cudnn.benchmark = True
    if "tf32" in setting:
        torch.backends.cudnn.allow_tf32 = setting["tf32"]
        torch.backends.cuda.matmul.allow_tf32 = setting["tf32"]
    device = torch.device("cuda")
    module = torch.jit.load(args.model, map_location=device).eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, *args.shape, generator=generator).pin_memory()
    digests = set()
    latencies = []
    with torch.inference_mode():
        for i in range(10 + args.runs):
            begin = time.perf_counter()
            out = module(x.to(device, non_blocking=True)).cpu()
            if i >= 10:
                latencies.append((time.perf_counter() - begin) * 1000)
            digests.add(hashlib.sha256(out.numpy().tobytes()).hexdigest())
    latencies.sort()
    print(json.dumps({"p50": latencies[len(latencies) // 2],
                      "digests": sorted(digests)}))


def measure(model, shape, batch, runs, setting):
    env = dict(os.environ)
    env.update(setting.get("env", {}))
    command = [sys.executable, __file__, "--child", json.dumps(setting),
               "--model", model, "--shape", ",".join(map(str, shape)),
               "--batch", str(batch), "--runs", str(runs)]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="*")
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--child")
    parser.add_argument("--model")
    parser.add_argument("--shape")
    parser.add_argument("--batch", type=int)
    args = parser.parse_args()
    if args.child:
        args.shape = [int(n) for n in args.shape.split(",")]
        return child(args)
    for spec in args.models:
        model, _, shape_text = spec.partition(":")
        shape = [int(n) for n in (shape_text or "1,28,28").split(",")]
        for batch in (int(b) for b in args.batches.split(",")):
            base = None
            for name, setting in SETTINGS.items():
                first = measure(model, shape, batch, args.runs, setting)
                second = measure(model, shape, batch, args.runs, setting)
                label = f"{os.path.basename(model)} batch {batch} {name}"
                if "error" in first or "error" in second:
                    print(f"{label}: error {first.get('error') or second.get('error')}")
                    continue
                p50 = min(first["p50"], second["p50"])
                base = base or p50
                same = (len(first["digests"]) == 1 and
                        first["digests"] == second["digests"])
                print(f"{label}: p50 {p50:.3f} ms, {p50 / base:.2f}x of "
                      f"defaults, reproducible "
                      f"{'yes' if same else 'no'} "
                      f"({len(set(first['digests'] + second['digests']))} "
                      f"distinct outputs)", flush=True)


if __name__ == "__main__":
    main()
