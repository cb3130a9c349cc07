#include "export/torchscript.h"

#include <dirent.h>
#include <sys/stat.h>
#include <torch/csrc/jit/mobile/import.h>
#include <torch/csrc/jit/mobile/module.h>
#include <torch/script.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "testing/test_paths.h"

namespace model_export {
namespace {

std::vector<std::string> ListDirectory(const std::string& directory) {
  std::vector<std::string> names;
  DIR* dir = ::opendir(directory.c_str());
  if (dir == nullptr) return names;
  while (dirent* entry = ::readdir(dir)) {
    std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(dir);
  return names;
}

// A small conv + linear network with trained-looking (random) weights.
torch::jit::Module SmallNetwork() {
  torch::manual_seed(7);
  torch::jit::Module module("SmallNetwork");
  module.register_attribute("training", c10::BoolType::get(), true);
  module.register_parameter("conv_weight", torch::randn({4, 1, 3, 3}), false);
  module.register_parameter("conv_bias", torch::randn({4}), false);
  module.register_parameter("fc_weight", torch::randn({3, 4 * 6 * 6}), false);
  module.register_parameter("fc_bias", torch::randn({3}), false);
  module.define(R"JIT(
    def forward(self, x):
        y = torch.relu(torch.conv2d(x, self.conv_weight, self.conv_bias))
        y = torch.dropout(y, 0.5, self.training)
        return torch.linear(y.flatten(1), self.fc_weight, self.fc_bias)
  )JIT");
  return module;
}

const std::vector<int64_t> kExampleShape = {1, 8, 8};

TEST(MakeProbeBatchTest, IsDeterministicPerSeed) {
  ParityProbe probe;
  torch::Tensor first = MakeProbeBatch(kExampleShape, probe);
  EXPECT_EQ(first.sizes(), (std::vector<int64_t>{8, 1, 8, 8}));
  EXPECT_TRUE(first.equal(MakeProbeBatch(kExampleShape, probe)));
  probe.seed = 1;
  EXPECT_FALSE(first.equal(MakeProbeBatch(kExampleShape, probe)));
}

TEST(MaxAbsDifferenceTest, SeesShapesNansAndInfinities) {
  torch::Tensor a = torch::tensor({1.0f, 2.0f, NAN});
  EXPECT_EQ(MaxAbsDifference(a, a), 0);
  EXPECT_FLOAT_EQ(MaxAbsDifference(a, torch::tensor({1.0f, 2.5f, NAN})), 0.5);
  EXPECT_TRUE(std::isinf(MaxAbsDifference(a, torch::tensor({1.0f, 2.0f}))));
  EXPECT_TRUE(
      std::isinf(MaxAbsDifference(a, torch::tensor({1.0f, 2.0f, 0.0f}))));
  torch::Tensor infinite = torch::tensor({INFINITY, 1.0f});
  EXPECT_EQ(MaxAbsDifference(infinite, infinite), 0);
  EXPECT_TRUE(
      std::isinf(MaxAbsDifference(infinite, torch::tensor({-INFINITY, 1.0f}))));
  EXPECT_TRUE(std::isinf(
      MaxAbsDifference(torch::tensor({1.0f}), torch::tensor({INFINITY}))));
  EXPECT_TRUE(std::isinf(
      MaxAbsDifference(torch::tensor({INFINITY}), torch::tensor({1.0f}))));
}

TEST(FreezeWithParityCheckTest, FrozenModuleMatchesTrainedBitForBit) {
  torch::jit::Module trained = SmallNetwork();
  trained.train();
  absl::StatusOr<FrozenModule> frozen =
      FreezeWithParityCheck(trained, kExampleShape, ParityProbe{});
  ASSERT_TRUE(frozen.ok()) << frozen.status();
  EXPECT_EQ(frozen->max_abs_difference, 0);
  EXPECT_FALSE(trained.is_training()) << "the trained module is put in eval";
  // Parameters became constants: the frozen module has none left.
  EXPECT_EQ(frozen->module.parameters().size(), 0u);
  torch::Tensor input = torch::randn({3, 1, 8, 8});
  EXPECT_TRUE(trained.forward({input}).toTensor().equal(
      frozen->module.forward({input}).toTensor()));
}

TEST(FreezeWithParityCheckTest, FailsWhenFrozenOutputsDiffer) {
  torch::jit::Module noisy("Noisy");
  noisy.define(R"JIT(
    def forward(self, x):
        return x + torch.rand_like(x)
  )JIT");
  absl::StatusOr<FrozenModule> frozen =
      FreezeWithParityCheck(noisy, kExampleShape, ParityProbe{});
  ASSERT_FALSE(frozen.ok());
  EXPECT_NE(frozen.status().message().find("max abs difference"),
            std::string::npos)
      << frozen.status();
}

TEST(FreezeWithParityCheckTest, RejectsNonTensorOutputs) {
  torch::jit::Module pair("Pair");
  pair.define(R"JIT(
    def forward(self, x):
        return (x, x)
  )JIT");
  absl::StatusOr<FrozenModule> frozen =
      FreezeWithParityCheck(pair, kExampleShape, ParityProbe{});
  EXPECT_EQ(frozen.status().code(), absl::StatusCode::kInvalidArgument)
      << frozen.status();
}

TEST(WriteModelFilesTest, WritesLoadableFilesWithTheExtraFile) {
  std::string directory = test_paths::TempDir("write");
  absl::StatusOr<FrozenModule> frozen =
      FreezeWithParityCheck(SmallNetwork(), kExampleShape, ParityProbe{});
  ASSERT_TRUE(frozen.ok()) << frozen.status();
  ModelFilePaths paths{directory + "/model.pt", directory + "/model.ptl"};
  ASSERT_TRUE(WriteModelFiles(*frozen, paths, {{"metadata.json", "{\"a\":1}"}},
                              ParityProbe{})
                  .ok());

  std::vector<std::string> names = ListDirectory(directory);
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"model.pt", "model.ptl"}));

  torch::Tensor input = torch::randn({2, 1, 8, 8});
  torch::Tensor expected = frozen->module.forward({input}).toTensor();
  torch::jit::ExtraFilesMap extra = {{"metadata.json", ""}};
  torch::jit::Module loaded =
      torch::jit::load(paths.torchscript_path, c10::nullopt, extra);
  EXPECT_EQ(extra["metadata.json"], "{\"a\":1}");
  EXPECT_TRUE(loaded.forward({input}).toTensor().equal(expected));

  torch::jit::ExtraFilesMap lite_extra = {{"metadata.json", ""}};
  torch::jit::mobile::Module mobile =
      torch::jit::_load_for_mobile(paths.lite_path, c10::nullopt, lite_extra);
  EXPECT_EQ(lite_extra["metadata.json"], "{\"a\":1}");
  EXPECT_TRUE(mobile.forward({input}).toTensor().equal(expected));

  absl::StatusOr<std::string> metadata =
      ReadExtraFile(paths.lite_path, "metadata.json");
  ASSERT_TRUE(metadata.ok()) << metadata.status();
  EXPECT_EQ(*metadata, "{\"a\":1}");
}

TEST(WriteModelFilesTest, ReplacesAnExistingFile) {
  std::string directory = test_paths::TempDir("replace");
  std::string path = directory + "/model.pt";
  test_paths::WriteFile(path, "old");
  absl::StatusOr<FrozenModule> frozen =
      FreezeWithParityCheck(SmallNetwork(), kExampleShape, ParityProbe{});
  ASSERT_TRUE(frozen.ok()) << frozen.status();
  ASSERT_TRUE(WriteModelFiles(*frozen, {path, ""}, {}, ParityProbe{}).ok());
  EXPECT_NO_THROW(torch::jit::load(path));
  EXPECT_EQ(ListDirectory(directory).size(), 1u);
}

TEST(WriteModelFilesTest, UnwritableDestinationLeavesNothing) {
  std::string directory = test_paths::TempDir("unwritable");
  absl::StatusOr<FrozenModule> frozen =
      FreezeWithParityCheck(SmallNetwork(), kExampleShape, ParityProbe{});
  ASSERT_TRUE(frozen.ok()) << frozen.status();

  absl::Status missing_directory = WriteModelFiles(
      *frozen, {directory + "/no/such/dir/model.pt", ""}, {}, ParityProbe{});
  EXPECT_EQ(missing_directory.code(), absl::StatusCode::kNotFound)
      << missing_directory;

  // The .pt could be written but the .ptl cannot: neither appears.
  absl::Status missing_lite_directory = WriteModelFiles(
      *frozen, {directory + "/model.pt", directory + "/no/model.ptl"}, {},
      ParityProbe{});
  EXPECT_FALSE(missing_lite_directory.ok());

  ::mkdir((directory + "/model.pt").c_str(), 0755);
  absl::Status is_directory = WriteModelFiles(
      *frozen, {directory + "/model.pt", ""}, {}, ParityProbe{});
  EXPECT_EQ(is_directory.code(), absl::StatusCode::kFailedPrecondition)
      << is_directory;
  ::rmdir((directory + "/model.pt").c_str());

  EXPECT_TRUE(ListDirectory(directory).empty());
}

TEST(ReadExtraFileTest, ExplainsWhatIsWrong) {
  std::string directory = test_paths::TempDir("read_extra");
  EXPECT_EQ(
      ReadExtraFile(directory + "/absent.pt", "metadata.json").status().code(),
      absl::StatusCode::kNotFound);
  test_paths::WriteFile(directory + "/garbage.pt", "not a zip archive");
  EXPECT_EQ(
      ReadExtraFile(directory + "/garbage.pt", "metadata.json").status().code(),
      absl::StatusCode::kDataLoss);

  absl::StatusOr<FrozenModule> frozen =
      FreezeWithParityCheck(SmallNetwork(), kExampleShape, ParityProbe{});
  ASSERT_TRUE(frozen.ok()) << frozen.status();
  ASSERT_TRUE(
      WriteModelFiles(*frozen, {directory + "/bare.pt", ""}, {}, ParityProbe{})
          .ok());
  EXPECT_EQ(
      ReadExtraFile(directory + "/bare.pt", "metadata.json").status().code(),
      absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace model_export
