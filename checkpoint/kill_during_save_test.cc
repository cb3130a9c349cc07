// Crash safety with real processes: a child saves ~3 MiB checkpoints with
// fsync in a loop through CheckpointWriter + CheckpointManager (retention
// on, so deletions happen too) and is SIGKILLed at random instants, dozens
// of times. After every kill the run directory must open, `last` and `best`
// must resolve to checkpoints that verify, every checkpoint in the run must
// hold exactly the bytes its step writes, and progress never goes back.
//
// The random seed is printed; KILL_DURING_SAVE_SEED=N replays a run.
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "checkpoint/kill_during_save_content.h"
#include "checkpoint/manager.h"
#include "checkpoint/reader.h"
#include "checkpoint/writer.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"

extern char** environ;

namespace checkpoint {
namespace {

namespace fs = std::filesystem;

constexpr int kKills = 40;

std::string ChildBinary() {
  return test_paths::Runfile("checkpoint/kill_during_save_child");
}

int CountTemporaries(const std::string& run_dir) {
  int count = 0;
  for (const auto& item : fs::directory_iterator(run_dir)) {
    if (absl::StartsWith(item.path().filename().string(), kTemporaryPrefix)) {
      ++count;
    }
  }
  return count;
}

std::string LastTarget(const std::string& run_dir) {
  std::error_code error;
  return fs::read_symlink(run_dir + "/last", error).string();
}

// Opens `path` with checksums on and compares every tensor with what its
// step writes. Returns the step (-1 on failure, reported through gtest).
int64_t CheckCheckpoint(const std::string& path) {
  SCOPED_TRACE(path);
  auto reader = CheckpointReader::Open(path);
  EXPECT_TRUE(reader.ok()) << reader.status();
  if (!reader.ok()) return -1;
  absl::Status verified = (*reader)->VerifyAll();
  EXPECT_TRUE(verified.ok()) << verified;
  const proto::Manifest& manifest = (*reader)->manifest();
  int64_t step = manifest.metadata().progress().global_step();
  EXPECT_GT(step, 0);
  EXPECT_EQ(manifest.metadata().monitored().value(),
            kill_during_save::MetricForStep(step));
  std::vector<kill_during_save::TensorSpec> specs = kill_during_save::Tensors();
  EXPECT_EQ(manifest.tensors_size(), static_cast<int>(specs.size()));
  for (size_t index = 0; index < specs.size(); ++index) {
    const proto::TensorEntry* entry = (*reader)->FindTensor(specs[index].name);
    EXPECT_NE(entry, nullptr) << specs[index].name;
    if (entry == nullptr) return -1;
    EXPECT_EQ(entry->dtype(), specs[index].dtype);
    EXPECT_EQ(
        std::vector<int64_t>(entry->shape().begin(), entry->shape().end()),
        specs[index].shape);
    std::string bytes(entry->size_bytes(), '\0');
    absl::Status status = (*reader)->ReadTensor(
        *entry, absl::Span<char>(bytes.data(), bytes.size()));
    EXPECT_TRUE(status.ok()) << status;
    EXPECT_TRUE(bytes ==
                kill_during_save::ExpectedBytes(step, index, bytes.size()))
        << specs[index].name << " does not hold step " << step << "'s bytes";
  }
  return step;
}

// What a kill must leave, checked as the kill left the run directory and
// again after a manager opened (and repaired) it. Updates `after`.
struct AfterKills {
  int64_t last_step = 0;  // never goes back
  int temporaries = 0;    // kills that left a `.tmp-*` behind
  int without_last = 0;   // kills before the first `last`
};

void CheckRunAfterKill(const std::string& run_dir, AfterKills* after) {
  // As the kill left it, before anything repairs the directory: the
  // links resolve to complete checkpoints, or do not exist yet.
  if (CountTemporaries(run_dir) > 0) ++after->temporaries;
  if (fs::exists(fs::symlink_status(run_dir + "/last"))) {
    int64_t last_step = CheckCheckpoint(run_dir + "/last");
    EXPECT_GE(last_step, after->last_step) << "progress went back";
    after->last_step = std::max(after->last_step, last_step);
  } else {
    EXPECT_EQ(after->last_step, 0) << "`last` vanished";
    ++after->without_last;
  }
  if (fs::exists(fs::symlink_status(run_dir + "/best"))) {
    CheckCheckpoint(run_dir + "/best");
  }

  auto manager =
      CheckpointManager::Open(run_dir, kill_during_save::ManagerOptions());
  ASSERT_TRUE(manager.ok()) << manager.status();
  EXPECT_EQ(CountTemporaries(run_dir), 0);
  // Every directory under a real name is a complete checkpoint holding
  // its step's bytes (nothing half-written, nothing half-deleted).
  std::vector<CheckpointEntry> entries = (*manager)->List();
  int directories = 0;
  for (const auto& item : fs::directory_iterator(run_dir)) {
    if (!item.is_symlink() && item.is_directory()) ++directories;
  }
  EXPECT_EQ(directories, static_cast<int>(entries.size()))
      << "a directory in the run is not a valid checkpoint";
  double best_metric = INFINITY;
  for (const CheckpointEntry& entry : entries) {
    EXPECT_EQ(CheckCheckpoint(entry.path), entry.step);
    best_metric = std::min(best_metric, entry.metric);
  }
  if (!entries.empty()) {
    ASSERT_FALSE((*manager)->BestPath().empty());
    int64_t best_step = CheckCheckpoint(run_dir + "/best");
    EXPECT_EQ(kill_during_save::MetricForStep(best_step), best_metric)
        << "best is not the best checkpoint in the run";
  }
}

TEST(KillDuringSaveTest, EveryKillLeavesLoadableBestAndLast) {
  unsigned seed = std::random_device{}();
  if (const char* forced = std::getenv("KILL_DURING_SAVE_SEED")) {
    seed = static_cast<unsigned>(std::strtoul(forced, nullptr, 10));
  }
  std::printf("seed %u (replay with KILL_DURING_SAVE_SEED=%u)\n", seed, seed);
  std::mt19937 random(seed);
  std::uniform_int_distribution<int> delay_ms(2, 60);

  std::string run_dir = test_paths::EmptyDir("kill_run");
  std::string child = ChildBinary();
  ASSERT_EQ(::access(child.c_str(), X_OK), 0) << child;

  AfterKills after;
  for (int kill_index = 0; kill_index < kKills; ++kill_index) {
    SCOPED_TRACE(absl::StrCat("kill #", kill_index));
    std::vector<char*> argv = {const_cast<char*>(child.c_str()),
                               const_cast<char*>(run_dir.c_str()), nullptr};
    pid_t pid = 0;
    ASSERT_EQ(::posix_spawn(&pid, child.c_str(), nullptr, nullptr, argv.data(),
                            environ),
              0);
    // Every fifth child is killed only after it moved `last`, so the run
    // makes progress however slow the machine; the others die at random
    // instants.
    if (kill_index % 5 == 4) {
      std::string before = LastTarget(run_dir);
      auto deadline =
          std::chrono::steady_clock::now() + std::chrono::minutes(1);
      while (LastTarget(run_dir) == before &&
             std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(random)));
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int wait_status = 0;
    ASSERT_EQ(::waitpid(pid, &wait_status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(wait_status) && WTERMSIG(wait_status) == SIGKILL)
        << "the child exited by itself (status " << wait_status
        << "); its stderr above says why";

    CheckRunAfterKill(run_dir, &after);
    if (::testing::Test::HasFailure()) break;
  }
  std::printf(
      "%d kills: %d left a temporary (killed mid-save), %d before `last` "
      "existed; final last step %lld\n",
      kKills, after.temporaries, after.without_last,
      static_cast<long long>(after.last_step));
  // One new `last` per fifth child at least.
  EXPECT_GE(after.last_step, kKills / 5) << "the child made no progress";
}

// Deterministic kill points: for every crash window the writer and the
// manager name (base::StopPoint), a child is stopped there at its first,
// second and fifth save (the fifth also deletes: retention keeps two) and
// SIGKILLed while stopped, so each kill really lands mid-save.
TEST(KillDuringSaveTest, EveryCrashWindowLeavesLoadableBestAndLast) {
  std::string child = ChildBinary();
  for (const char* point :
       {"writer.data_written", "writer.manifest_written", "manager.committed",
        "manager.link_temporary_created", "manager.last_switched",
        "manager.links_switched", "manager.victims_renamed"}) {
    for (int nth : {1, 2, 5}) {
      const std::string where = absl::StrCat(point, ":", nth);
      SCOPED_TRACE(where);
      const std::string run_dir =
          test_paths::EmptyDir(absl::StrCat("window_", point, "_", nth));
      std::vector<std::string> environment = {
          absl::StrCat("CKPT_STOP_AT=", where)};
      std::vector<char*> envp;
      for (std::string& variable : environment) envp.push_back(variable.data());
      for (char** variable = environ; *variable != nullptr; ++variable) {
        if (!absl::StartsWith(*variable, "CKPT_STOP_AT=")) {
          envp.push_back(*variable);
        }
      }
      envp.push_back(nullptr);
      std::vector<char*> argv = {const_cast<char*>(child.c_str()),
                                 const_cast<char*>(run_dir.c_str()), nullptr};
      pid_t pid = 0;
      ASSERT_EQ(::posix_spawn(&pid, child.c_str(), nullptr, nullptr,
                              argv.data(), envp.data()),
                0);
      int wait_status = 0;
      ASSERT_EQ(::waitpid(pid, &wait_status, WUNTRACED), pid);
      ASSERT_TRUE(WIFSTOPPED(wait_status))
          << "the child never reached " << where << " (status " << wait_status
          << ")";
      ASSERT_EQ(::kill(pid, SIGKILL), 0);
      ASSERT_EQ(::waitpid(pid, &wait_status, 0), pid);
      ASSERT_TRUE(WIFSIGNALED(wait_status));
      AfterKills after;
      CheckRunAfterKill(run_dir, &after);
      // Once a save has committed, `last` exists at every instant after.
      if (nth >= 2) {
        EXPECT_EQ(after.without_last, 0) << "`last` vanished";
      }
      if (absl::StartsWith(point, "writer.")) {
        // Killed before its commit: the save in flight left only a
        // temporary, and the previous saves are all there.
        EXPECT_EQ(after.temporaries, 1);
        EXPECT_EQ(after.last_step, nth - 1);
      } else if (std::string(point) != "manager.link_temporary_created") {
        // Committed: the save itself survives (`last` may still name the
        // one before, when the kill came before its switch).
        EXPECT_GE(after.last_step, nth - 1);
      }
      if (::testing::Test::HasFailure()) return;
    }
  }
}

}  // namespace
}  // namespace checkpoint
