// Helper of exact_resume_test: trains a small MLP with dropout on fixed
// synthetic data, straight through or in two halves across processes
// with a checkpoint in between, and saves the final parameters.
//
//   exact_resume_helper --dir=D --optimizer=sgd|adamw --steps=N --mode=M
//     straight:   N steps, saves D/straight
//     first_half: N/2 steps, saves D/mid (model, optimizer, RNG, progress)
//     resume:     loads D/mid into a fresh model, trains to N, saves
//                 D/resumed (or D/resumed-skip-<what> with --skip)
//   --skip=rng|optimizer leaves that part of the state unrestored: the
//   test's negative controls.
#include <cmath>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "checkpoint/module_loading.h"
#include "checkpoint/tensors.h"
#include "checkpoint/training_state.h"
#include "tools/cli/flags.h"
#include "torch/torch.h"

ABSL_FLAG(std::string, dir, "", "Directory for the checkpoints.");
ABSL_FLAG(std::string, mode, "", "straight, first_half or resume.");
ABSL_FLAG(std::string, optimizer, "sgd", "sgd or adamw.");
ABSL_FLAG(int, steps, 12, "Total number of training steps (even).");
ABSL_FLAG(std::string, skip, "", "rng or optimizer: do not restore it.");

namespace checkpoint {
namespace {

constexpr int kBatches = 4;
constexpr int kBatchSize = 16;
constexpr double kBaseLearningRate = 0.05;
constexpr int kStepSize = 3;
constexpr double kGamma = 0.5;

// StepLR, owned here: LibTorch 1.13's scheduler state is not accessible.
double LearningRate(int64_t step) {
  return kBaseLearningRate * std::pow(kGamma, step / kStepSize);
}

struct Run {
  torch::nn::Sequential model{nullptr};
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  torch::Tensor inputs;
  torch::Tensor targets;
};

Run MakeRun(const std::string& optimizer) {
  Run run;
  torch::manual_seed(1234);
  run.inputs = torch::randn({kBatches * kBatchSize, 8});
  run.targets = torch::randn({kBatches * kBatchSize, 4});
  torch::manual_seed(0);
  run.model =
      torch::nn::Sequential(torch::nn::Linear(8, 32), torch::nn::ReLU(),
                            torch::nn::Dropout(torch::nn::DropoutOptions(0.25)),
                            torch::nn::Linear(32, 4));
  run.model->train();
  if (optimizer == "sgd") {
    run.optimizer = std::make_unique<torch::optim::SGD>(
        run.model->parameters(),
        torch::optim::SGDOptions(kBaseLearningRate).momentum(0.9));
  } else if (optimizer == "adamw") {
    run.optimizer = std::make_unique<torch::optim::AdamW>(
        run.model->parameters(),
        torch::optim::AdamWOptions(kBaseLearningRate).weight_decay(0.01));
  } else {
    cli::ExitWithError(absl::StrCat("unknown --optimizer '", optimizer, "'"));
  }
  return run;
}

void Train(Run& run, int64_t from_step, int64_t to_step) {
  for (int64_t step = from_step; step < to_step; ++step) {
    for (auto& group : run.optimizer->param_groups()) {
      group.options().set_lr(LearningRate(step));
    }
    const int64_t first = (step % kBatches) * kBatchSize;
    torch::Tensor x = run.inputs.narrow(0, first, kBatchSize);
    torch::Tensor y = run.targets.narrow(0, first, kBatchSize);
    run.optimizer->zero_grad();
    torch::Tensor loss = torch::mse_loss(run.model->forward(x), y);
    loss.backward();
    run.optimizer->step();
  }
}

NamedTensors NamedParameters(const torch::nn::Module& module) {
  NamedTensors result;
  for (const auto& item : module.named_parameters()) {
    result.emplace_back(item.key(), item.value());
  }
  return result;
}

absl::Status SaveModel(const Run& run, const std::string& path) {
  CheckpointState state;
  state.tensors = NamedParametersAndBuffers(*run.model);
  return SaveCheckpoint(path, state);
}

absl::Status Main() {
  torch::set_num_threads(1);
  const std::string dir = absl::GetFlag(FLAGS_dir);
  const std::string mode = absl::GetFlag(FLAGS_mode);
  const std::string skip = absl::GetFlag(FLAGS_skip);
  const int steps = absl::GetFlag(FLAGS_steps);
  if (dir.empty()) cli::ExitWithError("--dir is required");
  if (steps <= 0 || steps % 2 != 0) {
    cli::ExitWithError("--steps must be a positive even number");
  }
  Run run = MakeRun(absl::GetFlag(FLAGS_optimizer));
  if (mode == "straight") {
    Train(run, 0, steps);
    return SaveModel(run, dir + "/straight");
  }
  if (mode == "first_half") {
    Train(run, 0, steps / 2);
    CheckpointState state;
    state.tensors = NamedParametersAndBuffers(*run.model);
    absl::Status status = CaptureOptimizerState(
        *run.optimizer, NamedParameters(*run.model),
        state.training_state.mutable_optimizer(), &state.tensors);
    if (!status.ok()) return status;
    status =
        CaptureRngState(state.training_state.mutable_rng(), &state.tensors);
    if (!status.ok()) return status;
    state.metadata.mutable_progress()->set_global_step(steps / 2);
    return SaveCheckpoint(dir + "/mid", state);
  }
  if (mode == "resume") {
    // Different draws than the first process made, so that only a real
    // restore brings the generator back.
    torch::manual_seed(99);
    absl::StatusOr<CheckpointState> loaded = LoadCheckpoint(dir + "/mid");
    if (!loaded.ok()) return loaded.status();
    absl::StatusOr<LoadReport> report =
        LoadIntoModule(*run.model, loaded->tensors, {});
    if (!report.ok()) return report.status();
    if (skip != "optimizer") {
      absl::Status status = RestoreOptimizerState(
          loaded->training_state.optimizer(), loaded->tensors,
          NamedParameters(*run.model), run.optimizer.get());
      if (!status.ok()) return status;
    }
    if (skip != "rng") {
      absl::Status status =
          RestoreRngState(loaded->training_state.rng(), loaded->tensors);
      if (!status.ok()) return status;
    }
    Train(run, loaded->metadata.progress().global_step(), steps);
    return SaveModel(
        run, skip.empty() ? dir + "/resumed" : dir + "/resumed-skip-" + skip);
  }
  cli::ExitWithError(absl::StrCat("unknown --mode '", mode, "'"));
}

}  // namespace
}  // namespace checkpoint

int main(int argc, char** argv) {
  cli::ParseFlagsOrExit(argc, argv,
                        "exact_resume_helper --dir=DIR --mode=MODE [flags]");
  cli::ExitIfError(checkpoint::Main());
  return 0;
}
