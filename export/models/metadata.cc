#include "export/models/metadata.h"

#include <cmath>
#include <ctime>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "tools/base/status.h"

namespace models {
namespace {

using nlohmann::ordered_json;
using Json = nlohmann::json;

absl::Status FieldError(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat("metadata.json: \"", field, "\" ", problem));
}

// Each Read leaves `out` alone when `key` is absent or null, and refuses a
// value of the wrong JSON type, naming `prefix` + `key`.
class Object {
 public:
  Object(const Json& json, std::string prefix)
      : json_(json), prefix_(std::move(prefix)) {}

  const Json* Find(const char* key) const {
    auto it = json_.find(key);
    return it == json_.end() || it->is_null() ? nullptr : &*it;
  }
  std::string Name(const char* key) const { return prefix_ + key; }

  absl::Status Read(const char* key, std::string* out) const {
    const Json* value = Find(key);
    if (value == nullptr) return absl::OkStatus();
    if (!value->is_string()) return FieldError(Name(key), "must be a string");
    *out = value->get<std::string>();
    return absl::OkStatus();
  }
  absl::Status Read(const char* key, int64_t* out) const {
    const Json* value = Find(key);
    if (value == nullptr) return absl::OkStatus();
    if (!value->is_number_integer()) {
      return FieldError(Name(key), "must be an integer");
    }
    *out = value->get<int64_t>();
    return absl::OkStatus();
  }
  absl::Status Read(const char* key, uint64_t* out) const {
    const Json* value = Find(key);
    if (value == nullptr) return absl::OkStatus();
    if (!value->is_number_unsigned()) {
      return FieldError(Name(key), "must be a non-negative integer");
    }
    *out = value->get<uint64_t>();
    return absl::OkStatus();
  }
  absl::Status Read(const char* key, double* out) const {
    const Json* value = Find(key);
    if (value == nullptr) return absl::OkStatus();
    if (!value->is_number()) return FieldError(Name(key), "must be a number");
    *out = value->get<double>();
    return absl::OkStatus();
  }
  absl::Status Read(const char* key, std::vector<std::string>* out) const {
    const Json* value = Find(key);
    if (value == nullptr) return absl::OkStatus();
    if (!value->is_array()) return FieldError(Name(key), "must be a list");
    for (const Json& item : *value) {
      if (!item.is_string()) return FieldError(Name(key), "must hold strings");
      out->push_back(item.get<std::string>());
    }
    return absl::OkStatus();
  }
  absl::Status Read(const char* key, std::map<std::string, double>* out) const {
    const Json* value = Find(key);
    if (value == nullptr) return absl::OkStatus();
    if (!value->is_object()) return FieldError(Name(key), "must be an object");
    for (const auto& [name, item] : value->items()) {
      if (!item.is_number()) return FieldError(Name(key), "must hold numbers");
      (*out)[name] = item.get<double>();
    }
    return absl::OkStatus();
  }
  absl::Status Read(const char* key,
                    std::map<std::string, std::string>* out) const {
    const Json* value = Find(key);
    if (value == nullptr) return absl::OkStatus();
    if (!value->is_object()) return FieldError(Name(key), "must be an object");
    for (const auto& [name, item] : value->items()) {
      if (!item.is_string()) return FieldError(Name(key), "must hold strings");
      (*out)[name] = item.get<std::string>();
    }
    return absl::OkStatus();
  }
  // A nested object; null when absent.
  absl::StatusOr<std::optional<Object>> Nested(const char* key) const {
    const Json* value = Find(key);
    if (value == nullptr) return std::optional<Object>();
    if (!value->is_object()) return FieldError(Name(key), "must be an object");
    return std::optional<Object>(Object(*value, Name(key) + "."));
  }

 private:
  const Json& json_;
  std::string prefix_;
};

absl::Status ReadInputShape(const Object& document, ModelMetadata* metadata) {
  const Json* shape = document.Find("input_shape");
  if (shape == nullptr) return absl::OkStatus();
  if (!shape->is_array() || shape->empty() || shape->size() > 8) {
    return FieldError("input_shape", "must be a list of 1 to 8 dimensions");
  }
  for (const Json& dim : *shape) {
    if (!dim.is_number_integer() || dim.get<int64_t>() <= 0 ||
        dim.get<int64_t>() > (int64_t{1} << 24)) {
      return FieldError("input_shape",
                        "must hold positive integers (at most 2^24)");
    }
    metadata->input_shape.push_back(dim.get<int64_t>());
  }
  return absl::OkStatus();
}

absl::Status ReadNumberOrList(const Json& value, absl::string_view field,
                              std::vector<double>* out) {
  if (value.is_number()) {
    out->push_back(value.get<double>());
  } else if (value.is_array() && !value.empty()) {
    for (const Json& item : value) {
      if (!item.is_number()) return FieldError(field, "must hold numbers");
      out->push_back(item.get<double>());
    }
  } else {
    return FieldError(field, "must be a number or a non-empty list of numbers");
  }
  for (double number : *out) {
    if (!std::isfinite(number)) return FieldError(field, "must be finite");
  }
  return absl::OkStatus();
}

absl::Status ReadNormalization(const Object& document,
                               ModelMetadata* metadata) {
  const Json* normalization = document.Find("normalization");
  // null: the model takes its inputs as they are.
  if (normalization == nullptr || normalization->is_null()) {
    return absl::OkStatus();
  }
  if (!normalization->is_object() || !normalization->contains("mean") ||
      !normalization->contains("std")) {
    return FieldError("normalization",
                      "must be an object with \"mean\" and \"std\"");
  }
  RETURN_IF_ERROR(ReadNumberOrList((*normalization)["mean"],
                                   "normalization.mean",
                                   &metadata->normalization_mean));
  RETURN_IF_ERROR(ReadNumberOrList((*normalization)["std"], "normalization.std",
                                   &metadata->normalization_std));
  for (double value : metadata->normalization_std) {
    if (value <= 0) return FieldError("normalization.std", "must be > 0");
  }
  if (metadata->normalization_mean.size() !=
      metadata->normalization_std.size()) {
    return FieldError("normalization",
                      "\"mean\" and \"std\" must have the same length");
  }
  if (metadata->normalization_mean.size() > 1 &&
      !metadata->input_shape.empty() &&
      static_cast<int64_t>(metadata->normalization_mean.size()) !=
          metadata->input_shape[0]) {
    return FieldError("normalization",
                      "must have one value, or one per channel of "
                      "input_shape[0]");
  }
  return absl::OkStatus();
}

absl::Status ReadProvenance(const Object& document, ModelMetadata* metadata) {
  ASSIGN_OR_RETURN(std::optional<Object> source,
                   document.Nested("source_checkpoint"));
  if (source.has_value()) {
    const Object& s = *source;
    ModelMetadata::SourceCheckpoint& out = metadata->source_checkpoint;
    RETURN_IF_ERROR(s.Read("path", &out.path));
    RETURN_IF_ERROR(s.Read("resolved_path", &out.resolved_path));
    RETURN_IF_ERROR(s.Read("tensor_digest", &out.tensor_digest));
    RETURN_IF_ERROR(s.Read("created_unix_micros", &out.created_unix_micros));
    RETURN_IF_ERROR(s.Read("libtorch_version", &out.libtorch_version));
    ASSIGN_OR_RETURN(std::optional<Object> producer, s.Nested("producer"));
    if (producer.has_value()) {
      RETURN_IF_ERROR(producer->Read("tool", &out.producer_tool));
      RETURN_IF_ERROR(producer->Read("version", &out.producer_version));
    }
  }
  RETURN_IF_ERROR(document.Read("epoch", &metadata->epoch));
  RETURN_IF_ERROR(document.Read("global_step", &metadata->global_step));
  ASSIGN_OR_RETURN(std::optional<Object> monitored,
                   document.Nested("monitored"));
  if (monitored.has_value()) {
    ModelMetadata::Monitored out;
    RETURN_IF_ERROR(monitored->Read("name", &out.name));
    RETURN_IF_ERROR(monitored->Read("mode", &out.mode));
    RETURN_IF_ERROR(monitored->Read("value", &out.value));
    metadata->monitored = std::move(out);
  }
  RETURN_IF_ERROR(document.Read("metrics", &metadata->metrics));
  ASSIGN_OR_RETURN(std::optional<Object> architecture,
                   document.Nested("architecture"));
  if (architecture.has_value()) {
    RETURN_IF_ERROR(architecture->Read("name", &metadata->architecture_name));
    RETURN_IF_ERROR(
        architecture->Read("config", &metadata->architecture_config));
  }
  ASSIGN_OR_RETURN(std::optional<Object> producer, document.Nested("producer"));
  if (producer.has_value()) {
    RETURN_IF_ERROR(producer->Read("version", &metadata->exporter_version));
    RETURN_IF_ERROR(producer->Read("libtorch_version",
                                   &metadata->exporter_libtorch_version));
  }
  RETURN_IF_ERROR(
      document.Read("exported_unix_micros", &metadata->exported_unix_micros));
  ASSIGN_OR_RETURN(std::optional<Object> parity, document.Nested("parity"));
  if (parity.has_value()) {
    ModelMetadata::Parity& out = metadata->parity;
    RETURN_IF_ERROR(parity->Read("probe_batch", &out.probe_batch));
    RETURN_IF_ERROR(parity->Read("probe_seed", &out.probe_seed));
    RETURN_IF_ERROR(parity->Read("tolerance", &out.tolerance));
    RETURN_IF_ERROR(
        parity->Read("max_abs_difference", &out.max_abs_difference));
  }
  return absl::OkStatus();
}

}  // namespace

std::string ModelMetadataJson(const ModelMetadata& metadata) {
  const ModelMetadata::SourceCheckpoint& source = metadata.source_checkpoint;
  ordered_json monitored = nullptr;
  if (metadata.monitored.has_value()) {
    monitored = {{"name", metadata.monitored->name},
                 {"mode", metadata.monitored->mode},
                 {"value", metadata.monitored->value}};
  }
  ordered_json normalization = nullptr;
  if (!metadata.normalization_mean.empty() ||
      !metadata.normalization_std.empty()) {
    normalization = {{"mean", metadata.normalization_mean},
                     {"std", metadata.normalization_std}};
  }
  ordered_json document = {
      {"schema_version", kMetadataSchemaVersion},
      {"source_checkpoint",
       {{"path", source.path},
        {"resolved_path", source.resolved_path},
        {"tensor_digest", source.tensor_digest},
        {"created_unix_micros", source.created_unix_micros},
        {"producer",
         {{"tool", source.producer_tool},
          {"version", source.producer_version}}},
        {"libtorch_version", source.libtorch_version}}},
      {"epoch", metadata.epoch},
      {"global_step", metadata.global_step},
      {"monitored", monitored},
      // std::map: sorted keys, the same document for the same model.
      {"metrics", metadata.metrics},
      {"class_labels", metadata.class_labels},
      {"input_shape", metadata.input_shape},
      {"input_dtype", metadata.input_dtype},
      {"normalization", normalization},
      {"output", metadata.output},
      {"architecture",
       {{"name", metadata.architecture_name},
        {"config", metadata.architecture_config}}},
      {"producer",
       {{"tool", "export"},
        {"version", metadata.exporter_version},
        {"libtorch_version", metadata.exporter_libtorch_version}}},
      {"exported_at", FormatUtcTimestamp(metadata.exported_unix_micros)},
      {"exported_unix_micros", metadata.exported_unix_micros},
      {"parity",
       {{"probe_batch", metadata.parity.probe_batch},
        {"probe_seed", metadata.parity.probe_seed},
        {"tolerance", metadata.parity.tolerance},
        {"max_abs_difference", metadata.parity.max_abs_difference}}},
  };
  return document.dump(2, ' ', false, Json::error_handler_t::replace);
}

absl::StatusOr<ModelMetadata> ParseModelMetadata(absl::string_view text) {
  Json document = Json::parse(text.begin(), text.end(), nullptr,
                              /*allow_exceptions=*/false);
  if (document.is_discarded()) {
    return absl::InvalidArgumentError("metadata.json: not valid JSON");
  }
  if (!document.is_object()) {
    return absl::InvalidArgumentError("metadata.json: not a JSON object");
  }
  auto version = document.find("schema_version");
  if (version == document.end() || !version->is_number_integer() ||
      version->get<int64_t>() < 1) {
    return FieldError("schema_version",
                      "must be present, an integer of at least 1");
  }
  if (version->get<int64_t>() > kMetadataSchemaVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "metadata.json has schema_version ", version->get<int64_t>(),
        "; this build reads up to ", kMetadataSchemaVersion));
  }
  const Object root(document, "");
  ModelMetadata metadata;
  metadata.json = std::string(text);
  RETURN_IF_ERROR(ReadInputShape(root, &metadata));
  RETURN_IF_ERROR(root.Read("input_dtype", &metadata.input_dtype));
  if (!metadata.input_dtype.empty()) {
    bool known = false;
    for (const char* name : kInputDtypes) known |= metadata.input_dtype == name;
    if (!known) {
      return FieldError(
          "input_dtype",
          absl::StrCat("'", metadata.input_dtype, "' is not one of ",
                       absl::StrJoin(kInputDtypes, ", ")));
    }
  }
  RETURN_IF_ERROR(ReadNormalization(root, &metadata));
  RETURN_IF_ERROR(root.Read("class_labels", &metadata.class_labels));
  RETURN_IF_ERROR(root.Read("output", &metadata.output));
  RETURN_IF_ERROR(ReadProvenance(root, &metadata));
  return metadata;
}

std::string PrettyPrintJson(absl::string_view text) {
  Json document = Json::parse(text.begin(), text.end(), nullptr,
                              /*allow_exceptions=*/false);
  if (document.is_discarded()) return std::string(text);
  return document.dump(2, ' ', false, Json::error_handler_t::replace);
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

}  // namespace models
