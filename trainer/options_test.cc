#include "trainer/options.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tools/base/warnings.h"

namespace trainer {
namespace {

using ::testing::HasSubstr;

TEST(OptionsTest, AResumedRunTakesTheCheckpointsOptionsAndSaysSo) {
  TrainOptions original;
  original.lr = 0.1 + 0.2;  // not a short decimal: must survive exactly
  original.lr_schedule = "step";
  original.seed = 18446744073709551615u;
  original.amp = true;
  proto::TrainerState state;
  RecordOptions(original, &state);

  TrainOptions given;  // the command line of the resumed run
  base::CapturedWarnings warnings;
  ASSERT_TRUE(ApplyRecordedOptions(state, &given).ok());
  EXPECT_EQ(given.lr, original.lr);
  EXPECT_EQ(given.lr_schedule, "step");
  EXPECT_EQ(given.seed, original.seed);
  EXPECT_TRUE(given.amp);
  EXPECT_THAT(warnings.messages(),
              ::testing::Contains(HasSubstr("--lr_schedule=step")));
}

TEST(OptionsTest, AMalformedRecordedOptionIsRefused) {
  proto::TrainerState state;
  (*state.mutable_options())["batch_size"] = "many";
  TrainOptions options;
  absl::Status status = ApplyRecordedOptions(state, &options);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("batch_size"));
}

}  // namespace
}  // namespace trainer
