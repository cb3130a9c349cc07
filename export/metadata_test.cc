#include "export/metadata.h"

#include <string>

#include "gtest/gtest.h"

namespace model_export {
namespace {

checkpoint::proto::Metadata SampleCheckpointMetadata() {
  checkpoint::proto::Metadata metadata;
  metadata.set_created_unix_micros(1700000000000000);
  metadata.mutable_producer()->set_tool("train");
  metadata.mutable_producer()->set_version("0.1.0");
  metadata.set_libtorch_version("1.13.1");
  metadata.mutable_progress()->set_epoch(3);
  metadata.mutable_progress()->set_global_step(1200);
  (*metadata.mutable_metrics())["val_accuracy"] = 0.875;
  (*metadata.mutable_metrics())["val_loss"] = 0.25;
  metadata.mutable_monitored()->set_name("val_accuracy");
  metadata.mutable_monitored()->set_mode(
      checkpoint::proto::MonitoredMetric::MAX);
  metadata.mutable_monitored()->set_value(0.875);
  metadata.set_architecture("cnn");
  (*metadata.mutable_architecture_config())["channels"] = "32";
  return metadata;
}

ExportDescription SampleDescription() {
  ExportDescription description;
  description.checkpoint_path = "runs/a/best";
  description.resolved_checkpoint_path = "runs/a/epoch=3";
  description.tensor_digest = "0123abcd";
  description.architecture_name = "cnn";
  description.architecture_config = {{"channels", "32"}};
  description.class_labels = {"a", "b"};
  description.input_shape = {1, 28, 28};
  description.normalization_mean = {0.5};
  description.normalization_std = {0.25};
  description.libtorch_version = "1.13.0";
  description.exported_unix_micros = 1763793600000000;
  description.probe_batch = 8;
  description.parity_tolerance = 1e-5;
  return description;
}

TEST(MetadataJsonTest, CarriesWhatTheRunnerAndUsersNeed) {
  nlohmann::json document =
      BuildMetadataJson(SampleCheckpointMetadata(), SampleDescription());

  EXPECT_EQ(document["schema_version"], 1);
  EXPECT_EQ(document["source_checkpoint"]["tensor_digest"], "0123abcd");
  EXPECT_EQ(document["source_checkpoint"]["path"], "runs/a/best");
  EXPECT_EQ(document["source_checkpoint"]["libtorch_version"], "1.13.1");
  EXPECT_EQ(document["epoch"], 3);
  EXPECT_EQ(document["global_step"], 1200);
  EXPECT_EQ(document["monitored"]["name"], "val_accuracy");
  EXPECT_EQ(document["monitored"]["mode"], "max");
  EXPECT_EQ(document["monitored"]["value"], 0.875);
  EXPECT_EQ(document["metrics"]["val_loss"], 0.25);
  EXPECT_EQ(document["class_labels"], nlohmann::json({"a", "b"}));
  EXPECT_EQ(document["input_shape"], nlohmann::json({1, 28, 28}));
  EXPECT_EQ(document["input_dtype"], "float32");
  EXPECT_EQ(document["normalization"]["mean"], nlohmann::json({0.5}));
  EXPECT_EQ(document["normalization"]["std"], nlohmann::json({0.25}));
  EXPECT_EQ(document["architecture"]["name"], "cnn");
  EXPECT_EQ(document["architecture"]["config"]["channels"], "32");
  EXPECT_EQ(document["producer"]["tool"], "export");
  EXPECT_EQ(document["producer"]["libtorch_version"], "1.13.0");
  EXPECT_EQ(document["exported_at"], "2025-11-22T06:40:00Z");
  EXPECT_EQ(document["parity"]["probe_batch"], 8);
}

TEST(MetadataJsonTest, MonitoredIsNullWhenTheCheckpointRecordedNone) {
  checkpoint::proto::Metadata metadata = SampleCheckpointMetadata();
  metadata.clear_monitored();
  nlohmann::json document = BuildMetadataJson(metadata, SampleDescription());
  EXPECT_TRUE(document["monitored"].is_null());
}

TEST(MetadataJsonTest, RoundTripsThroughText) {
  nlohmann::json document =
      BuildMetadataJson(SampleCheckpointMetadata(), SampleDescription());
  absl::StatusOr<nlohmann::json> parsed = ParseMetadataJson(document.dump());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, document);
}

TEST(MetadataJsonTest, RejectsWhatItCannotRead) {
  EXPECT_EQ(ParseMetadataJson("{not json").status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(ParseMetadataJson("[1, 2]").status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(ParseMetadataJson("{\"epoch\": 1}").status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(ParseMetadataJson("{\"schema_version\": 99}").status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace model_export
