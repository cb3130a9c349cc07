#!/usr/bin/env bash
# How our binaries link CUDA. With a CUDA LibTorch (--config=torch2) each
# binary loads libtorch_cuda.so (its kernels register in static
# initializers, so it must be loaded although nothing names it), and none
# names a CUDA runtime, cuBLAS, cuDNN or NCCL symbol itself: all GPU work
# goes through LibTorch's device-generic API. With a CPU LibTorch, nothing
# CUDA is linked at all.
set -euo pipefail

status=0
for binary in trainer/train runner/run export/export checkpoint/ckpt; do
  path="${TEST_SRCDIR}/ckpt_project/${binary}"
  needed="$(readelf -d "${path}" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p')"
  libtorch="$(ldd "${path}" | awk '$1 ~ /^libtorch\.so/ { print $3 }')"
  if [[ -z "${libtorch}" ]]; then
    cuda="torch-free"
    if grep -q -E 'cuda|cublas|cudnn|nccl|torch' <<<"${needed}"; then
      echo "FAIL: torch-free ${binary} links $(grep -E 'cuda|cublas|cudnn|nccl|torch' <<<"${needed}" | tr '\n' ' ')"
      status=1
    fi
  elif [[ -e "$(dirname "${libtorch}")/libtorch_cuda.so" ]]; then
    grep -q "^libtorch_cuda\.so" <<<"${needed}" ||
      { echo "FAIL: ${binary} does not load libtorch_cuda.so"; status=1; }
    cuda="with libtorch_cuda.so"
  else
    if grep -q cuda <<<"${needed}"; then
      echo "FAIL: ${binary} links CUDA libraries against a CPU LibTorch: $(grep cuda <<<"${needed}" | tr '\n' ' ')"
      status=1
    fi
    cuda="CPU LibTorch"
  fi
  own="$(nm -D --undefined-only "${path}" | awk '{ print $NF }' |
    grep -E '^(cuda|cublas|cudnn|nccl|cusparse|cufft|curand)' || true)"
  if [[ -n "${own}" ]]; then
    echo "FAIL: ${binary} names CUDA symbols itself: $(head -5 <<<"${own}" | tr '\n' ' ')"
    status=1
  fi
  echo "${binary}: ${cuda}; CUDA symbols named: $(wc -w <<<"${own}")"
done
exit "${status}"
