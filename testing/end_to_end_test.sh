#!/usr/bin/env bash
# End to end, through the real binaries and real signals: train, interrupt
# with SIGTERM, resume, export, run.
#
# What must hold (each is a link users rely on; breaking any of them fails
# this test):
#   1. an interrupted-then-resumed run ends with the same tensors as an
#      uninterrupted one (`ckpt digest` of best and last, training state
#      included), and keeps best and last;
#   2. export of best records that checkpoint's digest;
#   3. the runner's accuracy on test images equals the trainer's own
#      evaluation of the best checkpoint on the same images;
#   4. Python's torch.jit.load (and the lite interpreter) of the exported
#      model gives the runner's output bytes.
# Small data, few steps, one intra-op thread (bitwise reproducibility on CPU
# needs a fixed thread count).
set -euo pipefail

runfiles="${TEST_SRCDIR}/ckpt_project"
train="${runfiles}/trainer/train"
export_bin="${runfiles}/export/export"
run="${runfiles}/runner/run"
ckpt="${runfiles}/checkpoint/ckpt"
data_dir="${TEST_SRCDIR}/fashion_mnist"
# The Python whose torch matches the LibTorch this test was built with.
python="${TEST_SRCDIR}/libtorch/python"
work="${TEST_TMPDIR}/e2e"
rm -rf "${work}"
mkdir -p "${work}"

readonly TEST_IMAGES=500
common_flags=(
  --data_dir="${data_dir}" --model=cnn --epochs=2 --batch_size=32
  --max_train_examples=320 --max_val_examples=200
  --max_test_examples="${TEST_IMAGES}" --threads=1 --seed=7
  --save_every_steps=3 --progress=none --device=cpu
)

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

echo "== 1. uninterrupted run"
"${train}" --run_dir="${work}/straight" "${common_flags[@]}" \
  >"${work}/straight.out" 2>"${work}/straight.err" ||
  fail "uninterrupted training failed: $(tail -3 "${work}/straight.err")"
cat "${work}/straight.out"

echo "== 2. interrupted run: SIGTERM once the first checkpoint is committed"
"${train}" --run_dir="${work}/resumed" "${common_flags[@]}" \
  >"${work}/interrupted.out" 2>"${work}/interrupted.err" &
train_pid=$!
for _ in $(seq 1 1200); do
  [[ -e "${work}/resumed/last" ]] && break
  kill -0 "${train_pid}" 2>/dev/null || break
  sleep 0.05
done
[[ -e "${work}/resumed/last" ]] || fail "no checkpoint appeared before the trainer exited"
kill -TERM "${train_pid}"
status=0
wait "${train_pid}" || status=$?
cat "${work}/interrupted.err"
[[ "${status}" == 143 ]] ||
  fail "interrupted trainer exited ${status}, expected 143 (stopped by SIGTERM)"
grep -q "stopped by signal 15" "${work}/interrupted.err" ||
  fail "trainer did not report the SIGTERM stop"
interrupted_last="$(readlink "${work}/resumed/last")"
echo "interrupted at ${interrupted_last}"

echo "== 3. resume"
"${train}" --run_dir="${work}/resumed" "${common_flags[@]}" --resume \
  >"${work}/resumed.out" 2>"${work}/resumed.err" ||
  fail "resumed training failed: $(tail -3 "${work}/resumed.err")"
cat "${work}/resumed.out"
[[ "$(readlink "${work}/resumed/last")" != "${interrupted_last}" ]] ||
  fail "resume did not write a new last checkpoint"

echo "== 4. resume equivalence: ckpt digest of best and last"
"${ckpt}" ls "${work}/resumed" | tee "${work}/ls.out"
grep -q "best" "${work}/ls.out" || fail "ckpt ls shows no best"
grep -q "last" "${work}/ls.out" || fail "ckpt ls shows no last"
for link in best last; do
  "${ckpt}" verify "${work}/resumed/${link}" >/dev/null ||
    fail "resumed ${link} does not verify"
  straight_digest="$("${ckpt}" digest "${work}/straight/${link}")"
  resumed_digest="$("${ckpt}" digest "${work}/resumed/${link}")"
  echo "${link}: uninterrupted ${straight_digest} resumed ${resumed_digest}"
  [[ -n "${straight_digest}" && "${straight_digest}" == "${resumed_digest}" ]] ||
    fail "${link} differs between the uninterrupted and the resumed run"
done

echo "== 5. export best"
"${export_bin}" --checkpoint="${work}/resumed/best" --out="${work}/model.pt" \
  --lite="${work}/model.ptl" || fail "export failed"
"${export_bin}" --inspect="${work}/model.pt" >"${work}/metadata.json"
best_digest="$("${ckpt}" digest "${work}/resumed/best")"
"${python}" - "${work}/metadata.json" "${best_digest}" <<'EOF' || fail "metadata does not describe best"
import json, sys
metadata = json.load(open(sys.argv[1]))
assert metadata["source_checkpoint"]["tensor_digest"] == sys.argv[2], metadata
assert metadata["input_shape"] == [1, 28, 28], metadata
assert len(metadata["class_labels"]) == 10, metadata
assert metadata["parity"]["max_abs_difference"] == 0, metadata
EOF

echo "== 6. runner accuracy == trainer's evaluation of best on the same ${TEST_IMAGES} test images"
"${python}" - "${data_dir}" "${work}" "${TEST_IMAGES}" <<'EOF'
import gzip, sys
import numpy as np
data_dir, work, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
images = np.frombuffer(gzip.open(f"{data_dir}/t10k-images-idx3-ubyte.gz").read(), np.uint8)
labels = np.frombuffer(gzip.open(f"{data_dir}/t10k-labels-idx1-ubyte.gz").read(), np.uint8)
header = np.array([0x803, count, 28, 28], dtype=">i4").tobytes()
open(f"{work}/test-images-idx3-ubyte", "wb").write(header + images[16:16 + count * 784].tobytes())
header = np.array([0x801, count], dtype=">i4").tobytes()
open(f"{work}/test-labels-idx1-ubyte", "wb").write(header + labels[8:8 + count].tobytes())
EOF
trainer_accuracy="$(sed -n "s/^test: accuracy \([0-9.]*\) .* on ${TEST_IMAGES} images (best checkpoint)$/\1/p" "${work}/resumed.out")"
[[ -n "${trainer_accuracy}" ]] || fail "the trainer printed no test accuracy"
straight_accuracy="$(sed -n "s/^test: accuracy \([0-9.]*\) .*/\1/p" "${work}/straight.out")"
"${run}" --model="${work}/model.pt" --input="${work}/test-images-idx3-ubyte" \
  --labels="${work}/test-labels-idx1-ubyte" --threads=1 >"${work}/run.out" ||
  fail "run failed"
runner_accuracy="$(sed -n 's/^accuracy: \([0-9.]*\) .*/\1/p' "${work}/run.out")"
echo "trainer (resumed run) ${trainer_accuracy}, trainer (uninterrupted) ${straight_accuracy}, runner ${runner_accuracy}"
[[ -n "${runner_accuracy}" && "${runner_accuracy}" == "${trainer_accuracy}" ]] ||
  fail "runner accuracy ${runner_accuracy} != trainer's ${trainer_accuracy}"
[[ "${straight_accuracy}" == "${trainer_accuracy}" ]] ||
  fail "uninterrupted and resumed runs report different test accuracy"

echo "== 7. Python torch.jit.load gives the runner's output bytes"
"${python}" - "${work}" <<'EOF'
import sys
import numpy as np
work = sys.argv[1]
raw = np.fromfile(f"{work}/test-images-idx3-ubyte", np.uint8, offset=16)[:100 * 784]
images = ((raw.astype(np.float32) / 255.0 - 0.2860) / 0.3530).reshape(100, 1, 28, 28)
np.save(f"{work}/input.npy", images.astype("<f4"))
EOF
"${run}" --model="${work}/model.pt" --input="${work}/input.npy" \
  --output="${work}/runner_logits.npy" --threads=1 --batch_size=32 >/dev/null ||
  fail "run --output failed"
"${python}" - "${work}" <<'EOF' || fail "Python's outputs differ from the runner's"
import sys
import numpy as np
import torch
from torch.jit.mobile import _load_for_lite_interpreter
work = sys.argv[1]
torch.set_num_threads(1)
inputs = torch.from_numpy(np.load(f"{work}/input.npy"))
runner = np.load(f"{work}/runner_logits.npy")
assert runner.dtype == np.float32 and runner.shape == (100, 10), runner.shape
for name, model in [
    ("torch.jit.load", torch.jit.load(f"{work}/model.pt")),
    ("lite interpreter", _load_for_lite_interpreter(f"{work}/model.ptl")),
]:
    with torch.no_grad():
        # The runner's batches of 32: per-batch kernels, same bytes.
        python = torch.cat([model(batch) for batch in inputs.split(32)]).numpy()
    if python.tobytes() != runner.tobytes():
        print(f"{name}: max abs difference {np.abs(python - runner).max()}")
        sys.exit(1)
    print(f"{name}: {python.shape} bitwise equal to the runner's output")
EOF

echo "PASS"
