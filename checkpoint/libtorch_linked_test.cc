// Saving over an existing checkpoint and pruning a run directory, in a
// binary linked against LibTorch the way our tools are. PyPI's LibTorch 2.x
// exports its own std::filesystem symbols; linked ahead of the C++ runtime,
// a binary bound to them and crashed (SIGSEGV) in its first remove_all of an
// existing directory, which the manager's pruning does. The test runs in
// both builds and guards the link order in //third_party/libtorch.
#include <filesystem>
#include <string>

#include "checkpoint/manager.h"
#include "checkpoint/tensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"
#include "torch/torch.h"

namespace checkpoint {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;

using test_paths::FreshDir;

CheckpointState StateWithStep(int64_t step) {
  CheckpointState state;
  state.tensors.emplace_back("w",
                             torch::full({4, 4}, static_cast<float>(step)));
  state.metadata.mutable_progress()->set_global_step(step);
  return state;
}

TEST(LibTorchLinkedTest, RemoveAllOfAnExistingDirectory) {
  const std::string dir = FreshDir("remove_all");
  fs::create_directories(dir + "/a/b");
  test_paths::WriteFile(dir + "/a/b/file", "x");
  EXPECT_EQ(fs::remove_all(dir), 4u);
  EXPECT_FALSE(fs::exists(dir));
}

TEST(LibTorchLinkedTest, SavesTwiceToOnePath) {
  const std::string path = FreshDir("twice");
  ASSERT_TRUE(SaveCheckpoint(path, StateWithStep(1)).ok());
  absl::Status second = SaveCheckpoint(path, StateWithStep(2));
  ASSERT_TRUE(second.ok()) << second;
  absl::StatusOr<CheckpointState> loaded = LoadCheckpoint(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->metadata.progress().global_step(), 2);
  ASSERT_EQ(loaded->tensors.size(), 1u);
  EXPECT_TRUE(
      torch::equal(loaded->tensors[0].second, torch::full({4, 4}, 2.f)));
}

TEST(LibTorchLinkedTest, KeepLastPrunesOlderCheckpoints) {
  const std::string run_dir = FreshDir("keep_last");
  CheckpointManager::Options options;
  options.name_template = "step={step}";
  options.keep_last = 1;
  auto manager = CheckpointManager::Open(run_dir, options);
  ASSERT_TRUE(manager.ok()) << manager.status();
  for (int64_t step = 1; step <= 3; ++step) {
    CheckpointState state = StateWithStep(step);
    absl::StatusOr<std::string> path = (*manager)->PathForNew(state.metadata);
    ASSERT_TRUE(path.ok()) << path.status();
    ASSERT_TRUE(SaveCheckpoint(*path, state).ok());
    absl::Status committed = (*manager)->OnCommitted(*path);
    ASSERT_TRUE(committed.ok()) << committed;
  }
  std::vector<std::string> names;
  for (const fs::directory_entry& entry : fs::directory_iterator(run_dir)) {
    if (!entry.is_symlink()) names.push_back(entry.path().filename().string());
  }
  EXPECT_THAT(names, ElementsAre("step=3"));
}

}  // namespace
}  // namespace checkpoint
