#include "tools/distributed/local_launcher.h"

#include <signal.h>
#include <stdlib.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"
#include "tools/base/files.h"

namespace distributed {
namespace {

// A job of `nproc` shells running `script`.
LocalJob ShellJob(int nproc, const std::string& script) {
  LocalJob job;
  job.argv = {"/bin/sh", "-c", script};
  job.nproc = nproc;
  job.grace = absl::Milliseconds(300);
  return job;
}

std::string Read(const std::string& path) {
  absl::StatusOr<std::string> text = base::ReadRegularFile(path, 1 << 20);
  return text.ok() ? *text : absl::StrCat("<", text.status().ToString(), ">");
}

TEST(LocalLauncherTest, EveryProcessGetsTorchrunsVariables) {
  const std::string dir = test_paths::EmptyDir("variables");
  // An outer torchrun's agent must not leak into the job.
  setenv("TORCHELASTIC_USE_AGENT_STORE", "True", 1);
  setenv("RANK", "5", 1);
  absl::StatusOr<int> exit_code = RunLocalJob(
      ShellJob(3, absl::StrCat("echo \"$RANK $WORLD_SIZE $LOCAL_RANK "
                               "$LOCAL_WORLD_SIZE $GROUP_RANK $MASTER_ADDR "
                               "$CKPT_LAUNCHER ${TORCHELASTIC_USE_AGENT_STORE:-"
                               "unset} $MASTER_PORT\" > ",
                               dir, "/rank.$RANK")),
      nullptr);
  unsetenv("TORCHELASTIC_USE_AGENT_STORE");
  unsetenv("RANK");
  ASSERT_TRUE(exit_code.ok()) << exit_code.status();
  EXPECT_EQ(*exit_code, 0);
  std::string port;
  for (int rank = 0; rank < 3; ++rank) {
    const std::vector<std::string> words =
        absl::StrSplit(Read(absl::StrCat(dir, "/rank.", rank)),
                       absl::ByAnyChar(" \n"), absl::SkipEmpty());
    ASSERT_EQ(words.size(), 9u) << rank;
    EXPECT_EQ(words[0], absl::StrCat(rank));
    EXPECT_EQ(words[1], "3");
    EXPECT_EQ(words[2], absl::StrCat(rank));
    EXPECT_EQ(words[3], "3");
    EXPECT_EQ(words[4], "0");
    EXPECT_EQ(words[5], "127.0.0.1");
    EXPECT_EQ(words[6], "--nproc");
    EXPECT_EQ(words[7], "unset");
    if (rank == 0) port = words[8];
    EXPECT_EQ(words[8], port) << "every process meets on the same port";
  }
}

// The first failure is the job's exit code; a process that goes on
// running gets SIGTERM once the grace period is over.
TEST(LocalLauncherTest, AFailureEndsTheJob) {
  const std::string dir = test_paths::EmptyDir("failure");
  const absl::Time start = absl::Now();
  absl::StatusOr<int> exit_code = RunLocalJob(
      ShellJob(2, absl::StrCat("if [ $RANK = 1 ]; then exit 3; fi; "
                               "trap 'kill $!; echo term > ",
                               dir, "/rank0; exit 143' TERM; sleep 30 & wait")),
      nullptr);
  ASSERT_TRUE(exit_code.ok()) << exit_code.status();
  EXPECT_EQ(*exit_code, 3);
  EXPECT_EQ(Read(dir + "/rank0"), "term\n");
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

// SIGINT or SIGTERM to the launcher reaches every process once, and the
// job ends with the processes' own exit code.
TEST(LocalLauncherTest, AStopSignalIsPassedOnOnce) {
  const std::string dir = test_paths::EmptyDir("stop");
  std::atomic<int> stop_signal{0};
  std::thread stopper([&stop_signal] {
    absl::SleepFor(absl::Milliseconds(500));
    stop_signal.store(SIGTERM);
  });
  absl::StatusOr<int> exit_code =
      RunLocalJob(ShellJob(2, absl::StrCat("trap 'kill $!; echo stop >> ", dir,
                                           "/rank.$RANK; exit 143' TERM; "
                                           "sleep 30 & wait")),
                  &stop_signal);
  stopper.join();
  ASSERT_TRUE(exit_code.ok()) << exit_code.status();
  EXPECT_EQ(*exit_code, 143);
  EXPECT_EQ(Read(dir + "/rank.0"), "stop\n");
  EXPECT_EQ(Read(dir + "/rank.1"), "stop\n");
}

TEST(LocalLauncherTest, AProgramThatCannotStartExits127) {
  LocalJob job;
  job.argv = {"/nonexistent/train"};
  job.nproc = 2;
  absl::StatusOr<int> exit_code = RunLocalJob(job, nullptr);
  ASSERT_TRUE(exit_code.ok()) << exit_code.status();
  EXPECT_EQ(*exit_code, 127);
}

TEST(LocalLauncherTest, RefusesAnEmptyJob) {
  LocalJob job;
  job.nproc = 2;
  EXPECT_TRUE(absl::IsInvalidArgument(RunLocalJob(job, nullptr).status()));
  job.argv = {"/bin/true"};
  job.nproc = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(RunLocalJob(job, nullptr).status()));
}

}  // namespace
}  // namespace distributed
