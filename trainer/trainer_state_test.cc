#include "trainer/trainer_state.h"

#include <string>

#include "checkpoint/extensions.h"
#include "checkpoint/manifest_file.h"
#include "checkpoint/reader.h"
#include "checkpoint/upgrade.h"
#include "checkpoint/writer.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"

namespace trainer {
namespace {

proto::TrainerState SomeState() {
  proto::TrainerState state;
  state.mutable_scheduler()->set_type("cosine");
  state.mutable_scheduler()->set_step_count(16);
  state.mutable_loss_scaler()->set_enabled(true);
  state.mutable_loss_scaler()->set_scale(1024);
  state.mutable_data_order()->set_seed(7);
  state.mutable_data_order()->set_batches_consumed(3);
  (*state.mutable_options())["lr"] = "0.050000000000000003";
  state.set_epoch_loss_sum(12.25);
  state.set_epoch_examples(192);
  return state;
}

TEST(TrainerStateTest, WrittenStateReadsBackAndIsTyped) {
  checkpoint::proto::TrainingState training;
  WriteTrainerState(SomeState(), &training);
  WriteTrainerState(SomeState(), &training);  // replaces, never duplicates
  ASSERT_EQ(training.extensions_size(), 1);
  EXPECT_EQ(training.extensions(0).type(), "train.TrainerState");
  EXPECT_EQ(training.extensions(0).version(), 1u);
  absl::StatusOr<proto::TrainerState> read =
      ReadTrainerState(training, checkpoint::proto::Metadata());
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->SerializeAsString(), SomeState().SerializeAsString());
}

TEST(TrainerStateTest, ACheckpointWithoutItIsRefusedByName) {
  absl::StatusOr<proto::TrainerState> read = ReadTrainerState(
      checkpoint::proto::TrainingState(), checkpoint::proto::Metadata());
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(read.status().message().find("train.TrainerState"),
            std::string::npos)
      << read.status();
}

TEST(TrainerStateTest, AnUnknownVersionIsRefusedNotGuessed) {
  checkpoint::proto::TrainingState training;
  checkpoint::SetExtension(kTrainerStateExtension, 2, SomeState(), &training);
  absl::StatusOr<proto::TrainerState> read =
      ReadTrainerState(training, checkpoint::proto::Metadata());
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(read.status().message().find("version 2"), std::string::npos)
      << read.status();
}

TEST(TrainerStateTest, ADamagedPayloadIsDataLoss) {
  checkpoint::proto::TrainingState training;
  WriteTrainerState(SomeState(), &training);
  std::string payload = training.extensions(0).payload();
  // Appending a field again: valid protobuf, not the canonical encoding.
  training.mutable_extensions(0)->set_payload(payload + payload.substr(0, 2));
  absl::StatusOr<proto::TrainerState> read =
      ReadTrainerState(training, checkpoint::proto::Metadata());
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss) << read.status();
}

// A format version 1 trainer checkpoint, as `train` wrote it before format
// version 2: scheduler, loss scaler and data order inside the format's
// TrainingState, flags and sums in metadata.user. After `ckpt upgrade`, the
// trainer resumes from it with the same state.
TEST(TrainerStateTest, AnUpgradedVersion1CheckpointResumesWithItsState) {
  const std::string old_path = test_paths::FreshDir("v1");
  {
    auto writer = checkpoint::CheckpointWriter::Create(old_path);
    ASSERT_TRUE(writer.ok()) << writer.status();
    const float weight[2] = {1, 2};
    ASSERT_TRUE((*writer)
                    ->AddTensor("fc.weight", checkpoint::proto::FLOAT32, {2},
                                absl::Span<const char>(
                                    reinterpret_cast<const char*>(weight), 8),
                                "cpu")
                    .ok());
    auto& user = *(*writer)->mutable_metadata()->mutable_user();
    user["train.lr"] = "0.050000000000000003";
    user["train.epoch_loss_sum"] = "12.25";
    user["train.epoch_examples"] = "192";
    ASSERT_TRUE((*writer)->Commit().ok());
  }
  // Rewrite its manifest as version 1 wrote it: no header, format_version 1,
  // and the three trainer messages as TrainingState fields 2, 3 and 5.
  const std::string manifest_path = old_path + "/manifest.pb";
  absl::StatusOr<checkpoint::proto::Manifest> manifest =
      checkpoint::DecodeManifestFile(test_paths::ReadFile(manifest_path));
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  manifest->set_format_version(1);
  proto::TrainerState expected = SomeState();
  proto::Version1TrainingState old_fields;
  *old_fields.mutable_scheduler() = expected.scheduler();
  *old_fields.mutable_loss_scaler() = expected.loss_scaler();
  *old_fields.mutable_data_order() = expected.data_order();
  const std::string old_training = old_fields.SerializeAsString();
  std::string v1 = manifest->SerializeAsString();
  v1 += '\x32';  // field 6 (training_state), length-delimited
  v1 += static_cast<char>(old_training.size());
  ASSERT_LT(old_training.size(), 128u);
  v1 += old_training;
  test_paths::WriteFile(manifest_path, v1);

  const std::string new_path = test_paths::FreshDir("v2");
  absl::StatusOr<int> copied =
      checkpoint::UpgradeCheckpoint(old_path, new_path);
  ASSERT_TRUE(copied.ok()) << copied.status();
  auto reader = checkpoint::CheckpointReader::Open(new_path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  const checkpoint::proto::Manifest& upgraded = (*reader)->manifest();
  ASSERT_EQ(upgraded.training_state().extensions_size(), 1);
  EXPECT_EQ(upgraded.training_state().extensions(0).type(),
            checkpoint::kVersion1TrainingStateExtension);

  absl::StatusOr<proto::TrainerState> read =
      ReadTrainerState(upgraded.training_state(), upgraded.metadata());
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->SerializeAsString(), expected.SerializeAsString());
}

}  // namespace
}  // namespace trainer
