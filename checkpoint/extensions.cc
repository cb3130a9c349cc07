#include "checkpoint/extensions.h"

#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "checkpoint/manifest_file.h"

namespace checkpoint {

void SetExtension(absl::string_view type, uint32_t version,
                  const google::protobuf::MessageLite& message,
                  proto::TrainingState* state) {
  proto::Extension* extension = nullptr;
  for (proto::Extension& existing : *state->mutable_extensions()) {
    if (existing.type() == type) extension = &existing;
  }
  if (extension == nullptr) extension = state->add_extensions();
  extension->set_type(std::string(type));
  extension->set_version(version);
  extension->set_payload(SerializeCanonical(message));
}

const proto::Extension* FindExtension(const proto::TrainingState& state,
                                      absl::string_view type) {
  for (const proto::Extension& extension : state.extensions()) {
    if (extension.type() == type) return &extension;
  }
  return nullptr;
}

absl::Status GetExtension(const proto::TrainingState& state,
                          absl::string_view type, uint32_t version,
                          google::protobuf::Message* message) {
  const proto::Extension* extension = FindExtension(state, type);
  if (extension == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("the checkpoint has no ", type, " extension"));
  }
  if (extension->version() != version) {
    return absl::FailedPreconditionError(
        absl::StrCat("extension ", type, " is version ", extension->version(),
                     "; this program reads version ", version));
  }
  return ParseCanonical(extension->payload(), absl::StrCat("extension ", type),
                        message);
}

absl::Status ValidateExtensions(const proto::TrainingState& state) {
  std::set<std::string> seen;
  for (int i = 0; i < state.extensions_size(); ++i) {
    const proto::Extension& extension = state.extensions(i);
    if (extension.type().empty()) {
      return absl::DataLossError(
          absl::StrCat("extension #", i, " has an empty type"));
    }
    if (!seen.insert(extension.type()).second) {
      return absl::DataLossError(
          absl::StrCat("extension ", extension.type(), " appears twice"));
    }
    if (extension.version() == 0) {
      return absl::DataLossError(
          absl::StrCat("extension ", extension.type(), " has version 0"));
    }
  }
  return absl::OkStatus();
}

}  // namespace checkpoint
