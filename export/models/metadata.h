// The one schema of `metadata.json`, the document an exported model carries
// as a TorchScript extra file (`extra/metadata.json` inside the .pt/.ptl
// zip). The exporter fills a ModelMetadata and writes it with
// ModelMetadataJson; `export --inspect`, the runner and anyone embedding it
// read it with ParseModelMetadata. Torch-free and protobuf-free.
//
// Schema version 1 (the exporter writes every key):
//
//   {
//     "schema_version": 1,
//     "source_checkpoint": {
//       "path": "runs/a/best",              // as given to export
//       "resolved_path": "runs/a/epoch=3",  // symlinks followed
//       "tensor_digest": "…",               // what `ckpt digest` prints
//       "created_unix_micros": 1763793600000000,
//       "producer": {"tool": "train", "version": "…"},
//       "libtorch_version": "1.13.1"        // of the trainer
//     },
//     "epoch": 3, "global_step": 1200,
//     "monitored": {"name": "val_acc", "mode": "max", "value": 0.91},
//                                           // null when none was recorded
//     "metrics": {"val_acc": 0.91, "val_loss": 0.25},
//     "class_labels": ["T-shirt/top", …],  // index = output column
//     "input_shape": [1, 28, 28],           // one example, no batch dim
//     "input_dtype": "float32",
//     "normalization": {"mean": [0.286], "std": [0.353]},
//                                           // or null (inputs as they are);
//                                           // one value or one per channel,
//                                           // applied as (x / 255 - mean) /
//                                           std
//     "output": "logits",                   // [batch, len(class_labels)]
//     "architecture": {"name": "cnn", "config": {"channels": "32", …}},
//     "producer": {"tool": "export", "version": "0.1.0",
//                  "libtorch_version": "1.13.0"},
//     "exported_at": "2026-11-22T06:40:00Z",
//     "exported_unix_micros": 1763793600000000,
//     "parity": {"probe_batch": 8, "probe_seed": 0, "tolerance": 1e-05,
//                "max_abs_difference": 0.0}
//   }
//
// A reader requires "schema_version" (an integer from 1 to the newest it
// knows) and type-checks every key it knows; any key may be absent (a
// hand-written document need only say what it knows), and unknown keys are
// kept in `json` untouched. What the runner acts on (input shape, dtype,
// normalization, labels) is range-checked too, so a broken document fails
// at load time rather than as a wrong answer.
//
//   absl::StatusOr<models::ModelMetadata> metadata =
//       models::ParseModelMetadata(text);
//   if (metadata.ok() && !metadata->input_shape.empty()) { /* ... */ }
#ifndef EXPORT_MODELS_METADATA_H_
#define EXPORT_MODELS_METADATA_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace models {

inline constexpr char kMetadataFileName[] = "metadata.json";
inline constexpr int kMetadataSchemaVersion = 1;

// The element types an input may have, by their metadata names.
inline constexpr const char* kInputDtypes[] = {"float32", "float64", "float16",
                                               "uint8", "int64"};

struct ModelMetadata {
  // How to feed the model. An empty field was absent from the document.
  std::vector<int64_t> input_shape;  // one item, no batch dimension
  std::string input_dtype;           // one of kInputDtypes
  std::vector<double> normalization_mean;
  std::vector<double> normalization_std;
  std::vector<std::string> class_labels;  // in logit order
  std::string output;                     // "logits"

  // Where the weights came from.
  struct SourceCheckpoint {
    std::string path;
    std::string resolved_path;
    std::string tensor_digest;
    int64_t created_unix_micros = 0;
    std::string producer_tool;
    std::string producer_version;
    std::string libtorch_version;
  };
  SourceCheckpoint source_checkpoint;
  int64_t epoch = 0;
  int64_t global_step = 0;
  struct Monitored {
    std::string name;
    std::string mode;  // "min", "max" or "unspecified"
    double value = 0;
  };
  std::optional<Monitored> monitored;
  std::map<std::string, double> metrics;
  std::string architecture_name;
  std::map<std::string, std::string> architecture_config;

  // How it was exported.
  std::string exporter_version;
  std::string exporter_libtorch_version;
  int64_t exported_unix_micros = 0;
  struct Parity {
    int64_t probe_batch = 0;
    uint64_t probe_seed = 0;
    double tolerance = 0;
    double max_abs_difference = 0;
  };
  Parity parity;

  // Set by ParseModelMetadata: the document exactly as read.
  std::string json;
};

// The schema version 1 document for `metadata` (`json` is ignored), with
// every key present, indented by 2, keys in schema order.
std::string ModelMetadataJson(const ModelMetadata& metadata);

// Parses and checks a document. kInvalidArgument naming the key for a
// malformed document; kFailedPrecondition for a schema_version newer than
// kMetadataSchemaVersion.
absl::StatusOr<ModelMetadata> ParseModelMetadata(absl::string_view text);

// The document re-indented for people; `text` itself when it does not
// parse.
std::string PrettyPrintJson(absl::string_view text);

// "2026-11-22T06:40:00Z" for a time in microseconds since the epoch.
std::string FormatUtcTimestamp(int64_t unix_micros);

}  // namespace models

#endif  // EXPORT_MODELS_METADATA_H_
