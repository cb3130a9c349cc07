// The C++ side of load_benchmark.sh: LoadCheckpoint of each file (any
// format, by content) onto the CPU, copied and zero-copy (mmap), timed over
// --runs runs after one warm-up; one JSON line per file with the medians.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "checkpoint/tensors.h"
#include "nlohmann/json.hpp"
#include "tools/cli/flags.h"

ABSL_FLAG(int, runs, 5, "Timed runs per file and mode.");

namespace {

double MedianSeconds(const std::string& path,
                     const checkpoint::LoadOptions& options, int runs,
                     size_t* tensors) {
  std::vector<double> seconds;
  for (int run = -1; run < runs; ++run) {  // run -1 warms up
    auto start = std::chrono::steady_clock::now();
    absl::StatusOr<checkpoint::CheckpointState> state =
        checkpoint::LoadCheckpoint(path, options);
    auto end = std::chrono::steady_clock::now();
    if (!state.ok()) {
      cli::ExitWithError(std::string(state.status().message()), 1);
    }
    *tensors = state->tensors.size();
    if (run >= 0)
      seconds.push_back(std::chrono::duration<double>(end - start).count());
  }
  std::sort(seconds.begin(), seconds.end());
  return seconds[seconds.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> files =
      cli::ParseFlagsOrExit(argc, argv, "load_benchmark [--runs=N] FILE...");
  const int runs = std::max(1, absl::GetFlag(FLAGS_runs));
  for (const std::string& file : files) {
    size_t tensors = 0;
    checkpoint::LoadOptions copy;
    checkpoint::LoadOptions mapped;
    mapped.use_mmap = true;
    nlohmann::json line = {
        {"file", file},
        {"load_s", MedianSeconds(file, copy, runs, &tensors)},
        {"load_mmap_s", MedianSeconds(file, mapped, runs, &tensors)},
        {"tensors", tensors}};
    std::printf("%s\n", line.dump().c_str());
  }
  return 0;
}
