// Checkpoint -> frozen TorchScript for edge applications: what the `export`
// binary does, as a library. Torch-free header.
//
// ExportCheckpoint() loads a checkpoint with every checksum verified (any
// format LoadCheckpoint reads: ours, a torch.save .pt/.pth, a Lightning
// .ckpt, safetensors), builds the module, either from the architecture its
// metadata records (export/models/architectures.h: the trainer's own
// definition, never a second forward) or from the user's own scripted
// TorchScript module file (`architecture_path`), loads the weights strictly
// after renaming them by `name_rules` (interop/name_rules.h), freezes it in
// eval mode, checks on a probe batch that the frozen module and each written
// file give the trained module's outputs, and writes a .pt (and optionally a
// lite-interpreter .ptl) carrying extra/metadata.json (schema in
// export/metadata.h).
//
// Example:
//   model_export::ExportOptions options;
//   options.checkpoint_path = "runs/a/best";
//   options.output_path = "model.pt";
//   // Or the user's own model, weights from Python:
//   //   options.checkpoint_path = "ddp_resnet18.pth";
//   //   options.architecture_path = "resnet18_scripted.pt";
//   //   options.name_rules.strip_prefixes = {"module."};
//   //   options.input_shape = {3, 224, 224};
//   absl::StatusOr<model_export::ExportSummary> summary =
//       model_export::ExportCheckpoint(options);
//
// Errors, each naming the file and what is wrong: kNotFound (no
// checkpoint), kDataLoss (corrupt checkpoint), kInvalidArgument (no or an
// unknown architecture, an architecture file that is not a TorchScript
// module, bad architecture config, no input shape for a user architecture,
// weights that do not match the architecture: every missing, unexpected and
// mismatched key is listed, after renaming), kInternal (parity check failed),
// and the system's reason when the output cannot be written. On any error
// nothing is left at the output paths.
#ifndef EXPORT_EXPORTER_H_
#define EXPORT_EXPORTER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "checkpoint/interop/name_rules.h"

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

  // The user's own architecture: a TorchScript module file, scripted and
  // not frozen (`torch.jit.script(model).save(path)`), whose parameters and
  // buffers the checkpoint's tensors fill. Empty: the built-in architecture
  // the checkpoint's metadata records. The file is TorchScript code the user
  // chose to run; checkpoints, in contrast, never run anything.
  std::string architecture_path;
  // Checkpoint names -> module names (strip "module.", "model.", ...).
  interop::NameRules name_rules;
  // .pt/.ckpt files whose extras pickle unknown classes (LoadOptions).
  bool lenient = false;
  // How to feed the model, for metadata.json and the parity probe. With
  // architecture_path, input_shape (one example, no batch dimension) is
  // required; the other fields are optional. Given for a built-in
  // architecture, they override what it records.
  std::vector<int64_t> input_shape;
  std::string input_dtype;  // "float32" (the probe is float32)
  std::vector<double> normalization_mean;
  std::vector<double> normalization_std;
  std::vector<std::string> class_labels;
};

struct ExportSummary {
  std::string resolved_checkpoint_path;
  std::string tensor_digest;
  std::string architecture;
  double max_abs_difference = 0;
  // The load: module tensors filled, how many of them came renamed, and the
  // checkpoint's tensors that are not the model's (optimizer state ...).
  int tensors_loaded = 0;
  int tensors_renamed = 0;
  int tensors_ignored = 0;
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
