// The runner library an edge application links: opens a frozen TorchScript
// model written by `export`, checks each input against the model's
// metadata, and runs it deterministically. Depends only on LibTorch and
// Abseil status (no flags, no protobuf).
//
// Example:
//   runner::RunnerOptions options;
//   options.threads = 2;
//   absl::StatusOr<std::unique_ptr<runner::Session>> session =
//       runner::Session::Open("model.pt", options);
//   if (!session.ok()) return session.status();
//   absl::StatusOr<torch::Tensor> logits = (*session)->Run(images);
//
// Inputs: a tensor [N, *input_shape] of the metadata's input_dtype (N >= 1)
// on any device; it is moved to the session's device. The result is the
// model's output on the CPU, contiguous, an ordinary (not inference-mode)
// tensor the caller may modify. A model without metadata is accepted; its
// inputs are then checked by the model alone. No c10::Error escapes: every
// failure is an absl::Status.
//
// Determinism (RunnerOptions::deterministic, the default): the same model,
// input and thread count give the same output bytes, run after run and
// session after session. Open() then
//   - fixes the intra-op thread count (`threads`, or the count in force at
//     Open() when 0) and re-applies it on every Run() from any thread
//     (OpenMP keeps the count per calling thread; a different count changes
//     float results, pytorch #88718);
//   - calls at::globalContext().setDeterministicAlgorithms(true, false) and
//     turns cuDNN benchmark off and cuDNN determinism on;
//   - with LibTorch 1.x only, sets CUBLAS_WORKSPACE_CONFIG=:4096:8 when it
//     is unset (1.x refuses cuBLAS calls under deterministic algorithms
//     without it). 2.x does not ask for it, and it cost about 145 us of host
//     time per cuBLAS call on an H100 (2-3x slower inference for a small
//     CNN) while outputs were bitwise reproducible without it; export it
//     yourself before CUDA initialises if you want it.
// TF32 is a precision choice, not a determinism one (TF32 kernels are as
// reproducible as fp32 ones), so it has its own option, `tf32`, in force in
// both modes.
// These are process-wide LibTorch settings: they stay in force for the
// rest of the process, for other Sessions and other LibTorch code alike.
//
// Executor: Run() executes the graph with the TorchScript graph optimizer
// off (torch::jit::GraphOptimizerEnabledGuard, thread-local, scoped to the
// call). The profiling executor otherwise spends the first calls profiling
// and re-optimising (slow first ~20 calls in 1.13, pytorch #56245); the
// model was already optimised when it was frozen, so the first call is as
// fast as the rest and no warm-up is needed. Nothing global changes.
//
// Threads: a Session may be used from several threads at once. Run() is
// const; it shares the module read-only and TorchScript creates its
// execution plan under its own lock. metadata() never changes after Open().
#ifndef RUNNER_SESSION_H_
#define RUNNER_SESSION_H_

#include <torch/script.h>

#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "export/models/metadata.h"

namespace runner {

struct RunnerOptions {
  // "cpu", "cuda" or "cuda:N".
  std::string device = "cpu";
  // Intra-op threads; 0 keeps LibTorch's current count.
  int threads = 0;
  bool deterministic = true;
  // TF32 for float32 matmuls (cuBLAS) and convolutions (cuDNN) on GPUs that
  // have it: faster, with a 10-bit mantissa. kLibTorchDefault leaves
  // LibTorch's own defaults, which are PyTorch's: convolutions may use
  // TF32, matmuls do not. Process-wide, like the determinism settings.
  enum class Tf32 { kLibTorchDefault, kOff, kOn };
  Tf32 tf32 = Tf32::kLibTorchDefault;
};

class Session {
 public:
  // Loads `path` onto options.device. Errors: kNotFound (no such file),
  // kInvalidArgument (not a TorchScript archive, bad metadata, bad device
  // string or option), kFailedPrecondition (CUDA requested but not
  // available in this LibTorch or on this machine; metadata of a newer
  // schema_version than export/models/metadata.h reads).
  static absl::StatusOr<std::unique_ptr<Session>> Open(
      const std::string& path, const RunnerOptions& options = {});

  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Runs the model on `input`. kInvalidArgument when the input's shape or
  // dtype does not match the metadata, or when the model itself rejects
  // it; the message says what was expected.
  //
  // On a CUDA session, a CPU input in pinned (page-locked) memory is copied
  // to the GPU asynchronously; one in ordinary memory goes through the
  // driver's slower staging. NewInput() makes a pinned one to fill.
  absl::StatusOr<torch::Tensor> Run(const torch::Tensor& input) const;

  // A CPU tensor [batch, *input_shape] of the model's input dtype for the
  // caller to fill and pass to Run(): in pinned memory on a CUDA session,
  // ordinary memory otherwise; its contents are undefined. Reuse it across
  // calls. kFailedPrecondition when the metadata has no input shape or
  // dtype; kInvalidArgument when batch < 1.
  absl::StatusOr<torch::Tensor> NewInput(int64_t batch) const;

  // Null when the archive carries no metadata.json.
  const models::ModelMetadata* metadata() const {
    return metadata_.has_value() ? &*metadata_ : nullptr;
  }
  const std::string& path() const { return path_; }
  const torch::Device& device() const { return device_; }
  // The intra-op thread count applied on each Run(); 0 when not fixed.
  int threads() const { return threads_; }

 private:
  Session(std::string path, torch::jit::Module module, torch::Device device,
          std::optional<models::ModelMetadata> metadata, int threads);

  absl::Status ValidateInput(const torch::Tensor& input) const;

  std::string path_;
  // forward() is not const in the jit API although it does not change the
  // module; see the thread-safety note above.
  mutable torch::jit::Module module_;
  torch::Device device_;
  std::optional<models::ModelMetadata> metadata_;
  std::optional<c10::ScalarType> input_dtype_;
  int threads_;
};

// "Float", "Byte", ... to the metadata's names: "float32", "uint8", ...
std::string DtypeName(c10::ScalarType type);

}  // namespace runner

#endif  // RUNNER_SESSION_H_
