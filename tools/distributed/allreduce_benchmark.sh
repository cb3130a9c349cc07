#!/usr/bin/env bash
# Gradient averaging over N processes on loopback: our
# ProcessGroup::AllReduceMean against Python's torch.distributed Gloo
# all_reduce (per tensor, and in DDP-like flattened buckets) for a
# ResNet-18's gradients, in one run, one command from the workspace root:
#
#   tools/distributed/allreduce_benchmark.sh [--world=2] [--steps=20]
#
# Builds the benchmark with --config=opt and uses Debian's Python torch
# 1.13 (the same LibTorch and Gloo as our default build). Results:
# docs/PERFORMANCE.md ("Distributed").
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "${root}"
tools/bazel build --config=opt //tools/distributed:allreduce_benchmark >&2
bin="$(tools/bazel info --config=opt bazel-bin 2>/dev/null)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
/usr/bin/python3 tools/distributed/allreduce_benchmark.py \
  "${bin}/tools/distributed/allreduce_benchmark" "$@"
