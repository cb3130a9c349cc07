// The Fashion-MNIST training loop behind `train`, as a library: flag-free,
// so tests and tools can run it in-process. Torch-free header.
//
// A run trains one architecture from export/models/architectures.h on the first
// 55,000 training images (the last `validation_size` are the validation
// set), validates after every epoch, and saves through the checkpoint
// runtime into a run directory managed by checkpoint::CheckpointManager:
//   - after every epoch's validation a checkpoint that becomes `last`, and
//     `best` when the monitored metric improves;
//   - every `save_every_steps` optimizer steps a mid-epoch checkpoint;
//   - on a stop request (SIGINT/SIGTERM via `stop_signal`) or at
//     `max_steps`, a checkpoint after the current step, waited for.
// Every checkpoint holds the model, the optimizer (by parameter name), the
// schedule, the loss scaler, the RNG states and the data order (seed, epoch,
// batches consumed), so a resumed run continues at the exact batch: on CPU
// with a fixed thread count its final parameters are bitwise those of an
// uninterrupted run.
//
// Example:
//   TrainOptions options;
//   options.run_dir = "/tmp/run";
//   options.epochs = 2;
//   absl::StatusOr<TrainSummary> summary = Train(options, nullptr);
#ifndef TRAINER_TRAINER_H_
#define TRAINER_TRAINER_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "trainer/options.h"

namespace trainer {

struct TrainSummary {
  int64_t epochs_completed = 0;
  int64_t global_step = 0;
  std::string best_path;
  std::string last_path;
  int64_t best_epoch = 0;
  std::string monitor;
  double best_metric = 0;
  // NaN when not evaluated.
  double test_accuracy = 0;
  double test_loss = 0;
  // Why the run stopped before its last epoch: 0, or the signal number.
  int stop_signal = 0;
  bool stopped_at_max_steps = false;
  // Time the training loop was blocked by checkpointing (snapshots, waits)
  // and time spent in training steps, both in this process.
  double checkpoint_seconds = 0;
  double train_seconds = 0;
  // Waiting at the end of the run for the last background write.
  double final_save_wait_seconds = 0;
  // With several processes, rank 0's saver thread waiting for the other
  // processes' checkpoint parts (not the training loop's time, unless a
  // save had to wait for the one before it).
  double part_wait_seconds = 0;
};

// Runs (or resumes) training. `stop_signal`, when not null, is polled after
// every step: a non-zero value is the signal that asked to stop.
// Usage errors (bad option, missing dataset, unavailable device, run
// directory holding another run) are kInvalidArgument; everything else
// keeps its code.
absl::StatusOr<TrainSummary> Train(const TrainOptions& options,
                                   const std::atomic<int>* stop_signal);

}  // namespace trainer

#endif  // TRAINER_TRAINER_H_
