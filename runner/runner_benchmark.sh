#!/usr/bin/env bash
# The runner's speed benchmark, one command from the workspace root:
#
#   runner/runner_benchmark.sh [--threads=N] [--rounds=N] [--runs=N]
#
# Builds `run` and the bare C++ baseline with --config=opt, makes the
# benchmark CNN (conv 1->32, conv 32->64, linear 1600->128->10 on 1x28x28,
# scripted and frozen, with the exporter's metadata) with /usr/bin/python3,
# then compares our runner, a bare torch::jit::load + forward loop in C++
# and Python torch.jit.load + forward at batch 1 and 64 with the same
# thread count, and prints ratios and cold-start times. Results are
# recorded in docs/PERFORMANCE.md ("Runner").
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${root}"
output_base="${RUNNER_BENCHMARK_OUTPUT_BASE:-/root/.cache/bazel_runner}"
tools/bazel --output_base="${output_base}" build --config=opt \
  //runner:run //runner:bare_forward >&2
bin="$(tools/bazel --output_base="${output_base}" info --config=opt bazel-bin 2>/dev/null)"

work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
/usr/bin/python3 runner/make_test_model.py --kind=cnn --out="${work}/cnn.pt"
/usr/bin/python3 -c "import numpy as np; np.save('${work}/item.npy', np.zeros((1, 28, 28), np.float32))"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
/usr/bin/python3 runner/runner_benchmark.py "${bin}/runner/run" \
  "${bin}/runner/bare_forward" "${work}/cnn.pt" "${work}/item.npy" "$@"
