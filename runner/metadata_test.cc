#include "runner/metadata.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace runner {
namespace {

using ::testing::HasSubstr;

TEST(MetadataTest, ParsesTheExportersFields) {
  absl::StatusOr<ModelMetadata> metadata = ParseModelMetadata(R"({
      "input_shape": [1, 28, 28], "input_dtype": "float32",
      "normalization": {"mean": 0.286, "std": 0.353},
      "class_labels": ["a", "b"], "epoch": 3, "producer": {"name": "x"}})");
  ASSERT_TRUE(metadata.ok()) << metadata.status();
  EXPECT_EQ(metadata->input_shape, (std::vector<int64_t>{1, 28, 28}));
  EXPECT_EQ(metadata->input_dtype, "float32");
  EXPECT_EQ(metadata->normalization_mean, (std::vector<float>{0.286f}));
  EXPECT_EQ(metadata->normalization_std, (std::vector<float>{0.353f}));
  EXPECT_EQ(metadata->class_labels, (std::vector<std::string>{"a", "b"}));
  EXPECT_THAT(metadata->json, HasSubstr("producer"));
  EXPECT_THAT(PrettyPrintJson(metadata->json), HasSubstr("\n  \"epoch\": 3"));
}

TEST(MetadataTest, EveryFieldIsOptional) {
  absl::StatusOr<ModelMetadata> metadata = ParseModelMetadata("{}");
  ASSERT_TRUE(metadata.ok());
  EXPECT_TRUE(metadata->input_shape.empty());
  EXPECT_TRUE(metadata->normalization_mean.empty());
}

TEST(MetadataTest, PerChannelNormalization) {
  absl::StatusOr<ModelMetadata> metadata = ParseModelMetadata(
      R"({"input_shape": [3, 4, 4],
          "normalization": {"mean": [0.1, 0.2, 0.3], "std": [1, 2, 3]}})");
  ASSERT_TRUE(metadata.ok()) << metadata.status();
  EXPECT_EQ(metadata->normalization_std, (std::vector<float>{1, 2, 3}));
}

TEST(MetadataTest, RejectsWrongTypesNamingTheField) {
  struct Case {
    const char* json;
    const char* message;
  };
  for (const Case& c : std::vector<Case>{
           {"not json", "not valid JSON"},
           {"[1, 2]", "not a JSON object"},
           {R"({"input_shape": "x"})", "\"input_shape\""},
           {R"({"input_shape": [1, -28]})", "\"input_shape\""},
           {R"({"input_shape": [1.5]})", "\"input_shape\""},
           {R"({"input_dtype": "complex"})", "\"input_dtype\" 'complex'"},
           {R"({"normalization": {"mean": 0.5}})", "\"normalization\""},
           {R"({"normalization": {"mean": 0.5, "std": 0}})",
            "\"normalization.std\" must be > 0"},
           {R"({"normalization": {"mean": "a", "std": 1}})",
            "\"normalization.mean\""},
           {R"({"input_shape": [2, 4], "normalization":
                {"mean": [1, 2, 3], "std": [1, 2, 3]}})",
            "one per channel"},
           {R"({"class_labels": [1, 2]})", "\"class_labels\" must hold"},
       }) {
    absl::StatusOr<ModelMetadata> metadata = ParseModelMetadata(c.json);
    ASSERT_FALSE(metadata.ok()) << c.json;
    EXPECT_EQ(metadata.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(metadata.status().message(), HasSubstr(c.message)) << c.json;
  }
}

}  // namespace
}  // namespace runner
