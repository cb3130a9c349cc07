#include "trainer/schedule.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace trainer {
namespace {

TEST(LearningRateScheduleTest, CosineGoesFromBaseToZero) {
  auto schedule = LearningRateSchedule::Create("cosine", 0.1, 100);
  ASSERT_TRUE(schedule.ok()) << schedule.status();
  EXPECT_DOUBLE_EQ(schedule->RateAt(0), 0.1);
  EXPECT_NEAR(schedule->RateAt(50), 0.05, 1e-12);
  EXPECT_NEAR(schedule->RateAt(100), 0.0, 1e-12);
  EXPECT_NEAR(schedule->RateAt(150), 0.0, 1e-12);  // stays at the end
  EXPECT_GT(schedule->RateAt(10), schedule->RateAt(11));
}

TEST(LearningRateScheduleTest, StepDecaysThreeTimesOverTheRun) {
  auto schedule = LearningRateSchedule::Create("step", 1.0, 90);
  ASSERT_TRUE(schedule.ok());
  EXPECT_DOUBLE_EQ(schedule->RateAt(29), 1.0);
  EXPECT_DOUBLE_EQ(schedule->RateAt(30), 0.1);
  EXPECT_NEAR(schedule->RateAt(89), 0.01, 1e-15);
  auto none = LearningRateSchedule::Create("none", 0.3, 5);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->RateAt(1000), 0.3);
}

TEST(LearningRateScheduleTest, ProtoRoundTripGivesBitwiseTheSameRates) {
  for (const char* type : {"none", "step", "cosine"}) {
    auto schedule = LearningRateSchedule::Create(type, 0.0123, 777);
    ASSERT_TRUE(schedule.ok());
    auto state = schedule->ToProto(123);
    EXPECT_EQ(state.step_count(), 123);
    EXPECT_EQ(state.last_learning_rate(), schedule->RateAt(123));
    auto restored = LearningRateSchedule::FromProto(state);
    ASSERT_TRUE(restored.ok()) << restored.status();
    for (int64_t step = 0; step < 900; ++step) {
      ASSERT_EQ(restored->RateAt(step), schedule->RateAt(step)) << type;
    }
  }
}

TEST(LearningRateScheduleTest, RejectsBadInput) {
  EXPECT_FALSE(LearningRateSchedule::Create("linear", 0.1, 10).ok());
  EXPECT_FALSE(LearningRateSchedule::Create("cosine", -0.1, 10).ok());
  EXPECT_FALSE(LearningRateSchedule::Create("cosine", NAN, 10).ok());
  EXPECT_FALSE(LearningRateSchedule::Create("cosine", 0.1, 0).ok());
  proto::SchedulerState empty;
  EXPECT_FALSE(LearningRateSchedule::FromProto(empty).ok());
}

TEST(EpochPermutationTest, IsAPermutationFixedBySeedAndEpoch) {
  std::vector<int64_t> order = EpochPermutation(42, 3, 1000);
  std::vector<int64_t> sorted = order;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(sorted[i], i);
  EXPECT_EQ(EpochPermutation(42, 3, 1000), order);
  EXPECT_NE(EpochPermutation(42, 4, 1000), order);
  EXPECT_NE(EpochPermutation(43, 3, 1000), order);
  EXPECT_TRUE(EpochPermutation(1, 0, 0).empty());
  EXPECT_EQ(EpochPermutation(1, 0, 1), std::vector<int64_t>{0});
}

TEST(EpochPermutationTest, GoldenValuesAreStableAcrossPlatforms) {
  // Changing the generator silently breaks resume of existing runs: this
  // pins it.
  std::vector<int64_t> first = EpochPermutation(1, 0, 10);
  std::vector<int64_t> golden = {7, 2, 5, 8, 3, 4, 1, 6, 0, 9};
  EXPECT_EQ(first, golden);
}

TEST(EpochPermutationTest, PositionsAreRoughlyUniform) {
  // Where element 0 lands over many epochs: each of 10 slots about 10%.
  std::vector<int> counts(10);
  for (int64_t epoch = 0; epoch < 5000; ++epoch) {
    std::vector<int64_t> order = EpochPermutation(7, epoch, 10);
    ++counts[std::find(order.begin(), order.end(), 0) - order.begin()];
  }
  for (int count : counts) {
    EXPECT_GT(count, 400);
    EXPECT_LT(count, 600);
  }
}

}  // namespace
}  // namespace trainer
