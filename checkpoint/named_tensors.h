// NamedTensors: the currency of the checkpoint runtime. An ordered list of
// (name, tensor) pairs; order is kept from the module or checkpoint it came
// from so that saves and reports are deterministic.
//
// Model tensors use PyTorch's dotted names ("fc1.weight"); training-state
// tensors live under "/"-separated namespaces ("optimizer/exp_avg/fc1.weight",
// "rng/cpu"), so a model tensor name never contains '/'.
#ifndef CHECKPOINT_NAMED_TENSORS_H_
#define CHECKPOINT_NAMED_TENSORS_H_

#include <string>
#include <utility>
#include <vector>

#include "torch/types.h"

namespace checkpoint {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// True for names of training-state tensors (optimizer, RNG, ...), which
// are never loaded into a module.
inline bool IsTrainingStateName(const std::string& name) {
  return name.find('/') != std::string::npos;
}

}  // namespace checkpoint

#endif  // CHECKPOINT_NAMED_TENSORS_H_
