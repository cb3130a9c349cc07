// train: trains a Fashion-MNIST classifier with checkpoints that resume
// bit-exactly. See trainer/trainer.h for what a run does, `train --help`
// for the flags.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "tools/base/paths.h"
#include "tools/cli/flags.h"
#include "tools/distributed/local_launcher.h"
#include "trainer/trainer.h"

ABSL_FLAG(std::string, run_dir, "",
          "Required. Run directory: checkpoints, best/last links, "
          "metrics.jsonl.");
ABSL_FLAG(int64_t, epochs, 10, "Total number of epochs to train.");
ABSL_FLAG(int, world_size, 0,
          "Processes in a data-parallel job; 0 takes it from torchrun's or "
          "Slurm's environment (one process when neither is there).");
ABSL_FLAG(int, rank, 0, "This process's rank, with --world_size.");
ABSL_FLAG(std::string, master_addr, "",
          "Where the processes meet (default MASTER_ADDR).");
ABSL_FLAG(int, master_port, 0, "Port where they meet (default MASTER_PORT).");
ABSL_FLAG(int, nproc, 1,
          "Run N processes on this machine as one data-parallel job, each "
          "started as torchrun would start it (on CUDA, one GPU each). Not "
          "with --world_size, nor under torchrun or Slurm.");
ABSL_FLAG(int, dist_timeout_s, 300,
          "Seconds to wait for the other processes to join, and for any "
          "step; a process that dies or hangs fails the others after it.");
ABSL_FLAG(std::string, model, "cnn", "Architecture: mlp or cnn.");
ABSL_FLAG(std::string, device, "auto",
          "auto (CUDA if available, else CPU), cpu, cuda or cuda:N.");
ABSL_FLAG(bool, amp, false,
          "Mixed precision (CUDA only): autocast with dynamic loss scaling. "
          "Refused on CPU.");
ABSL_FLAG(bool, deterministic, false,
          "Deterministic algorithms only: cuDNN deterministic, benchmark off, "
          "TF32 off, CUBLAS_WORKSPACE_CONFIG=:4096:8.");
ABSL_FLAG(std::string, optimizer, "sgd", "sgd (with momentum) or adamw.");
ABSL_FLAG(double, lr, 0,
          "Base learning rate; 0 picks 0.05 for sgd, 0.001 for adamw.");
ABSL_FLAG(double, momentum, 0.9, "SGD momentum.");
ABSL_FLAG(double, weight_decay, 5e-4, "Weight decay (decoupled for adamw).");
ABSL_FLAG(int64_t, batch_size, 128, "Training batch size.");
ABSL_FLAG(std::string, lr_schedule, "cosine",
          "cosine (to 0 over the run, per step), step (x0.1 at each third of "
          "the run) or none.");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the initialisation and data order.");
ABSL_FLAG(int32_t, threads, 0,
          "Intra-op CPU threads; 0 keeps LibTorch's default. Bitwise "
          "reproducibility on CPU needs the same value across runs.");
ABSL_FLAG(std::string, data_dir, "",
          "Directory with the Fashion-MNIST IDX files (train-images-idx3-"
          "ubyte[.gz], ...); default: the copy in the runfiles, else "
          "/usr/share/datasets/fashion-mnist.");
ABSL_FLAG(int64_t, max_train_examples, -1,
          "Train on the first N training examples only (-1: all 55,000).");
ABSL_FLAG(int64_t, max_val_examples, -1,
          "Validate on the first N validation examples only (-1: all).");
ABSL_FLAG(int64_t, max_test_examples, -1,
          "Test the best checkpoint on the first N test images (-1: all "
          "10,000).");
ABSL_FLAG(int64_t, validation_size, 5000,
          "The last N of the 60,000 training images form the validation set.");
ABSL_FLAG(std::string, monitor, "val_loss",
          "Metric that picks `best`: val_loss (lower is better) or val_acc "
          "(higher is better).");
ABSL_FLAG(int64_t, save_every_steps, 0,
          "Also save a checkpoint every N optimizer steps inside an epoch "
          "(0: only after each epoch's validation).");
ABSL_FLAG(int32_t, keep_last, -1,
          "Keep the N most recent checkpoints; best and last are always "
          "kept. With --keep_top_k too, a checkpoint either rule keeps "
          "stays. -1 (with --keep_top_k=-1): keep all.");
ABSL_FLAG(int32_t, keep_top_k, -1,
          "Keep the K best checkpoints by --monitor; combines with "
          "--keep_last as above. -1 (with --keep_last=-1): keep all.");
ABSL_FLAG(bool, resume, false,
          "Continue from RUN_DIR's newest valid checkpoint (RUN_DIR/last, or "
          "the newest that verifies); start fresh if there is none.");
ABSL_FLAG(std::string, resume_from, "",
          "Continue from this checkpoint directory; new checkpoints go to "
          "--run_dir.");
ABSL_FLAG(std::string, progress, "auto",
          "auto (a bar when stderr is a terminal, else lines), bar, lines or "
          "none.");
ABSL_FLAG(int64_t, max_steps, 0,
          "Stop after this global step, saving a checkpoint to resume from "
          "(0: no limit).");
ABSL_FLAG(std::string, snapshot, "protect",
          "How a background save takes its snapshot: protect (the state's "
          "pages are write-protected and copied only if training writes them "
          "before they are saved: a page-table update's pause, and extra "
          "memory only for what training changes while it writes; falls back "
          "to fork where userfaultfd is not permitted), fork (a child process "
          "shares the memory copy-on-write; several processes copy instead) "
          "or copy (into staging memory: the pause and the memory grow with "
          "the state).");
ABSL_FLAG(bool, skip_test, false,
          "Do not evaluate the best checkpoint on the test set at the end.");

namespace {

std::atomic<int> stop_signal{0};

void OnStopSignal(int signal_number) { stop_signal.store(signal_number); }

void InstallSignalHandlers() {
  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  // A second Ctrl-C kills at once: the handler resets to the default.
  action.sa_flags = SA_RESETHAND;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

// This program's own file, to start more of it ("" when unknown).
std::string SelfExecutable() {
  char executable[PATH_MAX];
  const ssize_t length =
      readlink("/proc/self/exe", executable, sizeof(executable) - 1);
  if (length <= 0) return "";
  return std::string(executable, static_cast<size_t>(length));
}

// `train --nproc=N ...`: starts N processes of this program with the same
// flags and waits for them; returns the job's exit code.
int LaunchLocalJob(int argc, char** argv, int nproc,
                   const trainer::TrainOptions& options) {
  if (options.world_size > 0) {
    cli::ExitWithError(
        "--nproc starts the job's processes itself: drop --world_size and "
        "--rank");
  }
  for (const char* variable : {"RANK", "WORLD_SIZE"}) {
    if (std::getenv(variable) != nullptr) {
      cli::ExitWithError(absl::StrCat(
          "--nproc=", nproc, " cannot run inside another launcher (", variable,
          " is set): let that launcher start the processes"));
    }
  }
  const char* slurm_tasks = std::getenv("SLURM_NTASKS");
  if (slurm_tasks != nullptr && std::string(slurm_tasks) != "1") {
    cli::ExitWithError(
        absl::StrCat("--nproc=", nproc, " cannot run inside a Slurm job of ",
                     slurm_tasks, " tasks: let srun start the processes"));
  }
  distributed::LocalJob job;
  job.argv.push_back(SelfExecutable());
  if (job.argv[0].empty()) {
    cli::ExitWithError("--nproc: cannot find this program's own file");
  }
  job.argv.insert(job.argv.end(), argv + 1, argv + argc);
  job.argv.push_back("--nproc=1");  // the last occurrence wins
  job.nproc = nproc;
  // The processes end by themselves within their collective timeout once
  // one has failed; the launcher steps in only after that.
  job.grace = absl::Seconds(options.dist_timeout_seconds + 30);
  InstallSignalHandlers();
  absl::StatusOr<int> exit_code = distributed::RunLocalJob(job, &stop_signal);
  if (!exit_code.ok()) {
    cli::ExitWithError(
        absl::StrCat("--nproc=", nproc, ": ", exit_code.status().message()));
  }
  return *exit_code;
}

bool IsDirectory(const std::string& path) {
  struct stat info;
  return stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode);
}

// The Fashion-MNIST files this binary was built with (@fashion_mnist in its
// runfiles), else Debian's installed copy.
std::string DefaultDataDir() {
  std::vector<std::string> candidates;
  for (const char* variable : {"RUNFILES_DIR", "TEST_SRCDIR"}) {
    if (const char* value = std::getenv(variable)) {
      candidates.push_back(absl::StrCat(value, "/fashion_mnist"));
    }
  }
  if (const std::string executable = SelfExecutable(); !executable.empty()) {
    candidates.push_back(absl::StrCat(executable, ".runfiles/fashion_mnist"));
  }
  candidates.push_back("/usr/share/datasets/fashion-mnist");
  for (const std::string& candidate : candidates) {
    if (IsDirectory(candidate)) return candidate;
  }
  return candidates.back();
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> positional = cli::ParseFlagsOrExit(
      argc, argv,
      "Trains a Fashion-MNIST classifier with exact-resume checkpoints.\n"
      "  train --run_dir=DIR [--epochs=N] [--model=cnn|mlp] [flags]\n"
      "  train --run_dir=DIR --resume      # continue after a stop\n"
      "SIGINT/SIGTERM: finish the step, save, exit 130/143.");
  if (!positional.empty()) {
    cli::ExitWithError(absl::StrCat("unexpected argument '", positional[0],
                                    "' (flags only; see --help)"));
  }
  trainer::TrainOptions options;
  // Under `bazel run` relative paths mean the caller's directory, as in
  // `ckpt` and `export`, so `bazel run //:train -- --run_dir=runs/a` and
  // `bazel run //:ckpt -- ls runs/a` name the same directory.
  options.run_dir = base::ResolveUserPath(absl::GetFlag(FLAGS_run_dir));
  options.epochs = absl::GetFlag(FLAGS_epochs);
  options.model = absl::GetFlag(FLAGS_model);
  options.device = absl::GetFlag(FLAGS_device);
  options.amp = absl::GetFlag(FLAGS_amp);
  options.deterministic = absl::GetFlag(FLAGS_deterministic);
  options.optimizer = absl::GetFlag(FLAGS_optimizer);
  options.lr = absl::GetFlag(FLAGS_lr);
  options.momentum = absl::GetFlag(FLAGS_momentum);
  options.weight_decay = absl::GetFlag(FLAGS_weight_decay);
  options.batch_size = absl::GetFlag(FLAGS_batch_size);
  options.lr_schedule = absl::GetFlag(FLAGS_lr_schedule);
  options.seed = absl::GetFlag(FLAGS_seed);
  options.threads = absl::GetFlag(FLAGS_threads);
  options.data_dir = base::ResolveUserPath(absl::GetFlag(FLAGS_data_dir));
  if (options.data_dir.empty()) options.data_dir = DefaultDataDir();
  options.max_train_examples = absl::GetFlag(FLAGS_max_train_examples);
  options.max_val_examples = absl::GetFlag(FLAGS_max_val_examples);
  options.max_test_examples = absl::GetFlag(FLAGS_max_test_examples);
  options.validation_size = absl::GetFlag(FLAGS_validation_size);
  options.monitor = absl::GetFlag(FLAGS_monitor);
  options.save_every_steps = absl::GetFlag(FLAGS_save_every_steps);
  options.keep_last = absl::GetFlag(FLAGS_keep_last);
  options.keep_top_k = absl::GetFlag(FLAGS_keep_top_k);
  options.resume = absl::GetFlag(FLAGS_resume);
  options.resume_from = absl::GetFlag(FLAGS_resume_from);
  options.progress = absl::GetFlag(FLAGS_progress);
  options.max_steps = absl::GetFlag(FLAGS_max_steps);
  options.skip_test = absl::GetFlag(FLAGS_skip_test);
  options.snapshot = absl::GetFlag(FLAGS_snapshot);
  options.world_size = absl::GetFlag(FLAGS_world_size);
  options.rank = absl::GetFlag(FLAGS_rank);
  options.master_addr = absl::GetFlag(FLAGS_master_addr);
  options.master_port = absl::GetFlag(FLAGS_master_port);
  options.dist_timeout_seconds = absl::GetFlag(FLAGS_dist_timeout_s);
  if (absl::Status status = trainer::ValidateOptions(options); !status.ok()) {
    cli::ExitWithError(status.message());
  }
  const int nproc = absl::GetFlag(FLAGS_nproc);
  if (nproc < 1) {
    cli::ExitWithError(absl::StrCat("--nproc=", nproc, ": must be at least 1"));
  }
  if (nproc > 1) return LaunchLocalJob(argc, argv, nproc, options);

  InstallSignalHandlers();
  absl::StatusOr<trainer::TrainSummary> summary =
      trainer::Train(options, &stop_signal);
  if (!summary.ok()) {
    cli::ExitWithError(
        summary.status().message(),
        absl::IsInvalidArgument(summary.status()) ? cli::kUsageExitCode : 1);
  }
  if (summary->stop_signal != 0) return 128 + summary->stop_signal;
  return 0;
}
