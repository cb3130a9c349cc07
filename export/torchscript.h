// Freezing a trained torch::jit::Module for inference and writing it as
// TorchScript (.pt) and lite-interpreter (.ptl) files, with a parity check at
// every step: the frozen module, and each file as loaded back, must give the
// trained module's outputs on a deterministic probe batch.
//
// Example:
//   ParityProbe probe;  // batch 8, seed 0, 1e-5 abs
//   ASSIGN_OR_RETURN(FrozenModule frozen,
//                    FreezeWithParityCheck(trained, {1, 28, 28}, probe));
//   RETURN_IF_ERROR(WriteModelFiles(frozen, {"model.pt", "model.ptl"},
//                                   {{"metadata.json", json}}, probe));
//
// Files are written to temporaries in their destination directory, fsync'ed,
// loaded back and checked, then renamed into place: on failure nothing is
// left at the destination paths (an existing file there is untouched).
#ifndef EXPORT_TORCHSCRIPT_H_
#define EXPORT_TORCHSCRIPT_H_

#include <torch/csrc/jit/api/module.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace model_export {

struct ParityProbe {
  int64_t batch = 8;
  uint64_t seed = 0;
  // Largest absolute difference accepted between trained and frozen outputs.
  double tolerance = 1e-5;
};

// Standard-normal probe inputs of shape [probe.batch, example_shape...],
// the same for the same seed on every run and machine.
at::Tensor MakeProbeBatch(const std::vector<int64_t>& example_shape,
                          const ParityProbe& probe);

// Largest |a - b|; infinity when shapes differ or NaNs are in different
// places (matching NaNs count as equal).
double MaxAbsDifference(const at::Tensor& a, const at::Tensor& b);

struct FrozenModule {
  torch::jit::Module module;
  at::Tensor probe_input;
  // The trained module's outputs on probe_input, computed before freezing.
  at::Tensor reference_output;
  double max_abs_difference = 0;
};

// Puts `trained` in eval mode, runs the probe through it, freezes a clone
// (the trained module's own graph is left alone) and fails with
// kInternal, naming the max abs difference, when the frozen module's
// outputs are further than probe.tolerance from the trained ones.
//
// Freezing inlines parameters as constants; numerics-changing folds
// (conv+batchnorm and friends) are not applied, so a frozen model gives the
// trained module's outputs bit for bit on the same machine and threads.
absl::StatusOr<FrozenModule> FreezeWithParityCheck(
    const torch::jit::Module& trained,
    const std::vector<int64_t>& example_shape, const ParityProbe& probe);

struct ModelFilePaths {
  std::string torchscript_path;  // required
  std::string lite_path;         // optional: empty for none
};

// Writes frozen.module to the paths with `extra_files` (name -> contents,
// e.g. {"metadata.json", json}), verifying each file by loading it back
// (torch::jit::load, torch::jit::_load_for_mobile) and comparing its probe
// outputs with frozen.reference_output within probe.tolerance.
absl::Status WriteModelFiles(
    const FrozenModule& frozen, const ModelFilePaths& paths,
    const std::unordered_map<std::string, std::string>& extra_files,
    const ParityProbe& probe);

// Reads extra file `name` (e.g. "metadata.json") from a .pt or .ptl archive
// without loading the model. kNotFound when the file or the record is
// missing, kDataLoss when the file is not a TorchScript archive.
absl::StatusOr<std::string> ReadExtraFile(const std::string& model_path,
                                          const std::string& name);

}  // namespace model_export

#endif  // EXPORT_TORCHSCRIPT_H_
