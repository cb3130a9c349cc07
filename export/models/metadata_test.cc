#include "export/models/metadata.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace models {
namespace {

using ::testing::HasSubstr;

ModelMetadata Sample() {
  ModelMetadata metadata;
  metadata.input_shape = {1, 28, 28};
  metadata.input_dtype = "float32";
  metadata.normalization_mean = {0.5};
  metadata.normalization_std = {0.25};
  metadata.class_labels = {"a", "b"};
  metadata.output = "logits";
  metadata.source_checkpoint.path = "runs/a/best";
  metadata.source_checkpoint.resolved_path = "runs/a/epoch=3";
  metadata.source_checkpoint.tensor_digest = "0123abcd";
  metadata.source_checkpoint.created_unix_micros = 1700000000000000;
  metadata.source_checkpoint.producer_tool = "train";
  metadata.source_checkpoint.producer_version = "0.1.0";
  metadata.source_checkpoint.libtorch_version = "1.13.1";
  metadata.epoch = 3;
  metadata.global_step = 1200;
  metadata.monitored = ModelMetadata::Monitored{"val_acc", "max", 0.875};
  metadata.metrics = {{"val_acc", 0.875}, {"val_loss", 0.25}};
  metadata.architecture_name = "cnn";
  metadata.architecture_config = {{"channels", "32"}};
  metadata.exporter_version = "0.1.0";
  metadata.exporter_libtorch_version = "1.13.0";
  metadata.exported_unix_micros = 1763793600000000;
  metadata.parity = {8, 0, 1e-5, 0.0};
  return metadata;
}

TEST(ModelMetadataTest, TheWrittenDocumentIsTheSchema) {
  nlohmann::json document = nlohmann::json::parse(ModelMetadataJson(Sample()));
  EXPECT_EQ(document["schema_version"], 1);
  EXPECT_EQ(document["source_checkpoint"]["tensor_digest"], "0123abcd");
  EXPECT_EQ(document["source_checkpoint"]["producer"]["tool"], "train");
  EXPECT_EQ(document["monitored"]["mode"], "max");
  EXPECT_EQ(document["normalization"]["std"], nlohmann::json({0.25}));
  EXPECT_EQ(document["producer"]["tool"], "export");
  EXPECT_EQ(document["exported_at"], "2025-11-22T06:40:00Z");
  EXPECT_EQ(document["parity"]["probe_batch"], 8);
}

TEST(ModelMetadataTest, WhatIsWrittenReadsBackFieldForField) {
  const ModelMetadata written = Sample();
  const std::string text = ModelMetadataJson(written);
  absl::StatusOr<ModelMetadata> read = ParseModelMetadata(text);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->json, text);
  // Every field survives: writing what was read gives the same bytes.
  EXPECT_EQ(ModelMetadataJson(*read), text);
  EXPECT_EQ(read->input_shape, written.input_shape);
  EXPECT_EQ(read->normalization_mean, written.normalization_mean);
  ASSERT_TRUE(read->monitored.has_value());
  EXPECT_EQ(read->monitored->value, 0.875);
}

TEST(ModelMetadataTest, MonitoredIsNullWhenNoneWasRecorded) {
  ModelMetadata metadata = Sample();
  metadata.monitored.reset();
  const std::string text = ModelMetadataJson(metadata);
  EXPECT_TRUE(nlohmann::json::parse(text)["monitored"].is_null());
  EXPECT_FALSE(ParseModelMetadata(text)->monitored.has_value());
}

TEST(ModelMetadataTest, AHandWrittenDocumentNeedsOnlyItsVersion) {
  absl::StatusOr<ModelMetadata> metadata = ParseModelMetadata(R"({
      "schema_version": 1, "input_shape": [3, 4, 4],
      "normalization": {"mean": [0.1, 0.2, 0.3], "std": [1, 2, 3]},
      "mine": {"anything": true}})");
  ASSERT_TRUE(metadata.ok()) << metadata.status();
  EXPECT_EQ(metadata->normalization_std, (std::vector<double>{1, 2, 3}));
  EXPECT_TRUE(metadata->class_labels.empty());
  EXPECT_THAT(metadata->json, HasSubstr("mine"));
  EXPECT_THAT(PrettyPrintJson(metadata->json),
              HasSubstr("\n  \"schema_version\": 1"));
}

TEST(ModelMetadataTest, ANewerSchemaIsRefusedNotGuessed) {
  absl::StatusOr<ModelMetadata> metadata =
      ParseModelMetadata(R"({"schema_version": 2})");
  ASSERT_FALSE(metadata.ok());
  EXPECT_EQ(metadata.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(metadata.status().message(), HasSubstr("schema_version 2"));
}

TEST(ModelMetadataTest, RejectsWrongTypesNamingTheField) {
  struct Case {
    const char* json;
    const char* message;
  };
  for (
      const Case& c : std::vector<Case>{
          {"not json", "not valid JSON"},
          {"[1, 2]", "not a JSON object"},
          {R"({"input_shape": [1]})", "\"schema_version\" must be present"},
          {R"({"schema_version": "1"})", "\"schema_version\""},
          {R"({"schema_version": 0})", "\"schema_version\""},
          {R"({"schema_version": 1, "input_shape": "x"})", "\"input_shape\""},
          {R"({"schema_version": 1, "input_shape": [1, -28]})",
           "\"input_shape\""},
          {R"({"schema_version": 1, "input_shape": [1.5]})", "\"input_shape\""},
          {R"({"schema_version": 1, "input_dtype": "complex"})",
           "\"input_dtype\" 'complex'"},
          {R"({"schema_version": 1, "normalization": {"mean": 0.5}})",
           "\"normalization\""},
          {R"({"schema_version": 1, "normalization": {"mean": 0.5, "std": 0}})",
           "\"normalization.std\" must be > 0"},
          {R"({"schema_version": 1, "normalization": {"mean": "a", "std": 1}})",
           "\"normalization.mean\""},
          {R"({"schema_version": 1, "input_shape": [2, 4], "normalization":
                {"mean": [1, 2, 3], "std": [1, 2, 3]}})",
           "one per channel"},
          {R"({"schema_version": 1, "class_labels": [1, 2]})",
           "\"class_labels\" must hold"},
          {R"({"schema_version": 1, "epoch": 1.5})", "\"epoch\" must be an"},
          {R"({"schema_version": 1, "source_checkpoint": []})",
           "\"source_checkpoint\" must be an object"},
          {R"({"schema_version": 1, "source_checkpoint": {"path": 3}})",
           "\"source_checkpoint.path\" must be a string"},
          {R"({"schema_version": 1, "metrics": {"loss": "low"}})",
           "\"metrics\" must hold numbers"},
          {R"({"schema_version": 1, "parity": {"probe_seed": -1}})",
           "\"parity.probe_seed\""},
      }) {
    absl::StatusOr<ModelMetadata> metadata = ParseModelMetadata(c.json);
    ASSERT_FALSE(metadata.ok()) << c.json;
    EXPECT_EQ(metadata.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(metadata.status().message(), HasSubstr(c.message)) << c.json;
  }
}

}  // namespace
}  // namespace models
