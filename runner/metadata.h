// The metadata document an exported model carries inside its TorchScript
// archive (the extra file `metadata.json`), parsed into what the runner
// needs to feed the model. Torch-free.
//
// Only the fields the runner acts on are typed; the whole document is kept
// as text for `run --info` and for callers that want the rest ("epoch",
// "monitored", "producer", ...). Every field is optional, but a field that
// is present must have the right type, so a broken exporter is caught at
// load time rather than as a wrong answer.
//
// Example:
//   absl::StatusOr<runner::ModelMetadata> metadata =
//       runner::ParseModelMetadata(json_text);
//   if (metadata.ok() && !metadata->input_shape.empty()) ...
#ifndef RUNNER_METADATA_H_
#define RUNNER_METADATA_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace runner {

struct ModelMetadata {
  // One input item's shape without the batch dimension, e.g. {1, 28, 28}.
  // Empty when the document does not say.
  std::vector<int64_t> input_shape;
  // "float32", "float64", "float16", "uint8", "int64"; empty when unknown.
  std::string input_dtype;
  // Applied to images scaled to [0, 1]: (x - mean[c]) / std[c]. One value
  // for all channels, or one per channel. Empty when absent (no
  // normalization).
  std::vector<float> normalization_mean;
  std::vector<float> normalization_std;
  // Names of the output classes, in logit order; may be empty.
  std::vector<std::string> class_labels;
  // The whole document, as found in the archive.
  std::string json;
};

// Parses and type-checks the metadata document. kInvalidArgument names the
// offending field.
absl::StatusOr<ModelMetadata> ParseModelMetadata(absl::string_view json_text);

// The document re-indented for people; `json_text` itself when it does not
// parse.
std::string PrettyPrintJson(absl::string_view json_text);

// "[1, 28, 28]".
std::string ShapeToString(const std::vector<int64_t>& shape);

}  // namespace runner

#endif  // RUNNER_METADATA_H_
