#!/usr/bin/env bash
# The project in one command: `tools/bazel run //:demo`.
#
# Trains the CNN on Fashion-MNIST (short by default: 2 epochs on 12,000
# training images; --full for 10 epochs on all 55,000), shows the best and
# last checkpoints the run kept, exports best to frozen TorchScript (.pt and
# lite .ptl), runs the exported model over the 10,000 test images with their
# labels and prints the accuracy and where every artifact is.
#
#   tools/bazel run //:demo                     # short run, about 2 minutes on 2 cores
#   tools/bazel run //:demo -- --full           # the 10-epoch run
#   tools/bazel run //:demo -- --dir=/some/dir  # artifacts elsewhere
#   tools/bazel run //:demo -- --threads=4
#
# Artifacts go to --dir, default $DEMO_DIR or /tmp/ckpt_project_demo (outside
# the source tree, so the clone stays clean). A previous demo's directory is
# replaced; any other non-empty directory is refused.
set -euo pipefail

full=0
threads=2
dir="${DEMO_DIR:-/tmp/ckpt_project_demo}"
for argument in "$@"; do
  case "${argument}" in
    --full) full=1 ;;
    --dir=*) dir="${argument#--dir=}" ;;
    --threads=*) threads="${argument#--threads=}" ;;
    -h | --help)
      sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "demo: error: unknown argument '${argument}' (see --help)" >&2
      exit 2
      ;;
  esac
done
[[ "${threads}" =~ ^[1-9][0-9]*$ ]] ||
  { echo "demo: error: --threads must be a positive integer" >&2; exit 2; }
if [[ "${dir}" != /* ]]; then
  dir="${BUILD_WORKING_DIRECTORY:-${PWD}}/${dir}"
fi

# Binaries and data from the runfiles tree (bazel run sets RUNFILES_DIR on
# some versions only).
runfiles="${RUNFILES_DIR:-}"
if [[ -z "${runfiles}" ]]; then
  if [[ -d "$0.runfiles" ]]; then
    runfiles="$0.runfiles"
  else
    runfiles="$(cd "$(dirname "$0")" && pwd)"
    runfiles="${runfiles%%.runfiles/*}.runfiles"
  fi
fi
train="${runfiles}/ckpt_project/trainer/train"
export_bin="${runfiles}/ckpt_project/export/export"
run="${runfiles}/ckpt_project/runner/run"
ckpt="${runfiles}/ckpt_project/checkpoint/ckpt"
data_dir="${runfiles}/fashion_mnist"
for file in "${train}" "${export_bin}" "${run}" "${ckpt}" \
  "${data_dir}/t10k-images-idx3-ubyte.gz"; do
  [[ -e "${file}" ]] ||
    { echo "demo: error: ${file} is missing; run me with: tools/bazel run //:demo" >&2; exit 1; }
done

readonly MARKER=".ckpt_project_demo"
if [[ -e "${dir}" ]]; then
  if [[ -e "${dir}/${MARKER}" ]]; then
    rm -rf "${dir}"
  elif [[ -n "$(ls -A "${dir}" 2>/dev/null)" ]]; then
    echo "demo: error: ${dir} exists and is not a previous demo's directory; choose another with --dir=" >&2
    exit 1
  fi
fi
mkdir -p "${dir}"
touch "${dir}/${MARKER}"
run_dir="${dir}/run"

if ((full)); then
  train_flags=(--epochs=10)
  description="10 epochs on all 55,000 training images"
else
  train_flags=(--epochs=2 --max_train_examples=12000 --max_val_examples=2000)
  description="2 epochs on 12,000 training images (--full: 10 epochs on all)"
fi

step() { printf '\n=== %s\n' "$*"; }
start_seconds=${SECONDS}

step "1/4 train: CNN, ${description}, ${threads} threads"
echo "\$ train --run_dir=${run_dir} ${train_flags[*]} --threads=${threads} --monitor=val_acc"
"${train}" --run_dir="${run_dir}" --model=cnn "${train_flags[@]}" \
  --threads="${threads}" --monitor=val_acc --data_dir="${data_dir}" \
  --progress=lines --skip_test

step "2/4 checkpoints kept by the run (best by val_acc, and last)"
echo "\$ ckpt ls ${run_dir}"
"${ckpt}" ls "${run_dir}"
echo "\$ ckpt verify ${run_dir}/best"
"${ckpt}" verify "${run_dir}/best"

step "3/4 export best to frozen TorchScript"
echo "\$ export --checkpoint=${run_dir}/best --out=${dir}/model.pt --lite=${dir}/model.ptl"
"${export_bin}" --checkpoint="${run_dir}/best" --out="${dir}/model.pt" \
  --lite="${dir}/model.ptl"
echo "\$ run --info=${dir}/model.pt   (the metadata it carries)"
"${run}" --info="${dir}/model.pt"

step "4/4 run the exported model over the 10,000 test images"
echo "\$ run --model=${dir}/model.pt --input=t10k-images-idx3-ubyte.gz --labels=t10k-labels-idx1-ubyte.gz --output=${dir}/test_logits.npy --topk=1"
"${run}" --model="${dir}/model.pt" \
  --input="${data_dir}/t10k-images-idx3-ubyte.gz" \
  --labels="${data_dir}/t10k-labels-idx1-ubyte.gz" \
  --output="${dir}/test_logits.npy" --threads="${threads}" --topk=1 |
  tee "${dir}/run_output.txt"
accuracy_line="$(grep '^accuracy:' "${dir}/run_output.txt" || true)"

step "summary ($((SECONDS - start_seconds)) s)"
echo "test ${accuracy_line:-accuracy: (not reported)}"
cat <<EOF
artifacts in ${dir}:
  run/                  run directory: checkpoints, best and last links, metrics.jsonl
  run/best -> $(readlink "${run_dir}/best")
  run/last -> $(readlink "${run_dir}/last")
  model.pt              frozen TorchScript with extra/metadata.json
  model.ptl             the same for the lite interpreter (mobile)
  test_logits.npy       logits for the 10,000 test images (float32 [10000, 10])
  run_output.txt        what the runner printed
next:
  tools/bazel run //:ckpt -- inspect ${run_dir}/best
  tools/bazel run //:run -- --model=${dir}/model.pt --benchmark
  # the same training on 2 processes (or under torchrun: docs/DISTRIBUTED.md):
  tools/bazel run -c opt //:train -- --nproc=2 --run_dir=/tmp/run2 --device=cpu
EOF
