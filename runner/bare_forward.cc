// bare_forward: the benchmark's C++ baseline, a plain torch::jit::load +
// forward loop with nothing of the runner in it (no Session, no metadata,
// no validation), timed exactly like `run --benchmark`. Prints one line
// after the first inference (for cold-start timing), then a JSON summary.
//
//   bare_forward --model=model.pt --batch_size=N --threads=N --warmup=N
//       --runs=N
#include <ATen/Parallel.h>
#include <torch/script.h>

#include <chrono>
#include <cstdio>
#include <vector>

#include "absl/flags/flag.h"
#include "nlohmann/json.hpp"
#include "runner/report.h"
#include "tools/cli/flags.h"

ABSL_FLAG(std::string, model, "", "TorchScript model.");
ABSL_FLAG(int, batch_size, 1, "Items per forward call.");
ABSL_FLAG(int, threads, 1, "Intra-op threads.");
ABSL_FLAG(int, warmup, 10, "Untimed runs after the first.");
ABSL_FLAG(int, runs, 100, "Timed runs.");

namespace {

using Clock = std::chrono::steady_clock;

double MillisecondsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start)
      .count();
}

}  // namespace

int main(int argc, char** argv) {
  cli::ParseFlagsOrExit(argc, argv,
                        "bare_forward --model=model.pt [--batch_size=N] "
                        "[--threads=N] [--warmup=N] [--runs=N]");
  at::set_num_threads(absl::GetFlag(FLAGS_threads));
  try {
    Clock::time_point start = Clock::now();
    torch::jit::Module module = torch::jit::load(absl::GetFlag(FLAGS_model));
    module.eval();
    const double load_ms = MillisecondsSince(start);
    std::vector<c10::IValue> inputs = {
        torch::zeros({absl::GetFlag(FLAGS_batch_size), 1, 28, 28})};
    c10::InferenceMode inference_mode;
    auto run_once = [&] {
      Clock::time_point begin = Clock::now();
      torch::Tensor output = module.forward(inputs).toTensor();
      return MillisecondsSince(begin);
    };
    const double first_ms = run_once();
    std::printf("first output\n");
    std::fflush(stdout);
    for (int i = 0; i < absl::GetFlag(FLAGS_warmup); ++i) run_once();
    std::vector<double> latencies;
    for (int i = 0; i < absl::GetFlag(FLAGS_runs); ++i) {
      latencies.push_back(run_once());
    }
    runner::LatencySummary summary = runner::Summarize(latencies);
    nlohmann::json document = {
        {"model_load_ms", load_ms},
        {"first_inference_ms", first_ms},
        {"latency_ms", runner::LatencySummaryJson(summary)},
    };
    std::printf("%s\n", document.dump().c_str());
  } catch (const std::exception& error) {
    std::string message = error.what();
    cli::ExitWithError(message.substr(0, message.find('\n')), 1);
  }
  return 0;
}
