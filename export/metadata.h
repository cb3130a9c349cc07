// The metadata an exported model carries, as the TorchScript extra file
// `metadata.json` (stored as `extra/metadata.json` inside the .pt/.ptl zip).
// Torch-free: the exporter builds it, `export --inspect` and the runner read
// it back.
//
// Schema (schema_version 1); every key is always present:
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
//     "monitored": {"name": "val_accuracy", "mode": "max", "value": 0.91},
//                                           // null when none was recorded
//     "metrics": {"val_accuracy": 0.91, "val_loss": 0.25},
//     "class_labels": ["T-shirt/top", …],  // index = output column
//     "input_shape": [1, 28, 28],           // one example, no batch dim
//     "input_dtype": "float32",
//     "normalization": {"mean": [0.286], "std": [0.353]},
//                                           // per channel, applied as
//                                           // (pixel / 255 - mean) / std
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
// architecture.config is the checkpoint's Metadata.architecture_config map,
// values kept as the strings they were recorded as, so that the exported
// model can be rebuilt from it exactly.
#ifndef EXPORT_METADATA_H_
#define EXPORT_METADATA_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "checkpoint/manifest.pb.h"
#include "nlohmann/json.hpp"
#include "tools/base/version.h"

namespace model_export {

inline constexpr char kMetadataFileName[] = "metadata.json";
inline constexpr int kMetadataSchemaVersion = 1;
inline constexpr char kExportToolName[] = "export";
inline constexpr const char* kExportToolVersion = project::kVersion;

// What the exporter knows beyond the checkpoint's own metadata.
struct ExportDescription {
  std::string checkpoint_path;
  std::string resolved_checkpoint_path;
  std::string tensor_digest;

  std::string architecture_name;
  std::map<std::string, std::string> architecture_config;
  std::vector<std::string> class_labels;
  std::vector<int64_t> input_shape;
  std::string input_dtype = "float32";
  std::vector<double> normalization_mean;
  std::vector<double> normalization_std;

  std::string libtorch_version;
  int64_t exported_unix_micros = 0;

  int64_t probe_batch = 0;
  uint64_t probe_seed = 0;
  double parity_tolerance = 0;
  double parity_max_abs_difference = 0;
};

// Builds the document above from the source checkpoint's metadata and the
// exporter's description.
nlohmann::json BuildMetadataJson(
    const checkpoint::proto::Metadata& checkpoint_metadata,
    const ExportDescription& description);

// Parses `text` and checks that it is a metadata document this code
// understands (an object with a known schema_version).
absl::StatusOr<nlohmann::json> ParseMetadataJson(absl::string_view text);

// "2026-11-22T06:40:00Z" for a time in microseconds since the epoch.
std::string FormatUtcTimestamp(int64_t unix_micros);

}  // namespace model_export

#endif  // EXPORT_METADATA_H_
