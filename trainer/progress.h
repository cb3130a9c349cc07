// What `train` prints while it trains: a bar redrawn in place on a terminal
// ("--progress=bar", or "auto" on a TTY), a plain line every 10 s otherwise
// (logs, CI), nothing with "none". Writes to stderr; torch-free.
// Not thread-safe: the training loop owns it.
#ifndef TRAINER_PROGRESS_H_
#define TRAINER_PROGRESS_H_

#include <chrono>
#include <cstdint>
#include <string>

namespace trainer {

// "1:02:03", "4:05", or "--:--" for an unknown (NaN, negative) duration.
std::string FormatDuration(double seconds);

class ProgressReporter {
 public:
  // `mode`: "bar", "auto", "plain" or "none".
  ProgressReporter(const std::string& mode, int64_t epochs);

  // Epoch `epoch` (from 0) of `batches` batches, resumed at `first_batch`.
  void StartEpoch(int64_t epoch, int64_t batches, int64_t first_batch);

  // After batch `batch_done` (from 1) of `batch_examples` examples.
  void Update(int64_t batch_done, int64_t batch_examples, double mean_loss);

  // Ends the bar's line before anything else is printed.
  void Break();

  double EpochSeconds() const;
  int64_t EpochExamples() const { return examples_; }

 private:
  bool bar_ = false;
  bool quiet_ = false;
  int64_t epochs_;
  int64_t epoch_ = 0;
  int64_t batches_ = 0;
  int64_t first_batch_ = 0;
  int64_t examples_ = 0;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_print_;
};

}  // namespace trainer

#endif  // TRAINER_PROGRESS_H_
