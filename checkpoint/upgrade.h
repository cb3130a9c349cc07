// Converts a format version 1 checkpoint (FORMAT.md section 8) to the
// current version: `ckpt upgrade OLD NEW`.
//
// Every tensor of OLD is checksum-verified before it is copied; the new
// checkpoint holds the same tensors (so the same TensorDigest), metadata
// and training state, committed atomically at NEW. OLD is never modified.
// Version 1's trainer-only training-state fields (scheduler, loss scaler,
// data order) become the extension kVersion1TrainingStateExtension, whose
// payload is exactly their version 1 bytes: the trainer resumes from it.
// Errors: kAlreadyExists when NEW exists, kFailedPrecondition when OLD is
// already current, and OLD's own errors (kDataLoss for damage).
#ifndef CHECKPOINT_UPGRADE_H_
#define CHECKPOINT_UPGRADE_H_

#include <string>

#include "absl/status/statusor.h"

namespace checkpoint {

inline constexpr char kVersion1TrainingStateExtension[] =
    "ckpt.v1.TrainingState";

// Returns the number of tensors copied.
absl::StatusOr<int> UpgradeCheckpoint(const std::string& old_path,
                                      const std::string& new_path);

}  // namespace checkpoint

#endif  // CHECKPOINT_UPGRADE_H_
