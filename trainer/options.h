// What a training run is told: TrainOptions (one field per `train` flag),
// their checks, and the options a checkpoint records so that a resumed run
// trains as the run that wrote it did. Torch-free.
#ifndef TRAINER_OPTIONS_H_
#define TRAINER_OPTIONS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "trainer/trainer_state.pb.h"

namespace trainer {

struct TrainOptions {
  std::string run_dir;
  int64_t epochs = 10;
  std::string model = "cnn";
  // "auto" (CUDA when available), "cpu", "cuda", "cuda:N".
  std::string device = "auto";
  bool amp = false;  // CUDA only.
  bool deterministic = false;
  std::string optimizer = "sgd";  // "sgd" or "adamw"
  // <= 0: 0.05 for sgd, 0.001 for adamw.
  double lr = 0;
  double momentum = 0.9;  // sgd only
  double weight_decay = 5e-4;
  int64_t batch_size = 128;
  std::string lr_schedule = "cosine";  // "none", "step", "cosine"
  uint64_t seed = 1;
  // Intra-op threads; 0 leaves LibTorch's default.
  int threads = 0;
  // Directory with the four Fashion-MNIST IDX files (gzipped or not).
  std::string data_dir;
  // < 0: all. Subsets take the first examples of each split.
  int64_t max_train_examples = -1;
  int64_t max_val_examples = -1;
  int64_t max_test_examples = -1;
  int64_t validation_size = 5000;
  std::string monitor = "val_loss";  // or "val_acc" (mode follows)
  int64_t save_every_steps = 0;      // 0: only at epoch ends
  int keep_last = -1;                // -1: keep all
  int keep_top_k = -1;
  // Resume from RUN_DIR's newest valid checkpoint (fresh start if none).
  bool resume = false;
  // Resume from this checkpoint (new checkpoints still go to run_dir).
  std::string resume_from;
  std::string progress = "auto";  // "auto", "bar", "lines", "none"
  // How a save in the background takes its snapshot of the state:
  // "protect" (write-protected pages, copied only when training writes
  // them first; checkpoint::SnapshotMode::kWriteProtect, with its
  // fallbacks), "fork" (a child process sharing the memory copy-on-write)
  // or "copy" (into staging memory). With protect or fork, the state's
  // large tensors are moved onto huge pages before the first save
  // (checkpoint::MoveToHugePages), which makes the snapshot's page-table
  // work 512 times smaller.
  std::string snapshot = "protect";
  // Stop (saving a checkpoint) once the global step reaches this; <= 0: no
  // limit. For tests and time-boxed jobs.
  int64_t max_steps = 0;
  // Skip evaluating the best checkpoint on the test set at the end.
  bool skip_test = false;
  // Several processes (docs/DISTRIBUTED.md): who this one is comes from the
  // environment (torchrun, Slurm) unless world_size is set here, with rank
  // and, for more than one, master_addr and master_port (which otherwise
  // fall back to MASTER_ADDR and MASTER_PORT).
  int world_size = 0;  // 0: from the environment
  int rank = 0;
  std::string master_addr;
  int master_port = 0;  // 0: MASTER_PORT
  // How long to wait for the other processes to join, and for any step.
  int dist_timeout_seconds = 300;
};

// Checks option values that do not need torch or the filesystem.
// kInvalidArgument naming the flag.
absl::Status ValidateOptions(const TrainOptions& options);

// Writes the options that shape a run's state into `state->options()`.
void RecordOptions(const TrainOptions& options, proto::TrainerState* state);

// The checkpoint's recorded options win over `options` (the command line's):
// a resumed run must train the same way. Each difference is reported through
// base::Warn. kFailedPrecondition for a recorded value that does not parse.
absl::Status ApplyRecordedOptions(const proto::TrainerState& state,
                                  TrainOptions* options);

}  // namespace trainer

#endif  // TRAINER_OPTIONS_H_
