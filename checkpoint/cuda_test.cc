// Checkpoints of GPU tensors: a checkpoint saved from CUDA loads on a CPU
// box and back onto the GPU with the same bytes, asynchronously saved state
// included, and the CUDA RNG state round-trips. Tagged "gpu": without a
// CUDA device every test reports "skipped: no CUDA device" (the suite runs
// them on every build; testing/gpu/gpu_check.sh covers the binaries).
#include <string>

#include "c10/core/StreamGuard.h"
#include "c10/core/impl/VirtualGuardImpl.h"
#include "checkpoint/reader.h"
#include "checkpoint/tensors.h"
#include "checkpoint/training_state.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"
#include "torch/torch.h"

namespace checkpoint {
namespace {

class CudaCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "skipped: no CUDA device";
  }

  static CheckpointState CudaState() {
    torch::manual_seed(3);
    CheckpointState state;
    const torch::Device cuda(torch::kCUDA, 0);
    state.tensors.emplace_back("w", torch::randn({64, 33}, cuda));
    state.tensors.emplace_back("h", torch::randn({7}, cuda).to(torch::kHalf));
    state.tensors.emplace_back("i", torch::arange(10, cuda));
    return state;
  }
};

void ExpectSameTensors(const NamedTensors& expected, const NamedTensors& got,
                       torch::Device device) {
  ASSERT_EQ(expected.size(), got.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(expected[i].first, got[i].first);
    EXPECT_EQ(got[i].second.device(), device) << got[i].first;
    EXPECT_TRUE(torch::equal(expected[i].second.cpu(), got[i].second.cpu()))
        << got[i].first;
  }
}

TEST_F(CudaCheckpointTest, GpuCheckpointLoadsOnCpuAndGpu) {
  const std::string path = test_paths::FreshDir("cuda_sync");
  CheckpointState state = CudaState();
  ASSERT_TRUE(SaveCheckpoint(path, state).ok());
  absl::StatusOr<CheckpointState> on_cpu = LoadCheckpoint(path);
  ASSERT_TRUE(on_cpu.ok()) << on_cpu.status();
  ExpectSameTensors(state.tensors, on_cpu->tensors, torch::kCPU);
  EXPECT_FALSE(on_cpu->metadata.cuda_version().empty());

  LoadOptions options;
  options.device = torch::Device(torch::kCUDA, 0);
  absl::StatusOr<CheckpointState> on_gpu = LoadCheckpoint(path, options);
  ASSERT_TRUE(on_gpu.ok()) << on_gpu.status();
  ExpectSameTensors(state.tensors, on_gpu->tensors, options.device);
}

TEST_F(CudaCheckpointTest, AsyncSaveSnapshotsGpuTensors) {
  const std::string path = test_paths::FreshDir("cuda_async");
  CheckpointState state = CudaState();
  CheckpointState expected;
  for (const auto& [name, tensor] : state.tensors) {
    expected.tensors.emplace_back(name, tensor.clone());
  }
  AsyncCheckpointSaver saver;
  ASSERT_TRUE(saver.SaveAsync(path, state).ok());
  // Training goes on changing its tensors while the save is written.
  for (auto& entry : state.tensors) entry.second.fill_(0);
  ASSERT_TRUE(saver.Wait().ok());
  absl::StatusOr<CheckpointState> loaded = LoadCheckpoint(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectSameTensors(expected.tensors, loaded->tensors, torch::kCPU);
}

// The caller's work runs on a stream of its own (not the default one):
// the save still holds the values queued before SaveAsync, not the ones
// queued after it, and large tensors go through the same path. Each mode
// records the tensors' device.
TEST_F(CudaCheckpointTest, AsyncSaveOrdersWithTheCallersStream) {
  const torch::Device cuda(torch::kCUDA, 0);
  const c10::impl::VirtualGuardImpl guard_impl(c10::DeviceType::CUDA);
  const c10::StreamGuard on_side_stream(
      guard_impl.getStreamFromGlobalPool(cuda));
  CheckpointState state;
  state.tensors.emplace_back("big", torch::zeros({16 << 20}, cuda));
  state.tensors.emplace_back("small", torch::zeros({100}, cuda));
  // Queued on the side stream before the call: must be in the checkpoint.
  for (auto& entry : state.tensors) entry.second.add_(3);
  for (SnapshotMode mode : {SnapshotMode::kWriteProtect, SnapshotMode::kCopy,
                            SnapshotMode::kFork}) {
    const std::string path = test_paths::FreshDir(
        "cuda_stream_" + std::to_string(static_cast<int>(mode)));
    AsyncCheckpointSaver saver({}, true, mode);
    ASSERT_TRUE(saver.SaveAsync(path, state).ok());
    // Queued after the call: must not be.
    for (auto& entry : state.tensors) entry.second.mul_(5);
    ASSERT_TRUE(saver.Wait().ok());
    absl::StatusOr<CheckpointState> loaded = LoadCheckpoint(path);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    for (const auto& [name, tensor] : loaded->tensors) {
      EXPECT_TRUE(torch::equal(tensor, torch::full_like(tensor, 3)))
          << name << " mode " << static_cast<int>(mode);
    }
    // Every mode records where the tensors were, copied to CPU or not.
    absl::StatusOr<std::unique_ptr<CheckpointReader>> reader =
        CheckpointReader::Open(path);
    ASSERT_TRUE(reader.ok()) << reader.status();
    for (const proto::TensorEntry& entry : (*reader)->manifest().tensors()) {
      EXPECT_EQ(entry.saved_device(), "cuda:0")
          << entry.name() << " mode " << static_cast<int>(mode);
    }
    for (auto& entry : state.tensors) entry.second.fill_(3);
  }
}

// Many small GPU tensors, copied to the host in groups (by device and
// dtype), each group's copy queued before the previous one is written, with
// the groups broken by other dtypes, an empty tensor, a transposed one, a
// large one and a CPU one: every tensor keeps its own bytes.
TEST_F(CudaCheckpointTest, SmallGpuTensorsSaveInGroups) {
  const torch::Device cuda(torch::kCUDA, 0);
  torch::manual_seed(5);
  CheckpointState state;
  for (int i = 0; i < 3000; ++i) {
    torch::Tensor tensor = torch::randn({1 + i % 37}, cuda);
    if (i % 500 == 7) tensor = tensor.to(torch::kHalf);
    if (i % 700 == 3) tensor = torch::arange(i % 11, cuda);
    state.tensors.emplace_back("t" + std::to_string(i), tensor);
  }
  state.tensors.emplace_back("empty", torch::zeros({0}, cuda));
  state.tensors.emplace_back("transposed", torch::randn({9, 4}, cuda).t());
  state.tensors.emplace_back("large", torch::randn({1 << 20}, cuda));
  state.tensors.emplace_back("on_cpu", torch::randn({5}));
  state.tensors.emplace_back("after", torch::randn({5}, cuda));
  const std::string path = test_paths::FreshDir("cuda_groups");
  ASSERT_TRUE(SaveCheckpoint(path, state).ok());
  absl::StatusOr<CheckpointState> loaded = LoadCheckpoint(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectSameTensors(state.tensors, loaded->tensors, torch::kCPU);
}

// Loading onto a GPU goes through pinned batches (small tensors), whole
// staging (a medium one) and chunks (a tensor over 64 MiB), on the caller's
// stream: what the caller queues after the load sees the loaded values.
TEST_F(CudaCheckpointTest, LoadsOntoTheGpuOnTheCallersStream) {
  torch::manual_seed(7);
  CheckpointState state;
  for (int i = 0; i < 2000; ++i) {
    torch::Tensor tensor = torch::randn({1 + i % 53});
    if (i % 300 == 11) tensor = torch::arange(i % 13);
    if (i % 400 == 5) tensor = tensor.to(torch::kHalf);
    state.tensors.emplace_back("t" + std::to_string(i), tensor);
  }
  state.tensors.emplace_back("empty", torch::zeros({0}));
  state.tensors.emplace_back("medium", torch::randn({2 << 20}));
  state.tensors.emplace_back("huge", torch::randn({17 << 20}));  // 68 MiB
  state.tensors.emplace_back("optimizer/step", torch::ones({3}));
  const std::string path = test_paths::FreshDir("cuda_load");
  ASSERT_TRUE(SaveCheckpoint(path, state).ok());

  const torch::Device cuda(torch::kCUDA, 0);
  const c10::impl::VirtualGuardImpl guard_impl(c10::DeviceType::CUDA);
  const c10::StreamGuard on_side_stream(
      guard_impl.getStreamFromGlobalPool(cuda));
  LoadOptions options;
  options.device = cuda;
  absl::StatusOr<CheckpointState> loaded = LoadCheckpoint(path, options);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  // Queued on the side stream after the load, copied back on it.
  NamedTensors doubled;
  for (const auto& [name, tensor] : loaded->tensors) {
    doubled.emplace_back(name, (tensor * 2).cpu());
  }
  ASSERT_EQ(doubled.size(), state.tensors.size());
  for (size_t i = 0; i < doubled.size(); ++i) {
    EXPECT_EQ(doubled[i].first, state.tensors[i].first);
    EXPECT_EQ(loaded->tensors[i].second.device(), cuda);
    EXPECT_TRUE(torch::equal(doubled[i].second, state.tensors[i].second * 2))
        << doubled[i].first;
  }

  // Floating model tensors cast on the device; the rest keep their dtype.
  options.dtype = torch::kHalf;
  loaded = LoadCheckpoint(path, options);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  for (size_t i = 0; i < loaded->tensors.size(); ++i) {
    const auto& [name, tensor] = loaded->tensors[i];
    const torch::Tensor& saved = state.tensors[i].second;
    const bool cast = torch::isFloatingType(saved.scalar_type()) &&
                      !IsTrainingStateName(name);
    EXPECT_EQ(tensor.scalar_type(), cast ? torch::kHalf : saved.scalar_type())
        << name;
    EXPECT_TRUE(
        torch::equal(tensor.cpu(), cast ? saved.to(torch::kHalf) : saved))
        << name;
  }
}

// A damaged byte in a batch of small tensors, or in a chunked one, is
// found on the way to the GPU and named.
TEST_F(CudaCheckpointTest, DamageIsFoundOnTheWayToTheGpu) {
  CheckpointState state;
  for (int i = 0; i < 100; ++i) {
    state.tensors.emplace_back("t" + std::to_string(i), torch::randn({100}));
  }
  state.tensors.emplace_back("huge", torch::randn({17 << 20}));
  for (const char* damaged : {"t42", "huge"}) {
    const std::string path =
        test_paths::FreshDir(std::string("cuda_damage_") + damaged);
    ASSERT_TRUE(SaveCheckpoint(path, state).ok());
    absl::StatusOr<std::unique_ptr<CheckpointReader>> reader =
        CheckpointReader::Open(path);
    ASSERT_TRUE(reader.ok()) << reader.status();
    const proto::Manifest manifest = (*reader)->manifest();
    reader->reset();
    for (const proto::TensorEntry& entry : manifest.tensors()) {
      if (entry.name() != damaged) continue;
      test_paths::FlipByte(
          path + "/" + manifest.data_files(entry.data_file()).name(),
          entry.offset() + entry.size_bytes() / 2, 0x10);
    }
    LoadOptions options;
    options.device = torch::Device(torch::kCUDA, 0);
    absl::StatusOr<CheckpointState> loaded = LoadCheckpoint(path, options);
    EXPECT_TRUE(absl::IsDataLoss(loaded.status())) << loaded.status();
    EXPECT_NE(loaded.status().message().find(damaged), std::string::npos)
        << loaded.status();
  }
}

TEST_F(CudaCheckpointTest, CudaRngStateRoundTrips) {
  proto::RngState rng;
  NamedTensors tensors;
  ASSERT_TRUE(CaptureRngState(&rng, &tensors).ok());
  const torch::Device cuda(torch::kCUDA, 0);
  torch::Tensor first = torch::rand({16}, cuda);
  absl::Status restored = RestoreRngState(rng, tensors);
  ASSERT_TRUE(restored.ok()) << restored;
  EXPECT_TRUE(torch::equal(first, torch::rand({16}, cuda)));
}

}  // namespace
}  // namespace checkpoint
