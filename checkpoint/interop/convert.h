// `ckpt convert IN OUT`: the tensors (and what else each format can hold)
// of any checkpoint TensorSource opens, written as our checkpoint, a
// torch.save file or a safetensors file, with names renamed by NameRules.
// Torch-free.
//
// What goes where:
//   - Tensors, under their new names. A tensor the target cannot hold is
//     dropped and reported with the reason: a dtype our format (or
//     safetensors through our writer) lacks, such as uint16 or float8.
//   - torch.save values (a training dict's "epoch", "best_acc", optimizer
//     hyper-parameters): into a .pt as the same nested dicts; into our
//     checkpoint as metadata.user["python/<name>"] (their Python text), with
//     integer "epoch" and "global_step" also as progress (and from there
//     back into a .pt, typed again: None, bool, int, float, str); into
//     safetensors as `__metadata__` text.
//   - Our checkpoint's metadata and training state: kept when converting to
//     our format and no tensor was renamed or dropped (the training state
//     refers to tensors by name); otherwise reported as dropped.
//   - A .pt is written as a state_dict (an OrderedDict) when every tensor
//     is a model tensor, else as a training dict: the model tensors under
//     the source's model key ("state_dict" if it had none) and every other
//     name as nested dicts along its "/" path (all-digit parts become int
//     keys, as optimizer state has them).
//
// The output is written atomically, then opened again and its digest
// compared with the digest of what was meant to be written: a conversion
// that does not read back identically fails and leaves nothing at OUT.
//
//   interop::ConvertOptions options;
//   options.rules.strip_prefixes = {"module."};
//   ASSIGN_OR_RETURN(interop::ConvertReport report,
//                    interop::Convert("ddp.pt", "model.safetensors", options));
//   std::cout << report.Text();
#ifndef CHECKPOINT_INTEROP_CONVERT_H_
#define CHECKPOINT_INTEROP_CONVERT_H_

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "checkpoint/interop/name_rules.h"
#include "checkpoint/interop/tensor_source.h"

namespace interop {

// By OUT's name: ".pt", ".pth", ".ckpt", ".bin" -> torch.save;
// ".safetensors" -> safetensors; anything else -> our checkpoint directory.
SourceFormat TargetFormatForPath(const std::string& path);

struct ConvertOptions {
  SourceOptions source;
  NameRules rules;
  // Keep only model tensors (names without '/'), no values or state.
  bool model_only = false;
  // Replace an existing OUT; without it an existing OUT is an error.
  bool overwrite = false;
  // Overrides TargetFormatForPath.
  std::optional<SourceFormat> target;
};

struct ConvertReport {
  SourceFormat from = SourceFormat::kCheckpoint;
  SourceFormat to = SourceFormat::kCheckpoint;
  std::vector<std::string> kept;                             // same name
  std::vector<std::pair<std::string, std::string>> renamed;  // from, to
  std::vector<std::pair<std::string, std::string>> dropped;  // name, why
  int values_kept = 0;
  std::string digest;  // of OUT, as read back
  // One line per renamed and dropped name, then a summary line.
  std::string Text() const;
};

// Errors: those of TensorSource::Open for IN; kAlreadyExists for an
// existing OUT without `overwrite`; kInvalidArgument when two names become
// one or nothing is left to write; I/O errors naming OUT; kDataLoss when
// OUT does not read back as written.
absl::StatusOr<ConvertReport> Convert(const std::string& in,
                                      const std::string& out,
                                      const ConvertOptions& options);

}  // namespace interop

#endif  // CHECKPOINT_INTEROP_CONVERT_H_
