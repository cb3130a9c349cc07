#include "runner/metadata.h"

#include <cmath>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace runner {
namespace {

using nlohmann::json;

absl::Status FieldError(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat("metadata.json: \"", field, "\" ", problem));
}

absl::StatusOr<std::vector<float>> ParseNumberOrList(const json& value,
                                                     absl::string_view field) {
  std::vector<float> numbers;
  if (value.is_number()) {
    numbers.push_back(value.get<float>());
  } else if (value.is_array() && !value.empty()) {
    for (const json& item : value) {
      if (!item.is_number()) {
        return FieldError(field, "must hold numbers");
      }
      numbers.push_back(item.get<float>());
    }
  } else {
    return FieldError(field, "must be a number or a non-empty list of numbers");
  }
  for (float number : numbers) {
    if (!std::isfinite(number)) return FieldError(field, "must be finite");
  }
  return numbers;
}

}  // namespace

std::string ShapeToString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<ModelMetadata> ParseModelMetadata(absl::string_view json_text) {
  json document = json::parse(json_text.begin(), json_text.end(), nullptr,
                              /*allow_exceptions=*/false);
  if (document.is_discarded()) {
    return absl::InvalidArgumentError("metadata.json: not valid JSON");
  }
  if (!document.is_object()) {
    return absl::InvalidArgumentError("metadata.json: not a JSON object");
  }
  ModelMetadata metadata;
  metadata.json = std::string(json_text);

  if (auto it = document.find("input_shape"); it != document.end()) {
    if (!it->is_array() || it->empty() || it->size() > 8) {
      return FieldError("input_shape", "must be a list of 1 to 8 dimensions");
    }
    for (const json& dim : *it) {
      if (!dim.is_number_integer() || dim.get<int64_t>() <= 0 ||
          dim.get<int64_t>() > (int64_t{1} << 24)) {
        return FieldError("input_shape",
                          "must hold positive integers (at most 2^24)");
      }
      metadata.input_shape.push_back(dim.get<int64_t>());
    }
  }
  if (auto it = document.find("input_dtype"); it != document.end()) {
    if (!it->is_string()) return FieldError("input_dtype", "must be a string");
    metadata.input_dtype = it->get<std::string>();
    static const char* const kKnown[] = {"float32", "float64", "float16",
                                         "uint8", "int64"};
    bool known = false;
    for (const char* name : kKnown) known |= metadata.input_dtype == name;
    if (!known) {
      return FieldError("input_dtype",
                        absl::StrCat("'", metadata.input_dtype,
                                     "' is not one of float32, float64, "
                                     "float16, uint8, int64"));
    }
  }
  if (auto it = document.find("normalization");
      it != document.end() && !it->is_null()) {
    if (!it->is_object() || !it->contains("mean") || !it->contains("std")) {
      return FieldError("normalization",
                        "must be an object with \"mean\" and \"std\"");
    }
    absl::StatusOr<std::vector<float>> mean =
        ParseNumberOrList((*it)["mean"], "normalization.mean");
    if (!mean.ok()) return mean.status();
    absl::StatusOr<std::vector<float>> std_dev =
        ParseNumberOrList((*it)["std"], "normalization.std");
    if (!std_dev.ok()) return std_dev.status();
    for (float value : *std_dev) {
      if (value <= 0) return FieldError("normalization.std", "must be > 0");
    }
    if (mean->size() != std_dev->size()) {
      return FieldError("normalization",
                        "\"mean\" and \"std\" must have the same length");
    }
    if (mean->size() > 1 && !metadata.input_shape.empty() &&
        static_cast<int64_t>(mean->size()) != metadata.input_shape[0]) {
      return FieldError("normalization",
                        "must have one value, or one per channel of "
                        "input_shape[0]");
    }
    metadata.normalization_mean = *std::move(mean);
    metadata.normalization_std = *std::move(std_dev);
  }
  if (auto it = document.find("class_labels");
      it != document.end() && !it->is_null()) {
    if (!it->is_array()) return FieldError("class_labels", "must be a list");
    for (const json& label : *it) {
      if (!label.is_string()) {
        return FieldError("class_labels", "must hold strings");
      }
      metadata.class_labels.push_back(label.get<std::string>());
    }
  }
  return metadata;
}

std::string PrettyPrintJson(absl::string_view json_text) {
  json document = json::parse(json_text.begin(), json_text.end(), nullptr,
                              /*allow_exceptions=*/false);
  if (document.is_discarded()) return std::string(json_text);
  return document.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace runner
