// Torch-free pieces of the `run` CLI's reports: softmax and top-k over
// logits, the output digest, latency statistics for --benchmark, the
// process's peak resident memory, and user path resolution under
// `bazel run`.
#ifndef RUNNER_REPORT_H_
#define RUNNER_REPORT_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace runner {

// Softmax of one row of logits, computed in double with the maximum
// subtracted first so that large logits do not overflow.
std::vector<double> Softmax(const float* logits, int64_t count);

// The k largest probabilities as (class index, probability), largest first;
// ties keep the lower index first. k is clamped to the row's length.
std::vector<std::pair<int64_t, double>> TopK(
    const std::vector<double>& probabilities, int64_t k);

// Index of the largest logit (the first one on ties).
int64_t ArgMax(const float* logits, int64_t count);

// XXH3-64 of `bytes` as 16 lowercase hex digits.
std::string Xxh3Hex(absl::string_view bytes);

struct LatencySummary {
  int64_t count = 0;
  double min = 0;
  double mean = 0;
  // Population standard deviation.
  double std_dev = 0;
  double p50 = 0;
  double p90 = 0;
  double p99 = 0;
  double max = 0;
};

// Summarises `samples` (any unit); percentiles interpolate linearly between
// the closest ranks, like numpy.percentile's default.
LatencySummary Summarize(std::vector<double> samples);

// {"count", "min", "avg", "std", "p50", "p90", "p99", "max"}: the keys of
// `run --benchmark --json`'s "latency_ms" object.
nlohmann::json LatencySummaryJson(const LatencySummary& summary);

// VmHWM from /proc/self/status in KiB; -1 when unavailable.
int64_t PeakResidentKib();

// A relative path given on the command line, made absolute against
// BUILD_WORKING_DIRECTORY when running under `bazel run` (whose working
// directory is the runfiles tree, not the user's).
std::string ResolveUserPath(const std::string& path);

}  // namespace runner

#endif  // RUNNER_REPORT_H_
