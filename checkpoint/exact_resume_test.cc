// Exact resume across processes: training N steps straight must give
// bitwise the same parameters as N/2 steps, a checkpoint, and N/2 more
// steps in a fresh process. Runs exact_resume_helper (a real LibTorch
// training loop with dropout) as separate processes and compares the saved
// tensors byte for byte.
#include <sys/wait.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "checkpoint/reader.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"

namespace checkpoint {
namespace {

constexpr int kSteps = 12;

std::string HelperPath() {
  return test_paths::Runfile("checkpoint/exact_resume_helper");
}

int RunHelper(const std::vector<std::string>& arguments) {
  std::vector<std::string> argv_storage = {HelperPath()};
  argv_storage.insert(argv_storage.end(), arguments.begin(), arguments.end());
  std::vector<char*> argv;
  for (std::string& argument : argv_storage) argv.push_back(argument.data());
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    execv(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Every tensor's name, dtype, shape and bytes, in manifest order.
std::vector<std::string> TensorContents(const std::string& path) {
  std::vector<std::string> contents;
  auto reader = CheckpointReader::Open(path);
  EXPECT_TRUE(reader.ok()) << reader.status();
  if (!reader.ok()) return contents;
  for (const proto::TensorEntry& entry : (*reader)->manifest().tensors()) {
    std::string bytes(entry.size_bytes(), '\0');
    EXPECT_TRUE((*reader)->ReadTensor(entry, absl::MakeSpan(bytes)).ok());
    contents.push_back(entry.name() + "/" + std::to_string(entry.dtype()) +
                       "/" + std::to_string(entry.shape_size()) + "/" + bytes);
  }
  return contents;
}

class ExactResumeTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ExactResumeTest, HalvesInTwoProcessesEqualOneStraightRun) {
  const std::string dir = test_paths::TempDir(GetParam());
  const std::vector<std::string> common = {"--dir=" + dir,
                                           "--optimizer=" + GetParam(),
                                           "--steps=" + std::to_string(kSteps)};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.begin(), common.begin(), common.end());
    return extra;
  };
  ASSERT_EQ(RunHelper(with({"--mode=straight"})), 0);
  ASSERT_EQ(RunHelper(with({"--mode=first_half"})), 0);
  ASSERT_EQ(RunHelper(with({"--mode=resume"})), 0);

  std::vector<std::string> straight = TensorContents(dir + "/straight");
  ASSERT_EQ(straight.size(), 4u);  // 2 Linear layers: weights and biases.
  EXPECT_TRUE(straight == TensorContents(dir + "/resumed"))
      << "resumed parameters differ from the straight run";

  // Negative controls: the comparison is sensitive to each restored part.
  ASSERT_EQ(RunHelper(with({"--mode=resume", "--skip=rng"})), 0);
  EXPECT_FALSE(straight == TensorContents(dir + "/resumed-skip-rng"))
      << "dropout masks did not depend on the restored RNG state";
  ASSERT_EQ(RunHelper(with({"--mode=resume", "--skip=optimizer"})), 0);
  EXPECT_FALSE(straight == TensorContents(dir + "/resumed-skip-optimizer"))
      << "training did not depend on the restored optimizer state";
}

INSTANTIATE_TEST_SUITE_P(Optimizers, ExactResumeTest,
                         ::testing::Values("sgd", "adamw"));

TEST(ExactResumeHelperTest, UsageErrorIsExitCodeTwo) {
  EXPECT_EQ(RunHelper({"--mode=straight"}), 2);
}

}  // namespace
}  // namespace checkpoint
