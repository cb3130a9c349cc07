#!/usr/bin/env bash
# Runs testing/gpu/gpu_check.sh on the Bazel-built binaries. With a CUDA
# device this is the whole GPU check; without one, every CUDA check must
# report "SKIP no CUDA device" and none may fail.
set -euo pipefail

runfiles="${TEST_SRCDIR}/ckpt_project"
bin="${TEST_TMPDIR}/bin"
mkdir -p "${bin}"
for path in trainer/train checkpoint/ckpt export/export runner/run; do
  ln -sf "${runfiles}/${path}" "${bin}/"
done
output="${TEST_TMPDIR}/gpu_check.out"
status=0
GPU_CHECK_BIN="${bin}" GPU_CHECK_DATA="${TEST_SRCDIR}/fashion_mnist" \
  GPU_CHECK_SCRIPTS="${runfiles}/runner" PYTHON="${TEST_SRCDIR}/libtorch/python" \
  bash "${runfiles}/testing/gpu/gpu_check.sh" --work="${TEST_TMPDIR}/work" \
  "$@" >"${output}" 2>&1 || status=$?
cat "${output}"
[[ "${status}" == 0 ]] || { echo "FAIL: gpu_check.sh exited ${status}"; exit 1; }
if ! "${TEST_SRCDIR}/libtorch/python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  grep -q "^CHECK train_cuda: SKIP no CUDA device$" "${output}" ||
    { echo "FAIL: no 'SKIP no CUDA device' line for train_cuda"; exit 1; }
  echo "skipped: no CUDA device"
fi
