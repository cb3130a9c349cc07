// Checkpoint -> frozen TorchScript for edge applications: what the `export`
// binary does, as a library. Torch-free header.
//
// ExportCheckpoint() loads a checkpoint with every checksum verified,
// rebuilds the module from the architecture its metadata records
// (export/models/architectures.h: the trainer's own definition, never a second
// forward), loads the weights strictly, freezes it in eval mode, checks on a
// probe batch that the frozen module and each written file give the trained
// module's outputs, and writes a .pt (and optionally a lite-interpreter
// .ptl) carrying extra/metadata.json (schema in export/metadata.h).
//
// Example:
//   model_export::ExportOptions options;
//   options.checkpoint_path = "runs/a/best";
//   options.output_path = "model.pt";
//   absl::StatusOr<model_export::ExportSummary> summary =
//       model_export::ExportCheckpoint(options);
//
// Errors, each naming the file and what is wrong: kNotFound (no
// checkpoint), kDataLoss (corrupt checkpoint), kInvalidArgument (no or an
// unknown architecture, bad architecture config, weights that do not match
// the architecture: every missing, unexpected and mismatched key is
// listed), kInternal (parity check failed), and the system's reason when the
// output cannot be written. On any error nothing is left at the output
// paths.
#ifndef EXPORT_EXPORTER_H_
#define EXPORT_EXPORTER_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace model_export {

struct ExportOptions {
  // A checkpoint directory or a symlink to one (RUN_DIR/best). Symlinks are
  // resolved once, so a trainer switching `best` meanwhile cannot mix two
  // checkpoints.
  std::string checkpoint_path;
  std::string output_path;
  // Optional lite-interpreter (.ptl) output; empty for none.
  std::string lite_output_path;
  // Probe inputs: batch of standard-normal examples from this seed.
  int64_t probe_batch = 8;
  uint64_t probe_seed = 0;
  double parity_tolerance = 1e-5;
};

struct ExportSummary {
  std::string resolved_checkpoint_path;
  std::string tensor_digest;
  std::string architecture;
  double max_abs_difference = 0;
  // The metadata.json written into the files.
  std::string metadata_json;
};

absl::StatusOr<ExportSummary> ExportCheckpoint(const ExportOptions& options);

// The metadata.json of an exported .pt or .ptl, re-indented for people.
// kNotFound when the file or its metadata is missing, kDataLoss when it is
// not a TorchScript archive or the metadata is not valid.
absl::StatusOr<std::string> InspectModel(const std::string& model_path);

}  // namespace model_export

#endif  // EXPORT_EXPORTER_H_
