#!/usr/bin/env bash
# Every GPU check of the project in one run, one line per check with its
# figure:
#
#   CHECK <name>: PASS|FAIL|SKIP <figure or reason>
#
# and a closing "gpu_check: N passed, N failed, N skipped".
#
# Runs without Bazel or a package registry: on a GPU machine, from the folder
# testing/gpu/bundle.sh makes (the binaries built against the pinned torch
# 2.11.0 wheel, the Debian shared libraries they need, Fashion-MNIST and the
# Python helpers), with that machine's own torch 2.11.0:
#
#   bash gpu_bundle/gpu_check.sh [--device=cuda|cpu] [--work=DIR] [--quick]
#
# --device=cpu runs the same checks on the CPU (the GPU-only ones, AMP, are
# skipped; the benchmark lines are INFO, their targets being the GPU's): a
# dry run of the script itself. Without a CUDA device, the CUDA
# checks report "SKIP no CUDA device". Exits 1 when a check failed.
#
# Environment: PYTHON (default python3) is a Python with torch 2.11.0 (and
# torchvision for the ResNet benchmarks); LD_LIBRARY_PATH is set here to
# that torch's lib/ and the bundle's lib/.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="${GPU_CHECK_BIN:-${here}/bin}"
data="${GPU_CHECK_DATA:-${here}/data}"
scripts="${GPU_CHECK_SCRIPTS:-${here}}"
python="${PYTHON:-python3}"
device=cuda
work=""
quick=0
for arg in "$@"; do
  case "${arg}" in
    --device=*) device="${arg#--device=}" ;;
    --work=*) work="${arg#--work=}" ;;
    --quick) quick=1 ;;
    *)
      echo "gpu_check.sh: unknown argument '${arg}' (expected --device=cuda|cpu, --work=DIR, --quick)" >&2
      exit 2
      ;;
  esac
done
if [[ "${device}" != cuda && "${device}" != cpu ]]; then
  echo "gpu_check.sh: --device=${device}: expected cuda or cpu" >&2
  exit 2
fi
if [[ -z "${work}" ]]; then
  work="$(mktemp -d)"
fi
mkdir -p "${work}"

torch_dir="$("${python}" -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null)"
if [[ -z "${torch_dir}" ]]; then
  echo "gpu_check.sh: ${python} cannot import torch; set PYTHON to a Python with torch 2.11.0" >&2
  exit 2
fi
export LD_LIBRARY_PATH="${torch_dir}/lib:${here}/lib${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
for tool in train ckpt export run; do
  if [[ ! -x "${bin}/${tool}" ]]; then
    echo "gpu_check.sh: ${bin}/${tool} is missing; build the bundle with testing/gpu/bundle.sh" >&2
    exit 2
  fi
done

passed=0
failed=0
skipped=0
report() { # NAME STATUS TEXT
  echo "CHECK $1: $2 $3"
  case "$2" in
    PASS) passed=$((passed + 1)) ;;
    FAIL) failed=$((failed + 1)) ;;
    INFO) ;;
    *) skipped=$((skipped + 1)) ;;
  esac
}

has_cuda=0
if "${python}" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  has_cuda=1
fi
echo "gpu_check: device ${device}; torch $("${python}" -c 'import torch; print(torch.__version__)'); CUDA device: $([[ ${has_cuda} == 1 ]] && "${python}" -c 'import torch; print(torch.cuda.get_device_name(0))' || echo none); work ${work}"

# Every check needs the device it runs on.
needs_device() { # NAME
  if [[ "${device}" == cuda && "${has_cuda}" == 0 ]]; then
    report "$1" SKIP "no CUDA device"
    return 1
  fi
  return 0
}

epochs=2
max_train=-1
if ((quick)); then
  epochs=1
  max_train=3200
fi
common=(--data_dir="${data}" --progress=none --seed=1 --threads=0)

# Test accuracy and per-epoch seconds of a finished run.
run_figures() { # RUN_DIR STDOUT
  local accuracy
  accuracy="$(sed -n 's/^test: accuracy \([0-9.]*\).*/\1/p' "$2")"
  "${python}" - "$1/metrics.jsonl" "${accuracy}" <<'PY'
import json, sys
epochs = [json.loads(line) for line in open(sys.argv[1]) if '"epoch_seconds"' in line]
seconds = ", ".join(f"{e['epoch_seconds']:.2f}" for e in epochs)
print(f"test accuracy {sys.argv[2] or '?'} after {len(epochs)} epoch(s); epoch seconds {seconds}")
PY
}

check_train() { # NAME EXTRA_FLAGS...
  local name="$1"
  shift
  needs_device "${name}" || return 0
  if ! "${bin}/train" --run_dir="${work}/${name}" --device="${device}" \
    --epochs="${epochs}" --max_train_examples="${max_train}" "${common[@]}" "$@" \
    >"${work}/${name}.out" 2>"${work}/${name}.err"; then
    report "${name}" FAIL "train exited non-zero: $(tail -1 "${work}/${name}.err")"
    return 0
  fi
  report "${name}" PASS "$(run_figures "${work}/${name}" "${work}/${name}.out")"
}

check_train train_${device}
if [[ "${device}" == cuda ]]; then
  check_train train_amp --amp
else
  report train_amp SKIP "--amp needs CUDA"
fi

# Deterministic resume: a run stopped by --max_steps, or by SIGTERM once its
# first checkpoint is committed, then resumed, ends with the straight run's
# `ckpt digest` (all tensors, training state included).
check_resume() { # NAME FLAGS...
  local name="$1"
  shift
  needs_device "${name}" || return 0
  local flags=(--device="${device}" --deterministic --epochs=2
    --max_train_examples=3200 --max_val_examples=500 --save_every_steps=7
    --skip_test "${common[@]}" "$@")
  local dir="${work}/${name}"
  rm -rf "${dir}"
  mkdir -p "${dir}"
  if ! "${bin}/train" --run_dir="${dir}/straight" "${flags[@]}" >"${dir}/straight.log" 2>&1; then
    report "${name}" FAIL "straight run failed: $(tail -1 "${dir}/straight.log")"
    return 0
  fi
  local want
  want="$("${bin}/ckpt" digest "${dir}/straight/last")"
  "${bin}/train" --run_dir="${dir}/steps" "${flags[@]}" --max_steps=30 >"${dir}/steps1.log" 2>&1
  "${bin}/train" --run_dir="${dir}/steps" "${flags[@]}" --resume >"${dir}/steps2.log" 2>&1
  local after_steps
  after_steps="$("${bin}/ckpt" digest "${dir}/steps/last" 2>&1)"

  "${bin}/train" --run_dir="${dir}/term" "${flags[@]}" >"${dir}/term1.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 600); do
    [[ -e "${dir}/term/last" ]] && break
    kill -0 "${pid}" 2>/dev/null || break
    sleep 0.05
  done
  kill -TERM "${pid}" 2>/dev/null
  local status=0
  wait "${pid}" || status=$?
  "${bin}/train" --run_dir="${dir}/term" "${flags[@]}" --resume >"${dir}/term2.log" 2>&1
  local after_term
  after_term="$("${bin}/ckpt" digest "${dir}/term/last" 2>&1)"
  local figure="straight ${want}, after --max_steps ${after_steps}, after SIGTERM (exit ${status}) ${after_term}"
  if [[ -n "${want}" && "${want}" == "${after_steps}" && "${want}" == "${after_term}" ]]; then
    report "${name}" PASS "${figure}"
  else
    report "${name}" FAIL "${figure}"
  fi
}

check_resume resume_sgd --optimizer=sgd
check_resume resume_adamw --optimizer=adamw
if [[ "${device}" == cuda ]]; then
  check_resume resume_amp --optimizer=sgd --amp
else
  report resume_amp SKIP "--amp needs CUDA"
fi

# Issue 12's rows (docs/PERFORMANCE.md): saves of the device's state
# against (pinned device-to-host copy +) a raw write, the asynchronous
# pause, loads onto the device against torch::load onto it. 2 GiB of
# 256 x 8 MiB and 20,000 x 4 KiB (--quick: a quarter of each). The check
# passes when the benchmark runs; each target's MET or MISSED is an INFO
# line.
check_save_load_benchmark() {
  local name="save_load_benchmark_${device}" large=256 small=20000
  needs_device "${name}" || return 0
  if [[ ! -x "${bin}/save_load_benchmark" ]]; then
    report "${name}" SKIP "not in the bundle"
    return 0
  fi
  ((quick)) && large=64 && small=5000
  mkdir -p "${work}/${name}"
  if "${bin}/save_load_benchmark" --device="${device}" --rss=false \
    --large_count="${large}" --large_bytes=8388608 --small_count="${small}" \
    --dir="${work}/${name}" >"${work}/${name}.out" 2>"${work}/${name}.err"; then
    report "${name}" PASS "$(grep -c ' MET$' "${work}/${name}.out") targets met, $(grep -c ' MISSED$' "${work}/${name}.out") missed; figures in ${work}/${name}.out"
    local set=""
    while IFS= read -r line; do
      case "${line}" in
        large:* | small:*) set="${line%%:*}" ;;
        *"target "*) report "${name} ${set}" INFO "${line#*target }" ;;
        *"pause"* | *"SaveCheckpoint "* | *"raw write"* | *"torch::"* | *"LoadCheckpoint verified"*)
          report "${name} ${set}" INFO "$(echo "${line}" | sed 's/^ *//; s/  */ /g')" ;;
      esac
    done <"${work}/${name}.out"
  else
    report "${name}" FAIL "$(tail -1 "${work}/${name}.err")"
  fi
}
check_save_load_benchmark

# Two processes under this machine's torchrun: Gloo on the CPU, NCCL on
# CUDA (one GPU each, cuda:LOCAL_RANK). With fewer than two GPUs the second
# process must be refused with one line naming the reason (NCCL does not
# put two ranks on one GPU).
check_distributed() {
  local name="distributed_${device}" gpus=0 status=0
  needs_device "${name}" || return 0
  if [[ "${device}" == cuda ]]; then
    gpus="$("${python}" -c 'import torch; print(torch.cuda.device_count())')"
  fi
  "${python}" -m torch.distributed.run --nproc_per_node=2 --no-python \
    --master_port="$("${python}" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')" \
    "${bin}/train" --run_dir="${work}/${name}" --device="${device}" \
    --epochs=1 --max_train_examples=3200 --save_every_steps=20 \
    "${common[@]}" >"${work}/${name}.out" 2>"${work}/${name}.err" || status=$?
  if [[ "${device}" == cuda && "${gpus}" -lt 2 ]]; then
    if [[ "${status}" != 0 ]] && grep -q "needs cuda:1 but ${gpus} CUDA device(s) are visible" "${work}/${name}.err"; then
      report "${name}" PASS "${gpus} GPU: the second process is refused: $(grep -m1 "needs cuda:1" "${work}/${name}.err")"
    else
      report "${name}" FAIL "${gpus} GPU, exit ${status}: $(grep -m1 "error" "${work}/${name}.err")"
    fi
    return 0
  fi
  if [[ "${status}" != 0 ]]; then
    report "${name}" FAIL "exit ${status}: $(grep -m1 "error" "${work}/${name}.err")"
  elif ! "${bin}/ckpt" verify "${work}/${name}/last" >/dev/null 2>&1; then
    report "${name}" FAIL "the last checkpoint does not verify"
  else
    report "${name}" PASS "2 processes; $(run_figures "${work}/${name}" "${work}/${name}.out")"
  fi
}
check_distributed

trained="${work}/train_${device}"
if [[ ! -e "${trained}/best" ]]; then
  for name in verify cudnn_version export runner_cuda_vs_cpu runner_digest_twice python_loads_exports benchmark; do
    report "${name}" SKIP "no trained run (train_${device} did not run or failed)"
  done
  echo "gpu_check: ${passed} passed, ${failed} failed, ${skipped} skipped"
  ((failed == 0))
  exit $?
fi

# ckpt verify on every checkpoint the run made.
verified=0
bad=""
for checkpoint in "${trained}"/*/; do
  checkpoint="${checkpoint%/}"
  [[ -L "${checkpoint}" ]] && continue
  if "${bin}/ckpt" verify "${checkpoint}" >/dev/null 2>"${work}/verify.err"; then
    verified=$((verified + 1))
  else
    bad="${bad} $(basename "${checkpoint}"): $(tail -1 "${work}/verify.err")"
  fi
done
if [[ -z "${bad}" && "${verified}" -gt 0 ]]; then
  report verify PASS "${verified} checkpoint(s) made on ${device} verify"
else
  report verify FAIL "${verified} verified;${bad}"
fi

# The metadata's cuDNN version is what torch itself reports.
if [[ "${device}" == cuda ]]; then
  recorded="$("${bin}/ckpt" inspect "${trained}/best" --json | "${python}" -c 'import json, sys; print(json.load(sys.stdin)["metadata"]["cudnn_version"])' 2>&1)"
  expected="$("${python}" -c 'import torch; v = torch.backends.cudnn.version(); print(f"{v // 10000}.{v % 10000 // 100}.{v % 100}" if v >= 90000 else f"{v // 1000}.{v % 1000 // 100}.{v % 100}")')"
  if [[ "${recorded}" == "${expected}" ]]; then
    report cudnn_version PASS "checkpoint metadata records cuDNN ${recorded}"
  else
    report cudnn_version FAIL "recorded '${recorded}', torch reports ${expected}"
  fi
else
  report cudnn_version SKIP "needs CUDA"
fi

# Export the best checkpoint (parity probe inside export).
if "${bin}/export" --checkpoint="${trained}/best" --out="${work}/model.pt" \
  --lite="${work}/model.ptl" >"${work}/export.log" 2>&1; then
  parity="$("${bin}/export" --inspect="${work}/model.pt" | "${python}" -c 'import json, sys; print(json.load(sys.stdin)["parity"]["max_abs_difference"])')"
  if [[ "${parity}" == 0 || "${parity}" == 0.0 ]]; then
    report export PASS "parity max_abs_difference ${parity}"
  else
    report export FAIL "parity max_abs_difference ${parity}"
  fi
else
  report export FAIL "$(tail -1 "${work}/export.log")"
fi

# The runner on the device vs on the CPU, over the 10,000 test images.
images="${data}/t10k-images-idx3-ubyte.gz"
if needs_device runner_cuda_vs_cpu && [[ "${device}" == cuda ]]; then
  "${bin}/run" --model="${work}/model.pt" --input="${images}" --device=cuda \
    --output="${work}/out_cuda.npy" >/dev/null 2>"${work}/run_cuda.err" &&
    "${bin}/run" --model="${work}/model.pt" --input="${images}" --device=cpu \
      --output="${work}/out_cpu.npy" >/dev/null 2>"${work}/run_cpu.err"
  if [[ $? != 0 ]]; then
    report runner_cuda_vs_cpu FAIL "$(cat "${work}"/run_c*.err | tail -1)"
  else
    line="$("${python}" - "${work}" <<'PY'
import sys
import numpy as np
a = np.load(f"{sys.argv[1]}/out_cuda.npy")
b = np.load(f"{sys.argv[1]}/out_cpu.npy")
same = int((a.argmax(1) == b.argmax(1)).sum())
print(f"{'PASS' if same == len(a) and np.abs(a - b).max() < 1e-3 else 'FAIL'} "
      f"max |cuda - cpu| {np.abs(a - b).max():.3g}; same class for {same} of {len(a)} images")
PY
)"
    report runner_cuda_vs_cpu "${line%% *}" "${line#* }"
  fi
elif [[ "${device}" == cpu ]]; then
  report runner_cuda_vs_cpu SKIP "needs CUDA"
fi

# The runner twice on the same input: the same output bytes (deterministic
# mode, the default), and whether the non-deterministic mode is too.
digests() { # FLAGS...
  local a b
  a="$("${bin}/run" --model="${work}/model.pt" --input="${images}" --device="${device}" --digest "$@" 2>&1 | sed -n 's/^digest: //p')"
  b="$("${bin}/run" --model="${work}/model.pt" --input="${images}" --device="${device}" --digest "$@" 2>&1 | sed -n 's/^digest: //p')"
  echo "${a} ${b}"
}
if needs_device runner_digest_twice; then
  read -r first second <<<"$(digests)"
  read -r nd_first nd_second <<<"$(digests --deterministic=false)"
  figure="deterministic ${first} ${second}; --deterministic=false $([[ -n "${nd_first}" && "${nd_first}" == "${nd_second}" ]] && echo equal || echo differs)"
  if [[ -n "${first}" && "${first}" == "${second}" ]]; then
    report runner_digest_twice PASS "${figure}"
  else
    report runner_digest_twice FAIL "${figure}"
  fi
fi

# Python torch loads our model.pt and model.ptl, and gives the runner's
# output bytes on the CPU (and on the GPU, for model.pt).
"${python}" - "${data}" "${work}" <<'PY' >/dev/null 2>&1
import gzip, sys
import numpy as np
raw = np.frombuffer(gzip.open(f"{sys.argv[1]}/t10k-images-idx3-ubyte.gz").read(), np.uint8)[16:16 + 256 * 784]
images = ((raw.astype(np.float32) / 255.0 - 0.2860) / 0.3530).reshape(256, 1, 28, 28)
np.save(f"{sys.argv[2]}/input.npy", images.astype("<f4"))
PY
interop_devices=(cpu)
[[ "${device}" == cuda && "${has_cuda}" == 1 ]] && interop_devices+=(cuda)
interop=""
interop_failed=0
for where in "${interop_devices[@]}"; do
  if ! "${bin}/run" --model="${work}/model.pt" --input="${work}/input.npy" --device="${where}" \
    --output="${work}/runner_${where}.npy" --threads=1 --batch_size=64 >/dev/null 2>"${work}/interop.err"; then
    interop_failed=1
    interop="${interop} run on ${where} failed: $(tail -1 "${work}/interop.err");"
    continue
  fi
  result="$("${python}" - "${work}" "${where}" <<'PY' 2>&1
import sys
import numpy as np
import torch
from torch.jit.mobile import _load_for_lite_interpreter
work, where = sys.argv[1], sys.argv[2]
torch.set_num_threads(1)
if where == "cuda":
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
inputs = torch.from_numpy(np.load(f"{work}/input.npy"))
expected = np.load(f"{work}/runner_{where}.npy")
module = torch.jit.load(f"{work}/model.pt", map_location=where).eval()
with torch.inference_mode():
    got = torch.cat([module(b.to(where)).cpu() for b in inputs.split(64)]).numpy()
ok = got.tobytes() == expected.tobytes()
text = f"model.pt on {where} {'bitwise equal' if ok else 'differs by %.3g' % np.abs(got - expected).max()}"
if where == "cpu":
    lite = _load_for_lite_interpreter(f"{work}/model.ptl")
    got_lite = torch.cat([lite(b) for b in inputs.split(64)]).numpy()
    lite_ok = got_lite.tobytes() == expected.tobytes()
    ok = ok and lite_ok
    text += f", model.ptl {'bitwise equal' if lite_ok else 'differs by %.3g' % np.abs(got_lite - expected).max()}"
print(("PASS " if ok else "FAIL ") + text)
PY
)"
  [[ "${result}" == PASS* ]] || interop_failed=1
  interop="${interop} ${result#* };"
done
report python_loads_exports "$([[ ${interop_failed} == 0 ]] && echo PASS || echo FAIL)" \
  "torch $("${python}" -c 'import torch; print(torch.__version__)') vs runner:${interop}"

# Latency: the runner (deterministic and not) against Python torch.jit.load
# with PyTorch's default settings, the input in pinned memory copied to the
# device on each call (python_forward.py), for our CNN and ResNet-50.
if needs_device benchmark; then
  models=("${work}/model.pt:1,28,28")
  if "${python}" "${scripts}/make_test_model.py" --kind=resnet50 \
    --out="${work}/resnet50.pt" >"${work}/resnet.log" 2>&1; then
    models+=("${work}/resnet50.pt:3,224,224")
  else
    echo "gpu_check: no ResNet-50 ($(tail -1 "${work}/resnet.log")); CNN only"
  fi
  runs=200
  ((quick)) && runs=30
  # The p50 latency of a `run --benchmark --json` or python_forward.py
  # report on stdin; 0 when there is none.
  p50() { "${python}" -c 'import json, sys; t = sys.stdin.read(); print("%.4f" % json.loads(t[t.index("{"):])["latency_ms"]["p50"])' 2>/dev/null || echo 0; }
  for spec in "${models[@]}"; do
    model="${spec%%:*}"
    shape="${spec#*:}"
    for batch in 1 64; do
      det="$("${bin}/run" --model="${model}" --benchmark --json --device="${device}" --batch_size="${batch}" --runs="${runs}" --warmup=20 2>/dev/null | p50)"
      nondet="$("${bin}/run" --model="${model}" --benchmark --json --device="${device}" --batch_size="${batch}" --runs="${runs}" --warmup=20 --deterministic=false 2>/dev/null | p50)"
      py="$("${python}" "${scripts}/python_forward.py" "${model}" "${batch}" 0 20 "${runs}" "${device}" "${shape}" 2>/dev/null | p50)"
      line="$("${python}" -c "
det, nondet, py = ${det:-0}, ${nondet:-0}, ${py:-0}
if min(det, nondet, py) <= 0:
    print(f'FAIL a measurement failed (p50 ms: runner deterministic {det}, non-deterministic {nondet}, Python {py})')
    raise SystemExit
ok = det <= 1.10 * nondet and det <= py
print(('PASS' if ok else 'FAIL') + f' p50 ms: runner deterministic {det:.3f}, non-deterministic {nondet:.3f}, Python {py:.3f}; deterministic/non-deterministic {det / max(nondet, 1e-9):.3f}x, runner/Python {det / max(py, 1e-9):.3f}x')
")"
      verdict="${line%% *}"
      # The targets are for the GPU; a CPU dry run only shows the figures.
      [[ "${device}" == cpu ]] && verdict=INFO
      report "benchmark $(basename "${model}") batch ${batch}" "${verdict}" "${line#* }"
    done
  done
  if [[ "${device}" == cuda ]]; then
    # Which settings reproducibility needs, one at a time (Python).
    "${python}" "${scripts}/determinism_settings.py" "${models[@]}" \
      --runs="$(((quick)) && echo 10 || echo 50)" | sed 's/^/settings: /'
  fi
fi

echo "gpu_check: ${passed} passed, ${failed} failed, ${skipped} skipped"
((failed == 0))
