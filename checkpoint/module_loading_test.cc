#include "checkpoint/module_loading.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "torch/script.h"
#include "torch/torch.h"

namespace checkpoint {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

struct NetImpl : torch::nn::Module {
  NetImpl() {
    fc1 = register_module("fc1", torch::nn::Linear(4, 3));
    norm = register_module("norm", torch::nn::BatchNorm1d(3));
    fc2 = register_module("fc2", torch::nn::Linear(3, 2));
  }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  torch::nn::BatchNorm1d norm{nullptr};
};
TORCH_MODULE(Net);

// Source tensors with the module's names and distinct values.
NamedTensors FilledLike(const NamedTensors& tensors, const std::string& prefix,
                        double base) {
  NamedTensors result;
  for (size_t i = 0; i < tensors.size(); ++i) {
    torch::Tensor value = torch::full(tensors[i].second.sizes(), base + i,
                                      tensors[i].second.options());
    result.emplace_back(prefix + tensors[i].first, value.detach().clone());
  }
  return result;
}

TEST(ModuleLoadingTest, NamesParametersThenBuffers) {
  Net net;
  NamedTensors named = NamedParametersAndBuffers(*net);
  std::vector<std::string> names;
  for (const auto& [name, tensor] : named) names.push_back(name);
  EXPECT_THAT(names,
              ElementsAre("fc1.weight", "fc1.bias", "norm.weight", "norm.bias",
                          "fc2.weight", "fc2.bias", "norm.running_mean",
                          "norm.running_var", "norm.num_batches_tracked"));
  // Aliases, not copies.
  EXPECT_TRUE(named[0].second.is_same(net->fc1->weight));
}

TEST(ModuleLoadingTest, StrictLoadCopiesEveryValueInPlace) {
  Net net;
  torch::Tensor weight_before = net->fc1->weight;
  NamedTensors source = FilledLike(NamedParametersAndBuffers(*net), "", 1.0);
  source.emplace_back("optimizer/exp_avg/fc1.weight", torch::zeros({7}));
  source.emplace_back("rng/cpu", torch::zeros({5}, torch::kUInt8));

  absl::StatusOr<LoadReport> report = LoadIntoModule(*net, source, {});
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->loaded.size(), 9u);
  EXPECT_TRUE(report->missing.empty());
  EXPECT_TRUE(report->unexpected.empty());
  // Same tensor object (optimizers holding it stay valid), new values.
  EXPECT_TRUE(net->fc1->weight.is_same(weight_before));
  EXPECT_TRUE(torch::equal(net->fc1->weight, torch::full({3, 4}, 1.0)));
  EXPECT_TRUE(torch::equal(net->fc2->bias, torch::full({2}, 6.0)));
  EXPECT_EQ(net->norm->num_batches_tracked.item<int64_t>(), 9);
  EXPECT_EQ(net->norm->num_batches_tracked.dtype(), torch::kInt64);
  EXPECT_TRUE(net->fc1->weight.requires_grad());
}

TEST(ModuleLoadingTest, KeepsDestinationDtype) {
  Net net;
  NamedTensors source;
  for (const auto& [name, tensor] : NamedParametersAndBuffers(*net)) {
    source.emplace_back(name, torch::ones(tensor.sizes(), torch::kFloat64));
  }
  ASSERT_TRUE(LoadIntoModule(*net, source, {}).ok());
  EXPECT_EQ(net->fc1->weight.dtype(), torch::kFloat32);
  EXPECT_EQ(net->norm->num_batches_tracked.item<int64_t>(), 1);
}

TEST(ModuleLoadingTest, StrictFailureListsEveryProblemAndChangesNothing) {
  Net net;
  NamedTensors source = FilledLike(NamedParametersAndBuffers(*net), "", 1.0);
  // Remove fc2.bias and norm.running_var, add two extras, break two shapes.
  NamedTensors broken;
  for (auto& [name, tensor] : source) {
    if (name == "fc2.bias" || name == "norm.running_var") continue;
    if (name == "fc1.weight") tensor = torch::zeros({4, 3});
    if (name == "norm.bias") tensor = torch::zeros({5});
    broken.emplace_back(name, tensor);
  }
  broken.emplace_back("head.weight", torch::zeros({1}));
  broken.emplace_back("extra", torch::zeros({1}));
  torch::Tensor fc2_weight_before = net->fc2->weight.detach().clone();

  absl::StatusOr<LoadReport> report = LoadIntoModule(*net, broken, {});
  ASSERT_FALSE(report.ok());
  EXPECT_EQ(report.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(report.status().message(),
            "strict load into module failed, nothing was loaded: "
            "2 missing: fc2.bias, norm.running_var; "
            "2 unexpected: extra, head.weight; "
            "2 shape-mismatched: fc1.weight: checkpoint [4, 3] vs module "
            "[3, 4], norm.bias: checkpoint [5] vs module [3]");
  EXPECT_TRUE(torch::equal(net->fc2->weight, fc2_weight_before));
}

TEST(ModuleLoadingTest, NonStrictLoadsWhatMatchesAndReports) {
  Net net;
  NamedTensors source = FilledLike(NamedParametersAndBuffers(*net), "", 1.0);
  NamedTensors partial;
  for (auto& [name, tensor] : source) {
    if (name.rfind("fc1.", 0) == 0) partial.emplace_back(name, tensor);
  }
  partial.emplace_back("fc2.weight", torch::zeros({9}));
  partial.emplace_back("classifier.weight", torch::zeros({2}));
  LoadIntoModuleOptions options;
  options.strict = false;
  absl::StatusOr<LoadReport> report = LoadIntoModule(*net, partial, options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_THAT(report->loaded, ElementsAre("fc1.bias", "fc1.weight"));
  EXPECT_THAT(report->unexpected, ElementsAre("classifier.weight"));
  EXPECT_THAT(report->shape_mismatched,
              ElementsAre("fc2.weight: checkpoint [9] vs module [2, 3]"));
  EXPECT_EQ(report->missing.size(), 6u);
  EXPECT_TRUE(torch::equal(net->fc1->weight, torch::full({3, 4}, 1.0)));
}

TEST(ModuleLoadingTest, StripsDataParallelPrefixAndAddsPrefix) {
  Net net;
  NamedTensors source =
      FilledLike(NamedParametersAndBuffers(*net), "module.", 2.0);
  LoadIntoModuleOptions options;
  options.strip_prefix = "module.";
  ASSERT_TRUE(LoadIntoModule(*net, source, options).ok());
  EXPECT_TRUE(torch::equal(net->fc1->weight, torch::full({3, 4}, 2.0)));

  // Without the option the prefixed names are all unexpected.
  absl::StatusOr<LoadReport> failed = LoadIntoModule(*net, source, {});
  ASSERT_FALSE(failed.ok());
  EXPECT_THAT(failed.status().message(), HasSubstr("9 missing"));
  EXPECT_THAT(failed.status().message(), HasSubstr("module.fc1.weight"));

  // A sub-network checkpoint loaded into a bigger model.
  torch::nn::Module outer;
  outer.register_module("inner", net.ptr());
  NamedTensors plain = FilledLike(NamedParametersAndBuffers(*net), "", 3.0);
  options.strip_prefix.clear();
  options.add_prefix = "inner.";
  ASSERT_TRUE(LoadIntoModule(outer, plain, options).ok());
  EXPECT_TRUE(torch::equal(net->fc1->weight, torch::full({3, 4}, 3.0)));
}

TEST(ModuleLoadingTest, RejectsNamesThatCollideAfterRemapping) {
  Net net;
  NamedTensors source = FilledLike(NamedParametersAndBuffers(*net), "", 1.0);
  source.emplace_back("module.fc1.bias", torch::zeros({3}));
  LoadIntoModuleOptions options;
  options.strip_prefix = "module.";
  options.strict = false;
  absl::StatusOr<LoadReport> report = LoadIntoModule(*net, source, options);
  ASSERT_FALSE(report.ok());
  EXPECT_THAT(report.status().message(),
              HasSubstr("'fc1.bias' and 'module.fc1.bias' both map to "
                        "'fc1.bias'"));
}

TEST(ModuleLoadingTest, LoadsIntoJitModule) {
  torch::jit::Module inner("Inner");
  inner.register_parameter("weight", torch::zeros({2, 3}), false);
  inner.register_buffer("scale", torch::zeros({3}));
  torch::jit::Module outer("Outer");
  outer.register_module("inner", inner);
  outer.register_parameter("bias", torch::zeros({2}), false);

  NamedTensors named = NamedParametersAndBuffers(outer);
  std::vector<std::string> names;
  for (const auto& [name, tensor] : named) names.push_back(name);
  EXPECT_THAT(names, ElementsAre("inner.weight", "bias", "inner.scale"));

  NamedTensors source = {{"inner.weight", torch::ones({2, 3})},
                         {"inner.scale", torch::full({3}, 4.0)},
                         {"bias", torch::full({2}, 5.0)}};
  absl::StatusOr<LoadReport> report = LoadIntoModule(outer, source, {});
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(
      torch::equal(outer.attr("bias").toTensor(), torch::full({2}, 5.0)));
  EXPECT_TRUE(
      torch::equal(inner.attr("scale").toTensor(), torch::full({3}, 4.0)));

  source.pop_back();
  absl::StatusOr<LoadReport> failed = LoadIntoModule(outer, source, {});
  ASSERT_FALSE(failed.ok());
  EXPECT_THAT(failed.status().message(), HasSubstr("1 missing: bias"));
}

}  // namespace
}  // namespace checkpoint
