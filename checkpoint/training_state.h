// Optimizer and RNG state for exact resume, keyed by parameter NAME.
//
// LibTorch's own optimizer serialization (torch/optim/serialize.h) keys
// state by TensorImpl pointer strings, matches parameters by position and,
// in 1.13, does not apply saved param-group options such as `lr` on load.
// This library records the state against parameter names instead, with the
// hyper-parameters, into a proto::TrainingState plus tensors named
//   optimizer/<state>/<parameter name>   e.g. optimizer/exp_avg/fc1.weight
//   rng/cpu, rng/cuda:<i>                generator states (uint8)
//
// Supported optimizers: torch::optim::SGD (momentum_buffer), Adam and AdamW
// (exp_avg, exp_avg_sq, max_exp_avg_sq with amsgrad, step).
//
// Example (saving):
//   CheckpointState state;
//   state.tensors = NamedParametersAndBuffers(*model);
//   RETURN_IF_ERROR(CaptureOptimizerState(optimizer, model->named_parameters(),
//       state.training_state.mutable_optimizer(), &state.tensors));
//   RETURN_IF_ERROR(CaptureRngState(state.training_state.mutable_rng(),
//                                   &state.tensors));
// Restoring mirrors it with RestoreOptimizerState / RestoreRngState on the
// loaded CheckpointState, after the module's parameters are loaded.
#ifndef CHECKPOINT_TRAINING_STATE_H_
#define CHECKPOINT_TRAINING_STATE_H_

#include "absl/status/status.h"
#include "checkpoint/manifest.pb.h"
#include "checkpoint/named_tensors.h"

namespace torch {
namespace optim {
class Optimizer;
}  // namespace optim
}  // namespace torch

namespace checkpoint {

inline constexpr char kOptimizerTensorPrefix[] = "optimizer/";
inline constexpr char kCpuRngTensorName[] = "rng/cpu";

// Records `optimizer`'s type, param groups (hyper-parameters and parameter
// names) and per-parameter state into `state`, appending the state tensors
// to `tensors`. `named_parameters` names every parameter the optimizer
// holds (e.g. module->named_parameters()). The appended tensors ALIAS the
// optimizer's live buffers: save (or snapshot, as AsyncCheckpointSaver
// does) before the next optimizer step.
// Errors: kInvalidArgument for an unsupported optimizer or a parameter
// without a name.
absl::Status CaptureOptimizerState(const torch::optim::Optimizer& optimizer,
                                   const NamedTensors& named_parameters,
                                   proto::OptimizerState* state,
                                   NamedTensors* tensors);

// Replaces `optimizer`'s state with the recorded one and applies the
// recorded hyper-parameters (lr, momentum, betas, ...) to its param groups.
// Parameters are matched by name; state tensors are copied to each
// parameter's device and dtype (never aliasing `tensors`, which may be
// read-only mmap views). The optimizer must have the same type and the same
// param groups (same parameter names per group) as when captured.
// Errors: kFailedPrecondition for a type or group mismatch, kNotFound for a
// missing tensor or parameter name, kInvalidArgument for a shape mismatch.
absl::Status RestoreOptimizerState(const proto::OptimizerState& state,
                                   const NamedTensors& tensors,
                                   const NamedTensors& named_parameters,
                                   torch::optim::Optimizer* optimizer);

// Records the default CPU generator's state as "rng/cpu" and, when CUDA is
// available at runtime, each GPU's default generator as "rng/cuda:<i>".
// The tensors are copies: later random draws do not change them.
absl::Status CaptureRngState(proto::RngState* state, NamedTensors* tensors);

// Restores what CaptureRngState recorded. CUDA generator states are
// restored when CUDA is available with at least as many devices; otherwise
// they are skipped (a CPU-only resume of a GPU run) and the CPU state is
// still restored.
absl::Status RestoreRngState(const proto::RngState& state,
                             const NamedTensors& tensors);

}  // namespace checkpoint

#endif  // CHECKPOINT_TRAINING_STATE_H_
