#include "checkpoint/training_state.h"

#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "torch/torch.h"

namespace checkpoint {
namespace {

using ::testing::HasSubstr;

NamedTensors NamedParameters(const torch::nn::Module& module) {
  NamedTensors result;
  for (const auto& item : module.named_parameters()) {
    result.emplace_back(item.key(), item.value());
  }
  return result;
}

torch::nn::Sequential MakeModel() {
  return torch::nn::Sequential(torch::nn::Linear(3, 4), torch::nn::ReLU(),
                               torch::nn::Linear(4, 2));
}

void CopyParameters(const torch::nn::Module& from, torch::nn::Module& to) {
  torch::NoGradGuard no_grad;
  auto source = from.parameters();
  auto target = to.parameters();
  for (size_t i = 0; i < source.size(); ++i) target[i].copy_(source[i]);
}

void TrainSteps(torch::nn::Sequential& model,
                torch::optim::Optimizer& optimizer, int steps, int seed) {
  torch::Tensor inputs = torch::linspace(-1, 1, 15).reshape({5, 3}) * seed;
  torch::Tensor targets = torch::linspace(0, 1, 10).reshape({5, 2});
  for (int i = 0; i < steps; ++i) {
    optimizer.zero_grad();
    torch::Tensor loss = torch::mse_loss(model->forward(inputs), targets);
    loss.backward();
    optimizer.step();
  }
}

bool SameParameters(const torch::nn::Module& a, const torch::nn::Module& b) {
  auto pa = a.parameters();
  auto pb = b.parameters();
  for (size_t i = 0; i < pa.size(); ++i) {
    if (!torch::equal(pa[i], pb[i])) return false;
  }
  return true;
}

// Trains `original` a few steps, captures, restores into a fresh optimizer
// over a copy of the model, and checks both continue identically.
template <typename Optimizer, typename Options>
void ExpectResumeContinuesIdentically(const Options& options,
                                      const Options& other_options,
                                      const std::string& type) {
  torch::manual_seed(1);
  torch::nn::Sequential original = MakeModel();
  Optimizer optimizer(original->parameters(), options);
  TrainSteps(original, optimizer, 3, 1);

  proto::OptimizerState state;
  NamedTensors tensors;
  ASSERT_TRUE(CaptureOptimizerState(optimizer, NamedParameters(*original),
                                    &state, &tensors)
                  .ok());
  EXPECT_EQ(state.type(), type);
  ASSERT_EQ(state.param_groups_size(), 1);
  EXPECT_EQ(state.param_groups(0).hyperparameters().at("lr"), options.lr());
  EXPECT_EQ(state.parameters_size(), 4);
  // Serialize through the proto's wire format as a checkpoint would.
  proto::OptimizerState parsed;
  ASSERT_TRUE(parsed.ParseFromString(state.SerializeAsString()));
  NamedTensors copies;
  for (const auto& [name, tensor] : tensors) {
    EXPECT_EQ(name.rfind("optimizer/", 0), 0u) << name;
    copies.emplace_back(name, tensor.clone());
  }

  torch::nn::Sequential resumed = MakeModel();
  CopyParameters(*original, *resumed);
  Optimizer fresh(resumed->parameters(), other_options);
  absl::Status restored =
      RestoreOptimizerState(parsed, copies, NamedParameters(*resumed), &fresh);
  ASSERT_TRUE(restored.ok()) << restored;
  EXPECT_EQ(fresh.param_groups()[0].options().get_lr(), options.lr());
  // The restored buffers are private copies.
  for (auto& [name, tensor] : copies) tensor.fill_(1000);

  TrainSteps(original, optimizer, 4, 2);
  TrainSteps(resumed, fresh, 4, 2);
  EXPECT_TRUE(SameParameters(*original, *resumed));
}

TEST(TrainingStateTest, SgdMomentumResumesIdentically) {
  ExpectResumeContinuesIdentically<torch::optim::SGD>(
      torch::optim::SGDOptions(0.1).momentum(0.9).weight_decay(1e-3),
      torch::optim::SGDOptions(0.7), "sgd");
}

TEST(TrainingStateTest, AdamAmsgradResumesIdentically) {
  ExpectResumeContinuesIdentically<torch::optim::Adam>(
      torch::optim::AdamOptions(0.01).betas({0.8, 0.95}).amsgrad(true),
      torch::optim::AdamOptions(0.5).amsgrad(true), "adam");
}

TEST(TrainingStateTest, AdamWResumesIdentically) {
  ExpectResumeContinuesIdentically<torch::optim::AdamW>(
      torch::optim::AdamWOptions(0.02).weight_decay(0.1),
      torch::optim::AdamWOptions(0.9), "adamw");
}

TEST(TrainingStateTest, WithoutRestoreTrainingDiverges) {
  // The check above can fail: a fresh optimizer does not continue the same.
  torch::manual_seed(1);
  torch::nn::Sequential original = MakeModel();
  torch::optim::SGD optimizer(original->parameters(),
                              torch::optim::SGDOptions(0.1).momentum(0.9));
  TrainSteps(original, optimizer, 3, 1);
  torch::nn::Sequential resumed = MakeModel();
  CopyParameters(*original, *resumed);
  torch::optim::SGD fresh(resumed->parameters(),
                          torch::optim::SGDOptions(0.1).momentum(0.9));
  TrainSteps(original, optimizer, 2, 2);
  TrainSteps(resumed, fresh, 2, 2);
  EXPECT_FALSE(SameParameters(*original, *resumed));
}

TEST(TrainingStateTest, NamesStateTensorsByParameterName) {
  torch::manual_seed(1);
  torch::nn::Sequential model = MakeModel();
  torch::optim::Adam optimizer(model->parameters(),
                               torch::optim::AdamOptions(0.01));
  TrainSteps(model, optimizer, 2, 1);
  proto::OptimizerState state;
  NamedTensors tensors;
  ASSERT_TRUE(CaptureOptimizerState(optimizer, NamedParameters(*model), &state,
                                    &tensors)
                  .ok());
  ASSERT_EQ(tensors.size(), 8u);
  EXPECT_EQ(tensors[0].first, "optimizer/exp_avg/0.weight");
  EXPECT_EQ(tensors[1].first, "optimizer/exp_avg_sq/0.weight");
  EXPECT_EQ(state.parameters(0).parameter_name(), "0.weight");
  EXPECT_EQ(state.parameters(0).counters().at("step"), 2);
  EXPECT_EQ(state.parameters(0).tensors().at("exp_avg"),
            "optimizer/exp_avg/0.weight");
  EXPECT_THAT(
      state.param_groups(0).parameter_names(),
      ::testing::ElementsAre("0.weight", "0.bias", "2.weight", "2.bias"));
}

TEST(TrainingStateTest, RejectsUnnamedParameterAndWrongOptimizerType) {
  torch::nn::Sequential model = MakeModel();
  torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(0.1));
  proto::OptimizerState state;
  NamedTensors tensors;
  NamedTensors some_names = NamedParameters(*model);
  some_names.pop_back();
  absl::Status unnamed =
      CaptureOptimizerState(sgd, some_names, &state, &tensors);
  EXPECT_EQ(unnamed.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unnamed.message(), HasSubstr("no name"));

  ASSERT_TRUE(
      CaptureOptimizerState(sgd, NamedParameters(*model), &state, &tensors)
          .ok());
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions());
  absl::Status wrong_type =
      RestoreOptimizerState(state, tensors, NamedParameters(*model), &adam);
  EXPECT_EQ(wrong_type.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(wrong_type.message(), HasSubstr("'sgd'"));
}

TEST(TrainingStateTest, RejectsDifferentParamGroupsAndMissingTensors) {
  torch::manual_seed(1);
  torch::nn::Sequential model = MakeModel();
  torch::optim::SGD sgd(model->parameters(),
                        torch::optim::SGDOptions(0.1).momentum(0.5));
  TrainSteps(model, sgd, 1, 1);
  proto::OptimizerState state;
  NamedTensors tensors;
  ASSERT_TRUE(
      CaptureOptimizerState(sgd, NamedParameters(*model), &state, &tensors)
          .ok());

  std::vector<torch::Tensor> first_layer = {model->parameters()[0],
                                            model->parameters()[1]};
  torch::optim::SGD partial(first_layer, torch::optim::SGDOptions(0.1));
  absl::Status groups =
      RestoreOptimizerState(state, tensors, NamedParameters(*model), &partial);
  EXPECT_EQ(groups.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(groups.message(), HasSubstr("param group 0 holds"));

  torch::optim::SGD fresh(model->parameters(), torch::optim::SGDOptions(0.3));
  NamedTensors missing(tensors.begin() + 1, tensors.end());
  absl::Status not_found =
      RestoreOptimizerState(state, missing, NamedParameters(*model), &fresh);
  EXPECT_EQ(not_found.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(not_found.message(),
              HasSubstr("optimizer/momentum_buffer/0.weight"));
  // A failed restore leaves the optimizer untouched.
  EXPECT_EQ(fresh.param_groups()[0].options().get_lr(), 0.3);
  EXPECT_TRUE(fresh.state().empty());
}

TEST(TrainingStateTest, RngRestoreRepeatsTheSameDraws) {
  torch::manual_seed(42);
  torch::randn({10});
  proto::RngState state;
  NamedTensors tensors;
  ASSERT_TRUE(CaptureRngState(&state, &tensors).ok());
  EXPECT_EQ(state.cpu_generator_tensor(), "rng/cpu");
  EXPECT_EQ(state.seed(), 42u);
  ASSERT_EQ(tensors.size(), 1u);
  EXPECT_EQ(tensors[0].second.scalar_type(), torch::kUInt8);

  torch::Tensor first = torch::randn({100});
  torch::Tensor dropout_first = torch::dropout(torch::ones({100}), 0.5, true);
  torch::manual_seed(7);  // Anything in between.
  ASSERT_TRUE(RestoreRngState(state, tensors).ok());
  torch::Tensor second = torch::randn({100});
  torch::Tensor dropout_second = torch::dropout(torch::ones({100}), 0.5, true);
  EXPECT_TRUE(torch::equal(first, second));
  EXPECT_TRUE(torch::equal(dropout_first, dropout_second));

  absl::Status missing = RestoreRngState(state, {});
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  NamedTensors wrong = {{"rng/cpu", torch::zeros({3}, torch::kFloat32)}};
  EXPECT_EQ(RestoreRngState(state, wrong).code(),
            absl::StatusCode::kInvalidArgument);
  NamedTensors short_state = {{"rng/cpu", torch::zeros({3}, torch::kUInt8)}};
  EXPECT_FALSE(RestoreRngState(state, short_state).ok());
}

}  // namespace
}  // namespace checkpoint
