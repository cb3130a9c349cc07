#!/usr/bin/env bash
# One training epoch on 1 process against the same epoch on N processes
# (Gloo on loopback), same global batches, in one run, from the workspace
# root:
#
#   tools/distributed/epoch_benchmark.sh [N] [EXAMPLES]
#
# On a machine with fewer cores than processes this measures overhead,
# not speed-up: 1 process gets all the cores as intra-op threads, each of
# the N processes gets cores / N (1 process on 1 thread is shown too).
# Prints each run's epoch time (the
# trainer's own "epoch 1/1: ... (S s, E ex/s)" line) and the ratio.
# Results: docs/PERFORMANCE.md ("Distributed").
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "${root}"
world="${1:-2}"
examples="${2:-12000}"
tools/bazel build --config=opt //trainer:train >&2
bin="$(tools/bazel info --config=opt bazel-bin 2>/dev/null)"
data="$(tools/bazel info output_base 2>/dev/null)/external/fashion_mnist"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
cores="$(nproc)"
per_rank=$((cores / world > 0 ? cores / world : 1))
flags=(--data_dir="${data}" --model=cnn --epochs=1 --batch_size=128
  --max_train_examples="${examples}" --max_val_examples=500 --progress=none
  --device=cpu --skip_test)
echo "machine: ${cores} cores, load average $(cut -d' ' -f1-3 /proc/loadavg); ${examples} examples, batch 128"
seconds() { sed -n 's/^epoch 1\/1: .*(\([0-9.]*\) s, .*/\1/p' "$1"; }

"${bin}/trainer/train" --run_dir="${work}/one" --threads="${cores}" \
  "${flags[@]}" >"${work}/one.log" 2>&1
one="$(seconds "${work}/one.log")"
"${bin}/trainer/train" --run_dir="${work}/one_thread" --threads=1 \
  "${flags[@]}" >"${work}/one_thread.log" 2>&1
one_thread="$(seconds "${work}/one_thread.log")"

port="$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
pids=()
for ((rank = 0; rank < world; rank++)); do
  RANK="${rank}" WORLD_SIZE="${world}" MASTER_ADDR=127.0.0.1 \
    MASTER_PORT="${port}" "${bin}/trainer/train" --run_dir="${work}/many" \
    --threads="${per_rank}" "${flags[@]}" >"${work}/many${rank}.log" 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "${pid}"; done
many="$(seconds "${work}/many0.log")"
echo "1 process, 1 thread:         ${one_thread} s"
echo "1 process, ${cores} threads:       ${one} s"
echo "${world} processes, ${per_rank} thread(s) each: ${many} s"
awk -v a="${one}" -v b="${many}" 'BEGIN { printf "ratio (N processes / 1): %.2fx\n", b / a }'
