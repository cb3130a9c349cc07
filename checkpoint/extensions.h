// Typed, versioned producer state inside a checkpoint (FORMAT.md section 4).
//
// The format keeps what every trainer has (model tensors, optimizer state,
// RNG, progress, metrics) in its own fields. Anything else a producer needs
// to resume (a learning-rate schedule, a loss scaler, a data loader's
// position) is a protobuf message of its own, stored as an Extension: the
// format checks its bytes like the rest of the manifest, and only its owner
// interprets them. A consumer names the type and the versions it
// understands, and gets a clear error for anything else instead of a
// misread.
//
//   constexpr char kType[] = "mytool.LoaderState";
//   checkpoint::SetExtension(kType, /*version=*/1, loader_state,
//                            &state.training_state);
//   ...
//   mytool::proto::LoaderState restored;
//   RETURN_IF_ERROR(checkpoint::GetExtension(
//       state.training_state, kType, /*version=*/1, &restored));
//
// Functions only; no state. Thread-compatible like the messages they touch.
#ifndef CHECKPOINT_EXTENSIONS_H_
#define CHECKPOINT_EXTENSIONS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "checkpoint/manifest.pb.h"
#include "google/protobuf/message.h"

namespace checkpoint {

// Stores `message` as extension `type` at `version`, replacing an extension
// of the same type.
void SetExtension(absl::string_view type, uint32_t version,
                  const google::protobuf::MessageLite& message,
                  proto::TrainingState* state);

// The extension of `type`, or null.
const proto::Extension* FindExtension(const proto::TrainingState& state,
                                      absl::string_view type);

// Parses extension `type` into `message`. Errors: kNotFound when the
// checkpoint has none of that type; kFailedPrecondition when its version is
// not `version` (named, with the one expected); kDataLoss when the payload is
// not the canonical encoding of `message`'s type.
absl::Status GetExtension(const proto::TrainingState& state,
                          absl::string_view type, uint32_t version,
                          google::protobuf::Message* message);

// The rules a reader enforces on every checkpoint: each extension has a
// non-empty type, unique within the checkpoint, and a version of at least 1.
// kDataLoss naming the extension otherwise.
absl::Status ValidateExtensions(const proto::TrainingState& state);

}  // namespace checkpoint

#endif  // CHECKPOINT_EXTENSIONS_H_
