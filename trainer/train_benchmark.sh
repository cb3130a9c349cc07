#!/bin/bash
# Times one training epoch of `train` (C++, TorchScript-defined module)
# against the same loop in Python PyTorch (trainer/train_benchmark.py), and
# the share of the epoch the training loop spends blocked by checkpointing.
#
#   tools/bazel run --config=opt //trainer:train_benchmark -- \
#       [--threads=2] [--examples=55000] [--model=cnn] [--save_every_steps=50]
#
# Same network, initialisation scheme, batch size (128), optimizer (SGD,
# momentum 0.9, weight decay 5e-4, per-step cosine lr) and thread count on
# both sides. Prints the figures and ratio python/c++ (> 1: C++ faster).
set -euo pipefail

threads=2
examples=55000
model=cnn
save_every_steps=50
for arg in "$@"; do
  case "$arg" in
    --threads=*) threads="${arg#*=}" ;;
    --examples=*) examples="${arg#*=}" ;;
    --model=*) model="${arg#*=}" ;;
    --save_every_steps=*) save_every_steps="${arg#*=}" ;;
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

echo "train_benchmark: $model, $examples examples, batch 128, $threads threads"

"$train" "${common[@]}" --run_dir="$scratch/epoch_end" > "$scratch/a.out" 2>&1 \
  || { cat "$scratch/a.out" >&2; exit 1; }
cpp_seconds="$(metric "$scratch/epoch_end" epoch_seconds)"
echo "c++ epoch: ${cpp_seconds} s"
grep '^checkpointing:' "$scratch/a.out" | sed 's/^/c++ epoch-end save only: /'

/usr/bin/python3 "$script" --data_dir="$data_dir" --model="$model" \
  --threads="$threads" --examples="$examples" > "$scratch/py.out"
python_seconds="$(sed -E 's/python_epoch_seconds=([0-9.]+).*/\1/' "$scratch/py.out")"
echo "python epoch: ${python_seconds} s"
awk -v p="$python_seconds" -v c="$cpp_seconds" \
  'BEGIN { printf "ratio python/c++: %.3f (>1: C++ faster)\n", p / c }'

"$train" "${common[@]}" --run_dir="$scratch/frequent" \
  --save_every_steps="$save_every_steps" > "$scratch/b.out" 2>&1 \
  || { cat "$scratch/b.out" >&2; exit 1; }
frequent_seconds="$(metric "$scratch/frequent" epoch_seconds)"
saves="$(find "$scratch/frequent" -maxdepth 1 -name 'epoch=*' | wc -l)"
echo "c++ epoch with a save every $save_every_steps steps ($saves checkpoints): ${frequent_seconds} s"
grep '^checkpointing:' "$scratch/b.out" | sed "s/^/c++ save every $save_every_steps steps: /"
awk -v f="$frequent_seconds" -v c="$cpp_seconds" \
  'BEGIN { printf "epoch time with frequent saves vs none: %+.2f%%\n", 100 * (f - c) / c }'
