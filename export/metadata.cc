#include "export/metadata.h"

#include <ctime>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace model_export {
namespace {

nlohmann::json MonitoredJson(const checkpoint::proto::MonitoredMetric& metric) {
  if (metric.name().empty()) return nullptr;
  const char* mode = "unspecified";
  if (metric.mode() == checkpoint::proto::MonitoredMetric::MIN) mode = "min";
  if (metric.mode() == checkpoint::proto::MonitoredMetric::MAX) mode = "max";
  return {{"name", metric.name()}, {"mode", mode}, {"value", metric.value()}};
}

}  // namespace

nlohmann::json BuildMetadataJson(
    const checkpoint::proto::Metadata& checkpoint_metadata,
    const ExportDescription& description) {
  // std::map keeps the keys sorted, so the document is the same for the same
  // checkpoint whatever order the protobuf map iterates in.
  std::map<std::string, double> metrics(checkpoint_metadata.metrics().begin(),
                                        checkpoint_metadata.metrics().end());

  nlohmann::json source = {
      {"path", description.checkpoint_path},
      {"resolved_path", description.resolved_checkpoint_path},
      {"tensor_digest", description.tensor_digest},
      {"created_unix_micros", checkpoint_metadata.created_unix_micros()},
      {"producer",
       {{"tool", checkpoint_metadata.producer().tool()},
        {"version", checkpoint_metadata.producer().version()}}},
      {"libtorch_version", checkpoint_metadata.libtorch_version()},
  };

  return {
      {"schema_version", kMetadataSchemaVersion},
      {"source_checkpoint", source},
      {"epoch", checkpoint_metadata.progress().epoch()},
      {"global_step", checkpoint_metadata.progress().global_step()},
      {"monitored", MonitoredJson(checkpoint_metadata.monitored())},
      {"metrics", metrics},
      {"class_labels", description.class_labels},
      {"input_shape", description.input_shape},
      {"input_dtype", description.input_dtype},
      {"normalization",
       {{"mean", description.normalization_mean},
        {"std", description.normalization_std}}},
      {"output", "logits"},
      {"architecture",
       {{"name", description.architecture_name},
        {"config", description.architecture_config}}},
      {"producer",
       {{"tool", kExportToolName},
        {"version", kExportToolVersion},
        {"libtorch_version", description.libtorch_version}}},
      {"exported_at", FormatUtcTimestamp(description.exported_unix_micros)},
      {"exported_unix_micros", description.exported_unix_micros},
      {"parity",
       {{"probe_batch", description.probe_batch},
        {"probe_seed", description.probe_seed},
        {"tolerance", description.parity_tolerance},
        {"max_abs_difference", description.parity_max_abs_difference}}},
  };
}

absl::StatusOr<nlohmann::json> ParseMetadataJson(absl::string_view text) {
  nlohmann::json document = nlohmann::json::parse(
      text.begin(), text.end(), /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (document.is_discarded()) {
    return absl::DataLossError("metadata.json is not valid JSON");
  }
  if (!document.is_object()) {
    return absl::DataLossError("metadata.json is not a JSON object");
  }
  auto version = document.find("schema_version");
  if (version == document.end() || !version->is_number_integer()) {
    return absl::DataLossError("metadata.json has no integer schema_version");
  }
  if (version->get<int64_t>() > kMetadataSchemaVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "metadata.json has schema_version ", version->get<int64_t>(),
        "; this tool reads up to ", kMetadataSchemaVersion));
  }
  return document;
}

std::string FormatUtcTimestamp(int64_t unix_micros) {
  std::time_t seconds = static_cast<std::time_t>(unix_micros / 1000000);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char buffer[32];
  size_t length =
      std::strftime(buffer, sizeof(buffer), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return std::string(buffer, length);
}

}  // namespace model_export
