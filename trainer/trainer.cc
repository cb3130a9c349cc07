#include "trainer/trainer.h"

#include <ATen/autocast_mode.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <torch/csrc/jit/python/update_graph_executor_opt.h>
#include <torch/cuda.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "checkpoint/manager.h"
#include "checkpoint/module_loading.h"
#include "checkpoint/tensors.h"
#include "checkpoint/training_state.h"
#include "export/models/architectures.h"
#include "nlohmann/json.hpp"
#include "runner/data/idx_reader.h"
#include "third_party/libtorch/torch_compat.h"
#include "tools/base/files.h"
#include "tools/base/warnings.h"
#include "tools/distributed/checkpoint_parts.h"
#include "tools/distributed/data_parallel.h"
#include "tools/distributed/launch_env.h"
#include "tools/distributed/process_group.h"
#include "tools/torch/runtime.h"
#include "trainer/loss_scaler.h"
#include "trainer/metrics_log.h"
#include "trainer/progress.h"
#include "trainer/schedule.h"
#include "trainer/trainer_state.h"

namespace trainer {
namespace {

using checkpoint::CheckpointState;
using checkpoint::NamedTensors;
using checkpoint::proto::Metadata;
using checkpoint::proto::MonitoredMetric;
using datasets::FashionMnistPaths;
using datasets::FindFashionMnistFiles;
using datasets::IdxDataset;
using datasets::ReadIdxDataset;
using models::ArchitectureConfig;
using models::ArchitectureConfigFromMap;
using models::ArchitectureConfigToMap;
using models::BuildArchitecture;
using models::DefaultArchitectureConfig;
using Clock = std::chrono::steady_clock;

constexpr int64_t kTrainSplitSize = 60000;
constexpr int64_t kEvalBatchSize = 1000;

absl::Status UsageError(absl::string_view message) {
  return absl::InvalidArgumentError(message);
}

// Library errors keep their code, except kInvalidArgument, which Train()
// reserves for the user's mistakes (exit code 2 in `train`).
absl::Status Annotate(const absl::Status& status, absl::string_view context) {
  absl::StatusCode code = status.code() == absl::StatusCode::kInvalidArgument
                              ? absl::StatusCode::kFailedPrecondition
                              : status.code();
  return absl::Status(code, absl::StrCat(context, ": ", status.message()));
}

double Seconds(Clock::duration duration) {
  return std::chrono::duration<double>(duration).count();
}

// ---------------------------------------------------------------------------
// Data.

struct Split {
  torch::Tensor images;  // [N, 1, H, W] float32, normalised
  torch::Tensor labels;  // [N] int64
  int64_t size() const { return labels.size(0); }
};

Split MakeSplit(const IdxDataset& dataset, int64_t begin, int64_t count,
                const ArchitectureConfig& config) {
  const int64_t pixels_per_image = dataset.images.rows * dataset.images.cols;
  torch::Tensor bytes = torch::from_blob(
      const_cast<uint8_t*>(dataset.images.pixels.data()) +
          begin * pixels_per_image,
      {count, 1, dataset.images.rows, dataset.images.cols}, torch::kUInt8);
  Split split;
  split.images =
      ((bytes.to(torch::kFloat32) / 255.0) - config.normalization_mean) /
      config.normalization_std;
  split.labels =
      torch::from_blob(const_cast<uint8_t*>(dataset.labels.data()) + begin,
                       {count}, torch::kUInt8)
          .to(torch::kInt64);
  return split;
}

absl::StatusOr<IdxDataset> ReadDataset(const std::string& images,
                                       const std::string& labels,
                                       const ArchitectureConfig& config) {
  absl::StatusOr<IdxDataset> dataset =
      ReadIdxDataset(images, labels, static_cast<int>(config.num_classes));
  if (!dataset.ok()) {
    return Annotate(dataset.status(), "reading the dataset");
  }
  if (dataset->images.rows != config.input_height ||
      dataset->images.cols != config.input_width) {
    return UsageError(
        absl::StrCat(images, ": images are ", dataset->images.rows, "x",
                     dataset->images.cols, ", the model takes ",
                     config.input_height, "x", config.input_width));
  }
  return dataset;
}

// ---------------------------------------------------------------------------
// Evaluation.

struct Evaluation {
  double loss = 0;
  double accuracy = 0;
};

// The sums of an evaluation over batches rank, rank + world, ... of `split`
// (all of them for one process), so that processes can share the work and
// add their sums.
struct EvaluationSums {
  double loss_sum = 0;
  double correct = 0;
  double count = 0;
};

EvaluationSums EvaluateBatches(torch::jit::Module& model, const Split& split,
                               const torch::Device& device, int rank = 0,
                               int world = 1) {
  model.eval();
  torch::NoGradGuard no_grad;
  EvaluationSums sums;
  int64_t correct = 0;
  for (int64_t begin = rank * kEvalBatchSize; begin < split.size();
       begin += world * kEvalBatchSize) {
    const int64_t end = std::min(split.size(), begin + kEvalBatchSize);
    torch::Tensor images = split.images.slice(0, begin, end).to(device);
    torch::Tensor labels = split.labels.slice(0, begin, end).to(device);
    torch::Tensor logits = model.forward({images}).toTensor().to(torch::kFloat);
    sums.loss_sum +=
        at::cross_entropy_loss(logits, labels, {}, at::Reduction::Sum)
            .item<double>();
    correct += logits.argmax(1).eq(labels).sum().item<int64_t>();
    sums.count += static_cast<double>(end - begin);
  }
  model.train();
  sums.correct = static_cast<double>(correct);
  return sums;
}

Evaluation FromSums(const EvaluationSums& sums) {
  Evaluation evaluation;
  if (sums.count > 0) {
    evaluation.loss = sums.loss_sum / sums.count;
    evaluation.accuracy = sums.correct / sums.count;
  }
  return evaluation;
}

Evaluation Evaluate(torch::jit::Module& model, const Split& split,
                    const torch::Device& device) {
  return FromSums(EvaluateBatches(model, split, device));
}

// ---------------------------------------------------------------------------
// Setup.

void ConfigureThreads(int threads) {
  if (threads <= 0) return;
  at::set_num_threads(threads);
  // May be set once per process (pytorch #87960); later calls throw.
  static std::once_flag once;
  std::call_once(once, [] {
    try {
      at::set_num_interop_threads(1);
    } catch (const c10::Error&) {
    }
  });
}

void ConfigureDeterminism(bool deterministic) {
  if (!deterministic) return;
  torch_tools::EnableDeterministicKernels();
  // TF32 rounds matmul and convolution inputs: bit-exact resume compares
  // against full float32.
  at::globalContext().setAllowTF32CuBLAS(false);
  at::globalContext().setAllowTF32CuDNN(false);
}

std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(
    const TrainOptions& options, const std::vector<torch::Tensor>& parameters) {
  if (options.optimizer == "adamw") {
    return std::make_unique<torch::optim::AdamW>(
        parameters, torch::optim::AdamWOptions(options.lr)
                        .weight_decay(options.weight_decay));
  }
  return std::make_unique<torch::optim::SGD>(
      parameters, torch::optim::SGDOptions(options.lr)
                      .momentum(options.momentum)
                      .weight_decay(options.weight_decay));
}

void SetLearningRate(torch::optim::Optimizer& optimizer, double rate) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(rate);
}

// ---------------------------------------------------------------------------
// Several processes' checkpoints.

// Names one save of the job for the processes' reports: they all save at
// the same steps, and a step is saved once.
std::string SaveId(int64_t global_step) {
  return absl::StrCat("step=", global_step);
}

// Rank r >= 1 takes back its own random generators from the checkpoint's
// record of it. A process the checkpoint's run did not have (a larger
// world) starts its own stream, as a fresh run would.
absl::Status RestoreProcessState(const proto::TrainerState& trainer_state,
                                 const NamedTensors& tensors,
                                 int64_t global_step, int rank, uint64_t seed) {
  if (rank == 0) return absl::OkStatus();  // the checkpoint's own "rng/..."
  const int recorded_world = std::max(1, trainer_state.world_size());
  for (const proto::ProcessState& process : trainer_state.processes()) {
    if (process.rank() != rank) continue;
    if (process.global_step() != global_step) {
      return absl::DataLossError(absl::StrCat(
          "rank ", rank, "'s part was taken at step ", process.global_step(),
          ", the checkpoint at step ", global_step));
    }
    return Annotate(checkpoint::RestoreRngState(process.rng(), tensors),
                    absl::StrCat("rank ", rank, "'s part"));
  }
  if (rank < recorded_world) {
    return absl::DataLossError(
        absl::StrCat("the checkpoint of a ", recorded_world,
                     "-process run holds no part of rank ", rank));
  }
  torch::manual_seed(seed + static_cast<uint64_t>(rank));
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// The run.

class Run {
 public:
  Run(TrainOptions options, const std::atomic<int>* stop_signal)
      : options_(std::move(options)), stop_signal_(stop_signal) {}
  // A save still waiting for the other processes' parts gives up at once:
  // the run is over (a failing run, since a finished one waits for its
  // saves), and an uncommitted checkpoint is never `last`.
  ~Run() {
    cancel_saves_ = true;
    if (saver_ == nullptr) return;
    const absl::Status unfinished = saver_->Wait();
    if (absl::IsCancelled(unfinished)) {
      base::Warn(
          "train: the save in progress was not committed: the job ended "
          "before every process reported its part");
    } else if (!unfinished.ok()) {
      base::Warn(absl::StrCat("train: ", unfinished.message()));
    }
  }

  absl::StatusOr<TrainSummary> Execute();

 private:
  absl::Status Setup();
  absl::Status LoadData();
  absl::Status RestoreState(const CheckpointState& state);
  absl::StatusOr<CheckpointState> CaptureState(bool epoch_end,
                                               const Evaluation* validation,
                                               double train_loss);
  absl::Status TrainEpoch(int64_t epoch, bool* stop);
  absl::Status SaveCheckpoint(bool epoch_end, const Evaluation* validation,
                              double train_loss, bool wait);
  absl::Status TakeSaveError();
  // With several processes: this process's own state (rank r >= 1 writes
  // it as its part of the checkpoint; rank 0's is in its own tensors).
  absl::StatusOr<proto::ProcessState> CaptureProcessState(
      NamedTensors* tensors);
  // Where this process stands, for its ProcessState.
  void SetPosition(proto::ProcessState* process) const {
    process->set_rank(group_->rank());
    process->set_global_step(position_.global_step);
    process->set_epoch(position_.epoch);
    process->set_batches_consumed(position_.batches_consumed);
  }
  // Rank r >= 1's part of the checkpoint at the current step.
  absl::Status SavePart();
  // Rank 0, before a save commits: every other process's part, recorded in
  // the checkpoint's TrainerState.
  absl::Status AddProcessParts(const std::string& save_id,
                               checkpoint::CheckpointWriter& writer);
  void EvaluateBest(TrainSummary* summary);
  bool StopRequested() const {
    return stop_signal_ != nullptr && stop_signal_->load() != 0;
  }
  // Joins the other processes of a data-parallel job (a group of one when
  // there are none).
  absl::Status JoinProcesses();
  // True on every rank when any rank was asked to stop: all stop together.
  absl::StatusOr<bool> AgreeToStop(bool stop);
  // The validation set's loss and accuracy, each process evaluating its
  // share of the batches.
  absl::StatusOr<Evaluation> Validate();

  TrainOptions options_;
  const std::atomic<int>* stop_signal_;
  // Rank 0 (the leader) alone writes checkpoints, metrics and progress:
  // every rank holds the same parameters and optimizer state, and the data
  // position is the same global batch everywhere.
  std::unique_ptr<distributed::ProcessGroup> group_;
  bool leader_ = true;
  torch::Device device_ = torch::kCPU;
  std::string architecture_;
  ArchitectureConfig architecture_config_;
  std::map<std::string, std::string> architecture_map_;
  Split train_;
  Split validation_;
  FashionMnistPaths paths_;
  torch::jit::Module model_;
  std::vector<torch::Tensor> parameters_;
  NamedTensors named_parameters_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::unique_ptr<LearningRateSchedule> schedule_;
  std::unique_ptr<LossScaler> scaler_;
  std::unique_ptr<checkpoint::CheckpointManager> manager_;
  // Declared before the saver on purpose: members are destroyed in reverse
  // order, so ~Run joins the saver's worker (whose completion callback locks
  // these) while they are still alive.
  std::mutex save_error_mutex_;
  absl::Status save_error_;
  std::atomic<bool> cancel_saves_{false};
  // Rank 0's saver thread: time spent waiting for the other processes'
  // parts (guarded by save_error_mutex_).
  double part_wait_seconds_ = 0;
  std::unique_ptr<checkpoint::AsyncCheckpointSaver> saver_;
  std::string resumed_from_;
  proto::TrainerState resumed_trainer_state_;

  int64_t batches_per_epoch_ = 0;
  // Where the run stands: everything here is in every checkpoint
  // (CaptureState) and comes back on resume (RestoreState).
  struct Position {
    int64_t epoch = 0;             // epochs completed
    int64_t batches_consumed = 0;  // of the current epoch
    int64_t global_step = 0;
    int64_t examples_seen = 0;
    double epoch_loss_sum = 0;  // the epoch in progress, for its mean loss
    int64_t epoch_examples = 0;
  };
  Position position_;
  int64_t last_saved_step_ = -1;
  // MoveToHugePages ran on the state (once, before the first snapshot).
  bool moved_to_huge_pages_ = false;
  double checkpoint_seconds_ = 0;
  double train_seconds_ = 0;
  std::unique_ptr<ProgressReporter> progress_;
};

absl::Status Run::Setup() {
  // Run the TorchScript-defined model op by op, like eager PyTorch: the
  // profiling executor's differentiable graphs only add per-step overhead
  // for a network this small.
  torch::jit::setGraphExecutorOptimize(false);
  ConfigureThreads(options_.threads);
  ConfigureDeterminism(options_.deterministic);
  absl::StatusOr<torch::Device> device =
      torch_tools::ResolveDevice(options_.device, /*allow_auto=*/true);
  if (!device.ok()) {
    return UsageError(absl::StrCat("--device=", options_.device, ": ",
                                   device.status().message()));
  }
  device_ = *device;
  if (options_.amp && !device_.is_cuda()) {
    return UsageError(
        "--amp needs a CUDA device (autocast and loss scaling are CUDA-only "
        "here)");
  }
  if (absl::Status status = JoinProcesses(); !status.ok()) return status;

  // Where to resume from, decided before anything is created.
  std::string resume_path = options_.resume_from;
  if (resume_path.empty() && options_.resume) {
    absl::StatusOr<std::string> found =
        checkpoint::FindResumeCheckpoint(options_.run_dir);
    if (found.ok()) {
      resume_path = *found;
    } else if (absl::IsNotFound(found.status())) {
      if (leader_) {
        std::fprintf(stderr, "train: no checkpoint in %s: starting fresh\n",
                     options_.run_dir.c_str());
      }
    } else {
      return Annotate(found.status(), "looking for a checkpoint to resume");
    }
  }
  std::unique_ptr<CheckpointState> resume_state;
  if (!resume_path.empty()) {
    checkpoint::LoadOptions load_options;
    absl::StatusOr<CheckpointState> loaded =
        checkpoint::LoadCheckpoint(resume_path, load_options);
    if (!loaded.ok()) {
      return Annotate(loaded.status(),
                      absl::StrCat("resuming from ", resume_path));
    }
    resume_state = std::make_unique<CheckpointState>(*std::move(loaded));
    absl::StatusOr<proto::TrainerState> trainer_state =
        ReadTrainerState(resume_state->training_state, resume_state->metadata);
    if (!trainer_state.ok()) {
      return Annotate(trainer_state.status(), resume_path);
    }
    resumed_trainer_state_ = *std::move(trainer_state);
    if (absl::Status status =
            ApplyRecordedOptions(resumed_trainer_state_, &options_);
        !status.ok()) {
      return Annotate(status, resume_path);
    }
    resumed_from_ = resume_path;
  }

  const int recorded_world = std::max(1, resumed_trainer_state_.world_size());
  if (!resumed_from_.empty() && recorded_world != group_->world_size() &&
      leader_) {
    base::Warn(absl::StrCat(
        "train: resuming a run of ", recorded_world, " process(es) on ",
        group_->world_size(),
        ": the same global batches follow, but sums over processes run in "
        "another order, so bitwise equality with the original run is not "
        "promised"));
  }

  // Only the leader writes to the run directory.
  if (leader_) {
    checkpoint::CheckpointManager::Options manager_options;
    manager_options.monitor = options_.monitor;
    manager_options.mode = options_.monitor == "val_acc" ? MonitoredMetric::MAX
                                                         : MonitoredMetric::MIN;
    manager_options.keep_last = options_.keep_last;
    manager_options.keep_top_k = options_.keep_top_k;
    absl::StatusOr<std::unique_ptr<checkpoint::CheckpointManager>> manager =
        checkpoint::CheckpointManager::Open(options_.run_dir, manager_options);
    if (!manager.ok()) {
      return Annotate(manager.status(),
                      absl::StrCat("opening run directory ", options_.run_dir));
    }
    manager_ = *std::move(manager);
    if (resume_state == nullptr && !manager_->List().empty()) {
      return UsageError(absl::StrCat(
          options_.run_dir,
          " already holds checkpoints: pass --resume to continue that run, or "
          "choose another --run_dir"));
    }
    saver_ = std::make_unique<checkpoint::AsyncCheckpointSaver>(
        checkpoint::WriterOptions(), /*keep_staging_buffers=*/true,
        options_.snapshot == "protect" ? checkpoint::SnapshotMode::kWriteProtect
        : options_.snapshot == "fork"  ? checkpoint::SnapshotMode::kFork
                                       : checkpoint::SnapshotMode::kCopy);
  }

  // The model.
  if (resume_state != nullptr) {
    architecture_ = resume_state->metadata.architecture();
    absl::StatusOr<ArchitectureConfig> config = ArchitectureConfigFromMap(
        {resume_state->metadata.architecture_config().begin(),
         resume_state->metadata.architecture_config().end()});
    if (!config.ok()) return Annotate(config.status(), resumed_from_);
    architecture_config_ = *config;
  } else {
    architecture_ = options_.model;
    architecture_config_ = DefaultArchitectureConfig();
  }
  architecture_map_ = ArchitectureConfigToMap(architecture_config_);
  absl::StatusOr<torch::jit::Module> model =
      BuildArchitecture(architecture_, architecture_config_, options_.seed);
  if (!model.ok()) {
    return resume_state != nullptr ? Annotate(model.status(), resumed_from_)
                                   : model.status();
  }
  model_ = *std::move(model);

  if (absl::Status status = LoadData(); !status.ok()) return status;
  batches_per_epoch_ =
      (train_.size() + options_.batch_size - 1) / options_.batch_size;

  if (resume_state != nullptr) {
    checkpoint::LoadIntoModuleOptions load_options;  // strict
    absl::StatusOr<checkpoint::LoadReport> report =
        checkpoint::LoadIntoModule(model_, resume_state->tensors, load_options);
    if (!report.ok()) return Annotate(report.status(), resumed_from_);
  }
  model_.to(device_);
  model_.train();
  for (const auto& named : model_.named_parameters(/*recurse=*/true)) {
    parameters_.push_back(named.value);
    named_parameters_.emplace_back(named.name, named.value);
  }
  // Every rank starts from the leader's parameters.
  if (absl::Status status = group_->Broadcast(parameters_, /*root=*/0);
      !status.ok()) {
    return Annotate(status, "sharing the initial parameters");
  }
  optimizer_ = MakeOptimizer(options_, parameters_);

  absl::StatusOr<LearningRateSchedule> schedule = LearningRateSchedule::Create(
      options_.lr_schedule, options_.lr, options_.epochs * batches_per_epoch_);
  if (!schedule.ok()) return schedule.status();
  schedule_ = std::make_unique<LearningRateSchedule>(*std::move(schedule));
  proto::LossScalerState scaler_state;
  if (options_.amp) scaler_state = LossScaler::DefaultState();
  scaler_ = std::make_unique<LossScaler>(scaler_state);

  if (resume_state != nullptr) {
    if (absl::Status status = RestoreState(*resume_state); !status.ok()) {
      return Annotate(status, absl::StrCat("resuming from ", resumed_from_));
    }
  } else {
    // Each process its own random stream (dropout masks must differ
    // between the slices of a batch); one process keeps --seed.
    torch::manual_seed(options_.seed + static_cast<uint64_t>(group_->rank()));
  }
  return absl::OkStatus();
}

absl::Status Run::LoadData() {
  std::string directory = options_.data_dir;
  absl::StatusOr<FashionMnistPaths> paths = FindFashionMnistFiles(directory);
  if (!paths.ok()) {
    return UsageError(
        absl::StrCat("dataset not found: ", paths.status().message()));
  }
  paths_ = *paths;
  absl::StatusOr<IdxDataset> train = ReadDataset(
      paths_.train_images, paths_.train_labels, architecture_config_);
  if (!train.ok()) return train.status();
  const int64_t total = train->images.count;
  if (options_.validation_size >= total) {
    return UsageError(
        absl::StrCat("--validation_size=", options_.validation_size,
                     " leaves no ", "training examples out of ", total));
  }
  const int64_t train_size = total - options_.validation_size;
  const int64_t train_count =
      options_.max_train_examples < 0
          ? train_size
          : std::min(train_size, options_.max_train_examples);
  const int64_t validation_count =
      options_.max_val_examples < 0
          ? options_.validation_size
          : std::min(options_.validation_size, options_.max_val_examples);
  train_ = MakeSplit(*train, 0, train_count, architecture_config_);
  validation_ =
      MakeSplit(*train, train_size, validation_count, architecture_config_);
  if (device_.is_cuda()) {
    train_.images = train_.images.to(device_);
    train_.labels = train_.labels.to(device_);
  }
  if (total != kTrainSplitSize) {
    base::Warn(absl::StrCat("train: ", paths_.train_images, " holds ", total,
                            " images (not 60000)"));
  }
  return absl::OkStatus();
}

// RestoreState and CaptureState are inverses, kept side by side: what one
// writes into a checkpoint the other reads back.
absl::Status Run::RestoreState(const CheckpointState& state) {
  const checkpoint::proto::TrainingState& training = state.training_state;
  const proto::TrainerState& trainer_state = resumed_trainer_state_;
  const proto::DataOrderState& data_order = trainer_state.data_order();
  if (data_order.dataset_size() != train_.size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the checkpoint was trained on ", data_order.dataset_size(),
        " examples per epoch, this run has ", train_.size(),
        " (different --data_dir, --max_train_examples or --validation_size)"));
  }
  if (absl::Status status = checkpoint::RestoreOptimizerState(
          training.optimizer(), state.tensors, named_parameters_,
          optimizer_.get());
      !status.ok()) {
    return status;
  }
  absl::StatusOr<LearningRateSchedule> schedule =
      LearningRateSchedule::FromProto(trainer_state.scheduler());
  if (!schedule.ok()) return schedule.status();
  schedule_ = std::make_unique<LearningRateSchedule>(*std::move(schedule));
  if (trainer_state.has_loss_scaler()) {
    scaler_ = std::make_unique<LossScaler>(trainer_state.loss_scaler());
  }
  if (absl::Status status =
          checkpoint::RestoreRngState(training.rng(), state.tensors);
      !status.ok()) {
    return status;
  }
  const checkpoint::proto::Progress& progress = state.metadata.progress();
  if (absl::Status status = RestoreProcessState(trainer_state, state.tensors,
                                                progress.global_step(),
                                                group_->rank(), options_.seed);
      !status.ok()) {
    return status;
  }
  position_.epoch = data_order.epoch();
  position_.batches_consumed = data_order.batches_consumed();
  position_.global_step = progress.global_step();
  position_.examples_seen = progress.examples_seen();
  if (position_.batches_consumed > batches_per_epoch_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "data order says ", position_.batches_consumed,
        " batches consumed of an epoch ", "of ", batches_per_epoch_));
  }
  position_.epoch_loss_sum = trainer_state.epoch_loss_sum();
  position_.epoch_examples = trainer_state.epoch_examples();
  last_saved_step_ = position_.global_step;
  std::fprintf(stderr,
               "train: resumed from %s at epoch %lld, batch %lld/%lld, "
               "step %lld\n",
               resumed_from_.c_str(),
               static_cast<long long>(position_.epoch + 1),
               static_cast<long long>(position_.batches_consumed),
               static_cast<long long>(batches_per_epoch_),
               static_cast<long long>(position_.global_step));
  return TruncateMetricsAfter(options_.run_dir, position_.global_step);
}

absl::StatusOr<CheckpointState> Run::CaptureState(bool epoch_end,
                                                  const Evaluation* validation,
                                                  double train_loss) {
  CheckpointState state;
  state.tensors = named_parameters_;
  Metadata& metadata = state.metadata;
  metadata.mutable_producer()->set_tool("train");
  metadata.set_architecture(architecture_);
  for (const auto& [key, value] : architecture_map_) {
    (*metadata.mutable_architecture_config())[key] = value;
  }
  checkpoint::proto::Progress* progress = metadata.mutable_progress();
  progress->set_epoch(position_.epoch);
  progress->set_global_step(position_.global_step);
  progress->set_examples_seen(position_.examples_seen);
  progress->set_step_in_epoch(position_.batches_consumed);
  MonitoredMetric* monitored = metadata.mutable_monitored();
  monitored->set_name(options_.monitor);
  monitored->set_mode(options_.monitor == "val_acc" ? MonitoredMetric::MAX
                                                    : MonitoredMetric::MIN);
  monitored->set_value(std::numeric_limits<double>::quiet_NaN());
  if (epoch_end && validation != nullptr) {
    (*metadata.mutable_metrics())["train_loss"] = train_loss;
    (*metadata.mutable_metrics())["val_loss"] = validation->loss;
    (*metadata.mutable_metrics())["val_acc"] = validation->accuracy;
    monitored->set_value(options_.monitor == "val_acc" ? validation->accuracy
                                                       : validation->loss);
  }
  proto::TrainerState trainer_state;
  RecordOptions(options_, &trainer_state);
  trainer_state.set_epoch_loss_sum(position_.epoch_loss_sum);
  trainer_state.set_epoch_examples(position_.epoch_examples);
  if (group_->world_size() > 1) {
    trainer_state.set_world_size(group_->world_size());
  }

  checkpoint::proto::TrainingState& training = state.training_state;
  if (absl::Status status = checkpoint::CaptureOptimizerState(
          *optimizer_, named_parameters_, training.mutable_optimizer(),
          &state.tensors);
      !status.ok()) {
    return Annotate(status, "capturing the optimizer state");
  }
  *trainer_state.mutable_scheduler() =
      schedule_->ToProto(position_.global_step);
  *trainer_state.mutable_loss_scaler() = scaler_->state();
  if (absl::Status status =
          checkpoint::CaptureRngState(training.mutable_rng(), &state.tensors);
      !status.ok()) {
    return Annotate(status, "capturing the RNG state");
  }
  training.mutable_rng()->set_seed(options_.seed);
  if (group_->world_size() > 1) {  // the other processes' come with parts
    proto::ProcessState* own = trainer_state.add_processes();
    SetPosition(own);
    *own->mutable_rng() = training.rng();
  }
  proto::DataOrderState* order = trainer_state.mutable_data_order();
  order->set_seed(options_.seed);
  order->set_epoch(position_.epoch);
  order->set_batches_consumed(position_.batches_consumed);
  order->set_dataset_size(train_.size());
  WriteTrainerState(trainer_state, &training);

  return state;
}

absl::Status Run::TakeSaveError() {
  std::lock_guard<std::mutex> lock(save_error_mutex_);
  absl::Status status = save_error_;
  save_error_ = absl::OkStatus();
  return status;
}

absl::StatusOr<proto::ProcessState> Run::CaptureProcessState(
    NamedTensors* tensors) {
  proto::ProcessState process;
  SetPosition(&process);
  NamedTensors generators;
  if (absl::Status status =
          checkpoint::CaptureRngState(process.mutable_rng(), &generators);
      !status.ok()) {
    return Annotate(status, "capturing the RNG state");
  }
  process.mutable_rng()->set_seed(options_.seed + group_->rank());
  // Under this process's own names: "rank/1/rng/cpu".
  const std::string prefix = absl::StrCat("rank/", group_->rank(), "/");
  checkpoint::proto::RngState* rng = process.mutable_rng();
  rng->set_cpu_generator_tensor(prefix + rng->cpu_generator_tensor());
  for (std::string& name : *rng->mutable_cuda_generator_tensors()) {
    name = prefix + name;
  }
  for (auto& [name, tensor] : generators) {
    tensors->emplace_back(prefix + name, tensor);
  }
  return process;
}

absl::Status Run::SavePart() {
  const Clock::time_point start = Clock::now();
  NamedTensors tensors;
  absl::StatusOr<proto::ProcessState> process = CaptureProcessState(&tensors);
  if (!process.ok()) return process.status();
  absl::Status status = distributed::SavePart(
      *group_, options_.run_dir, SaveId(position_.global_step), tensors,
      process->SerializeAsString());
  last_saved_step_ = position_.global_step;
  checkpoint_seconds_ += Seconds(Clock::now() - start);
  if (!status.ok()) {
    return Annotate(status, absl::StrCat("saving this process's part of the "
                                         "checkpoint at step ",
                                         position_.global_step));
  }
  return absl::OkStatus();
}

absl::Status Run::AddProcessParts(const std::string& save_id,
                                  checkpoint::CheckpointWriter& writer) {
  const Clock::time_point start = Clock::now();
  absl::StatusOr<std::vector<std::string>> states =
      distributed::CollectParts(*group_, save_id, writer, &cancel_saves_);
  {
    std::lock_guard<std::mutex> lock(save_error_mutex_);
    part_wait_seconds_ += Seconds(Clock::now() - start);
  }
  if (!states.ok()) return states.status();
  absl::StatusOr<proto::TrainerState> trainer_state = ReadTrainerState(
      *writer.mutable_training_state(), *writer.mutable_metadata());
  if (!trainer_state.ok()) return trainer_state.status();
  for (int rank = 1; rank < group_->world_size(); ++rank) {
    proto::ProcessState* process = trainer_state->add_processes();
    if (!process->ParseFromString((*states)[rank]) || process->rank() != rank ||
        process->global_step() != trainer_state->processes(0).global_step()) {
      return absl::DataLossError(
          absl::StrCat(writer.final_path(), ": rank ", rank,
                       " reported a part that is not its own at this step"));
    }
  }
  WriteTrainerState(*trainer_state, writer.mutable_training_state());
  return absl::OkStatus();
}

absl::Status Run::SaveCheckpoint(bool epoch_end, const Evaluation* validation,
                                 double train_loss, bool wait) {
  if (!leader_) return SavePart();
  const Clock::time_point start = Clock::now();
  absl::StatusOr<CheckpointState> captured =
      CaptureState(epoch_end, validation, train_loss);
  if (!captured.ok()) return captured.status();
  const CheckpointState& state = *captured;
  const Metadata& metadata = state.metadata;
  absl::StatusOr<std::string> path = manager_->PathForNew(metadata);
  if (!path.ok()) return Annotate(path.status(), "naming a checkpoint");
  checkpoint::CheckpointManager* manager = manager_.get();
  const std::string committed_path = *path;
  if (!moved_to_huge_pages_ && options_.snapshot != "copy") {
    // Once, now that the optimizer has made its buffers: the snapshots'
    // page-table work is per page.
    absl::StatusOr<checkpoint::HugePagesMoved> moved =
        checkpoint::MoveToHugePages(state.tensors);
    if (!moved.ok()) return Annotate(moved.status(), "saving a checkpoint");
    moved_to_huge_pages_ = true;
  }
  checkpoint::BeforeCommit add_parts;
  if (group_->world_size() > 1) {
    add_parts = [this, save_id = SaveId(position_.global_step)](
                    checkpoint::CheckpointWriter& writer) {
      return AddProcessParts(save_id, writer);
    };
  }
  absl::Status status = saver_->SaveAsync(
      committed_path, state,
      [this, manager, committed_path](const absl::Status& saved) {
        absl::Status result =
            saved.ok() ? manager->OnCommitted(committed_path) : saved;
        if (!result.ok()) {
          std::lock_guard<std::mutex> lock(save_error_mutex_);
          if (save_error_.ok()) save_error_ = result;
        }
      },
      std::move(add_parts));
  if (status.ok() && wait) status = saver_->Wait();
  if (status.ok()) status = TakeSaveError();
  last_saved_step_ = position_.global_step;
  checkpoint_seconds_ += Seconds(Clock::now() - start);
  if (!status.ok()) return Annotate(status, "saving a checkpoint");
  return absl::OkStatus();
}

absl::Status Run::TrainEpoch(int64_t epoch, bool* stop) {
  const std::vector<int64_t> order =
      EpochPermutation(options_.seed, epoch, train_.size());
  torch::Tensor order_tensor =
      torch::tensor(order, torch::TensorOptions().dtype(torch::kInt64))
          .to(train_.images.device());
  progress_->StartEpoch(epoch, batches_per_epoch_, position_.batches_consumed);
  const Clock::time_point start = Clock::now();
  while (position_.batches_consumed < batches_per_epoch_) {
    const int64_t begin = position_.batches_consumed * options_.batch_size;
    const int64_t end = std::min(train_.size(), begin + options_.batch_size);
    // This process's slice of the global batch (all of it when alone).
    const distributed::Slice slice = distributed::SliceOfBatch(
        begin, end, group_->world_size(), group_->rank());
    SetLearningRate(*optimizer_, schedule_->RateAt(position_.global_step));
    optimizer_->zero_grad();
    double loss_value = 0;  // this process's mean loss over its slice
    if (slice.size() > 0) {
      torch::Tensor indices = order_tensor.slice(0, slice.begin, slice.end);
      torch::Tensor images = train_.images.index_select(0, indices).to(device_);
      torch::Tensor labels = train_.labels.index_select(0, indices).to(device_);
      torch::Tensor logits;
      if (options_.amp) {
        torch_compat::SetCudaAutocastEnabled(true);
        logits = model_.forward({images}).toTensor();
        at::autocast::clear_cache();
        torch_compat::SetCudaAutocastEnabled(false);
        logits = logits.to(torch::kFloat);
      } else {
        logits = model_.forward({images}).toTensor();
      }
      torch::Tensor loss = at::cross_entropy_loss(logits, labels);
      scaler_->Scale(loss).backward();
      loss_value = loss.item<double>();
    }
    // The gradient of the mean loss over the whole global batch.
    if (absl::Status status = distributed::AverageGradients(
            *group_, parameters_, slice.size(), end - begin);
        !status.ok()) {
      progress_->Break();
      return Annotate(status, absl::StrCat("step ", position_.global_step + 1));
    }
    if (scaler_->UnscaleAndCheck(parameters_)) optimizer_->step();
    scaler_->Update();

    const int64_t batch = end - begin;
    bool stop_requested = StopRequested();
    // Not for one process: loss * n / n need not give back the loss bit for
    // bit, and one process's arithmetic stays as it always was.
    if (group_->world_size() > 1) {
      // The batch's mean loss and whether any process was asked to stop,
      // in one small sum over the processes.
      std::vector<double> shared = {
          loss_value * static_cast<double>(slice.size()),
          stop_requested ? 1.0 : 0.0};
      if (absl::Status status = group_->AllReduceSum(shared); !status.ok()) {
        progress_->Break();
        return Annotate(status,
                        absl::StrCat("step ", position_.global_step + 1));
      }
      loss_value = shared[0] / static_cast<double>(batch);
      stop_requested = shared[1] > 0;
    }
    position_.epoch_loss_sum += loss_value * batch;
    position_.epoch_examples += batch;
    position_.examples_seen += batch;
    ++position_.batches_consumed;
    ++position_.global_step;
    progress_->Update(position_.batches_consumed, batch,
                      position_.epoch_loss_sum /
                          std::max<int64_t>(1, position_.epoch_examples));

    if (!std::isfinite(loss_value) && !options_.amp) {
      progress_->Break();
      return absl::FailedPreconditionError(absl::StrCat(
          "loss is ", loss_value, " at step ", position_.global_step,
          ": training diverged (lower --lr?)"));
    }
    const bool at_max_steps =
        options_.max_steps > 0 && position_.global_step >= options_.max_steps;
    if (stop_requested || at_max_steps) {
      *stop = true;
      break;
    }
    if (options_.save_every_steps > 0 &&
        position_.global_step % options_.save_every_steps == 0 &&
        position_.batches_consumed < batches_per_epoch_) {
      if (absl::Status status = SaveCheckpoint(false, nullptr, 0, false);
          !status.ok()) {
        progress_->Break();
        return status;
      }
    }
  }
  train_seconds_ += Seconds(Clock::now() - start);
  return absl::OkStatus();
}

void Run::EvaluateBest(TrainSummary* summary) {
  summary->test_accuracy = std::numeric_limits<double>::quiet_NaN();
  summary->test_loss = std::numeric_limits<double>::quiet_NaN();
  if (summary->best_path.empty()) return;
  absl::StatusOr<CheckpointState> best =
      checkpoint::LoadCheckpoint(summary->best_path);
  if (!best.ok()) {
    base::Warn(absl::StrCat("train: cannot load best checkpoint: ",
                            best.status().message()));
    return;
  }
  summary->best_epoch = best->metadata.progress().epoch();
  summary->best_metric = best->metadata.monitored().value();
  if (options_.skip_test) return;
  absl::StatusOr<ArchitectureConfig> config =
      ArchitectureConfigFromMap({best->metadata.architecture_config().begin(),
                                 best->metadata.architecture_config().end()});
  absl::StatusOr<torch::jit::Module> model =
      config.ok() ? BuildArchitecture(best->metadata.architecture(), *config, 0)
                  : absl::StatusOr<torch::jit::Module>(config.status());
  if (model.ok()) {
    absl::StatusOr<checkpoint::LoadReport> report =
        checkpoint::LoadIntoModule(*model, best->tensors, {});
    if (!report.ok()) model = report.status();
  }
  if (!model.ok()) {
    base::Warn(absl::StrCat("train: cannot rebuild best model: ",
                            model.status().message()));
    return;
  }
  absl::StatusOr<IdxDataset> test =
      ReadDataset(paths_.test_images, paths_.test_labels, *config);
  if (!test.ok()) {
    base::Warn(absl::StrCat("train: cannot read the test set: ",
                            test.status().message()));
    return;
  }
  const int64_t count =
      options_.max_test_examples < 0
          ? test->images.count
          : std::min(test->images.count, options_.max_test_examples);
  Split split = MakeSplit(*test, 0, count, *config);
  model->to(device_);
  Evaluation evaluation = Evaluate(*model, split, device_);
  summary->test_accuracy = evaluation.accuracy;
  summary->test_loss = evaluation.loss;
  std::printf(
      "test: accuracy %.4f loss %.4f on %lld images (best checkpoint)\n",
      evaluation.accuracy, evaluation.loss, static_cast<long long>(count));
}

absl::Status Run::JoinProcesses() {
  distributed::LaunchFlags flags;
  if (options_.world_size > 0) {
    flags.world_size = options_.world_size;
    flags.rank = options_.rank;
    flags.master_addr = options_.master_addr;
    if (options_.master_port > 0) flags.master_port = options_.master_port;
  }
  absl::StatusOr<distributed::LaunchEnv> env =
      distributed::LaunchEnvFrom(distributed::ProcessEnvironment(), flags);
  if (!env.ok()) return UsageError(env.status().message());
  if (env->world_size > 1) {
    // One GPU per process: a bare "cuda" (or "auto" finding CUDA) means
    // this node's cuda:LOCAL_RANK; an explicit cuda:N is taken as given
    // (a launcher that sets CUDA_VISIBLE_DEVICES per process).
    if (device_.is_cuda() && !absl::StrContains(options_.device, ':')) {
      const int count = torch_compat::CudaDeviceCount();
      if (env->local_rank >= count) {
        return UsageError(absl::StrCat(
            distributed::Describe(*env), ": local rank ", env->local_rank,
            " needs cuda:", env->local_rank, " but ", count,
            " CUDA device(s) are visible (one GPU per process; or use "
            "--device=cpu)"));
      }
      device_ = torch::Device(torch::kCUDA,
                              static_cast<c10::DeviceIndex>(env->local_rank));
    }
    std::fprintf(stderr, "train: %s on %s: joining\n",
                 distributed::Describe(*env).c_str(), device_.str().c_str());
  }
  distributed::ProcessGroup::Options group_options;
  group_options.timeout = absl::Seconds(options_.dist_timeout_seconds);
  group_options.device = device_;
  absl::StatusOr<std::unique_ptr<distributed::ProcessGroup>> group =
      distributed::ProcessGroup::Connect(*env, group_options);
  if (!group.ok()) return group.status();
  group_ = *std::move(group);
  leader_ = group_->rank() == 0;
  return absl::OkStatus();
}

absl::StatusOr<bool> Run::AgreeToStop(bool stop) {
  std::vector<double> votes = {stop ? 1.0 : 0.0};
  if (absl::Status status = group_->AllReduceSum(votes); !status.ok()) {
    return Annotate(status, "agreeing to stop");
  }
  return votes[0] > 0;
}

absl::StatusOr<Evaluation> Run::Validate() {
  EvaluationSums sums = EvaluateBatches(model_, validation_, device_,
                                        group_->rank(), group_->world_size());
  std::vector<double> shared = {sums.loss_sum, sums.correct, sums.count};
  if (absl::Status status = group_->AllReduceSum(shared); !status.ok()) {
    return Annotate(status, "validating");
  }
  return FromSums({shared[0], shared[1], shared[2]});
}

absl::StatusOr<TrainSummary> Run::Execute() {
  if (absl::Status status = Setup(); !status.ok()) return status;
  // Followers print nothing; the leader speaks for the job.
  progress_ = std::make_unique<ProgressReporter>(
      leader_ ? options_.progress : "none", options_.epochs);
  if (leader_) {
    std::fprintf(stderr,
                 "train: %s on %s, %lld training / %lld validation examples, "
                 "%lld batches of %lld per epoch, %s lr %g (%s), run dir %s\n",
                 architecture_.c_str(), device_.str().c_str(),
                 static_cast<long long>(train_.size()),
                 static_cast<long long>(validation_.size()),
                 static_cast<long long>(batches_per_epoch_),
                 static_cast<long long>(options_.batch_size),
                 options_.optimizer.c_str(), schedule_->base_rate(),
                 schedule_->type().c_str(), options_.run_dir.c_str());
  }
  TrainSummary summary;
  summary.monitor = options_.monitor;
  const Clock::time_point run_start = Clock::now();
  bool stop = false;
  while (position_.epoch < options_.epochs && !stop) {
    if (absl::Status status = TrainEpoch(position_.epoch, &stop);
        !status.ok()) {
      return status;
    }
    if (stop) break;
    const double train_loss = position_.epoch_loss_sum /
                              std::max<int64_t>(1, position_.epoch_examples);
    const double epoch_seconds = progress_->EpochSeconds();
    const int64_t epoch_examples = progress_->EpochExamples();
    progress_->Break();
    absl::StatusOr<Evaluation> validation_or = Validate();
    if (!validation_or.ok()) return validation_or.status();
    const Evaluation validation = *validation_or;
    ++position_.epoch;
    position_.batches_consumed = 0;
    position_.epoch_loss_sum = 0;
    position_.epoch_examples = 0;
    if (leader_) {
      std::fprintf(stderr,
                   "epoch %lld/%lld: train_loss %.4f val_loss %.4f val_acc "
                   "%.4f lr %.4g (%.1f s, %.0f ex/s)\n",
                   static_cast<long long>(position_.epoch),
                   static_cast<long long>(options_.epochs), train_loss,
                   validation.loss, validation.accuracy,
                   schedule_->RateAt(position_.global_step), epoch_seconds,
                   epoch_seconds > 0 ? epoch_examples / epoch_seconds : 0.0);
    }
    nlohmann::json record = {
        {"epoch", position_.epoch},
        {"step", position_.global_step},
        {"examples_seen", position_.examples_seen},
        {"train_loss", train_loss},
        {"val_loss", validation.loss},
        {"val_acc", validation.accuracy},
        {"lr", schedule_->RateAt(position_.global_step)},
        {"epoch_seconds", epoch_seconds},
        {"wall_seconds", Seconds(Clock::now() - run_start)},
    };
    if (absl::Status status = leader_ ? AppendMetrics(options_.run_dir, record)
                                      : absl::OkStatus();
        !status.ok()) {
      return status;
    }
    if (absl::Status status =
            SaveCheckpoint(true, &validation, train_loss, /*wait=*/false);
        !status.ok()) {
      return status;
    }
    absl::StatusOr<bool> agreed = AgreeToStop(StopRequested());
    if (!agreed.ok()) return agreed.status();
    stop = *agreed;
  }
  progress_->Break();
  if (stop && last_saved_step_ != position_.global_step) {
    if (absl::Status status = SaveCheckpoint(false, nullptr, 0, true);
        !status.ok()) {
      return status;
    }
  }
  summary.epochs_completed = position_.epoch;
  summary.global_step = position_.global_step;
  summary.stop_signal =
      stop && stop_signal_ != nullptr ? stop_signal_->load() : 0;
  if (!leader_) {
    std::fprintf(stderr,
                 "train: rank %d of %d done at step %lld (writing its "
                 "checkpoint parts blocked it %.3f s)\n",
                 group_->rank(), group_->world_size(),
                 static_cast<long long>(position_.global_step),
                 checkpoint_seconds_);
    return summary;
  }
  {
    const Clock::time_point start = Clock::now();
    absl::Status status = saver_->Wait();
    if (status.ok()) status = TakeSaveError();
    summary.final_save_wait_seconds = Seconds(Clock::now() - start);
    if (!status.ok()) return Annotate(status, "saving a checkpoint");
  }
  summary.best_path = manager_->BestPath();
  summary.last_path = manager_->LastPath();
  // A signal that arrives after the last epoch does not make a finished run
  // look interrupted (stop_signal is set above only when stopping).
  summary.stopped_at_max_steps =
      stop && summary.stop_signal == 0 && options_.max_steps > 0;
  summary.checkpoint_seconds = checkpoint_seconds_;
  {
    std::lock_guard<std::mutex> lock(save_error_mutex_);
    summary.part_wait_seconds = part_wait_seconds_;
  }
  summary.train_seconds = train_seconds_;

  if (stop) {
    std::fprintf(
        stderr,
        "train: %s after step %lld (epoch %lld, batch %lld/%lld); "
        "saved %s\n"
        "train: resume with: train --run_dir=%s --resume\n",
        summary.stop_signal != 0
            ? absl::StrCat("stopped by signal ", summary.stop_signal).c_str()
            : "stopped at --max_steps",
        static_cast<long long>(position_.global_step),
        static_cast<long long>(position_.epoch + 1),
        static_cast<long long>(position_.batches_consumed),
        static_cast<long long>(batches_per_epoch_), summary.last_path.c_str(),
        options_.run_dir.c_str());
    return summary;
  }
  EvaluateBest(&summary);
  if (!summary.best_path.empty()) {
    std::printf("best: epoch %lld, %s %.4f: %s\n",
                static_cast<long long>(summary.best_epoch),
                summary.monitor.c_str(), summary.best_metric,
                summary.best_path.c_str());
  }
  std::printf("last: %s\n", summary.last_path.c_str());
  std::printf(
      "checkpointing: training blocked %.3f s of %.1f s (%.2f%%); final wait "
      "for the last write %.3f s\n",
      checkpoint_seconds_, train_seconds_,
      train_seconds_ > 0 ? 100.0 * checkpoint_seconds_ / train_seconds_ : 0.0,
      summary.final_save_wait_seconds);
  if (group_->world_size() > 1) {
    std::printf(
        "checkpointing: the saver waited %.3f s in all for the other "
        "processes' parts\n",
        summary.part_wait_seconds);
  }
  std::fflush(stdout);
  return summary;
}

}  // namespace

absl::StatusOr<TrainSummary> Train(const TrainOptions& given,
                                   const std::atomic<int>* stop_signal) {
  TrainOptions options = given;
  if (options.lr <= 0) options.lr = options.optimizer == "adamw" ? 1e-3 : 0.05;
  if (absl::Status status = ValidateOptions(options); !status.ok()) {
    return status;
  }
  try {
    Run run(std::move(options), stop_signal);
    return run.Execute();
  } catch (const c10::Error& error) {
    return absl::InternalError(
        absl::StrCat("LibTorch: ", error.what_without_backtrace()));
  } catch (const std::exception& error) {
    return absl::InternalError(error.what());
  }
}

}  // namespace trainer
