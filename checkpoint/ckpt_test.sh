#!/usr/bin/env bash
# Runs the real `ckpt` binary on fixtures (ckpt_test_fixture) and checks each
# subcommand's output and exit code, and the one-line errors.
set -uo pipefail

runfiles="${TEST_SRCDIR}/${TEST_WORKSPACE}/checkpoint"
ckpt="${runfiles}/ckpt"
fixtures="${TEST_TMPDIR}/fixtures"
rm -rf "${fixtures}"
"${runfiles}/ckpt_test_fixture" "${fixtures}" || { echo "fixture failed" >&2; exit 1; }

failures=0
out="${TEST_TMPDIR}/out"
err="${TEST_TMPDIR}/err"

fail() {
  echo "FAIL: $*" >&2
  echo "--- stdout:" >&2; cat "${out}" >&2
  echo "--- stderr:" >&2; cat "${err}" >&2
  failures=$((failures + 1))
}

# run EXPECTED_EXIT ARGS...: runs ckpt, checks the exit code.
run() {
  local expected="$1"
  shift
  "${ckpt}" "$@" >"${out}" 2>"${err}"
  local code=$?
  if [[ "${code}" != "${expected}" ]]; then
    fail "ckpt $* exited ${code}, expected ${expected}"
    return 1
  fi
  return 0
}

stdout_has() { grep -qF -- "$1" "${out}" || fail "stdout lacks '$1'"; }
stdout_is() { [[ "$(cat "${out}")" == "$1" ]] || fail "stdout is not '$1'"; }
# Exactly one line, "ckpt: error: ...", containing $1; nothing on stdout.
one_error_line() {
  [[ "$(wc -l <"${err}")" == 1 ]] || fail "stderr is not one line"
  grep -q '^ckpt: error: ' "${err}" || fail "stderr lacks 'ckpt: error: '"
  grep -qF -- "$1" "${err}" || fail "stderr lacks '$1'"
  [[ ! -s "${out}" ]] || fail "stdout is not empty on error"
}

cd "${fixtures}"

# inspect
run 0 inspect a && {
  stdout_has "global step 20"
  stdout_has "val_loss (min) = 0.25"
  stdout_has "optimizer     adam"
  stdout_has "tensors         7 (316 B)"
  grep -qE '^  emb +float16 +\[3, 2\] +12 +192$' "${out}" || fail "emb row"
}
run 0 inspect --json run/best && {
  /usr/bin/python3 - "${out}" <<'PY' || fail "inspect --json"
import json, sys
doc = json.load(open(sys.argv[1]))
assert doc["metadata"]["progress"]["global_step"] == 20, doc["metadata"]
assert [t["name"] for t in doc["tensors"]][:2] == ["fc.weight", "fc.bias"]
assert doc["tensors"][2]["dtype"] == "float16"
assert doc["training_state"]["optimizer"]["type"] == "adam"
PY
}

# verify
run 0 verify run/last && stdout_is "OK: 7 tensors, 316 bytes verified"
run 1 verify corrupt && one_error_line "tensor 'fc.bias': checksum mismatch"

# ls
run 0 ls run && {
  grep -qE 'step=000020.* 20 +val_loss=0.25 +best$' "${out}" || fail "ls best"
  grep -qE 'step=000030.* 30 +val_loss=0.75 +last$' "${out}" || fail "ls last"
  stdout_has "3 checkpoint(s)"
}

# diff
run 0 diff a same && stdout_has "7 tensors: 7 equal"
run 1 diff a b && {
  stdout_has "~ emb  max abs diff 1, 1 of 6 elements differ"
  stdout_has "! fc.bias  shape [4] -> [5]"
  stdout_has "- mask  only in A"
  stdout_has "+ extra  only in B"
}

# digest
run 0 digest a && {
  digest_a="$(cat "${out}")"
  [[ "${digest_a}" =~ ^[0-9a-f]{32}$ ]] || fail "digest format '${digest_a}'"
}
run 0 digest same && stdout_is "${digest_a}"
run 0 digest b && [[ "$(cat "${out}")" != "${digest_a}" ]] || fail "digest b"

# Relative paths resolve against the caller's directory under `bazel run`.
(cd / && BUILD_WORKING_DIRECTORY="${fixtures}" "${ckpt}" verify run/best \
  >"${out}" 2>"${err}") || fail "BUILD_WORKING_DIRECTORY"

# Errors: one line, the right exit code.
run 1 inspect missing && one_error_line "missing: no such file or directory"
run 1 verify not_a_checkpoint && one_error_line "not a checkpoint"
run 1 inspect file.txt && one_error_line "not a checkpoint"
run 1 inspect run && one_error_line "ckpt ls"
run 1 ls a && one_error_line "is a checkpoint, not a run directory"
run 2 diff a missing && one_error_line "no such file or directory"
run 2 && one_error_line "missing command"
run 2 explode a && one_error_line "unknown command 'explode'"
run 2 verify && one_error_line "verify takes one checkpoint path"
run 2 verify a --json && one_error_line "--json applies to inspect only"
run 2 inspect a --frobnicate && one_error_line "unknown flag --frobnicate"
# --help prints the usage. (Its exit code is cli::ParseFlagsOrExit's
# business: Abseil's usage handling exits 1 there today.)
"${ckpt}" --help >"${out}" 2>"${err}"
stdout_has "ckpt COMMAND ARGS"
stdout_has "--json"

if ((failures > 0)); then
  echo "${failures} check(s) failed" >&2
  exit 1
fi
echo "all ckpt checks passed"
