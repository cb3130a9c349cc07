#include "export/models/architectures.h"

#include <torch/torch.h>

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace models {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<std::string> ParameterNames(const torch::jit::Module& module) {
  std::vector<std::string> names;
  for (const auto& named : module.named_parameters(/*recurse=*/true)) {
    names.push_back(named.name);
  }
  return names;
}

torch::Tensor Forward(torch::jit::Module& module, const torch::Tensor& input) {
  return module.forward({input}).toTensor();
}

class ArchitectureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ArchitectureTest, ForwardGivesLogitsPerClass) {
  auto model = BuildArchitecture(GetParam(), DefaultArchitectureConfig(), 1);
  ASSERT_TRUE(model.ok()) << model.status();
  torch::Tensor logits = Forward(*model, torch::randn({5, 1, 28, 28}));
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{5, 10}));
  EXPECT_EQ(logits.scalar_type(), torch::kFloat32);
}

TEST_P(ArchitectureTest, ParametersRequireGradAndFollowPyTorchInitBounds) {
  auto model = BuildArchitecture(GetParam(), DefaultArchitectureConfig(), 1);
  ASSERT_TRUE(model.ok()) << model.status();
  for (const auto& named : model->named_parameters(true)) {
    EXPECT_TRUE(named.value.requires_grad()) << named.name;
    const torch::Tensor& weight =
        model->attr(named.name.substr(0, named.name.find('.')))
            .toModule()
            .attr("weight")
            .toTensor();
    const int64_t fan_in = weight.numel() / weight.size(0);
    const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
    EXPECT_LE(named.value.abs().max().item<double>(), bound) << named.name;
    // Uniform over [-bound, bound]: large tensors get near the edges.
    if (named.value.numel() > 1000) {
      EXPECT_GT(named.value.abs().max().item<double>(), 0.9 * bound)
          << named.name;
    }
  }
}

TEST_P(ArchitectureTest, SameSeedSameParametersOtherSeedDifferent) {
  auto a = BuildArchitecture(GetParam(), DefaultArchitectureConfig(), 7);
  auto b = BuildArchitecture(GetParam(), DefaultArchitectureConfig(), 7);
  auto c = BuildArchitecture(GetParam(), DefaultArchitectureConfig(), 8);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  auto pa = a->named_parameters(true);
  auto pb = b->named_parameters(true);
  auto pc = c->named_parameters(true);
  auto ib = pb.begin();
  auto ic = pc.begin();
  for (const auto& named : pa) {
    EXPECT_TRUE(torch::equal(named.value, (*ib).value)) << named.name;
    EXPECT_FALSE(torch::equal(named.value, (*ic).value)) << named.name;
    ++ib;
    ++ic;
  }
}

TEST_P(ArchitectureTest, OneSgdStepLowersTheLoss) {
  auto model = BuildArchitecture(GetParam(), DefaultArchitectureConfig(), 3);
  ASSERT_TRUE(model.ok()) << model.status();
  torch::manual_seed(0);
  torch::Tensor input = torch::randn({16, 1, 28, 28});
  torch::Tensor target = torch::randint(0, 10, {16});
  std::vector<torch::Tensor> parameters;
  for (const auto& p : model->parameters(true)) parameters.push_back(p);
  torch::optim::SGD sgd(parameters, torch::optim::SGDOptions(0.05));
  torch::Tensor before =
      torch::nn::functional::cross_entropy(Forward(*model, input), target);
  sgd.zero_grad();
  before.backward();
  for (const auto& p : parameters) {
    ASSERT_TRUE(p.grad().defined());
    EXPECT_GT(p.grad().abs().sum().item<double>(), 0);
  }
  sgd.step();
  torch::Tensor after =
      torch::nn::functional::cross_entropy(Forward(*model, input), target);
  EXPECT_LT(after.item<double>(), before.item<double>());
}

TEST_P(ArchitectureTest, SurvivesTorchScriptSaveAndLoad) {
  auto model = BuildArchitecture(GetParam(), DefaultArchitectureConfig(), 5);
  ASSERT_TRUE(model.ok()) << model.status();
  std::stringstream archive;
  model->save(archive);
  torch::jit::Module loaded = torch::jit::load(archive);
  EXPECT_EQ(ParameterNames(loaded), ParameterNames(*model));
  torch::Tensor input = torch::randn({3, 1, 28, 28});
  model->eval();
  loaded.eval();
  EXPECT_TRUE(torch::equal(Forward(*model, input), Forward(loaded, input)));
}

INSTANTIATE_TEST_SUITE_P(AllArchitectures, ArchitectureTest,
                         ::testing::Values("cnn", "mlp"));

TEST(ArchitecturesTest, ParameterNamesAreLikePyTorch) {
  auto cnn = BuildArchitecture("cnn", DefaultArchitectureConfig(), 1);
  auto mlp = BuildArchitecture("mlp", DefaultArchitectureConfig(), 1);
  ASSERT_TRUE(cnn.ok() && mlp.ok());
  EXPECT_THAT(
      ParameterNames(*cnn),
      ElementsAre("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                  "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"));
  EXPECT_THAT(ParameterNames(*mlp),
              ElementsAre("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"));
}

TEST(ArchitecturesTest, UnknownNameAndBadConfigAreErrors) {
  auto unknown = BuildArchitecture("resnet", DefaultArchitectureConfig(), 1);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(unknown.status().message()), HasSubstr("resnet"));
  ArchitectureConfig config = DefaultArchitectureConfig();
  config.num_classes = 3;
  EXPECT_FALSE(BuildArchitecture("cnn", config, 1).ok());  // 10 labels
  config = DefaultArchitectureConfig();
  config.hidden_units = 0;
  EXPECT_FALSE(BuildArchitecture("mlp", config, 1).ok());
}

TEST(ArchitecturesTest, ConfigRoundTripsThroughStringMap) {
  ArchitectureConfig config = DefaultArchitectureConfig();
  config.normalization_mean = 0.1 + 0.2;  // not a short decimal
  config.hidden_units = 77;
  config.conv1_channels = 4;
  auto map = ArchitectureConfigToMap(config);
  EXPECT_EQ(map.at("input_shape"), "1,28,28");
  EXPECT_EQ(map.at("num_classes"), "10");
  EXPECT_EQ(map.at("normalization_std"), "0.353");
  auto parsed = ArchitectureConfigFromMap(map);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->normalization_mean, config.normalization_mean);
  EXPECT_EQ(parsed->normalization_std, config.normalization_std);
  EXPECT_EQ(parsed->hidden_units, 77);
  EXPECT_EQ(parsed->conv1_channels, 4);
  EXPECT_EQ(parsed->class_labels, FashionMnistLabels());
  EXPECT_EQ(ArchitectureConfigToMap(*parsed), map);
}

TEST(ArchitecturesTest, ConfigParsingRejectsUnknownKeysAndBadValues) {
  EXPECT_THAT(
      std::string(
          ArchitectureConfigFromMap({{"depth", "3"}}).status().message()),
      HasSubstr("depth"));
  EXPECT_FALSE(ArchitectureConfigFromMap({{"input_shape", "1,28"}}).ok());
  EXPECT_FALSE(ArchitectureConfigFromMap({{"num_classes", "ten"}}).ok());
  EXPECT_FALSE(ArchitectureConfigFromMap({{"normalization_std", "x"}}).ok());
}

}  // namespace
}  // namespace models
