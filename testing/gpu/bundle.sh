#!/usr/bin/env bash
# Builds what testing/gpu/gpu_check.sh runs on a GPU machine and gathers it
# in one folder (default gpu_bundle/ at the workspace root, git-ignored):
#
#   testing/gpu/bundle.sh [OUT_DIR]
#
# BUNDLE_BUILD_FLAGS (default "-c opt") are the build flags besides
# --config=torch2.
#
#   OUT_DIR/bin/    train, ckpt, export, run, cuda_test, libtorch_linked_test,
#                   save_load_benchmark
#                   (-c opt, --config=torch2: the pinned torch 2.11.0 wheel)
#   OUT_DIR/lib/    the Debian shared libraries they load besides glibc,
#                   libstdc++, LibTorch and CUDA (Abseil, Protobuf, xxHash...)
#   OUT_DIR/data/   Fashion-MNIST (.gz)
#   OUT_DIR/        gpu_check.sh and its Python helpers
#
# There: bash OUT_DIR/gpu_check.sh (see its header).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="${1:-${root}/gpu_bundle}"
cd "${root}"
targets=(//trainer:train //checkpoint:ckpt //export //runner:run
  //checkpoint:cuda_test //checkpoint:libtorch_linked_test
  //checkpoint:save_load_benchmark)
read -r -a flags <<<"${BUNDLE_BUILD_FLAGS--c opt}"
tools/bazel build "${flags[@]}" --config=torch2 "${targets[@]}" >&2
bin_dir="$(tools/bazel info "${flags[@]}" --config=torch2 bazel-bin 2>/dev/null)"

rm -rf "${out}"
mkdir -p "${out}/bin" "${out}/lib" "${out}/data"
for path in trainer/train checkpoint/ckpt export/export runner/run \
  checkpoint/cuda_test checkpoint/libtorch_linked_test \
  checkpoint/save_load_benchmark; do
  cp "${bin_dir}/${path}" "${out}/bin/"
done
# Libraries resolved outside LibTorch's wheel, CUDA and the C/C++ runtime.
for binary in "${out}"/bin/*; do
  ldd "${binary}" | awk '$3 ~ /^\// { print $3 }'
done | sort -u | while read -r library; do
  case "${library}" in
    # LibTorch's wheel, and CUDA's libraries (that machine's torch brings
    # its own, which a copy of ours would shadow).
    */torch2/site/* | /usr/local/cuda* | */libcu* | */libnv* | */libnccl* | \
      */libcudnn*) ;;
    # The C and C++ runtime.
    */libc.so* | */libm.so* | */libstdc++.so* | */libgcc_s.so* | \
      */libpthread.so* | */libdl.so* | */librt.so* | */libutil.so* | */ld-linux*) ;;
    *) cp -L "${library}" "${out}/lib/" ;;
  esac
done
cp /usr/share/datasets/fashion-mnist/*.gz "${out}/data/"
cp testing/gpu/gpu_check.sh testing/gpu/determinism_settings.py \
  runner/make_test_model.py runner/python_forward.py "${out}/"
echo "bundle: ${out} ($(du -sh "${out}" | cut -f1)); run there: bash $(basename "${out}")/gpu_check.sh" >&2
