#include "trainer/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "absl/strings/str_format.h"

namespace trainer {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration duration) {
  return std::chrono::duration<double>(duration).count();
}

}  // namespace

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  const int64_t total = static_cast<int64_t>(seconds + 0.5);
  if (total >= 3600) {
    return absl::StrFormat("%d:%02d:%02d", total / 3600, total / 60 % 60,
                           total % 60);
  }
  return absl::StrFormat("%02d:%02d", total / 60, total % 60);
}

ProgressReporter::ProgressReporter(const std::string& mode, int64_t epochs)
    : epochs_(epochs) {
  if (mode == "bar") {
    bar_ = true;
  } else if (mode == "auto") {
    bar_ = isatty(STDERR_FILENO) == 1;
  }
  quiet_ = mode == "none";
}

void ProgressReporter::StartEpoch(int64_t epoch, int64_t batches,
                                  int64_t first_batch) {
  epoch_ = epoch;
  batches_ = batches;
  first_batch_ = first_batch;
  start_ = std::chrono::steady_clock::now();
  last_print_ = start_;
  examples_ = 0;
}

void ProgressReporter::Update(int64_t batch_done, int64_t batch_examples,
                              double mean_loss) {
  examples_ += batch_examples;
  if (quiet_) return;
  const std::chrono::steady_clock::time_point now =
      std::chrono::steady_clock::now();
  const double since_print = Seconds(now - last_print_);
  const bool last = batch_done == batches_;
  if (bar_ ? since_print < 0.1 && !last : since_print < 10.0) return;
  last_print_ = now;
  const double elapsed = Seconds(now - start_);
  const double per_second = elapsed > 0 ? examples_ / elapsed : 0;
  const int64_t done_here = batch_done - first_batch_;
  const double eta = done_here > 0
                         ? elapsed / done_here * (batches_ - batch_done)
                         : std::numeric_limits<double>::quiet_NaN();
  if (bar_) {
    constexpr int kWidth = 28;
    const int filled =
        static_cast<int>(kWidth * batch_done / std::max<int64_t>(1, batches_));
    std::fprintf(
        stderr,
        "\repoch %lld/%lld [%s%s] %lld/%lld loss %.4f %.0f ex/s "
        "ETA %s \x1b[K",
        static_cast<long long>(epoch_ + 1), static_cast<long long>(epochs_),
        std::string(filled, '#').c_str(),
        std::string(kWidth - filled, '.').c_str(),
        static_cast<long long>(batch_done), static_cast<long long>(batches_),
        mean_loss, per_second, FormatDuration(eta).c_str());
  } else {
    std::fprintf(
        stderr, "epoch %lld/%lld step %lld/%lld loss %.4f %.0f ex/s ETA %s\n",
        static_cast<long long>(epoch_ + 1), static_cast<long long>(epochs_),
        static_cast<long long>(batch_done), static_cast<long long>(batches_),
        mean_loss, per_second, FormatDuration(eta).c_str());
  }
  std::fflush(stderr);
}

void ProgressReporter::Break() {
  if (bar_ && !quiet_) std::fprintf(stderr, "\n");
}

double ProgressReporter::EpochSeconds() const {
  return Seconds(Clock::now() - start_);
}

}  // namespace trainer
