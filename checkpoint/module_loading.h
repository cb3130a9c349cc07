// Loads checkpoint tensors into a module's parameters and buffers: the
// missing `load_state_dict` of LibTorch's C++ frontend (pytorch #36577), for
// both torch::nn::Module and torch::jit::Module.
//
// Values are copied in place (under NoGradGuard) into the module's existing
// tensors, so the module keeps its devices and dtypes and any optimizer that
// holds those tensors keeps working. Source tensors whose names contain '/'
// (training state such as "optimizer/exp_avg/fc.weight") are ignored.
//
// Example:
//   ASSIGN_OR_RETURN(CheckpointState state, LoadCheckpoint(path, {}));
//   LoadIntoModuleOptions options;
//   options.strip_prefix = "module.";  // a DataParallel checkpoint
//   ASSIGN_OR_RETURN(LoadReport report,
//                    LoadIntoModule(*model, state.tensors, options));
//
// Strict mode (the default) changes nothing unless every module tensor is
// present with the right shape and nothing unexpected is left over; its
// error lists every missing, unexpected and shape-mismatched key at once.
// Non-strict mode loads what matches and describes the rest in LoadReport.
#ifndef CHECKPOINT_MODULE_LOADING_H_
#define CHECKPOINT_MODULE_LOADING_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "checkpoint/named_tensors.h"

namespace torch {
namespace nn {
class Module;
}  // namespace nn
namespace jit {
struct Module;
}  // namespace jit
}  // namespace torch

namespace checkpoint {

struct LoadIntoModuleOptions {
  // Fail, changing nothing, unless source and module keys match exactly.
  bool strict = true;
  // Removed from the front of every source name that starts with it (names
  // without it are kept as they are), e.g. "module." from DataParallel.
  std::string strip_prefix;
  // Then prepended to every source name, e.g. "backbone." to load a
  // sub-network's checkpoint into a bigger model.
  std::string add_prefix;
};

struct LoadReport {
  // Module names, each list sorted.
  std::vector<std::string> loaded;
  // In the module, not in the source (after remapping).
  std::vector<std::string> missing;
  // In the source (after remapping), not in the module.
  std::vector<std::string> unexpected;
  // In both with different shapes: "name: checkpoint [a, b] vs module [c]".
  std::vector<std::string> shape_mismatched;
};

// Parameters then buffers, recursively, with dotted names; the tensors
// alias the module's own storage.
NamedTensors NamedParametersAndBuffers(const torch::nn::Module& module);
NamedTensors NamedParametersAndBuffers(const torch::jit::Module& module);

// Copies `source` values into `destination` tensors by name (after the key
// remapping of `options`). Destination devices and dtypes are kept; values
// are converted on copy. Errors: kInvalidArgument when two source names map
// to the same key, or in strict mode on any mismatch (nothing is copied
// then); kInternal for a LibTorch error during the copy.
absl::StatusOr<LoadReport> LoadIntoModuleTensors(
    const NamedTensors& destination, const NamedTensors& source,
    const LoadIntoModuleOptions& options);

absl::StatusOr<LoadReport> LoadIntoModule(torch::nn::Module& module,
                                          const NamedTensors& source,
                                          const LoadIntoModuleOptions& options);
absl::StatusOr<LoadReport> LoadIntoModule(torch::jit::Module& module,
                                          const NamedTensors& source,
                                          const LoadIntoModuleOptions& options);

}  // namespace checkpoint

#endif  // CHECKPOINT_MODULE_LOADING_H_
