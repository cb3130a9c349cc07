#!/usr/bin/env bash
# Loading a ResNet-50-sized .pt and .safetensors: our reader against
# Python's torch.load(weights_only=True) and safetensors' load_file, in one
# run, one command from the workspace root:
#
#   checkpoint/interop/load_benchmark.sh [--runs=N]
#
# Builds //checkpoint/interop:load_benchmark with --config=opt, then runs
# load_benchmark.py with Debian's Python torch (1.13) and
# the pinned safetensors wheel. Results: docs/PERFORMANCE.md ("Interop").
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "${root}"
tools/bazel build --config=opt //checkpoint/interop:load_benchmark >&2
bin="$(tools/bazel info --config=opt bazel-bin 2>/dev/null)"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
PYTHONPATH="${root}/third_party/python_interop/site" /usr/bin/python3 \
  checkpoint/interop/load_benchmark.py \
  "${bin}/checkpoint/interop/load_benchmark" "${work}" "$@"
