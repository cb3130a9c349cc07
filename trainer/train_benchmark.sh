#!/bin/bash
# Times one training epoch of `train` (C++, TorchScript-defined module)
# against the same loop in Python PyTorch (trainer/train_benchmark.py), and
# the share of the epoch the training loop spends blocked by checkpointing.
#
#   tools/bazel run --config=opt //trainer:train_benchmark -- \
#       [--threads=2] [--examples=55000] [--model=cnn] [--save_every_steps=10]
#       [--rounds=2]
#
# Same network, initialisation scheme, batch size (128), optimizer (SGD,
# momentum 0.9, weight decay 5e-4, per-step cosine lr) and thread count on
# both sides. The three runs (C++ with only the epoch-end save, Python, C++
# saving every N steps) are interleaved for --rounds rounds so that other
# load on the machine disturbs them alike; the fastest epoch of each is
# reported, with the ratio python/c++ (> 1: C++ faster).
set -euo pipefail

threads=2
examples=55000
model=cnn
save_every_steps=10
rounds=2
for arg in "$@"; do
  case "$arg" in
    --threads=*) threads="${arg#*=}" ;;
    --examples=*) examples="${arg#*=}" ;;
    --model=*) model="${arg#*=}" ;;
    --save_every_steps=*) save_every_steps="${arg#*=}" ;;
    --rounds=*) rounds="${arg#*=}" ;;
    *) echo "train_benchmark: error: unknown argument '$arg'" >&2; exit 2 ;;
  esac
done

runfiles="${RUNFILES_DIR:-$0.runfiles}"
train="$runfiles/ckpt_project/trainer/train"
script="$runfiles/ckpt_project/trainer/train_benchmark.py"
data_dir="$runfiles/fashion_mnist"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

common=(--epochs=1 --model="$model" --threads="$threads"
        --max_train_examples="$examples" --max_val_examples=1000
        --skip_test --progress=none --data_dir="$data_dir")

# The value of "key": in the last line of metrics.jsonl.
metric() { tail -n 1 "$1/metrics.jsonl" | sed -E "s/.*\"$2\":([0-9.e+-]+).*/\1/"; }
# "training blocked X s" from the summary line.
blocked() { sed -nE 's/^checkpointing: training blocked ([0-9.]+) s.*/\1/p' "$1"; }
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b < a) ? b : a }'; }

echo "train_benchmark: $model, $examples examples, batch 128, $threads threads, $rounds rounds"
cpp="" python="" frequent="" frequent_blocked="" saves=0
for round in $(seq 1 "$rounds"); do
  rm -rf "$scratch/a" "$scratch/b"
  "$train" "${common[@]}" --run_dir="$scratch/a" > "$scratch/a.out" 2>&1 \
    || { cat "$scratch/a.out" >&2; exit 1; }
  seconds="$(metric "$scratch/a" epoch_seconds)"
  cpp="$(min "$cpp" "$seconds")"

  /usr/bin/python3 "$script" --data_dir="$data_dir" --model="$model" \
    --threads="$threads" --examples="$examples" > "$scratch/py.out"
  py_seconds="$(sed -E 's/python_epoch_seconds=([0-9.]+).*/\1/' "$scratch/py.out")"
  python="$(min "$python" "$py_seconds")"

  "$train" "${common[@]}" --run_dir="$scratch/b" \
    --save_every_steps="$save_every_steps" > "$scratch/b.out" 2>&1 \
    || { cat "$scratch/b.out" >&2; exit 1; }
  f_seconds="$(metric "$scratch/b" epoch_seconds)"
  saves="$(find "$scratch/b" -maxdepth 1 -name 'epoch=*' | wc -l)"
  if [[ -z "$frequent" ]] || awk -v a="$f_seconds" -v b="$frequent" 'BEGIN { exit !(a < b) }'; then
    frequent="$f_seconds"
    frequent_blocked="$(blocked "$scratch/b.out")"
  fi
  echo "round $round: c++ ${seconds} s, python ${py_seconds} s, c++ saving every $save_every_steps steps ${f_seconds} s"
done

echo "c++ epoch (best of $rounds): $cpp s"
echo "python epoch (best of $rounds): $python s"
awk -v p="$python" -v c="$cpp" \
  'BEGIN { printf "ratio python/c++: %.3f (>1: C++ faster)\n", p / c }'
echo "c++ epoch saving every $save_every_steps steps ($saves checkpoints): $frequent s"
awk -v b="$frequent_blocked" -v f="$frequent" -v n="$saves" \
  'BEGIN { printf "checkpointing share of that epoch: training blocked %.3f s = %.3f%% (%.2f ms per checkpoint)\n", b, 100 * b / f, 1000 * b / n }'
awk -v f="$frequent" -v c="$cpp" \
  'BEGIN { printf "epoch time saving every %s steps vs only at the end: %+.2f%% (noise included)\n", "'"$save_every_steps"'", 100 * (f - c) / c }'
