#include "runner/report.h"

#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <numeric>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "tools/base/paths.h"

namespace runner {

std::vector<double> Softmax(const float* logits, int64_t count) {
  std::vector<double> probabilities(static_cast<size_t>(count));
  if (count == 0) return probabilities;
  double maximum = *std::max_element(logits, logits + count);
  double sum = 0;
  for (int64_t i = 0; i < count; ++i) {
    probabilities[i] = std::exp(static_cast<double>(logits[i]) - maximum);
    sum += probabilities[i];
  }
  for (double& probability : probabilities) probability /= sum;
  return probabilities;
}

std::vector<std::pair<int64_t, double>> TopK(
    const std::vector<double>& probabilities, int64_t k) {
  std::vector<int64_t> order(probabilities.size());
  std::iota(order.begin(), order.end(), 0);
  k = std::clamp<int64_t>(k, 0, static_cast<int64_t>(order.size()));
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [&](int64_t a, int64_t b) {
                      if (probabilities[a] != probabilities[b]) {
                        return probabilities[a] > probabilities[b];
                      }
                      return a < b;
                    });
  std::vector<std::pair<int64_t, double>> top;
  for (int64_t i = 0; i < k; ++i) {
    top.emplace_back(order[i], probabilities[order[i]]);
  }
  return top;
}

int64_t ArgMax(const float* logits, int64_t count) {
  return std::max_element(logits, logits + count) - logits;
}

std::string Xxh3Hex(absl::string_view bytes) {
  return absl::StrFormat("%016x", XXH3_64bits(bytes.data(), bytes.size()));
}

LatencySummary Summarize(std::vector<double> samples) {
  LatencySummary summary;
  summary.count = static_cast<int64_t>(samples.size());
  if (samples.empty()) return summary;
  std::sort(samples.begin(), samples.end());
  summary.min = samples.front();
  summary.max = samples.back();
  double sum = std::accumulate(samples.begin(), samples.end(), 0.0);
  summary.mean = sum / samples.size();
  double squares = 0;
  for (double sample : samples) {
    squares += (sample - summary.mean) * (sample - summary.mean);
  }
  summary.std_dev = std::sqrt(squares / samples.size());
  auto percentile = [&samples](double p) {
    double rank = p / 100.0 * (samples.size() - 1);
    size_t low = static_cast<size_t>(std::floor(rank));
    size_t high = std::min(low + 1, samples.size() - 1);
    return samples[low] + (samples[high] - samples[low]) * (rank - low);
  };
  summary.p50 = percentile(50);
  summary.p90 = percentile(90);
  summary.p99 = percentile(99);
  return summary;
}

int64_t PeakResidentKib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    absl::string_view rest = line;
    if (absl::ConsumePrefix(&rest, "VmHWM:")) {
      rest = absl::StripAsciiWhitespace(rest);
      absl::ConsumeSuffix(&rest, "kB");
      int64_t kib;
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(rest), &kib)) return kib;
    }
  }
  return -1;
}

std::string ResolveUserPath(const std::string& path) {
  return base::ResolveUserPath(path);
}

nlohmann::json LatencySummaryJson(const LatencySummary& summary) {
  return {{"count", summary.count}, {"min", summary.min}, {"avg", summary.mean},
          {"std", summary.std_dev}, {"p50", summary.p50}, {"p90", summary.p90},
          {"p99", summary.p99},     {"max", summary.max}};
}

}  // namespace runner
