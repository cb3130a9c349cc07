#!/usr/bin/env bash
# Runs the real `run` binary in each mode and on each kind of bad input,
# against models and inputs made by Python torch and numpy.
set -euo pipefail

runfiles="${TEST_SRCDIR}/ckpt_project"
run="${runfiles}/runner/run"
images="${TEST_SRCDIR}/fashion_mnist/t10k-images-idx3-ubyte.gz"
labels="${TEST_SRCDIR}/fashion_mnist/t10k-labels-idx1-ubyte.gz"
# The Python whose torch matches the LibTorch this test was built with.
python="${TEST_SRCDIR}/libtorch/python"
tmp="${TEST_TMPDIR}"
cd "${tmp}"

failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

# Fixtures: models, .npy inputs, a PNG and a truncated PNG.
"${python}" "${runfiles}/runner/make_test_model.py" --out=model.pt
"${python}" "${runfiles}/runner/make_test_model.py" --out=bare.pt --no_metadata
"${python}" - <<'PY'
import struct, zlib
import numpy as np
rng = np.random.default_rng(0)
np.save("item.npy", rng.random((1, 28, 28), dtype=np.float32))
np.save("batch.npy", rng.random((5, 1, 28, 28), dtype=np.float32))
np.save("pixels.npy", rng.integers(0, 256, (28, 28), dtype=np.uint8))
np.save("wrong_shape.npy", np.zeros((3, 27, 28), np.float32))
np.save("float64.npy", np.zeros((1, 28, 28)))
def png(path, width, height, pixels):
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data)))
    raw = b"".join(b"\0" + bytes(pixels[y * width:(y + 1) * width])
                   for y in range(height))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" +
                chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) +
                chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
png("shoe.png", 56, 56, [(x * 4) % 256 for x in range(56 * 56)])
data = open("shoe.png", "rb").read()
open("truncated.png", "wb").write(data[:len(data) // 2])
open("notes.txt", "w").write("not a model, not an image\n")
PY

# expect_error NAME EXIT_CODE MESSAGE_PART ARGS...: exactly one line on
# stderr, "run: error: ...", the exit code, and nothing on stdout.
expect_error() {
  local name="$1" code="$2" part="$3"
  shift 3
  local status=0
  "${run}" "$@" >"${tmp}/out" 2>"${tmp}/err" || status=$?
  if [[ "${status}" != "${code}" ]]; then
    fail "${name}: exit ${status}, expected ${code}; stderr: $(cat "${tmp}/err")"
  fi
  if [[ "$(wc -l <"${tmp}/err")" != 1 ]]; then
    fail "${name}: stderr is not one line: $(cat "${tmp}/err")"
  fi
  if ! grep -q "^run: error: .*${part}" "${tmp}/err"; then
    fail "${name}: stderr lacks '${part}': $(cat "${tmp}/err")"
  fi
}

# --- predictions, text ---
"${run}" --model=model.pt --input=item.npy --topk=2 >out.txt
grep -q "^item 0: " out.txt || fail "no item line: $(cat out.txt)"
grep -Eq "^item 0: [^,]+ 0\.[0-9]{4}, [^,]+ 0\.[0-9]{4}$" out.txt ||
  fail "top-2 line malformed: $(grep item out.txt)"

# --- --json, --digest, --output; outputs match Python's ---
"${run}" --model=model.pt --input=batch.npy --json --digest --output=logits.npy \
  --threads=1 >out.json
digest_json="$("${python}" -c 'import json; print(json.load(open("out.json"))["digest"])')"
"${run}" --model=model.pt --input=batch.npy --digest --threads=1 >out.txt
digest_text="$(sed -n 's/^digest: //p' out.txt)"
[[ "${digest_json}" == "${digest_text}" && "${digest_json}" == xxh3-64:* ]] ||
  fail "digests differ or malformed: '${digest_json}' vs '${digest_text}'"
"${run}" --model=model.pt --input=batch.npy --digest --threads=1 >out2.txt
[[ "$(grep digest out2.txt)" == "$(grep digest out.txt)" ]] ||
  fail "digest changed between two runs"
"${python}" - <<'PY' || fail "json/output check"
import json
import numpy as np
import torch
doc = json.load(open("out.json"))
assert doc["items"] == 5 and doc["output_shape"] == [5, 10], doc
assert doc["input_format"] == "npy"
assert len(doc["predictions"]) == 5
top = doc["predictions"][0]["top"]
assert len(top) == 3 and top[0]["probability"] >= top[1]["probability"], top
assert doc["output"].endswith("logits.npy")
logits = np.load("logits.npy")
assert logits.dtype == np.float32 and logits.shape == (5, 10)
expected = torch.jit.load("model.pt")(torch.from_numpy(np.load("batch.npy")))
assert np.allclose(logits, expected.detach().numpy(), atol=1e-5), "logits differ from Python"
probabilities = torch.softmax(expected, 1)[0].detach().numpy()
assert top[0]["class"] == int(probabilities.argmax())
assert abs(top[0]["probability"] - float(probabilities.max())) < 1e-5
PY

# --- uint8 pixels without batch or channel; PNG resized; relative paths
# under `bazel run` ---
"${run}" --model=model.pt --input=pixels.npy --json >out.json
grep -q '"output_shape": \[' out.json || fail "uint8 npy: $(cat out.json)"
mkdir -p elsewhere
(cd elsewhere && BUILD_WORKING_DIRECTORY="${tmp}" "${run}" --model=model.pt \
  --input=shoe.png --output=shoe_logits.npy >../out.txt) ||
  fail "relative paths under BUILD_WORKING_DIRECTORY"
grep -q "(image, 1 item(s), output \[1, 10\]" out.txt || fail "png: $(cat out.txt)"
[[ -f shoe_logits.npy ]] || fail "--output not resolved against BUILD_WORKING_DIRECTORY"

# --- IDX + --labels: accuracy equal to Python's on the same file ---
"${run}" --model=model.pt --input="${images}" --labels="${labels}" \
  --batch_size=500 --output=idx_logits.npy >out.txt
accuracy="$(sed -n 's/^accuracy: [0-9.]* (\([0-9]*\)\/10000)$/\1/p' out.txt)"
[[ -n "${accuracy}" ]] || fail "no accuracy line: $(cat out.txt)"
grep -q "9990 more item(s)" out.txt || fail "long listings are not summarised"
IMAGES="${images}" LABELS="${labels}" CORRECT="${accuracy}" "${python}" - <<'PY' ||
import gzip, json, os
import numpy as np
import torch
pixels = np.frombuffer(gzip.open(os.environ["IMAGES"]).read()[16:], np.uint8)
labels = np.frombuffer(gzip.open(os.environ["LABELS"]).read()[8:], np.uint8)
x = (pixels.reshape(-1, 1, 28, 28).astype(np.float32) / 255 - np.float32(0.2860)) / np.float32(0.3530)
with torch.no_grad():
    expected = torch.jit.load("model.pt")(torch.from_numpy(x)).numpy()
ours = np.load("idx_logits.npy")
assert ours.shape == (10000, 10)
assert np.allclose(ours, expected, atol=1e-4), np.abs(ours - expected).max()
correct = int((expected.argmax(1) == labels).sum())
assert abs(correct - int(os.environ["CORRECT"])) <= 2, (correct, os.environ["CORRECT"])
PY
  fail "IDX results differ from Python's"

# --- --info ---
"${run}" --info=model.pt >out.json
"${python}" -c 'import json; d = json.load(open("out.json")); assert d["input_shape"] == [1, 28, 28] and len(d["class_labels"]) == 10 and d["epoch"] == 3' ||
  fail "--info: $(cat out.json)"

# --- --benchmark, text and JSON ---
"${run}" --model=model.pt --benchmark --warmup=2 --runs=5 --batch_size=4 >out.txt
for part in "model load:" "first inference:" "warm-up:" "p99" "items/s" "VmHWM"; do
  grep -q "${part}" out.txt || fail "benchmark text lacks '${part}': $(cat out.txt)"
done
"${run}" --model=model.pt --benchmark --input=batch.npy --warmup=1 --runs=3 \
  --min_secs=0.2 --batch_size=8 --threads=1 --json >out.json
"${python}" - <<'PY' || fail "benchmark json: $(cat out.json)"
import json
d = json.load(open("out.json"))
assert d["batch_size"] == 8 and d["threads"] == 1, d
assert d["model_load_ms"] > 0 and d["first_inference_ms"] > 0
assert d["warmup"]["runs"] == 1
lat = d["latency_ms"]
assert lat["count"] >= 3 and lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
# --min_secs keeps it running past --runs.
assert lat["count"] * lat["avg"] >= 150, lat
assert abs(d["throughput"]["items_per_s"] - 8 * d["throughput"]["inferences_per_s"]) < 1e-6 * d["throughput"]["items_per_s"]
assert d["peak_rss_kib"] > 0
PY

# --- errors: one line, exit 1 for bad files, 2 for usage ---
expect_error "missing model" 1 "missing.pt: no such file" --model=missing.pt --input=item.npy
expect_error "not an archive" 1 "notes.txt: not a TorchScript archive" --model=notes.txt --input=item.npy
expect_error "wrong shape" 1 "wrong_shape.npy: input shape \[3, 27, 28\] does not match the model's \[N, 1, 28, 28\]" \
  --model=model.pt --input=wrong_shape.npy
expect_error "wrong dtype" 1 "float64.npy: unsupported dtype '<f8'" --model=model.pt --input=float64.npy
expect_error "truncated image" 1 "truncated.png: cannot decode image" --model=model.pt --input=truncated.png
expect_error "unknown input" 1 "notes.txt: not a readable image" --model=model.pt --input=notes.txt
expect_error "missing input" 1 "nothere.npy: no such file" --model=model.pt --input=nothere.npy
expect_error "labels mismatch" 1 "10000 labels for 5 input items" --model=model.pt --input=batch.npy --labels="${labels}"
expect_error "no metadata for --info" 1 "carries no metadata" --info=bare.pt
expect_error "model error" 1 "running the model" --model=bare.pt --input=wrong_shape.npy
expect_error "cuda" 1 "CUDA is not available" --model=model.pt --input=item.npy --device=cuda:0
expect_error "bad output dir" 1 "no/such/dir/out.npy" --model=model.pt --input=item.npy --output=no/such/dir/out.npy
expect_error "unknown flag" 2 "unknown flag --bogus" --model=model.pt --bogus
expect_error "bad flag value" 2 "--threads" --model=model.pt --input=item.npy --threads=many
expect_error "no model" 2 "--model is required" --input=item.npy
expect_error "no input" 2 "--input is required" --model=model.pt
expect_error "batch size" 2 "--batch_size must be >= 1" --model=model.pt --input=item.npy --batch_size=0
expect_error "device" 2 "--device must be cpu, cuda or cuda:N" --model=model.pt --input=item.npy --device=tpu
expect_error "tf32" 2 "--tf32 must be default, on or off, got 'fast'" --model=model.pt --input=item.npy --tf32=fast
expect_error "positional" 2 "unexpected argument 'extra'" --model=model.pt --input=item.npy extra
ls no 2>/dev/null && fail "a failed --output left something behind"

if ((failures > 0)); then
  echo "${failures} check(s) failed" >&2
  exit 1
fi
echo "run_test: all checks passed"
