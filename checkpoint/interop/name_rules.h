// Renaming tensors between the conventions of different trainers: strip a
// wrapper's prefix ("module." from DistributedDataParallel, "_orig_mod."
// from torch.compile, "model." from a LightningModule), add one, or map
// names one by one from a file. Used by `ckpt convert` and by `export`, so
// that both rename the same way. Torch-free.
//
// For each name, in this order:
//   1. a name listed in `mapping` takes its mapped name (or is dropped when
//      it maps to null) and nothing else applies;
//   2. otherwise each prefix of `strip_prefixes` is removed, in order, from
//      the front of the name if it starts with it;
//   3. then `add_prefix` is put in front of model tensor names (those
//      without '/'); training state ("optimizer/...") keeps its path.
//
//   interop::NameRules rules;
//   rules.strip_prefixes = {"module."};
//   std::optional<std::string> name = rules.Apply("module.fc.weight");
//   // "fc.weight"
#ifndef CHECKPOINT_INTEROP_NAME_RULES_H_
#define CHECKPOINT_INTEROP_NAME_RULES_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace interop {

struct NameRules {
  std::map<std::string, std::optional<std::string>> mapping;
  std::vector<std::string> strip_prefixes;
  std::string add_prefix;

  // The new name, or nullopt when the mapping drops it.
  std::optional<std::string> Apply(const std::string& name) const;
  bool empty() const {
    return mapping.empty() && strip_prefixes.empty() && add_prefix.empty();
  }
};

// Reads a mapping file: one JSON object whose keys are names as they are
// in the source and whose values are new names (strings) or null (drop).
// Errors name `path`: kNotFound, kInvalidArgument (not such an object, an
// empty new name), kFailedPrecondition (not a regular file, over 64 MiB).
absl::StatusOr<std::map<std::string, std::optional<std::string>>>
ReadNameMapping(const std::string& path);

}  // namespace interop

#endif  // CHECKPOINT_INTEROP_NAME_RULES_H_
