#!/usr/bin/env bash
# A user's own model, end to end through the real binaries: a ResNet-18
# scripted in Python (torch.jit.script), weights saved by Python as a DDP
# state_dict (module.*) and as safetensors, exported by our `export
# --architecture`, run by our `run`.
#
# What must hold:
#   1. without the prefix rule the strict load refuses, naming the missing
#      and unexpected keys, and writes nothing;
#   2. with --strip_prefix=module. the export succeeds and records the
#      checkpoint's digest (the same as `ckpt digest` of the .pth);
#   3. our runner's logits equal Python's for the same inputs (1e-5);
#   4. the safetensors copy of the weights exports to the same logits.
set -euo pipefail

runfiles="${TEST_SRCDIR}/ckpt_project"
export_bin="${runfiles}/export/export"
run="${runfiles}/runner/run"
ckpt="${runfiles}/checkpoint/ckpt"
python="${TEST_SRCDIR}/libtorch/python"
script="${runfiles}/testing/user_model.py"
work="${TEST_TMPDIR}/user_model"
rm -rf "${work}"
mkdir -p "${work}"

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

"${python}" "${script}" write "${work}"

echo "== 1. strict load without the prefix rule"
if "${export_bin}" --checkpoint="${work}/resnet18_ddp.pth" \
  --architecture="${work}/resnet18_scripted.pt" --input_shape=3,112,112 \
  --out="${work}/refused.pt" >"${work}/refused.out" 2>"${work}/refused.err"; then
  fail "export loaded module.* names into a module without that prefix"
fi
cat "${work}/refused.err"
[[ $(wc -l <"${work}/refused.err") -eq 1 ]] || fail "error is not one line"
grep -q "missing" "${work}/refused.err" || fail "missing keys not named"
grep -q "pass --strip_prefix=module." "${work}/refused.err" || fail "no hint"
grep -q "module.conv1.weight" "${work}/refused.err" ||
  fail "unexpected keys not named"
[[ ! -e "${work}/refused.pt" ]] || fail "a refused export left a file"

echo "== 2. export with --strip_prefix=module."
"${export_bin}" --checkpoint="${work}/resnet18_ddp.pth" \
  --architecture="${work}/resnet18_scripted.pt" --input_shape=3,112,112 \
  --model_info="${work}/labels.json" --strip_prefix=module. \
  --probe_batch=2 --out="${work}/model.pt" --lite="${work}/model.ptl" |
  tee "${work}/export.out"
grep -q "122 module tensors loaded strictly (122 renamed)" \
  "${work}/export.out" || fail "not every tensor was loaded"
digest=$("${ckpt}" digest "${work}/resnet18_ddp.pth")
"${export_bin}" --inspect="${work}/model.pt" >"${work}/metadata.json"
grep -q "\"tensor_digest\": \"${digest}\"" "${work}/metadata.json" ||
  fail "metadata does not record the checkpoint's digest ${digest}"
grep -q '"class 9"' "${work}/metadata.json" || fail "labels not recorded"

echo "== 3. our runner's logits against Python's"
"${run}" --model="${work}/model.pt" --input="${work}/input.npy" \
  --output="${work}/ours.npy" --threads=1 >/dev/null
"${python}" "${script}" compare "${work}" "${work}/ours.npy"

echo "== 4. the same weights from safetensors"
"${export_bin}" --checkpoint="${work}/resnet18.safetensors" \
  --architecture="${work}/resnet18_scripted.pt" --input_shape=3,112,112 \
  --probe_batch=2 --out="${work}/model_st.pt" >/dev/null
"${run}" --model="${work}/model_st.pt" --input="${work}/input.npy" \
  --output="${work}/ours_st.npy" --threads=1 >/dev/null
"${python}" "${script}" compare "${work}" "${work}/ours_st.npy"
echo "PASS"
