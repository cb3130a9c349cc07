// Real processes on loopback, each a process_group_worker: 1, 2 and 3 ranks
// agree on means, sums and broadcasts; a peer that never comes or leaves
// makes the others fail with one clear line within the timeout, not hang.
#include "tools/distributed/process_group.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "checkpoint/reader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"
#include "tools/base/exit_code.h"
#include "tools/distributed/local_launcher.h"

namespace distributed {
namespace {

using ::testing::HasSubstr;

int FreePort() {
  absl::StatusOr<int> port = FreeLoopbackPort();
  return port.ok() ? *port : 29500;
}

struct Rank {
  pid_t pid;
  std::string output;  // stdout and stderr
};

// Starts rank `rank` of `world` as torchrun would, extra flags appended.
Rank Start(int rank, int world, int port, const std::string& flags) {
  Rank started;
  started.output = test_paths::TempPath(absl::StrCat("rank", rank, "_", port));
  const std::string command = absl::StrCat(
      "RANK=", rank, " WORLD_SIZE=", world, " LOCAL_RANK=", rank,
      " LOCAL_WORLD_SIZE=", world, " MASTER_ADDR=127.0.0.1 MASTER_PORT=", port,
      " exec ", test_paths::Runfile("tools/distributed/process_group_worker"),
      " ", flags, " >", started.output, " 2>&1");
  started.pid = ::fork();
  if (started.pid == 0) {
    ::execl("/bin/sh", "sh", "-c", command.c_str(), nullptr);
    ::_exit(127);
  }
  return started;
}

// Waits for `rank` at most `limit`; kills it and fails the test past that.
int Wait(Rank& rank, std::chrono::seconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (::waitpid(rank.pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(rank.pid, SIGKILL);
      ::waitpid(rank.pid, &status, 0);
      ADD_FAILURE() << "rank still running after " << limit.count() << " s";
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return base::ShellExitCode(status);
}

constexpr char kNoGloo[] =
    "this build has no Gloo (its headers come from Debian's libgloo-dev)";

// A device whose backend this build lacks, or that is not there, is refused
// before anything waits for peers.
TEST(ConnectTest, RefusesADeviceItCannotServe) {
  LaunchEnv env;
  env.rank = 0;
  env.world_size = 2;
  env.master_addr = "127.0.0.1";
  env.master_port = FreePort();
  ProcessGroup::Options options;
  options.timeout = absl::Seconds(1);

  options.device = torch::Device(torch::kCUDA, 99);
  absl::StatusOr<std::unique_ptr<ProcessGroup>> group =
      ProcessGroup::Connect(env, options);
  if (HasNccl()) {
    EXPECT_TRUE(absl::IsFailedPrecondition(group.status())) << group.status();
    EXPECT_THAT(std::string(group.status().message()),
                testing::HasSubstr("cuda:99 is not a CUDA device here"));
  } else {
    EXPECT_TRUE(absl::IsUnimplemented(group.status())) << group.status();
    EXPECT_THAT(std::string(group.status().message()),
                testing::HasSubstr("this build has no NCCL"));
  }

  options.device = torch::Device(c10::DeviceType::Meta);
  group = ProcessGroup::Connect(env, options);
  EXPECT_TRUE(absl::IsInvalidArgument(group.status())) << group.status();

  // One process needs no backend, whatever the device.
  env.world_size = 1;
  options.device = torch::Device(torch::kCUDA, 99);
  EXPECT_TRUE(ProcessGroup::Connect(env, options).ok());
}

class ProcessGroupTest : public testing::TestWithParam<int> {};

// One process needs no Gloo: the same code path, collectives return at once.
TEST_P(ProcessGroupTest, RanksAgreeOnMeansSumsAndBroadcasts) {
  const int world = GetParam();
  if (world > 1 && !HasGloo()) GTEST_SKIP() << kNoGloo;
  const int port = FreePort();
  std::vector<Rank> ranks;
  for (int rank = 0; rank < world; ++rank) {
    ranks.push_back(Start(rank, world, port, ""));
  }
  for (int rank = 0; rank < world; ++rank) {
    EXPECT_EQ(Wait(ranks[rank], std::chrono::seconds(60)), 0)
        << test_paths::ReadFile(ranks[rank].output);
    EXPECT_EQ(test_paths::ReadFile(ranks[rank].output),
              absl::StrCat("ok: rank ", rank, " of ", world, "\n"));
  }
}

INSTANTIATE_TEST_SUITE_P(Worlds, ProcessGroupTest, testing::Values(1, 2, 3));

// Every rank writes its own part of one checkpoint; rank 0 commits it once
// all are reported, and the reader sees every rank's tensor under one
// verified manifest.
TEST(CheckpointPartsTest, RankZeroCommitsEveryRanksPart) {
  if (!HasGloo()) GTEST_SKIP() << kNoGloo;
  const std::string dir = test_paths::EmptyDir("parts3");
  const int port = FreePort();
  std::vector<Rank> ranks;
  for (int rank = 0; rank < 3; ++rank) {
    ranks.push_back(Start(rank, 3, port, "--parts_dir=" + dir));
  }
  for (Rank& rank : ranks) {
    EXPECT_EQ(Wait(rank, std::chrono::seconds(60)), 0)
        << test_paths::ReadFile(rank.output);
  }
  EXPECT_EQ(test_paths::ReadFile(ranks[0].output),
            "ok: rank 0 committed 3 parts\n");
  auto reader = checkpoint::CheckpointReader::Open(dir + "/ckpt");
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_TRUE((*reader)->VerifyAll().ok());
  const checkpoint::proto::Manifest& manifest = (*reader)->manifest();
  ASSERT_EQ(manifest.data_files_size(), 3);
  for (const checkpoint::proto::TensorEntry& entry : manifest.tensors()) {
    std::string bytes(entry.size_bytes(), '\0');
    ASSERT_TRUE((*reader)->ReadTensor(entry, absl::MakeSpan(bytes)).ok());
    const int64_t first = *reinterpret_cast<const int64_t*>(bytes.data());
    EXPECT_EQ(entry.name(), absl::StrCat("rank/", first, "/x"));
    EXPECT_EQ(entry.data_file(), static_cast<uint32_t>(first));
  }
}

// A rank that cannot write its part says so, and rank 0 commits nothing:
// one line naming the rank and the reason, and no part left behind.
TEST(CheckpointPartsTest, ARankThatCannotWriteItsPartStopsTheCommit) {
  if (!HasGloo()) GTEST_SKIP() << kNoGloo;
  const std::string dir = test_paths::EmptyDir("parts_failing");
  const int port = FreePort();
  std::vector<Rank> ranks;
  for (int rank = 0; rank < 3; ++rank) {
    ranks.push_back(
        Start(rank, 3, port, "--parts_dir=" + dir + " --failing_rank=2"));
  }
  EXPECT_EQ(Wait(ranks[0], std::chrono::seconds(60)), 1);
  EXPECT_EQ(Wait(ranks[1], std::chrono::seconds(60)), 0);
  EXPECT_EQ(Wait(ranks[2], std::chrono::seconds(60)), 1);
  const std::string error = test_paths::ReadFile(ranks[0].output);
  EXPECT_THAT(error, HasSubstr("rank 2 could not write its part"));
  EXPECT_THAT(error, HasSubstr("no such directory"));
  EXPECT_EQ(std::count(error.begin(), error.end(), '\n'), 1) << error;
  // Rank 1's reported part was removed with the abandoned checkpoint.
  EXPECT_EQ(test_paths::ReadFile(ranks[1].output),
            "ok: rank 1 wrote its part\n");
  EXPECT_EQ(test_paths::RunOrDie(absl::StrCat("ls -A ", dir)), "");
}

// Runs the worker's data-parallel training on `world` ranks; returns each
// rank's final parameters.
std::vector<std::string> TrainOn(int world) {
  const int port = FreePort();
  std::vector<Rank> ranks;
  std::vector<std::string> outputs;
  for (int rank = 0; rank < world; ++rank) {
    outputs.push_back(test_paths::TempPath(
        absl::StrCat("trained_", world, "_", rank, ".bin")));
    ranks.push_back(Start(rank, world, port, "--train_out=" + outputs.back()));
  }
  std::vector<std::string> parameters;
  for (int rank = 0; rank < world; ++rank) {
    EXPECT_EQ(Wait(ranks[rank], std::chrono::seconds(60)), 0)
        << test_paths::ReadFile(ranks[rank].output);
    parameters.push_back(test_paths::ReadFile(outputs[rank]));
  }
  return parameters;
}

// Two epochs of SGD over uneven global batches (10, 10, 3 examples) split
// across 2 and 3 ranks end at one process's parameters, within float
// rounding (the sums over ranks run in another order), and every rank holds
// exactly the same parameters.
TEST_P(ProcessGroupTest, TrainingStepsMatchOneProcess) {
  const int world = GetParam();
  if (world > 1 && !HasGloo()) GTEST_SKIP() << kNoGloo;
  const std::string alone = TrainOn(1).front();
  ASSERT_FALSE(alone.empty());
  const std::vector<std::string> together = TrainOn(world);
  for (const std::string& parameters : together) {
    EXPECT_EQ(parameters, together.front()) << "ranks disagree";
  }
  ASSERT_EQ(together.front().size(), alone.size());
  const size_t count = alone.size() / sizeof(float);
  const float* expected = reinterpret_cast<const float*>(alone.data());
  const float* actual = reinterpret_cast<const float*>(together.front().data());
  float largest = 0;
  for (size_t i = 0; i < count; ++i) {
    largest = std::max(largest, std::fabs(expected[i] - actual[i]));
  }
  EXPECT_LE(largest, 1e-5f) << "largest difference from one process";
  std::printf("world %d: largest parameter difference from one process %g\n",
              world, largest);
}

class ProcessGroupFailureTest : public testing::Test {
 protected:
  void SetUp() override {
    if (!HasGloo()) GTEST_SKIP() << kNoGloo;
  }
};

TEST_F(ProcessGroupFailureTest, APeerThatNeverComesTimesOutWithOneLine) {
  std::string output;
  // A port found free may be taken (by another test's connection) before
  // the store binds it; c10d then logs its own warning about that, which
  // says nothing of our line. Such a run is made again on another port.
  for (int attempt = 0; attempt < 3; ++attempt) {
    Rank alone = Start(0, 2, FreePort(), "--timeout_ms=2000");
    EXPECT_EQ(Wait(alone, std::chrono::seconds(30)), 1);
    output = test_paths::ReadFile(alone.output);
    if (output.find("Address already in use") == std::string::npos) break;
  }
  EXPECT_THAT(output, HasSubstr("rank 0 of 2 (torchrun)"));
  EXPECT_THAT(output, HasSubstr("not every process joined within 2s"));
  EXPECT_EQ(std::count(output.begin(), output.end(), '\n'), 1) << output;
}

TEST_F(ProcessGroupFailureTest, APeerThatLeavesFailsTheOthers) {
  const int port = FreePort();
  Rank staying = Start(0, 2, port, "--timeout_ms=5000");
  Rank leaving = Start(1, 2, port, "--timeout_ms=5000 --exit_after_join");
  EXPECT_EQ(Wait(leaving, std::chrono::seconds(30)), 3);
  EXPECT_EQ(Wait(staying, std::chrono::seconds(30)), 1);
  const std::string output = test_paths::ReadFile(staying.output);
  EXPECT_THAT(output, HasSubstr("rank 0 of 2 (torchrun)"));
  EXPECT_THAT(output, HasSubstr("another process left the job or crashed"));
  EXPECT_EQ(std::count(output.begin(), output.end(), '\n'), 1) << output;
}

TEST_F(ProcessGroupFailureTest, APeerThatHangsTimesTheOthersOut) {
  const int port = FreePort();
  Rank staying = Start(0, 2, port, "--timeout_ms=3000");
  Rank hanging = Start(1, 2, port, "--timeout_ms=3000 --hang_after_join");
  EXPECT_EQ(Wait(staying, std::chrono::seconds(30)), 1);
  ::kill(hanging.pid, SIGKILL);
  Wait(hanging, std::chrono::seconds(30));
  const std::string output = test_paths::ReadFile(staying.output);
  EXPECT_THAT(output, HasSubstr("another process hangs or is too slow"));
  EXPECT_EQ(std::count(output.begin(), output.end(), '\n'), 1) << output;
}

}  // namespace
}  // namespace distributed
