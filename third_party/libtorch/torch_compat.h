// The one place where the LibTorch versions this project builds against
// (Debian's 1.13 and PyPI's 2.11) differ for its code. Everything else is
// written against the API both share; a difference found later goes here,
// not into an `#if` at the call site.
//
// Header-only, and no heavier than what its callers already include.
#ifndef THIRD_PARTY_LIBTORCH_TORCH_COMPAT_H_
#define THIRD_PARTY_LIBTORCH_TORCH_COMPAT_H_

#include <ATen/autocast_mode.h>
#include <c10/core/Event.h>
#include <torch/cuda.h>
#include <torch/optim/optimizer.h>
#include <torch/version.h>

#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>

namespace torch_compat {

// The key type of torch::optim::Optimizer::state(): in 1.13 a string (the
// parameter's TensorImpl address printed), in 2.x the TensorImpl* as void*.
using OptimizerStateKey = typename std::decay_t<
    decltype(std::declval<torch::optim::Optimizer&>().state())>::key_type;

namespace internal {
template <typename Key>
Key OptimizerStateKeyOf(const at::Tensor& parameter) {
  if constexpr (std::is_same_v<Key, std::string>) {
    // What 1.13's c10::guts::to_string (gone in 2.x) printed.
    std::ostringstream key;
    key << parameter.unsafeGetTensorImpl();
    return key.str();
  } else {
    return static_cast<Key>(parameter.unsafeGetTensorImpl());
  }
}
}  // namespace internal

// The key under which `optimizer.state()` holds `parameter`'s state.
inline OptimizerStateKey OptimizerStateKeyOf(const at::Tensor& parameter) {
  return internal::OptimizerStateKeyOf<OptimizerStateKey>(parameter);
}

// The number of visible CUDA devices, as an int: 2.x returns
// c10::DeviceIndex (int8_t), 1.13 size_t.
inline int CudaDeviceCount() {
  return static_cast<int>(torch::cuda::device_count());
}

// Turns CUDA autocast on or off for this thread. 2.x deprecates the
// device-less at::autocast::set_enabled.
inline void SetCudaAutocastEnabled(bool enabled) {
#if TORCH_VERSION_MAJOR >= 2
  at::autocast::set_autocast_enabled(at::kCUDA, enabled);
#else
  at::autocast::set_enabled(enabled);
#endif
}

// Whether cuBLAS calls under at::globalContext().setDeterministicAlgorithms
// need CUBLAS_WORKSPACE_CONFIG set: 1.x raises an error without it, 2.11
// does not (seen on an H100 with torch 2.11.0+cu130).
inline constexpr bool kDeterministicCublasNeedsWorkspaceConfig =
    TORCH_VERSION_MAJOR < 2;

// Waits on the host until the work `event` recorded has run: 2.x has
// c10::Event::synchronize, 1.13 only query.
inline void SynchronizeEvent(const c10::Event& event) {
#if TORCH_VERSION_MAJOR >= 2
  event.synchronize();
#else
  while (!event.query()) std::this_thread::yield();
#endif
}

}  // namespace torch_compat

#endif  // THIRD_PARTY_LIBTORCH_TORCH_COMPAT_H_
