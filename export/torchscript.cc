#include "export/torchscript.h"

#include <ATen/CPUGeneratorImpl.h>
#include <caffe2/serialize/inline_container.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <torch/csrc/jit/mobile/import.h>
#include <torch/csrc/jit/mobile/module.h>
#include <torch/csrc/jit/passes/frozen_graph_optimizations.h>
#include <torch/script.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tools/base/files.h"
#include "tools/base/status.h"

namespace model_export {
namespace {

// Output of one forward pass on `input`, which must be a tensor.
absl::StatusOr<torch::Tensor> ForwardTensor(torch::jit::Module& module,
                                            const torch::Tensor& input) {
  c10::IValue output = module.forward({input});
  if (!output.isTensor()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "forward() returned ", output.tagKind(), ", expected a Tensor"));
  }
  return output.toTensor();
}

absl::Status CheckParity(const std::string& what,
                         const torch::Tensor& reference,
                         const torch::Tensor& candidate, double tolerance,
                         double* max_abs_difference = nullptr) {
  double difference = MaxAbsDifference(reference, candidate);
  if (max_abs_difference != nullptr) *max_abs_difference = difference;
  if (!(difference <= tolerance)) {
    return absl::InternalError(absl::StrFormat(
        "parity check failed: %s differs from the trained module by max abs "
        "difference %.9g (tolerance %.3g)",
        what, difference, tolerance));
  }
  return absl::OkStatus();
}

using base::PendingFile;

}  // namespace

torch::Tensor MakeProbeBatch(const std::vector<int64_t>& example_shape,
                             const ParityProbe& probe) {
  std::vector<int64_t> shape = {probe.batch};
  shape.insert(shape.end(), example_shape.begin(), example_shape.end());
  at::Generator generator = at::detail::createCPUGenerator(probe.seed);
  return at::randn(shape, generator, at::TensorOptions().dtype(at::kFloat));
}

double MaxAbsDifference(const torch::Tensor& a, const torch::Tensor& b) {
  if (!a.sizes().equals(b.sizes())) {
    return std::numeric_limits<double>::infinity();
  }
  if (a.numel() == 0) return 0;
  torch::Tensor a64 = a.to(at::kDouble);
  torch::Tensor b64 = b.to(at::kDouble);
  if (!a64.isnan().equal(b64.isnan())) {
    return std::numeric_limits<double>::infinity();
  }
  // An infinity on either side must be matched exactly; after this check,
  // the only non-finite differences left are NaN - NaN and inf - inf at
  // matching places, which count as equal.
  if (a64.isinf()
          .logical_or(b64.isinf())
          .logical_and(a64.ne(b64))
          .any()
          .item<bool>()) {
    return std::numeric_limits<double>::infinity();
  }
  return (a64 - b64).abs().nan_to_num(0.0, 0.0, 0.0).max().item<double>();
}

absl::StatusOr<FrozenModule> FreezeWithParityCheck(
    const torch::jit::Module& trained,
    const std::vector<int64_t>& example_shape, const ParityProbe& probe) {
  try {
    torch::NoGradGuard no_grad;
    torch::jit::Module eval_module = trained;  // a handle: same object
    eval_module.eval();

    FrozenModule result;
    result.probe_input = MakeProbeBatch(example_shape, probe);
    absl::StatusOr<torch::Tensor> reference =
        ForwardTensor(eval_module, result.probe_input);
    if (!reference.ok()) return reference.status();
    result.reference_output = reference->clone();

    // LibTorch 1.13's freeze() runs its graph optimizations on the module
    // passed in rather than on the frozen result (pytorch #68903): hand it a
    // clone so the trained module stays as it was, and optimize the frozen
    // graph here, without numerics-changing folds.
    result.module = torch::jit::freeze(eval_module.clone(), c10::nullopt,
                                       /*optimize_numerics=*/false);
    std::shared_ptr<torch::jit::Graph> graph =
        result.module.get_method("forward").graph();
    torch::jit::OptimizeFrozenGraph(graph, /*optimize_numerics=*/false);

    absl::StatusOr<torch::Tensor> frozen_output =
        ForwardTensor(result.module, result.probe_input);
    if (!frozen_output.ok()) return frozen_output.status();
    absl::Status parity = CheckParity(
        "the frozen module", result.reference_output, *frozen_output,
        probe.tolerance, &result.max_abs_difference);
    if (!parity.ok()) return parity;
    return result;
  } catch (const c10::Error& error) {
    return absl::InternalError(
        absl::StrCat("freezing: ", error.what_without_backtrace()));
  }
}

absl::Status WriteModelFiles(
    const FrozenModule& frozen, const ModelFilePaths& paths,
    const std::unordered_map<std::string, std::string>& extra_files,
    const ParityProbe& probe) {
  if (paths.torchscript_path.empty()) {
    return absl::InvalidArgumentError("no output path given");
  }
  PendingFile torchscript(paths.torchscript_path);
  std::unique_ptr<PendingFile> lite;
  if (!paths.lite_path.empty()) {
    lite = std::make_unique<PendingFile>(paths.lite_path);
  }
  RETURN_IF_ERROR(torchscript.Reserve());
  if (lite != nullptr) RETURN_IF_ERROR(lite->Reserve());

  try {
    torch::NoGradGuard no_grad;
    frozen.module.save(torchscript.temporary_path(), extra_files);
    torch::jit::Module loaded = torch::jit::load(torchscript.temporary_path());
    absl::StatusOr<torch::Tensor> output =
        ForwardTensor(loaded, frozen.probe_input);
    if (!output.ok()) return output.status();
    RETURN_IF_ERROR(
        CheckParity(absl::StrCat(paths.torchscript_path, " as loaded back"),
                    frozen.reference_output, *output, probe.tolerance));

    if (lite != nullptr) {
      frozen.module._save_for_mobile(lite->temporary_path(), extra_files);
      torch::jit::mobile::Module mobile =
          torch::jit::_load_for_mobile(lite->temporary_path());
      c10::IValue mobile_output = mobile.forward({frozen.probe_input});
      if (!mobile_output.isTensor()) {
        return absl::InternalError(absl::StrCat(
            paths.lite_path, ": forward() as loaded back returned ",
            mobile_output.tagKind(), ", expected a Tensor"));
      }
      RETURN_IF_ERROR(CheckParity(
          absl::StrCat(paths.lite_path, " as loaded back"),
          frozen.reference_output, mobile_output.toTensor(), probe.tolerance));
    }
  } catch (const c10::Error& error) {
    return absl::InternalError(absl::StrCat("writing ", paths.torchscript_path,
                                            ": ",
                                            error.what_without_backtrace()));
  }

  for (PendingFile* file : {&torchscript, lite.get()}) {
    if (file == nullptr) continue;
    for (const auto& [name, contents] : extra_files) {
      absl::StatusOr<std::string> read_back =
          ReadExtraFile(file->temporary_path(), name);
      if (!read_back.ok()) return read_back.status();
      if (*read_back != contents) {
        return absl::InternalError(absl::StrCat(
            file->final_path(), ": extra file ", name, " reads back changed"));
      }
    }
  }

  RETURN_IF_ERROR(torchscript.Publish());
  if (lite != nullptr) RETURN_IF_ERROR(lite->Publish());
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadExtraFile(const std::string& model_path,
                                          const std::string& name) {
  struct stat file_stat;
  if (::stat(model_path.c_str(), &file_stat) != 0) {
    return base::ErrnoToStatus(errno, "opening", model_path);
  }
  if (!S_ISREG(file_stat.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat(model_path, " is not a regular file"));
  }
  try {
    caffe2::serialize::PyTorchStreamReader reader(model_path);
    std::string record = absl::StrCat("extra/", name);
    if (!reader.hasRecord(record)) {
      return absl::NotFoundError(
          absl::StrCat(model_path, " has no extra file ", name));
    }
    auto [data, size] = reader.getRecord(record);
    return std::string(static_cast<const char*>(data.get()), size);
  } catch (const c10::Error& error) {
    return absl::DataLossError(
        absl::StrCat(model_path, " is not a readable TorchScript archive: ",
                     error.what_without_backtrace()));
  }
}

}  // namespace model_export
