#include "tools/torch/runtime.h"

#include <ATen/Context.h>
#include <torch/cuda.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "third_party/libtorch/torch_compat.h"
#include "tools/base/device_spec.h"

namespace torch_tools {

absl::StatusOr<c10::Device> ResolveDevice(const std::string& text,
                                          bool allow_auto) {
  absl::StatusOr<base::DeviceSpec> spec =
      base::ParseDeviceSpec(text, allow_auto);
  if (!spec.ok()) return spec.status();
  switch (spec->kind) {
    case base::DeviceSpec::Kind::kAuto:
      return torch::cuda::is_available() ? c10::Device(c10::kCUDA, 0)
                                         : c10::Device(c10::kCPU);
    case base::DeviceSpec::Kind::kCpu:
      return c10::Device(c10::kCPU);
    case base::DeviceSpec::Kind::kCuda:
      break;
  }
  if (!torch::cuda::is_available()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device ", text,
        " requested but CUDA is not available (this LibTorch has no CUDA "
        "support or the machine has no usable GPU)"));
  }
  const int count = torch_compat::CudaDeviceCount();
  if (spec->index >= count) {
    return absl::FailedPreconditionError(
        absl::StrCat("device ", text, " requested but only ", count,
                     " CUDA device(s) are available"));
  }
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(spec->index));
}

void EnableDeterministicKernels() {
  if (torch_compat::kDeterministicCublasNeedsWorkspaceConfig) {
    // cuBLAS reads this when it creates its handle; later changes are
    // ignored.
    setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", /*overwrite=*/0);
  }
  at::Context& context = at::globalContext();
  context.setDeterministicAlgorithms(true, /*warn_only=*/false);
  context.setBenchmarkCuDNN(false);
  context.setDeterministicCuDNN(true);
}

}  // namespace torch_tools
