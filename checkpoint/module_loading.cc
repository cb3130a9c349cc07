#include "checkpoint/module_loading.h"

#include <algorithm>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "torch/csrc/jit/api/module.h"
#include "torch/nn/module.h"
#include "torch/utils.h"

namespace checkpoint {
namespace {

std::string ShapeString(const torch::Tensor& tensor) {
  return absl::StrCat("[", absl::StrJoin(tensor.sizes(), ", "), "]");
}

std::string RemapName(const std::string& name,
                      const LoadIntoModuleOptions& options) {
  absl::string_view key = name;
  if (!options.strip_prefix.empty() &&
      key.substr(0, options.strip_prefix.size()) == options.strip_prefix) {
    key.remove_prefix(options.strip_prefix.size());
  }
  return absl::StrCat(options.add_prefix, key);
}

void AppendList(const char* what, const std::vector<std::string>& names,
                std::vector<std::string>* parts) {
  if (names.empty()) return;
  parts->push_back(
      absl::StrCat(names.size(), " ", what, ": ", absl::StrJoin(names, ", ")));
}

}  // namespace

NamedTensors NamedParametersAndBuffers(const torch::nn::Module& module) {
  NamedTensors result;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    result.emplace_back(item.key(), item.value());
  }
  for (const auto& item : module.named_buffers(/*recurse=*/true)) {
    result.emplace_back(item.key(), item.value());
  }
  return result;
}

NamedTensors NamedParametersAndBuffers(const torch::jit::Module& module) {
  NamedTensors result;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    result.emplace_back(item.name, item.value);
  }
  for (const auto& item : module.named_buffers(/*recurse=*/true)) {
    result.emplace_back(item.name, item.value);
  }
  return result;
}

absl::StatusOr<LoadReport> LoadIntoModuleTensors(
    const NamedTensors& destination, const NamedTensors& source,
    const LoadIntoModuleOptions& options) {
  // Remapped source name -> original source name and tensor.
  std::map<std::string, std::pair<std::string, const torch::Tensor*>> by_key;
  std::vector<std::string> collisions;
  for (const auto& [name, tensor] : source) {
    if (IsTrainingStateName(name)) continue;
    std::string key = RemapName(name, options);
    auto [it, inserted] = by_key.emplace(key, std::make_pair(name, &tensor));
    if (!inserted) {
      collisions.push_back(absl::StrCat("'", it->second.first, "' and '", name,
                                        "' both map to '", key, "'"));
    }
  }
  if (!collisions.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("source tensor names collide after remapping (strip '",
                     options.strip_prefix, "', add '", options.add_prefix,
                     "'): ", absl::StrJoin(collisions, "; ")));
  }

  LoadReport report;
  std::vector<std::pair<const torch::Tensor*, const torch::Tensor*>> copies;
  std::map<std::string, bool> destination_names;
  for (const auto& [name, tensor] : destination) {
    destination_names.emplace(name, true);
    auto it = by_key.find(name);
    if (it == by_key.end()) {
      report.missing.push_back(name);
      continue;
    }
    const torch::Tensor& value = *it->second.second;
    if (!value.defined() || !tensor.defined() ||
        value.sizes() != tensor.sizes()) {
      report.shape_mismatched.push_back(absl::StrCat(
          name, ": checkpoint ",
          value.defined() ? ShapeString(value) : "undefined", " vs module ",
          tensor.defined() ? ShapeString(tensor) : "undefined"));
      continue;
    }
    report.loaded.push_back(name);
    copies.emplace_back(&tensor, &value);
  }
  for (const auto& [key, unused] : by_key) {
    if (destination_names.count(key) == 0) report.unexpected.push_back(key);
  }
  std::sort(report.loaded.begin(), report.loaded.end());
  std::sort(report.missing.begin(), report.missing.end());
  std::sort(report.shape_mismatched.begin(), report.shape_mismatched.end());
  // report.unexpected is sorted already: it comes from an ordered map.

  if (options.strict &&
      (!report.missing.empty() || !report.unexpected.empty() ||
       !report.shape_mismatched.empty())) {
    std::vector<std::string> parts;
    AppendList("missing", report.missing, &parts);
    AppendList("unexpected", report.unexpected, &parts);
    AppendList("shape-mismatched", report.shape_mismatched, &parts);
    return absl::InvalidArgumentError(
        absl::StrCat("strict load into module failed, nothing was loaded: ",
                     absl::StrJoin(parts, "; ")));
  }

  try {
    torch::NoGradGuard no_grad;
    for (const auto& [target, value] : copies) {
      // A Tensor handle shares its storage: this writes into the module.
      target->copy_(*value);
    }
  } catch (const c10::Error& error) {
    return absl::InternalError(absl::StrCat("copying into module tensors: ",
                                            error.what_without_backtrace()));
  }
  return report;
}

absl::StatusOr<LoadReport> LoadIntoModule(
    torch::nn::Module& module, const NamedTensors& source,
    const LoadIntoModuleOptions& options) {
  return LoadIntoModuleTensors(NamedParametersAndBuffers(module), source,
                               options);
}

absl::StatusOr<LoadReport> LoadIntoModule(
    torch::jit::Module& module, const NamedTensors& source,
    const LoadIntoModuleOptions& options) {
  return LoadIntoModuleTensors(NamedParametersAndBuffers(module), source,
                               options);
}

}  // namespace checkpoint
