#include "checkpoint/training_state.h"

#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "ATen/CPUGeneratorImpl.h"
#include "ATen/Context.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "third_party/libtorch/torch_compat.h"
#include "tools/base/shape.h"
#include "tools/base/warnings.h"
#include "torch/cuda.h"
#include "torch/optim/adam.h"
#include "torch/optim/adamw.h"
#include "torch/optim/optimizer.h"
#include "torch/optim/sgd.h"

namespace checkpoint {
namespace {

using HyperParameters = google::protobuf::Map<std::string, double>;

constexpr char kSgd[] = "sgd";
constexpr char kAdam[] = "adam";
constexpr char kAdamW[] = "adamw";

std::string OptimizerTypeName(const torch::optim::Optimizer& optimizer) {
  if (dynamic_cast<const torch::optim::SGD*>(&optimizer)) return kSgd;
  if (dynamic_cast<const torch::optim::AdamW*>(&optimizer)) return kAdamW;
  if (dynamic_cast<const torch::optim::Adam*>(&optimizer)) return kAdam;
  return "";
}

std::string TensorName(absl::string_view state_name,
                       absl::string_view parameter_name) {
  return absl::StrCat(kOptimizerTensorPrefix, state_name, "/", parameter_name);
}

std::string ShapeString(const torch::Tensor& tensor) {
  return base::ShapeToString(tensor.sizes());
}

absl::StatusOr<double> GetHyperParameter(const HyperParameters& values,
                                         const std::string& key, size_t group) {
  auto it = values.find(key);
  if (it == values.end()) {
    return absl::NotFoundError(absl::StrCat(
        "param group ", group, " lacks hyper-parameter '", key, "'"));
  }
  return it->second;
}

void CaptureSgdOptions(const torch::optim::SGDOptions& options,
                       HyperParameters* values) {
  (*values)["lr"] = options.lr();
  (*values)["momentum"] = options.momentum();
  (*values)["dampening"] = options.dampening();
  (*values)["weight_decay"] = options.weight_decay();
  (*values)["nesterov"] = options.nesterov() ? 1.0 : 0.0;
}

absl::Status ApplySgdOptions(const HyperParameters& values, size_t group,
                             torch::optim::SGDOptions* options) {
  absl::StatusOr<double> lr = GetHyperParameter(values, "lr", group);
  absl::StatusOr<double> momentum =
      GetHyperParameter(values, "momentum", group);
  absl::StatusOr<double> dampening =
      GetHyperParameter(values, "dampening", group);
  absl::StatusOr<double> weight_decay =
      GetHyperParameter(values, "weight_decay", group);
  absl::StatusOr<double> nesterov =
      GetHyperParameter(values, "nesterov", group);
  for (const auto* value :
       {&lr, &momentum, &dampening, &weight_decay, &nesterov}) {
    if (!value->ok()) return value->status();
  }
  options->lr(*lr);
  options->momentum(*momentum);
  options->dampening(*dampening);
  options->weight_decay(*weight_decay);
  options->nesterov(*nesterov != 0.0);
  return absl::OkStatus();
}

// AdamOptions and AdamWOptions have the same fields.
template <typename Options>
void CaptureAdamOptions(const Options& options, HyperParameters* values) {
  (*values)["lr"] = options.lr();
  (*values)["beta1"] = std::get<0>(options.betas());
  (*values)["beta2"] = std::get<1>(options.betas());
  (*values)["eps"] = options.eps();
  (*values)["weight_decay"] = options.weight_decay();
  (*values)["amsgrad"] = options.amsgrad() ? 1.0 : 0.0;
}

template <typename Options>
absl::Status ApplyAdamOptions(const HyperParameters& values, size_t group,
                              Options* options) {
  absl::StatusOr<double> lr = GetHyperParameter(values, "lr", group);
  absl::StatusOr<double> beta1 = GetHyperParameter(values, "beta1", group);
  absl::StatusOr<double> beta2 = GetHyperParameter(values, "beta2", group);
  absl::StatusOr<double> eps = GetHyperParameter(values, "eps", group);
  absl::StatusOr<double> weight_decay =
      GetHyperParameter(values, "weight_decay", group);
  absl::StatusOr<double> amsgrad = GetHyperParameter(values, "amsgrad", group);
  for (const auto* value :
       {&lr, &beta1, &beta2, &eps, &weight_decay, &amsgrad}) {
    if (!value->ok()) return value->status();
  }
  options->lr(*lr);
  options->betas(std::make_tuple(*beta1, *beta2));
  options->eps(*eps);
  options->weight_decay(*weight_decay);
  options->amsgrad(*amsgrad != 0.0);
  return absl::OkStatus();
}

template <typename ParamState>
void CaptureAdamState(const ParamState& param_state,
                      const std::string& parameter_name,
                      proto::OptimizerState::ParameterState* record,
                      NamedTensors* tensors) {
  (*record->mutable_counters())["step"] = param_state.step();
  const std::pair<const char*, const torch::Tensor*> buffers[] = {
      {"exp_avg", &param_state.exp_avg()},
      {"exp_avg_sq", &param_state.exp_avg_sq()},
      {"max_exp_avg_sq", &param_state.max_exp_avg_sq()}};
  for (const auto& [state_name, tensor] : buffers) {
    if (!tensor->defined()) continue;
    std::string name = TensorName(state_name, parameter_name);
    (*record->mutable_tensors())[state_name] = name;
    tensors->emplace_back(std::move(name), tensor->detach());
  }
}

// Looks up the recorded state tensor `state_name` of one parameter and
// returns a private copy on the parameter's device and dtype.
absl::StatusOr<torch::Tensor> RestoredBuffer(
    const proto::OptimizerState::ParameterState& record,
    const std::string& state_name,
    const std::map<std::string, torch::Tensor>& tensors_by_name,
    const torch::Tensor& parameter) {
  auto entry = record.tensors().find(state_name);
  if (entry == record.tensors().end()) {
    return absl::NotFoundError(absl::StrCat(
        "parameter '", record.parameter_name(), "' has no '", state_name, "'"));
  }
  auto it = tensors_by_name.find(entry->second);
  if (it == tensors_by_name.end()) {
    return absl::NotFoundError(
        absl::StrCat("tensor '", entry->second, "' is not in the checkpoint"));
  }
  if (it->second.sizes() != parameter.sizes()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", entry->second, "' has shape ", ShapeString(it->second),
        " but parameter '", record.parameter_name(), "' has shape ",
        ShapeString(parameter)));
  }
  return it->second.detach().to(parameter.device(), parameter.scalar_type(),
                                /*non_blocking=*/false, /*copy=*/true);
}

absl::StatusOr<std::unique_ptr<torch::optim::OptimizerParamState>>
RestoredParamState(const std::string& type,
                   const proto::OptimizerState::ParameterState& record,
                   const std::map<std::string, torch::Tensor>& tensors_by_name,
                   const torch::Tensor& parameter, bool amsgrad) {
  if (type == kSgd) {
    auto param_state = std::make_unique<torch::optim::SGDParamState>();
    absl::StatusOr<torch::Tensor> buffer =
        RestoredBuffer(record, "momentum_buffer", tensors_by_name, parameter);
    if (!buffer.ok()) return buffer.status();
    param_state->momentum_buffer(*buffer);
    return param_state;
  }
  auto fill = [&](auto param_state)
      -> absl::StatusOr<std::unique_ptr<torch::optim::OptimizerParamState>> {
    auto step = record.counters().find("step");
    if (step == record.counters().end()) {
      return absl::NotFoundError(absl::StrCat(
          "parameter '", record.parameter_name(), "' has no 'step'"));
    }
    param_state->step(step->second);
    absl::StatusOr<torch::Tensor> exp_avg =
        RestoredBuffer(record, "exp_avg", tensors_by_name, parameter);
    if (!exp_avg.ok()) return exp_avg.status();
    absl::StatusOr<torch::Tensor> exp_avg_sq =
        RestoredBuffer(record, "exp_avg_sq", tensors_by_name, parameter);
    if (!exp_avg_sq.ok()) return exp_avg_sq.status();
    param_state->exp_avg(*exp_avg);
    param_state->exp_avg_sq(*exp_avg_sq);
    if (amsgrad) {
      // Adam's step() dereferences max_exp_avg_sq whenever amsgrad is on.
      absl::StatusOr<torch::Tensor> max_exp_avg_sq =
          RestoredBuffer(record, "max_exp_avg_sq", tensors_by_name, parameter);
      if (!max_exp_avg_sq.ok()) return max_exp_avg_sq.status();
      param_state->max_exp_avg_sq(*max_exp_avg_sq);
    }
    return std::unique_ptr<torch::optim::OptimizerParamState>(
        std::move(param_state));
  };
  if (type == kAdam) {
    return fill(std::make_unique<torch::optim::AdamParamState>());
  }
  return fill(std::make_unique<torch::optim::AdamWParamState>());
}

absl::Status CaptureOptimizerStateOrThrow(
    const torch::optim::Optimizer& optimizer,
    const NamedTensors& named_parameters, proto::OptimizerState* state,
    NamedTensors* tensors) {
  const std::string type = OptimizerTypeName(optimizer);
  if (type.empty()) {
    return absl::InvalidArgumentError(
        "unsupported optimizer: only torch::optim::SGD, Adam and AdamW are "
        "supported");
  }
  std::map<const c10::TensorImpl*, std::string> names;
  for (const auto& [name, tensor] : named_parameters) {
    names.emplace(tensor.unsafeGetTensorImpl(), name);
  }
  state->Clear();
  state->set_type(type);
  for (size_t group_index = 0; group_index < optimizer.param_groups().size();
       ++group_index) {
    const torch::optim::OptimizerParamGroup& group =
        optimizer.param_groups()[group_index];
    proto::OptimizerState::ParamGroup* group_record = state->add_param_groups();
    HyperParameters* values = group_record->mutable_hyperparameters();
    if (type == kSgd) {
      CaptureSgdOptions(
          static_cast<const torch::optim::SGDOptions&>(group.options()),
          values);
    } else if (type == kAdam) {
      CaptureAdamOptions(
          static_cast<const torch::optim::AdamOptions&>(group.options()),
          values);
    } else {
      CaptureAdamOptions(
          static_cast<const torch::optim::AdamWOptions&>(group.options()),
          values);
    }
    for (const torch::Tensor& parameter : group.params()) {
      auto name = names.find(parameter.unsafeGetTensorImpl());
      if (name == names.end()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "param group ", group_index, " holds a parameter of shape ",
            ShapeString(parameter), " that has no name in named_parameters"));
      }
      group_record->add_parameter_names(name->second);
      auto found =
          optimizer.state().find(torch_compat::OptimizerStateKeyOf(parameter));
      // No entry yet: the optimizer has not stepped this parameter.
      if (found == optimizer.state().end()) continue;
      proto::OptimizerState::ParameterState* record = state->add_parameters();
      record->set_parameter_name(name->second);
      if (type == kSgd) {
        const auto& param_state =
            static_cast<const torch::optim::SGDParamState&>(*found->second);
        if (param_state.momentum_buffer().defined()) {
          std::string tensor_name = TensorName("momentum_buffer", name->second);
          (*record->mutable_tensors())["momentum_buffer"] = tensor_name;
          tensors->emplace_back(std::move(tensor_name),
                                param_state.momentum_buffer().detach());
        }
      } else if (type == kAdam) {
        CaptureAdamState(
            static_cast<const torch::optim::AdamParamState&>(*found->second),
            name->second, record, tensors);
      } else {
        CaptureAdamState(
            static_cast<const torch::optim::AdamWParamState&>(*found->second),
            name->second, record, tensors);
      }
    }
  }
  return absl::OkStatus();
}

absl::Status RestoreOptimizerStateOrThrow(const proto::OptimizerState& state,
                                          const NamedTensors& tensors,
                                          const NamedTensors& named_parameters,
                                          torch::optim::Optimizer* optimizer) {
  const std::string type = OptimizerTypeName(*optimizer);
  if (type.empty() || type != state.type()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the checkpoint holds '", state.type(),
                     "' optimizer state but the "
                     "optimizer is '",
                     type.empty() ? "unsupported" : type, "'"));
  }
  std::map<const c10::TensorImpl*, std::string> names;
  std::map<std::string, torch::Tensor> parameters_by_name;
  for (const auto& [name, tensor] : named_parameters) {
    names.emplace(tensor.unsafeGetTensorImpl(), name);
    parameters_by_name.emplace(name, tensor);
  }
  std::vector<torch::optim::OptimizerParamGroup>& groups =
      optimizer->param_groups();
  if (static_cast<int>(groups.size()) != state.param_groups_size()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the checkpoint has ", state.param_groups_size(),
                     " param groups but the optimizer has ", groups.size()));
  }
  // Parameter name -> amsgrad of its group.
  std::map<std::string, bool> amsgrad_by_name;
  for (size_t i = 0; i < groups.size(); ++i) {
    std::vector<std::string> optimizer_names;
    for (const torch::Tensor& parameter : groups[i].params()) {
      auto name = names.find(parameter.unsafeGetTensorImpl());
      optimizer_names.push_back(name == names.end() ? "<unnamed>"
                                                    : name->second);
    }
    const auto& recorded = state.param_groups(static_cast<int>(i));
    std::vector<std::string> recorded_names(recorded.parameter_names().begin(),
                                            recorded.parameter_names().end());
    if (optimizer_names != recorded_names) {
      return absl::FailedPreconditionError(absl::StrCat(
          "param group ", i, " holds [", absl::StrJoin(optimizer_names, ", "),
          "] but the checkpoint's holds [", absl::StrJoin(recorded_names, ", "),
          "]"));
    }
    auto amsgrad = recorded.hyperparameters().find("amsgrad");
    for (const std::string& name : recorded_names) {
      amsgrad_by_name[name] =
          amsgrad != recorded.hyperparameters().end() && amsgrad->second != 0.0;
    }
  }

  std::map<std::string, torch::Tensor> tensors_by_name;
  for (const auto& [name, tensor] : tensors) {
    if (name.rfind(kOptimizerTensorPrefix, 0) == 0) {
      tensors_by_name.emplace(name, tensor);
    }
  }
  // Build everything before touching the optimizer: a failure leaves it as
  // it was.
  std::vector<std::pair<torch_compat::OptimizerStateKey,
                        std::unique_ptr<torch::optim::OptimizerParamState>>>
      new_states;
  for (const auto& record : state.parameters()) {
    auto parameter = parameters_by_name.find(record.parameter_name());
    if (parameter == parameters_by_name.end() ||
        amsgrad_by_name.count(record.parameter_name()) == 0) {
      return absl::NotFoundError(absl::StrCat(
          "the checkpoint has optimizer state for parameter '",
          record.parameter_name(), "', which the optimizer does not hold"));
    }
    auto param_state =
        RestoredParamState(type, record, tensors_by_name, parameter->second,
                           amsgrad_by_name[record.parameter_name()]);
    if (!param_state.ok()) return param_state.status();
    new_states.emplace_back(
        torch_compat::OptimizerStateKeyOf(parameter->second),
        std::move(*param_state));
  }
  for (size_t i = 0; i < groups.size(); ++i) {
    const HyperParameters& values =
        state.param_groups(static_cast<int>(i)).hyperparameters();
    torch::optim::OptimizerOptions& options = groups[i].options();
    absl::Status applied;
    if (type == kSgd) {
      applied = ApplySgdOptions(
          values, i, &static_cast<torch::optim::SGDOptions&>(options));
    } else if (type == kAdam) {
      applied = ApplyAdamOptions(
          values, i, &static_cast<torch::optim::AdamOptions&>(options));
    } else {
      applied = ApplyAdamOptions(
          values, i, &static_cast<torch::optim::AdamWOptions&>(options));
    }
    if (!applied.ok()) return applied;
  }
  for (const auto& group : groups) {
    for (const torch::Tensor& parameter : group.params()) {
      optimizer->state().erase(torch_compat::OptimizerStateKeyOf(parameter));
    }
  }
  for (auto& [key, param_state] : new_states) {
    optimizer->state()[key] = std::move(param_state);
  }
  return absl::OkStatus();
}

absl::Status FromTorchError(absl::string_view operation,
                            const c10::Error& error) {
  return absl::InternalError(
      absl::StrCat(operation, ": ", error.what_without_backtrace()));
}

std::string CudaRngTensorName(int device) {
  return absl::StrCat("rng/cuda:", device);
}

}  // namespace

absl::Status CaptureOptimizerState(const torch::optim::Optimizer& optimizer,
                                   const NamedTensors& named_parameters,
                                   proto::OptimizerState* state,
                                   NamedTensors* tensors) {
  try {
    return CaptureOptimizerStateOrThrow(optimizer, named_parameters, state,
                                        tensors);
  } catch (const c10::Error& error) {
    return FromTorchError("capturing optimizer state", error);
  }
}

absl::Status RestoreOptimizerState(const proto::OptimizerState& state,
                                   const NamedTensors& tensors,
                                   const NamedTensors& named_parameters,
                                   torch::optim::Optimizer* optimizer) {
  try {
    absl::Status status = RestoreOptimizerStateOrThrow(
        state, tensors, named_parameters, optimizer);
    if (!status.ok()) {
      return absl::Status(
          status.code(),
          absl::StrCat("restoring optimizer state: ", status.message()));
    }
    return status;
  } catch (const c10::Error& error) {
    return FromTorchError("restoring optimizer state", error);
  }
}

absl::Status CaptureRngState(proto::RngState* state, NamedTensors* tensors) {
  try {
    state->Clear();
    at::Generator cpu = at::detail::getDefaultCPUGenerator();
    {
      // See LibTorch's Note [Acquire lock when using random generators].
      std::lock_guard<std::mutex> lock(cpu.mutex());
      tensors->emplace_back(kCpuRngTensorName, cpu.get_state());
      state->set_seed(cpu.current_seed());
    }
    state->set_cpu_generator_tensor(kCpuRngTensorName);
    if (torch::cuda::is_available()) {
      const int devices = torch_compat::CudaDeviceCount();
      for (int device = 0; device < devices; ++device) {
        at::Generator cuda = at::globalContext().defaultGenerator(
            at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device)));
        std::lock_guard<std::mutex> lock(cuda.mutex());
        std::string name = CudaRngTensorName(device);
        tensors->emplace_back(name, cuda.get_state());
        state->add_cuda_generator_tensors(std::move(name));
      }
    }
    return absl::OkStatus();
  } catch (const c10::Error& error) {
    return FromTorchError("capturing RNG state", error);
  }
}

absl::Status RestoreRngState(const proto::RngState& state,
                             const NamedTensors& tensors) {
  auto find = [&](const std::string& name) -> absl::StatusOr<torch::Tensor> {
    for (const auto& [tensor_name, tensor] : tensors) {
      if (tensor_name != name) continue;
      if (tensor.scalar_type() != torch::kUInt8 || tensor.dim() != 1) {
        return absl::InvalidArgumentError(absl::StrCat(
            "RNG state tensor '", name, "' must be a 1-D uint8 tensor"));
      }
      return tensor.to(torch::kCPU).contiguous();
    }
    return absl::NotFoundError(
        absl::StrCat("RNG state tensor '", name, "' is not in the checkpoint"));
  };
  try {
    if (state.cpu_generator_tensor().empty()) {
      return absl::NotFoundError("restoring RNG state: no CPU generator state");
    }
    absl::StatusOr<torch::Tensor> cpu_state =
        find(state.cpu_generator_tensor());
    if (!cpu_state.ok()) return cpu_state.status();
    const int saved_cuda = state.cuda_generator_tensors_size();
    const int available =
        torch::cuda::is_available() ? torch_compat::CudaDeviceCount() : 0;
    std::vector<torch::Tensor> cuda_states;
    if (saved_cuda > 0 && available < saved_cuda) {
      base::Warn(
          absl::StrCat("the checkpoint holds RNG state for ", saved_cuda,
                       " CUDA device(s) but ", available,
                       " are available; CUDA RNG state is not restored"));
    } else {
      for (const std::string& name : state.cuda_generator_tensors()) {
        absl::StatusOr<torch::Tensor> cuda_state = find(name);
        if (!cuda_state.ok()) return cuda_state.status();
        cuda_states.push_back(*cuda_state);
      }
    }
    at::Generator cpu = at::detail::getDefaultCPUGenerator();
    {
      std::lock_guard<std::mutex> lock(cpu.mutex());
      cpu.set_state(*cpu_state);
    }
    for (size_t device = 0; device < cuda_states.size(); ++device) {
      at::Generator cuda = at::globalContext().defaultGenerator(
          at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device)));
      std::lock_guard<std::mutex> lock(cuda.mutex());
      cuda.set_state(cuda_states[device]);
    }
    return absl::OkStatus();
  } catch (const c10::Error& error) {
    return FromTorchError("restoring RNG state", error);
  }
}

}  // namespace checkpoint
