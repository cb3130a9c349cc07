#include "runner/session.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <sys/stat.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/cuda.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <iterator>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "third_party/libtorch/torch_compat.h"
#include "tools/base/shape.h"
#include "tools/torch/runtime.h"

namespace runner {
namespace {

// The line of a LibTorch error a user needs. A c10::Error's text is one
// line after what_without_backtrace(); the TorchScript interpreter instead
// throws "The following operation failed in the TorchScript interpreter.",
// a serialized-code traceback, then the real error as the last line.
std::string FirstLine(const char* message) {
  std::string text = message;
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) {
    text.pop_back();
  }
  if (text.rfind("The following operation failed", 0) == 0) {
    if (size_t newline = text.rfind('\n'); newline != std::string::npos) {
      text.erase(0, newline + 1);
    }
    return text;
  }
  if (size_t newline = text.find('\n'); newline != std::string::npos) {
    text.resize(newline);
  }
  return text;
}

std::string ErrorText(const c10::Error& error) {
  return FirstLine(error.what_without_backtrace());
}

// The metadata's input dtype names (models::kInputDtypes) and their torch
// types: the one table for both directions.
struct NamedDtype {
  const char* name;
  c10::ScalarType type;
};
constexpr NamedDtype kNamedDtypes[] = {{"float32", c10::kFloat},
                                       {"float64", c10::kDouble},
                                       {"float16", c10::kHalf},
                                       {"uint8", c10::kByte},
                                       {"int64", c10::kLong}};
static_assert(std::size(kNamedDtypes) == std::size(models::kInputDtypes),
              "every input dtype the metadata allows has a torch type");

std::optional<c10::ScalarType> DtypeFromName(const std::string& name) {
  for (const NamedDtype& dtype : kNamedDtypes) {
    if (name == dtype.name) return dtype.type;
  }
  return std::nullopt;
}

void ApplyTf32(RunnerOptions::Tf32 tf32) {
  if (tf32 == RunnerOptions::Tf32::kLibTorchDefault) return;
  const bool allow = tf32 == RunnerOptions::Tf32::kOn;
  at::Context& context = at::globalContext();
  context.setAllowTF32CuBLAS(allow);
  context.setAllowTF32CuDNN(allow);
}

// A TorchScript archive is a zip file; checking the signature first turns
// "PytorchStreamReader failed reading zip archive: failed finding central
// directory" into a plain answer for the commonest mistake.
bool HasZipSignature(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  char signature[4] = {};
  file.read(signature, sizeof(signature));
  return file.gcount() == 4 && signature[0] == 'P' && signature[1] == 'K' &&
         signature[2] == 3 && signature[3] == 4;
}

}  // namespace

std::string DtypeName(c10::ScalarType type) {
  for (const NamedDtype& dtype : kNamedDtypes) {
    if (type == dtype.type) return dtype.name;
  }
  return c10::toString(type);
}

Session::Session(std::string path, torch::jit::Module module,
                 torch::Device device,
                 std::optional<models::ModelMetadata> metadata, int threads)
    : path_(std::move(path)),
      module_(std::move(module)),
      device_(device),
      metadata_(std::move(metadata)),
      threads_(threads) {
  if (metadata_.has_value() && !metadata_->input_dtype.empty()) {
    input_dtype_ = DtypeFromName(metadata_->input_dtype);
  }
}

absl::StatusOr<std::unique_ptr<Session>> Session::Open(
    const std::string& path, const RunnerOptions& options) {
  auto annotate = [&path](const absl::Status& status) {
    return absl::Status(status.code(),
                        absl::StrCat(path, ": ", status.message()));
  };
  if (options.threads < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("threads must be >= 0, got ", options.threads));
  }
  // Before anything may initialise CUDA.
  if (options.deterministic) torch_tools::EnableDeterministicKernels();
  ApplyTf32(options.tf32);
  absl::StatusOr<torch::Device> device =
      torch_tools::ResolveDevice(options.device, /*allow_auto=*/false);
  if (!device.ok()) return device.status();

  struct stat info;
  if (stat(path.c_str(), &info) != 0) {
    return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  }
  if (!S_ISREG(info.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a regular file"));
  }
  if (!HasZipSignature(path)) {
    return absl::InvalidArgumentError(absl::StrCat(
        path,
        ": not a TorchScript archive (no zip signature; expected the "
        "model.pt written by export)"));
  }

  int threads = options.threads;
  if (threads > 0) at::set_num_threads(threads);
  if (threads == 0 && options.deterministic) threads = at::get_num_threads();

  torch::jit::ExtraFilesMap extra_files{{"metadata.json", ""}};
  torch::jit::Module module;
  try {
    module = torch::jit::load(path, *device, extra_files);
    module.eval();
  } catch (const c10::Error& error) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a TorchScript archive: ", ErrorText(error)));
  } catch (const std::exception& error) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": not a TorchScript archive: ", FirstLine(error.what())));
  }
  if (module.find_method("forward") == c10::nullopt) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": the TorchScript module has no forward method"));
  }

  std::optional<models::ModelMetadata> metadata;
  if (const std::string& text = extra_files["metadata.json"]; !text.empty()) {
    absl::StatusOr<models::ModelMetadata> parsed =
        models::ParseModelMetadata(text);
    if (!parsed.ok()) return annotate(parsed.status());
    metadata = *std::move(parsed);
  }
  return std::unique_ptr<Session>(new Session(path, std::move(module), *device,
                                              std::move(metadata), threads));
}

absl::Status Session::ValidateInput(const torch::Tensor& input) const {
  if (!input.defined()) {
    return absl::InvalidArgumentError("input tensor is undefined");
  }
  if (input_dtype_.has_value() && input.scalar_type() != *input_dtype_) {
    return absl::InvalidArgumentError(
        absl::StrCat("input dtype ", DtypeName(input.scalar_type()),
                     " does not match the model's ", metadata_->input_dtype));
  }
  if (metadata_.has_value() && !metadata_->input_shape.empty()) {
    const std::vector<int64_t>& item = metadata_->input_shape;
    std::vector<int64_t> shape = input.sizes().vec();
    bool matches = shape.size() == item.size() + 1 &&
                   std::equal(item.begin(), item.end(), shape.begin() + 1);
    if (!matches) {
      return absl::InvalidArgumentError(
          absl::StrCat("input shape ", base::ShapeToString(shape),
                       " does not match the model's [N, ",
                       base::ShapeToString(item).substr(1)));
    }
    if (shape[0] < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("input shape ", base::ShapeToString(shape),
                       " has an empty batch (N must be at least 1)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<torch::Tensor> Session::Run(const torch::Tensor& input) const {
  if (absl::Status valid = ValidateInput(input); !valid.ok()) return valid;
  torch::Tensor output;
  try {
    {
      // OpenMP keeps the thread count per calling thread.
      if (threads_ > 0 && at::get_num_threads() != threads_) {
        at::set_num_threads(threads_);
      }
      c10::InferenceMode inference_mode;
      torch::jit::GraphOptimizerEnabledGuard no_reoptimization(false);
      std::vector<c10::IValue> inputs;
      // From pinned memory the copy is asynchronous on the current stream;
      // the output's copy back below waits for it and for the model.
      const bool asynchronous = device_.is_cuda() && input.is_pinned();
      inputs.emplace_back(input.to(device_, /*non_blocking=*/asynchronous));
      c10::IValue result = module_.forward(std::move(inputs));
      if (!result.isTensor()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "the model returned a ", result.tagKind(), ", not a tensor"));
      }
      output = result.toTensor();
    }
    // Outside InferenceMode, so that the caller gets an ordinary tensor
    // (in-place ops on an inference tensor fail outside that mode).
    if (!output.device().is_cpu()) return output.to(torch::kCPU).contiguous();
    return output.clone(at::MemoryFormat::Contiguous);
  } catch (const c10::Error& error) {
    return absl::InvalidArgumentError(
        absl::StrCat("running the model: ", ErrorText(error)));
  } catch (const std::exception& error) {
    // The interpreter's errors (shape mismatches inside the model) arrive
    // as std::runtime_error.
    return absl::InvalidArgumentError(
        absl::StrCat("running the model: ", FirstLine(error.what())));
  }
}

absl::StatusOr<torch::Tensor> Session::NewInput(int64_t batch) const {
  if (batch < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch must be at least 1, got ", batch));
  }
  if (!metadata_.has_value() || metadata_->input_shape.empty() ||
      !input_dtype_.has_value()) {
    return absl::FailedPreconditionError(
        absl::StrCat(path_,
                     ": the model's metadata has no input shape and "
                     "dtype to size an input by"));
  }
  std::vector<int64_t> shape = metadata_->input_shape;
  shape.insert(shape.begin(), batch);
  try {
    return torch::empty(shape, torch::TensorOptions()
                                   .dtype(*input_dtype_)
                                   .pinned_memory(device_.is_cuda()));
  } catch (const c10::Error& error) {
    return absl::ResourceExhaustedError(
        absl::StrCat("allocating an input of shape ",
                     base::ShapeToString(shape), ": ", ErrorText(error)));
  }
}

}  // namespace runner
