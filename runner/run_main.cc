// run: runs an exported TorchScript model on a file of inputs, or
// benchmarks it.
//
//   run --model=model.pt --input=FILE [--device=cpu|cuda|cuda:N]
//       [--threads=N] [--batch_size=N] [--output=out.npy] [--topk=K]
//       [--json] [--digest] [--labels=FILE]
//   run --info=model.pt
//   run --model=model.pt --benchmark [--input=FILE] [--batch_size=N]
//       [--warmup=N] [--runs=N] [--min_secs=S] [--json]
//
// Exit codes: 0 success, 1 a bad file or a failed run (missing model, not
// a TorchScript archive, unreadable input, input that does not fit the
// model), 2 a usage error (unknown flag, bad or missing flag value). Every
// error is one line on stderr.
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "runner/data/idx_reader.h"
#include "runner/data/npy.h"
#include "runner/inputs.h"
#include "runner/report.h"
#include "runner/session.h"
#include "tools/base/shape.h"
#include "tools/cli/flags.h"

ABSL_FLAG(std::string, model, "", "TorchScript model written by export.");
ABSL_FLAG(std::string, input, "",
          "Input file: .npy (float32 as-is, uint8 pixels), IDX images "
          "(gzipped or not), PNG or JPEG.");
ABSL_FLAG(std::string, info, "", "Print the metadata of this model and exit.");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or cuda:N.");
ABSL_FLAG(int, threads, 0, "Intra-op threads; 0 keeps LibTorch's default.");
ABSL_FLAG(int, batch_size, 64,
          "Items per forward call; the input is split into such batches.");
ABSL_FLAG(std::string, output, "",
          "Write the outputs (logits) as float32 .npy, atomically.");
ABSL_FLAG(int, topk, 3, "Classes to show per item.");
ABSL_FLAG(bool, json, false, "Print one JSON document instead of text.");
ABSL_FLAG(bool, digest, false,
          "Print the XXH3-64 of the output bytes (float32, C order).");
ABSL_FLAG(std::string, labels, "",
          "IDX labels file (gzipped or not): report accuracy over the input.");
ABSL_FLAG(bool, deterministic, true,
          "Deterministic algorithms, cuDNN deterministic and benchmark off, "
          "fixed thread count.");
ABSL_FLAG(std::string, tf32, "default",
          "TF32 on the GPU: default (LibTorch's: convolutions may use it, "
          "matmuls not), on, or off (full float32).");
ABSL_FLAG(bool, benchmark, false, "Measure load, first-run and run latency.");
ABSL_FLAG(int, warmup, 10, "Benchmark warm-up runs.");
ABSL_FLAG(int, runs, 100, "Benchmark timed runs (at least).");
ABSL_FLAG(double, min_secs, 0,
          "Benchmark: keep running until this many seconds have passed.");

namespace runner {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

constexpr int kRunFailed = 1;
// Items listed one by one in text output; more are summarised.
constexpr int64_t kMaxItemsShown = 20;

double MillisecondsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start)
      .count();
}

void FailIfError(const absl::Status& status) {
  if (!status.ok()) cli::ExitWithError(status.message(), kRunFailed);
}

template <typename T>
T ValueOrFail(absl::StatusOr<T> value) {
  FailIfError(value.status());
  return *std::move(value);
}

std::string ClassName(const Session& session, int64_t index) {
  const models::ModelMetadata* metadata = session.metadata();
  if (metadata != nullptr &&
      index < static_cast<int64_t>(metadata->class_labels.size())) {
    return metadata->class_labels[index];
  }
  return absl::StrCat("class ", index);
}

// --tf32's value, or nullopt when it is not default, on or off.
std::optional<RunnerOptions::Tf32> ParseTf32(const std::string& text) {
  if (text == "default") return RunnerOptions::Tf32::kLibTorchDefault;
  if (text == "on") return RunnerOptions::Tf32::kOn;
  if (text == "off") return RunnerOptions::Tf32::kOff;
  return std::nullopt;
}

std::unique_ptr<Session> OpenSession(const std::string& path, double* load_ms) {
  RunnerOptions options;
  options.device = absl::GetFlag(FLAGS_device);
  options.threads = absl::GetFlag(FLAGS_threads);
  options.deterministic = absl::GetFlag(FLAGS_deterministic);
  // CheckUsage has refused any other value.
  options.tf32 = ParseTf32(absl::GetFlag(FLAGS_tf32)).value();
  Clock::time_point start = Clock::now();
  std::unique_ptr<Session> session = ValueOrFail(Session::Open(path, options));
  if (load_ms != nullptr) *load_ms = MillisecondsSince(start);
  return session;
}

torch::Tensor ToTensor(DecodedInput& input) {
  return torch::from_blob(input.values.data(), input.shape, torch::kFloat);
}

int Info(const std::string& path) {
  std::unique_ptr<Session> session = OpenSession(path, nullptr);
  if (session->metadata() == nullptr) {
    cli::ExitWithError(absl::StrCat(path, ": the model carries no metadata"),
                       kRunFailed);
  }
  std::printf("%s\n",
              models::PrettyPrintJson(session->metadata()->json).c_str());
  return 0;
}

int Predict(const std::string& model_path) {
  const std::string input_path = ResolveUserPath(absl::GetFlag(FLAGS_input));
  const std::string output_path = ResolveUserPath(absl::GetFlag(FLAGS_output));
  const std::string labels_path = ResolveUserPath(absl::GetFlag(FLAGS_labels));
  const int64_t batch_size = absl::GetFlag(FLAGS_batch_size);
  const bool as_json = absl::GetFlag(FLAGS_json);

  double load_ms = 0;
  std::unique_ptr<Session> session = OpenSession(model_path, &load_ms);
  DecodedInput input =
      ValueOrFail(DecodeInputFile(input_path, session->metadata()));
  if (input.shape.empty()) {
    cli::ExitWithError(absl::StrCat(input_path, ": a scalar is not a batch"),
                       kRunFailed);
  }
  std::vector<uint8_t> labels;
  if (!labels_path.empty()) {
    labels = ValueOrFail(datasets::ReadIdxLabels(labels_path));
    if (static_cast<int64_t>(labels.size()) != input.shape[0]) {
      cli::ExitWithError(
          absl::StrCat(labels_path, ": ", labels.size(), " labels for ",
                       input.shape[0], " input items"),
          kRunFailed);
    }
  }

  torch::Tensor all = ToTensor(input);
  // One copy into pinned memory, so that each batch reaches the GPU
  // asynchronously (Session::Run).
  if (session->device().is_cuda()) all = all.pin_memory();
  const int64_t items = input.shape[0];
  std::vector<torch::Tensor> outputs;
  Clock::time_point start = Clock::now();
  for (int64_t begin = 0; begin < std::max<int64_t>(items, 1);
       begin += batch_size) {
    int64_t end = std::min(items, begin + batch_size);
    absl::StatusOr<torch::Tensor> output =
        session->Run(all.slice(0, begin, std::max(end, begin + 1)));
    if (!output.ok()) {
      cli::ExitWithError(
          absl::StrCat(input_path, ": ", output.status().message()),
          kRunFailed);
    }
    outputs.push_back(output->to(torch::kFloat));
  }
  const double run_ms = MillisecondsSince(start);
  torch::Tensor logits = torch::cat(outputs).contiguous();
  const std::string bytes(static_cast<const char*>(logits.data_ptr()),
                          logits.numel() * sizeof(float));

  if (!output_path.empty()) {
    std::vector<int64_t> shape = logits.sizes().vec();
    FailIfError(WriteNpy(output_path, NpyDtype::kFloat32, shape, bytes));
  }

  // Predictions, when the output is one row of class scores per item.
  const bool per_item_rows = logits.dim() >= 1 && logits.size(0) == items;
  const int64_t classes =
      per_item_rows && items > 0 ? logits.numel() / items : 0;
  const float* rows = logits.data_ptr<float>();
  int64_t correct = 0;
  json predictions = json::array();
  std::vector<std::string> lines;
  for (int64_t item = 0; item < items && classes > 0; ++item) {
    const float* row = rows + item * classes;
    if (!labels.empty() && ArgMax(row, classes) == labels[item]) ++correct;
    bool shown = as_json || items <= kMaxItemsShown || item < 10;
    if (!shown) continue;
    std::vector<std::pair<int64_t, double>> top =
        TopK(Softmax(row, classes), absl::GetFlag(FLAGS_topk));
    json entries = json::array();
    std::string line = absl::StrCat("item ", item, ":");
    for (const auto& [index, probability] : top) {
      std::string name = ClassName(*session, index);
      entries.push_back(
          {{"class", index}, {"label", name}, {"probability", probability}});
      absl::StrAppend(&line, line.back() == ':' ? " " : ", ", name, " ",
                      absl::StrFormat("%.4f", probability));
    }
    if (!labels.empty()) {
      absl::StrAppend(&line, "  (label: ", ClassName(*session, labels[item]),
                      ")");
    }
    json prediction = {{"index", item}, {"top", entries}};
    if (!labels.empty()) prediction["label"] = labels[item];
    predictions.push_back(prediction);
    lines.push_back(line);
  }

  if (as_json) {
    json document = {
        {"model", model_path},
        {"input", input_path},
        {"input_format", input.format},
        {"items", items},
        {"output_shape", logits.sizes().vec()},
        {"model_load_ms", load_ms},
        {"run_ms", run_ms},
        {"predictions", predictions},
    };
    if (!labels.empty()) {
      document["correct"] = correct;
      document["accuracy"] = static_cast<double>(correct) / items;
    }
    if (absl::GetFlag(FLAGS_digest)) {
      document["digest"] = absl::StrCat("xxh3-64:", Xxh3Hex(bytes));
    }
    if (!output_path.empty()) document["output"] = output_path;
    std::printf(
        "%s\n",
        document.dump(2, ' ', false, nlohmann::json::error_handler_t::replace)
            .c_str());
    return 0;
  }
  std::printf("model: %s (loaded in %.1f ms)\n", model_path.c_str(), load_ms);
  std::printf("input: %s (%s, %lld item(s), output %s, %.1f ms)\n",
              input_path.c_str(), input.format.c_str(),
              static_cast<long long>(items),
              base::ShapeToString(logits.sizes().vec()).c_str(), run_ms);
  for (const std::string& line : lines) std::printf("%s\n", line.c_str());
  if (static_cast<int64_t>(lines.size()) < items && classes > 0) {
    std::printf("... %lld more item(s); --json or --output for all\n",
                static_cast<long long>(items - lines.size()));
  }
  if (!labels.empty()) {
    std::printf("accuracy: %.4f (%lld/%lld)\n",
                static_cast<double>(correct) / items,
                static_cast<long long>(correct), static_cast<long long>(items));
  }
  if (absl::GetFlag(FLAGS_digest)) {
    std::printf("digest: xxh3-64:%s\n", Xxh3Hex(bytes).c_str());
  }
  if (!output_path.empty()) {
    std::printf("output: %s\n", output_path.c_str());
  }
  return 0;
}

// The benchmark's batch: the input's first batch_size items (repeated when
// the input has fewer), or zeros of the model's input shape.
torch::Tensor BenchmarkBatch(const Session& session, int64_t batch_size) {
  const std::string input_path = ResolveUserPath(absl::GetFlag(FLAGS_input));
  if (input_path.empty()) {
    const models::ModelMetadata* metadata = session.metadata();
    if (metadata == nullptr || metadata->input_shape.empty()) {
      cli::ExitWithError(
          "the model's metadata has no input_shape: pass --input for the "
          "benchmark");
    }
    std::vector<int64_t> shape = metadata->input_shape;
    shape.insert(shape.begin(), batch_size);
    return torch::zeros(shape, torch::kFloat);
  }
  DecodedInput input =
      ValueOrFail(DecodeInputFile(input_path, session.metadata()));
  if (input.shape.empty() || input.shape[0] == 0) {
    cli::ExitWithError(absl::StrCat(input_path, ": no items to run"),
                       kRunFailed);
  }
  torch::Tensor all = ToTensor(input).clone();
  int64_t repeats = (batch_size + all.size(0) - 1) / all.size(0);
  std::vector<int64_t> tiling(all.dim(), 1);
  tiling[0] = repeats;
  return all.repeat(tiling).slice(0, 0, batch_size).contiguous();
}

int Benchmark(const std::string& model_path) {
  const int64_t batch_size = absl::GetFlag(FLAGS_batch_size);
  const int warmup = absl::GetFlag(FLAGS_warmup);
  const int runs = absl::GetFlag(FLAGS_runs);
  const double min_secs = absl::GetFlag(FLAGS_min_secs);

  double load_ms = 0;
  std::unique_ptr<Session> session = OpenSession(model_path, &load_ms);
  torch::Tensor batch = BenchmarkBatch(*session, batch_size);
  if (session->device().is_cuda()) batch = batch.pin_memory();
  auto run_once = [&]() {
    Clock::time_point start = Clock::now();
    absl::StatusOr<torch::Tensor> output = session->Run(batch);
    double elapsed = MillisecondsSince(start);
    if (!output.ok()) {
      cli::ExitWithError(output.status().message(), kRunFailed);
    }
    return elapsed;
  };
  const double first_ms = run_once();
  double warmup_total = 0;
  for (int i = 0; i < warmup; ++i) warmup_total += run_once();
  std::vector<double> latencies;
  Clock::time_point timed_start = Clock::now();
  while (static_cast<int>(latencies.size()) < runs ||
         MillisecondsSince(timed_start) < min_secs * 1000) {
    latencies.push_back(run_once());
  }
  const double timed_ms = MillisecondsSince(timed_start);
  LatencySummary summary = Summarize(latencies);
  const double inferences_per_s = latencies.size() / (timed_ms / 1000);
  const double items_per_s = inferences_per_s * batch_size;
  const int64_t peak_kib = PeakResidentKib();
  const double warmup_avg = warmup > 0 ? warmup_total / warmup : 0;

  if (absl::GetFlag(FLAGS_json)) {
    json document = {
        {"model", model_path},
        {"device", session->device().str()},
        {"threads", at::get_num_threads()},
        {"batch_size", batch_size},
        {"model_load_ms", load_ms},
        {"first_inference_ms", first_ms},
        {"warmup", {{"runs", warmup}, {"avg_ms", warmup_avg}}},
        {"latency_ms", runner::LatencySummaryJson(summary)},
        {"throughput",
         {{"inferences_per_s", inferences_per_s},
          {"items_per_s", items_per_s}}},
        {"peak_rss_kib", peak_kib},
    };
    std::printf(
        "%s\n",
        document.dump(2, ' ', false, nlohmann::json::error_handler_t::replace)
            .c_str());
    return 0;
  }
  std::printf("model: %s (device %s, %d thread(s), batch %lld)\n",
              model_path.c_str(), session->device().str().c_str(),
              at::get_num_threads(), static_cast<long long>(batch_size));
  std::printf("model load:      %10.3f ms\n", load_ms);
  std::printf("first inference: %10.3f ms\n", first_ms);
  std::printf("warm-up:         %10.3f ms avg over %d run(s)\n", warmup_avg,
              warmup);
  std::printf(
      "inference (ms):  count %lld  min %.3f  avg %.3f  std %.3f  p50 %.3f  "
      "p90 %.3f  p99 %.3f  max %.3f\n",
      static_cast<long long>(summary.count), summary.min, summary.mean,
      summary.std_dev, summary.p50, summary.p90, summary.p99, summary.max);
  std::printf("throughput:      %10.1f inferences/s, %.1f items/s\n",
              inferences_per_s, items_per_s);
  std::printf("peak memory:     %10.1f MiB (VmHWM)\n", peak_kib / 1024.0);
  return 0;
}

void CheckUsage(const std::vector<std::string>& positional) {
  if (!positional.empty()) {
    cli::ExitWithError(
        absl::StrCat("unexpected argument '", positional[0], "'"));
  }
  if (!absl::GetFlag(FLAGS_info).empty()) return;
  if (absl::GetFlag(FLAGS_model).empty()) {
    cli::ExitWithError("--model is required (or --info=MODEL)");
  }
  if (!absl::GetFlag(FLAGS_benchmark) && absl::GetFlag(FLAGS_input).empty()) {
    cli::ExitWithError("--input is required (except with --benchmark)");
  }
  if (const std::string tf32 = absl::GetFlag(FLAGS_tf32);
      !ParseTf32(tf32).has_value()) {
    cli::ExitWithError(
        absl::StrCat("--tf32 must be default, on or off, got '", tf32, "'"));
  }
  const std::string device = absl::GetFlag(FLAGS_device);
  if (device != "cpu" && device != "cuda" && device.rfind("cuda:", 0) != 0) {
    cli::ExitWithError(absl::StrCat(
        "--device must be cpu, cuda or cuda:N, got '", device, "'"));
  }
  struct Minimum {
    const char* name;
    double value;
    double minimum;
  };
  for (const Minimum& check : {
           Minimum{"threads", double(absl::GetFlag(FLAGS_threads)), 0},
           Minimum{"batch_size", double(absl::GetFlag(FLAGS_batch_size)), 1},
           Minimum{"topk", double(absl::GetFlag(FLAGS_topk)), 1},
           Minimum{"warmup", double(absl::GetFlag(FLAGS_warmup)), 0},
           Minimum{"runs", double(absl::GetFlag(FLAGS_runs)), 1},
           Minimum{"min_secs", absl::GetFlag(FLAGS_min_secs), 0},
       }) {
    if (!(check.value >= check.minimum)) {
      cli::ExitWithError(absl::StrCat("--", check.name, " must be >= ",
                                      check.minimum, ", got ", check.value));
    }
  }
}

int Main(int argc, char** argv) {
  // Line-buffered even into a pipe, so that a caller sees the first result
  // when it is ready (cold-start timing reads it).
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::vector<std::string> positional = cli::ParseFlagsOrExit(
      argc, argv,
      "run --model=model.pt --input=FILE [--device=cpu|cuda|cuda:N] "
      "[--threads=N] [--batch_size=N] [--output=out.npy] [--topk=K] [--json] "
      "[--digest] [--labels=FILE]\n"
      "  run --info=model.pt\n"
      "  run --model=model.pt --benchmark [--input=FILE] [--warmup=N] "
      "[--runs=N] [--min_secs=S] [--json]\n"
      "Exit codes: 0 ok, 1 bad file or failed run, 2 usage error.");
  CheckUsage(positional);
  try {
    if (!absl::GetFlag(FLAGS_info).empty()) {
      return Info(ResolveUserPath(absl::GetFlag(FLAGS_info)));
    }
    const std::string model = ResolveUserPath(absl::GetFlag(FLAGS_model));
    if (absl::GetFlag(FLAGS_benchmark)) return Benchmark(model);
    return Predict(model);
  } catch (const c10::Error& error) {
    std::string message = error.what_without_backtrace();
    cli::ExitWithError(message.substr(0, message.find('\n')), kRunFailed);
  } catch (const std::exception& error) {
    std::string message = error.what();
    cli::ExitWithError(message.substr(0, message.find('\n')), kRunFailed);
  }
}

}  // namespace
}  // namespace runner

int main(int argc, char** argv) { return runner::Main(argc, argv); }
