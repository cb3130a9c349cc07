"""Loading PyTorch's files: our C++ reader against Python, in one run.

  python load_benchmark.py LOAD_BENCHMARK_BINARY WORK_DIR [--runs=N]

Writes a ResNet-50 state_dict (torchvision's layout, random init: 320
tensors, 25.6 M parameters, 102 MB) as torch.save .pt and as safetensors, then
times, with the page cache warm, each file's load onto the CPU:
  ours:   LoadCheckpoint (copied into tensors; .pt CRC-32s checked) and
          LoadCheckpoint with mmap (zero-copy views)
  Python: torch.load(path, weights_only=True) and
          safetensors.torch.load_file(path)
and prints medians and ratios (Python time / ours: above 1 means ours is
faster).
"""
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file


class Bottleneck(nn.Module):
    """torchvision's ResNet Bottleneck, with its parameter names."""

    def __init__(self, cin, width, stride):
        super().__init__()
        cout = width * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False),
                nn.BatchNorm2d(cout))


class ResNet50(nn.Module):
    """torchvision.models.resnet50's state_dict layout (no forward needed)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for index, (width, blocks, stride) in enumerate(
                [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]):
            layer = []
            for block in range(blocks):
                layer.append(Bottleneck(cin, width, stride if block == 0 else 1))
                cin = width * 4
            setattr(self, "layer%d" % (index + 1), nn.Sequential(*layer))
        self.fc = nn.Linear(2048, 1000)


def resnet50_state():
    torch.manual_seed(0)
    return ResNet50().state_dict()


def median_seconds(load, path, runs):
    load(path)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        load(path)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    binary, work = sys.argv[1], sys.argv[2]
    runs = 5
    for arg in sys.argv[3:]:
        if arg.startswith("--runs="):
            runs = int(arg[len("--runs="):])
    state = resnet50_state()
    pt = os.path.join(work, "resnet50.pt")
    st = os.path.join(work, "resnet50.safetensors")
    torch.save(state, pt)
    save_file({k: v.contiguous() for k, v in state.items()}, st)
    size = os.path.getsize(pt)
    print("ResNet-50 state_dict: %d tensors, %.1f MB (.pt), torch %s, %d runs"
          % (len(state), size / 1e6, torch.__version__, runs))
    out = subprocess.run([binary, "--runs=%d" % runs, pt, st], check=True,
                         capture_output=True, text=True).stdout
    ours = {json.loads(line)["file"]: json.loads(line)
            for line in out.splitlines()}
    python = {
        pt: ("torch.load(weights_only=True)",
             median_seconds(lambda p: torch.load(p, weights_only=True), pt,
                            runs)),
        st: ("safetensors.torch.load_file",
             median_seconds(load_file, st, runs)),
    }
    print("%-12s %-32s %9s %11s %11s %8s %8s" % (
        "file", "Python peer", "peer s", "ours s", "ours mmap s",
        "ratio", "mmap"))
    for path in (pt, st):
        name, seconds = python[path]
        mine = ours[path]
        print("%-12s %-32s %9.4f %11.4f %11.4f %7.2fx %7.1fx" % (
            os.path.splitext(path)[1], name, seconds, mine["load_s"],
            mine["load_mmap_s"], seconds / mine["load_s"],
            seconds / mine["load_mmap_s"]))


if __name__ == "__main__":
    main()
