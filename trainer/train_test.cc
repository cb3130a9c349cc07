// End-to-end tests of the `train` binary in real processes: exact resume
// after a stop at --max_steps, after SIGTERM and after SIGKILL at a random
// moment; best/last follow the trainer's own metrics; usage errors are one
// line and exit code 2.
//
// Every run trains the CNN on 1024 examples (8 batches of 128) for 2 epochs
// with --threads=1, so that the final parameters are bitwise reproducible
// on CPU and comparable through the checkpoint's tensor digest.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "checkpoint/digest.h"
#include "checkpoint/reader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"
#include "tools/base/exit_code.h"
#include "trainer/trainer_state.h"

namespace {

using test_paths::ReadFile;
using test_paths::TempPath;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string TrainBinary() { return test_paths::Runfile("trainer/train"); }

// The small, fast, reproducible configuration every run shares.
std::vector<std::string> SmallRunFlags(const std::string& run_dir) {
  return {"--run_dir=" + run_dir,      "--epochs=2",
          "--max_train_examples=1024", "--max_val_examples=256",
          "--max_test_examples=500",   "--threads=1",
          "--progress=lines"};
}

struct Process {
  pid_t pid = -1;
  std::string stderr_path;
};

Process Start(std::vector<std::string> args, const std::string& log_name) {
  Process process;
  process.stderr_path = TempPath(log_name + ".stderr");
  const std::string stdout_path = TempPath(log_name + ".stdout");
  args.insert(args.begin(), TrainBinary());
  process.pid = fork();
  if (process.pid == 0) {
    const int err =
        open(process.stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int out =
        open(stdout_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(err, STDERR_FILENO);
    dup2(out, STDOUT_FILENO);
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return process;
}

// Exit code, or 128 + signal when killed by a signal.
int Wait(const Process& process) {
  int status = 0;
  waitpid(process.pid, &status, 0);
  return base::ShellExitCode(status);
}

struct Result {
  int exit_code;
  std::string stderr_text;
  std::string stdout_text;
};

Result RunTrain(const std::vector<std::string>& args,
                const std::string& log_name) {
  Process process = Start(args, log_name);
  Result result;
  result.exit_code = Wait(process);
  result.stderr_text = ReadFile(process.stderr_path);
  result.stdout_text = ReadFile(TempPath(log_name + ".stdout"));
  return result;
}

std::vector<std::string> With(std::vector<std::string> args,
                              const std::vector<std::string>& more) {
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

std::string Digest(const std::string& checkpoint_path) {
  auto reader = checkpoint::CheckpointReader::Open(checkpoint_path);
  EXPECT_TRUE(reader.ok()) << reader.status();
  if (!reader.ok()) return "";
  auto digest = checkpoint::TensorDigest(**reader);
  EXPECT_TRUE(digest.ok()) << digest.status();
  return digest.ok() ? *digest : "";
}

checkpoint::proto::Manifest Manifest(const std::string& checkpoint_path) {
  auto reader = checkpoint::CheckpointReader::Open(checkpoint_path);
  EXPECT_TRUE(reader.ok()) << reader.status();
  return reader.ok() ? (*reader)->manifest() : checkpoint::proto::Manifest();
}

trainer::proto::TrainerState TrainerStateOf(
    const checkpoint::proto::Manifest& manifest) {
  auto state =
      trainer::ReadTrainerState(manifest.training_state(), manifest.metadata());
  EXPECT_TRUE(state.ok()) << state.status();
  return state.ok() ? *state : trainer::proto::TrainerState();
}

bool Exists(const std::string& path) {
  struct stat info;
  return stat(path.c_str(), &info) == 0;
}

// The uninterrupted run every interrupted one is compared with.
class TrainTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    straight_dir_ = new std::string(TempPath("straight"));
    Result result = RunTrain(SmallRunFlags(*straight_dir_), "straight");
    ASSERT_EQ(result.exit_code, 0) << result.stderr_text;
    straight_digest_ = new std::string(Digest(*straight_dir_ + "/last"));
    straight_stdout_ = new std::string(result.stdout_text);
  }
  static void TearDownTestSuite() {
    delete straight_dir_;
    delete straight_digest_;
    delete straight_stdout_;
  }

  static std::string* straight_dir_;
  static std::string* straight_digest_;
  static std::string* straight_stdout_;
};

std::string* TrainTest::straight_dir_ = nullptr;
std::string* TrainTest::straight_digest_ = nullptr;
std::string* TrainTest::straight_stdout_ = nullptr;

TEST_F(TrainTest, StraightRunSavesBestAndLastAndReportsTestAccuracy) {
  ASSERT_FALSE(straight_digest_->empty());
  checkpoint::proto::Manifest last = Manifest(*straight_dir_ + "/last");
  EXPECT_EQ(last.metadata().architecture(), "cnn");
  EXPECT_EQ(last.metadata().architecture_config().at("input_shape"), "1,28,28");
  EXPECT_EQ(last.metadata().progress().epoch(), 2);
  EXPECT_EQ(last.metadata().progress().global_step(), 16);
  EXPECT_EQ(last.training_state().optimizer().type(), "sgd");
  const trainer::proto::TrainerState trainer_state = TrainerStateOf(last);
  EXPECT_EQ(trainer_state.data_order().epoch(), 2);
  EXPECT_EQ(trainer_state.data_order().dataset_size(), 1024);
  EXPECT_EQ(trainer_state.scheduler().type(), "cosine");
  EXPECT_EQ(trainer_state.scheduler().step_count(), 16);
  EXPECT_EQ(trainer_state.options().at("lr_schedule"), "cosine");
  for (const char* metric : {"train_loss", "val_loss", "val_acc"}) {
    EXPECT_TRUE(last.metadata().metrics().contains(metric)) << metric;
  }
  EXPECT_THAT(*straight_stdout_, HasSubstr("test: accuracy "));
  EXPECT_THAT(*straight_stdout_, HasSubstr("best: epoch "));
  EXPECT_THAT(*straight_stdout_, HasSubstr("last: " + *straight_dir_ + "/"));
}

TEST_F(TrainTest, BestFollowsTheLowestValidationLossInMetricsJsonl) {
  // One metrics line per epoch; `best` holds the epoch with the lowest
  // val_loss recorded there.
  std::vector<std::string> lines = absl::StrSplit(
      ReadFile(*straight_dir_ + "/metrics.jsonl"), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u);
  double best_loss = 1e300;
  int64_t best_epoch = 0;
  for (const std::string& line : lines) {
    const size_t at = line.find("\"val_loss\":");
    ASSERT_NE(at, std::string::npos) << line;
    const double loss = std::strtod(line.c_str() + at + 11, nullptr);
    const size_t epoch_at = line.find("\"epoch\":");
    const int64_t epoch =
        std::strtoll(line.c_str() + epoch_at + 8, nullptr, 10);
    if (loss < best_loss) {
      best_loss = loss;
      best_epoch = epoch;
    }
  }
  checkpoint::proto::Manifest best = Manifest(*straight_dir_ + "/best");
  EXPECT_EQ(best.metadata().progress().epoch(), best_epoch);
  EXPECT_NEAR(best.metadata().monitored().value(), best_loss, 1e-9);
  EXPECT_EQ(best.metadata().monitored().name(), "val_loss");
}

TEST_F(TrainTest, MonitorValAccPicksTheHighestAccuracy) {
  const std::string run_dir = TempPath("val_acc");
  Result result = RunTrain(
      With(SmallRunFlags(run_dir),
           {"--monitor=val_acc", "--epochs=3", "--model=mlp", "--skip_test"}),
      "val_acc");
  ASSERT_EQ(result.exit_code, 0) << result.stderr_text;
  double best_accuracy = -1;
  std::vector<std::string> lines = absl::StrSplit(
      ReadFile(run_dir + "/metrics.jsonl"), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u);
  for (const std::string& line : lines) {
    const size_t at = line.find("\"val_acc\":");
    best_accuracy =
        std::max(best_accuracy, std::strtod(line.c_str() + at + 10, nullptr));
  }
  checkpoint::proto::Manifest best = Manifest(run_dir + "/best");
  EXPECT_EQ(best.metadata().monitored().mode(),
            checkpoint::proto::MonitoredMetric::MAX);
  EXPECT_DOUBLE_EQ(best.metadata().metrics().at("val_acc"), best_accuracy);
}

TEST_F(TrainTest, StopAtMaxStepsThenResumeIsBitwiseTheStraightRun) {
  const std::string run_dir = TempPath("max_steps");
  // Step 11 is in the middle of the second epoch.
  Result stopped =
      RunTrain(With(SmallRunFlags(run_dir), {"--max_steps=11"}), "max_steps_1");
  ASSERT_EQ(stopped.exit_code, 0) << stopped.stderr_text;
  EXPECT_THAT(stopped.stderr_text, HasSubstr("--resume"));
  checkpoint::proto::Manifest last = Manifest(run_dir + "/last");
  EXPECT_EQ(last.metadata().progress().global_step(), 11);
  EXPECT_EQ(TrainerStateOf(last).data_order().epoch(), 1);
  EXPECT_EQ(TrainerStateOf(last).data_order().batches_consumed(), 3);

  Result resumed =
      RunTrain(With(SmallRunFlags(run_dir), {"--resume"}), "max_steps_2");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.stderr_text;
  EXPECT_THAT(resumed.stderr_text, HasSubstr("resumed from"));
  EXPECT_EQ(Digest(run_dir + "/last"), *straight_digest_);
  // The resumed run reports the same test accuracy as the straight one.
  auto test_line = [](const std::string& text) {
    return text.substr(text.find("test: accuracy"), 40);
  };
  EXPECT_EQ(test_line(resumed.stdout_text), test_line(*straight_stdout_));
  // metrics.jsonl has each epoch once.
  std::vector<std::string> lines = absl::StrSplit(
      ReadFile(run_dir + "/metrics.jsonl"), '\n', absl::SkipEmpty());
  EXPECT_EQ(lines.size(), 2u);
}

TEST_F(TrainTest, SigtermSavesLastAndResumeIsBitwiseTheStraightRun) {
  const std::string run_dir = TempPath("sigterm");
  Process process = Start(SmallRunFlags(run_dir), "sigterm_1");
  // Wait for the first epoch's checkpoint: the process is then training
  // the second epoch.
  for (int i = 0; i < 6000 && !Exists(run_dir + "/last"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(Exists(run_dir + "/last")) << ReadFile(process.stderr_path);
  kill(process.pid, SIGTERM);
  const int exit_code = Wait(process);
  const std::string log = ReadFile(process.stderr_path);
  if (exit_code == 0) {
    GTEST_SKIP() << "training finished before SIGTERM arrived";
  }
  EXPECT_EQ(exit_code, 128 + SIGTERM) << log;
  EXPECT_THAT(log, HasSubstr("stopped by signal 15"));
  EXPECT_THAT(
      log, HasSubstr("resume with: train --run_dir=" + run_dir + " --resume"));
  checkpoint::proto::Manifest last = Manifest(run_dir + "/last");
  EXPECT_GT(last.metadata().progress().global_step(), 8);

  Result resumed =
      RunTrain(With(SmallRunFlags(run_dir), {"--resume"}), "sigterm_2");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.stderr_text;
  EXPECT_EQ(Digest(run_dir + "/last"), *straight_digest_);
}

// Blocks until the `count`-th checkpoint temporary appears in `run_dir`
// (a save has begun) and returns true, or returns false when `pid` exits
// first or nothing happens for a minute. Deterministic where a sleep is
// not: the kill always lands inside the count-th save.
bool WaitForNthSave(const std::string& run_dir, int count, pid_t pid) {
  const int fd = inotify_init1(IN_CLOEXEC);
  if (fd < 0 || inotify_add_watch(fd, run_dir.c_str(), IN_CREATE) < 0) {
    return false;
  }
  int seen = 0;
  alignas(struct inotify_event) char buffer[4096];
  for (int idle_ms = 0; idle_ms < 60000;) {
    struct pollfd ready = {fd, POLLIN, 0};
    if (poll(&ready, 1, 100) <= 0) {
      idle_ms += 100;
      if (waitpid(pid, nullptr, WNOHANG) == pid) break;
      continue;
    }
    const ssize_t length = read(fd, buffer, sizeof(buffer));
    for (ssize_t at = 0; at < length;) {
      const auto* event =
          reinterpret_cast<const struct inotify_event*>(buffer + at);
      const std::string name = event->len > 0 ? event->name : "";
      if (absl::StartsWith(name, ".tmp-") &&
          !absl::StartsWith(name, ".tmp-link-") &&
          !absl::StartsWith(name, ".tmp-delete-") && ++seen == count) {
        close(fd);
        return true;
      }
      at += sizeof(struct inotify_event) + event->len;
    }
  }
  close(fd);
  return false;
}

// SIGKILL while the third save is being written (by a thread of the
// process, or with --snapshot=fork by its forked child, which dies with
// it).
void SigkillDuringTheThirdSave(const std::string& name,
                               const std::vector<std::string>& flags,
                               const std::string& straight_digest) {
  const std::string run_dir = TempPath(name);
  ASSERT_EQ(mkdir(run_dir.c_str(), 0755), 0);
  Process process =
      Start(With(With(SmallRunFlags(run_dir), {"--save_every_steps=2"}), flags),
            name + "_1");
  ASSERT_TRUE(WaitForNthSave(run_dir, 3, process.pid))
      << "the run ended before its third save began";
  kill(process.pid, SIGKILL);
  EXPECT_EQ(Wait(process), 128 + SIGKILL);
  // Whatever `best` and `last` name is complete and verifies.
  for (const char* link : {"best", "last"}) {
    const std::string path = run_dir + "/" + link;
    if (!Exists(path)) continue;
    auto reader = checkpoint::CheckpointReader::Open(path);
    ASSERT_TRUE(reader.ok()) << link << ": " << reader.status();
    EXPECT_TRUE((*reader)->VerifyAll().ok()) << link;
  }
  // And resuming (or starting afresh if nothing was saved yet) ends where
  // the uninterrupted run ended.
  Result resumed = RunTrain(
      With(With(SmallRunFlags(run_dir), {"--resume"}), flags), name + "_2");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.stderr_text;
  EXPECT_EQ(Digest(run_dir + "/last"), straight_digest);
  // No save of the killed process is left behind, finished or not.
  for (const auto& entry : std::filesystem::directory_iterator(run_dir)) {
    EXPECT_FALSE(absl::StartsWith(entry.path().filename().string(), ".tmp-"))
        << entry.path();
  }
}

TEST_F(TrainTest, SigkillDuringTheThirdSaveLeavesLoadableCheckpoints) {
  SigkillDuringTheThirdSave("sigkill", {}, *straight_digest_);
}

// The default saves write from write-protected pages; forked and copied
// snapshots hold the same: the same run ends with the same digest, and a
// kill mid-save resumes to it.
TEST_F(TrainTest, ForkedAndCopiedSnapshotsSaveWhatProtectedOnesSave) {
  for (const std::string mode : {"fork", "copy"}) {
    const std::string run_dir = TempPath(mode);
    Result result =
        RunTrain(With(SmallRunFlags(run_dir),
                      {"--snapshot=" + mode, "--save_every_steps=2"}),
                 mode);
    ASSERT_EQ(result.exit_code, 0) << result.stderr_text;
    EXPECT_EQ(Digest(run_dir + "/last"), *straight_digest_) << mode;
    SigkillDuringTheThirdSave("sigkill_" + mode, {"--snapshot=" + mode},
                              *straight_digest_);
  }
}

// Usage errors: exactly one line "train: error: ..." and exit code 2.
void ExpectUsageError(const std::vector<std::string>& args,
                      const std::string& expected, const std::string& name) {
  Result result = RunTrain(args, name);
  EXPECT_EQ(result.exit_code, 2) << result.stderr_text;
  std::vector<std::string> lines =
      absl::StrSplit(result.stderr_text, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 1u) << result.stderr_text;
  EXPECT_THAT(lines[0], StartsWith("train: error: "));
  EXPECT_THAT(lines[0], HasSubstr(expected));
}

// What the process adds to Train()'s own checks (trainer_test): flag
// parsing, and every usage error as one line with exit code 2.
TEST(TrainUsageTest, BadFlagsAreOneLineAndExitCodeTwo) {
  const std::string run_dir = TempPath("usage");
  ExpectUsageError({"--run_dir=" + run_dir, "--no_such_flag=1"}, "no_such_flag",
                   "unknown_flag");
  ExpectUsageError({"--run_dir=" + run_dir, "--epochs=many"}, "epochs",
                   "malformed_value");
  ExpectUsageError({"--run_dir=" + run_dir, "extra"}, "extra", "positional");
  ExpectUsageError({"--epochs=3"}, "--run_dir", "missing_run_dir");
  ExpectUsageError({"--run_dir=" + run_dir, "--data_dir=/nonexistent"},
                   "dataset not found", "missing_dataset");
  ExpectUsageError({"--run_dir=" + run_dir, "--snapshot=cow"},
                   "--snapshot=cow: expected protect, fork or copy",
                   "bad_snapshot");
}

// Under `bazel run`, --run_dir=runs/a means the caller's runs/a, the same
// directory `bazel run //:ckpt -- ls runs/a` lists.
TEST(TrainPathsTest, RelativeRunDirIsTheCallersUnderBazelRun) {
  const std::string caller = TempPath("caller");
  ASSERT_EQ(mkdir(caller.c_str(), 0755), 0);
  ASSERT_EQ(setenv("BUILD_WORKING_DIRECTORY", caller.c_str(), 1), 0);
  Result result =
      RunTrain({"--run_dir=runs/a", "--epochs=1", "--max_train_examples=64",
                "--max_val_examples=64", "--max_test_examples=64",
                "--batch_size=64", "--threads=1", "--progress=lines"},
               "relative");
  unsetenv("BUILD_WORKING_DIRECTORY");
  ASSERT_EQ(result.exit_code, 0) << result.stderr_text;
  EXPECT_TRUE(Exists(caller + "/runs/a/last")) << result.stdout_text;
}

TEST(TrainUsageTest, HelpDocumentsEveryFlag) {
  Result result = RunTrain({"--help"}, "help");
  EXPECT_EQ(result.exit_code, 0);
  const std::string text = result.stdout_text + result.stderr_text;
  for (const char* flag : {"run_dir",
                           "epochs",
                           "model",
                           "device",
                           "amp",
                           "deterministic",
                           "optimizer",
                           "lr",
                           "momentum",
                           "weight_decay",
                           "batch_size",
                           "lr_schedule",
                           "seed",
                           "threads",
                           "data_dir",
                           "max_train_examples",
                           "max_val_examples",
                           "validation_size",
                           "monitor",
                           "save_every_steps",
                           "keep_last",
                           "keep_top_k",
                           "resume",
                           "resume_from",
                           "progress",
                           "max_steps"}) {
    EXPECT_THAT(text, HasSubstr(absl::StrCat("--", flag, " "))) << flag << "\n"
                                                                << text;
  }
}

}  // namespace
