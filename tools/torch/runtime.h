// Process-wide LibTorch settings that `train` and the runner both need,
// written once: which device a --device string means on this machine, and
// deterministic kernels.
//
//   ASSIGN_OR_RETURN(torch::Device device,
//                    torch_tools::ResolveDevice("cuda:0",
//                    /*allow_auto=*/false));
//   torch_tools::EnableDeterministicKernels();
//
// Both touch global LibTorch state: call them during setup, before any
// other thread runs torch work.
#ifndef TOOLS_TORCH_RUNTIME_H_
#define TOOLS_TORCH_RUNTIME_H_

#include <c10/core/Device.h>

#include <string>

#include "absl/status/statusor.h"

namespace torch_tools {

// "cpu", "cuda", "cuda:N" (and "auto" when `allow_auto`: the first GPU if
// there is one, else the CPU). Errors: kInvalidArgument for any other text
// (base::ParseDeviceSpec's message); kFailedPrecondition when CUDA is asked
// for but this LibTorch or this machine has none, or fewer devices than N+1.
absl::StatusOr<c10::Device> ResolveDevice(const std::string& text,
                                          bool allow_auto);

// Deterministic algorithms (an op without one throws instead of silently
// varying), cuDNN determinism, no cuDNN benchmarking, and the fixed cuBLAS
// workspace where this LibTorch needs it. Leaves TF32 alone: that is a
// separate choice of each caller's.
void EnableDeterministicKernels();

}  // namespace torch_tools

#endif  // TOOLS_TORCH_RUNTIME_H_
