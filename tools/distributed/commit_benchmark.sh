#!/usr/bin/env bash
# How long checkpointing blocks training on 1 process against rank 0 of N
# processes, where every checkpoint waits for the other processes' parts
# before it commits. Same run twice (Fashion-MNIST CNN, a checkpoint every
# SAVE_EVERY steps, --config=opt), from the workspace root:
#
#   tools/distributed/commit_benchmark.sh [N] [EXAMPLES] [SAVE_EVERY]
#
# Prints, from the trainer's own lines: the time each run's training loop
# was blocked by checkpointing (rank 0's; a save is a snapshot on the
# training thread, then writing and committing on a background thread),
# per save; rank 0's background wait for the other processes' parts; the
# time writing its part blocked rank 1; and the ratio N / 1 of the blocked
# time per save. Results: docs/PERFORMANCE.md ("Distributed").
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "${root}"
world="${1:-2}"
examples="${2:-6000}"
save_every="${3:-5}"
tools/bazel build --config=opt //trainer:train //checkpoint:ckpt >&2
bin="$(tools/bazel info --config=opt bazel-bin 2>/dev/null)"
data="$(tools/bazel info output_base 2>/dev/null)/external/fashion_mnist"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
flags=(--data_dir="${data}" --model=cnn --epochs=1 --batch_size=64
  --max_train_examples="${examples}" --max_val_examples=500 --progress=none
  --device=cpu --skip_test --threads=1 --save_every_steps="${save_every}"
  --keep_last=2)
steps=$(((examples + 63) / 64))
# Mid-epoch saves every SAVE_EVERY steps (not at the epoch's last batch),
# and the epoch-end save.
saves=$(((steps - 1) / save_every + 1))
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); ${examples} examples, ${steps} steps, ${saves} saves"

blocked() { sed -n 's/^checkpointing: training blocked \([0-9.]*\) s.*/\1/p' "$1"; }

"${bin}/trainer/train" --run_dir="${work}/one" "${flags[@]}" \
  >"${work}/one.log" 2>&1
port="$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
pids=()
for ((rank = 0; rank < world; rank++)); do
  RANK="${rank}" WORLD_SIZE="${world}" MASTER_ADDR=127.0.0.1 \
    MASTER_PORT="${port}" "${bin}/trainer/train" --run_dir="${work}/many" \
    "${flags[@]}" >"${work}/many${rank}.log" 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "${pid}"; done

one="$(blocked "${work}/one.log")"
many="$(blocked "${work}/many0.log")"
parts="$(sed -n 's/.*waited \([0-9.]*\) s in all for the other.*/\1/p' "${work}/many0.log")"
rank1="$(sed -n 's/.*parts blocked it \([0-9.]*\) s).*/\1/p' "${work}/many1.log")"
"${bin}/checkpoint/ckpt" verify "${work}/many/last" >/dev/null ||
  { echo "the ${world}-process run's last checkpoint does not verify" >&2; exit 1; }
awk -v one="${one}" -v many="${many}" -v parts="${parts}" -v r1="${rank1}" \
  -v saves="${saves}" -v world="${world}" 'BEGIN {
  printf "1 process: training blocked %.4f s in all, %.2f ms per save\n", one, 1000 * one / saves
  printf "%d processes, rank 0: training blocked %.4f s in all, %.2f ms per save\n", world, many, 1000 * many / saves
  printf "%d processes, rank 0 saver waiting for the parts: %.4f s in all, %.2f ms per save\n", world, parts, 1000 * parts / saves
  printf "%d processes, rank 1 writing its part: %.4f s in all, %.2f ms per save\n", world, r1, 1000 * r1 / saves
  printf "ratio (rank 0 of %d / 1 process, blocked per save): %.2fx\n", world, many / one
}'
