#include "trainer/loss_scaler.h"

#include <ATen/ATen.h>

#include <limits>
#include <vector>

#include "gtest/gtest.h"

namespace trainer {
namespace {

// A parameter whose gradient is `grad`.
at::Tensor ParameterWithGrad(const at::Tensor& grad) {
  at::Tensor parameter = at::zeros_like(grad).requires_grad_(true);
  parameter.mutable_grad() = grad.clone();
  return parameter;
}

proto::LossScalerState SmallState() {
  proto::LossScalerState state = LossScaler::DefaultState();
  state.set_scale(8.0);
  state.set_growth_interval(3);
  return state;
}

TEST(LossScalerTest, ScalesTheLossAndUnscalesTheGradients) {
  LossScaler scaler(SmallState());
  EXPECT_EQ(scaler.Scale(at::ones({})).item<double>(), 8.0);
  std::vector<at::Tensor> parameters = {
      ParameterWithGrad(at::full({2}, 16.0)),
      at::zeros({3}).requires_grad_(true)};  // no gradient: ignored
  EXPECT_TRUE(scaler.UnscaleAndCheck(parameters));
  EXPECT_TRUE(at::equal(parameters[0].grad(), at::full({2}, 2.0)));
}

TEST(LossScalerTest, NonFiniteGradientSkipsTheStepAndBacksOff) {
  for (double bad : {std::numeric_limits<double>::infinity(),
                     std::numeric_limits<double>::quiet_NaN()}) {
    LossScaler scaler(SmallState());
    at::Tensor grad = at::ones({4});
    grad[2] = bad;
    std::vector<at::Tensor> parameters = {ParameterWithGrad(at::ones({2})),
                                          ParameterWithGrad(grad)};
    EXPECT_FALSE(scaler.UnscaleAndCheck(parameters));
    scaler.Update();
    EXPECT_EQ(scaler.scale(), 4.0);
    EXPECT_EQ(scaler.state().growth_tracker(), 0);
    EXPECT_EQ(scaler.skipped_steps(), 1);
  }
}

TEST(LossScalerTest, GrowsAfterGrowthIntervalCleanSteps) {
  LossScaler scaler(SmallState());
  for (int step = 0; step < 3; ++step) {
    EXPECT_EQ(scaler.scale(), 8.0) << step;
    std::vector<at::Tensor> parameters = {ParameterWithGrad(at::ones({2}))};
    ASSERT_TRUE(scaler.UnscaleAndCheck(parameters));
    scaler.Update();
  }
  EXPECT_EQ(scaler.scale(), 16.0);
  EXPECT_EQ(scaler.state().growth_tracker(), 0);
}

TEST(LossScalerTest, StateRoundTripsThroughItsProto) {
  LossScaler scaler(SmallState());
  std::vector<at::Tensor> parameters = {ParameterWithGrad(at::ones({2}))};
  ASSERT_TRUE(scaler.UnscaleAndCheck(parameters));
  scaler.Update();
  LossScaler restored(scaler.state());
  EXPECT_EQ(restored.state().SerializeAsString(),
            scaler.state().SerializeAsString());
  EXPECT_EQ(restored.state().growth_tracker(), 1);
}

TEST(LossScalerTest, DisabledIsANoOp) {
  LossScaler scaler((proto::LossScalerState()));
  at::Tensor loss = at::full({}, 3.0);
  EXPECT_EQ(scaler.Scale(loss).item<double>(), 3.0);
  at::Tensor grad = at::full({2}, std::numeric_limits<double>::infinity());
  std::vector<at::Tensor> parameters = {ParameterWithGrad(grad)};
  EXPECT_TRUE(scaler.UnscaleAndCheck(parameters));
  scaler.Update();
  EXPECT_EQ(scaler.scale(), 1.0);
}

}  // namespace
}  // namespace trainer
