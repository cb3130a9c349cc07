// Where the trainer keeps its own resume state in a checkpoint: the
// extension "train.TrainerState" (trainer/trainer_state.proto), version 1.
// Torch-free.
//
//   proto::TrainerState mine = ...;
//   WriteTrainerState(mine, &state.training_state);
//   ...
//   ASSIGN_OR_RETURN(proto::TrainerState resumed,
//                    ReadTrainerState(state.training_state, state.metadata));
#ifndef TRAINER_TRAINER_STATE_H_
#define TRAINER_TRAINER_STATE_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "checkpoint/manifest.pb.h"
#include "trainer/trainer_state.pb.h"

namespace trainer {

inline constexpr char kTrainerStateExtension[] = "train.TrainerState";
inline constexpr uint32_t kTrainerStateVersion = 1;

void WriteTrainerState(const proto::TrainerState& trainer_state,
                       checkpoint::proto::TrainingState* training_state);

// The trainer's state from a checkpoint it wrote, or from a format version 1
// checkpoint after `ckpt upgrade` (whose scheduler, loss scaler and data
// order are in the extension "ckpt.v1.TrainingState" and whose flags and
// sums are "train."-prefixed strings in metadata.user). Errors:
// kFailedPrecondition when the checkpoint holds neither (it was not written
// by `train`) or a version this build does not read; kDataLoss when the
// extension does not parse or a recorded number is malformed.
absl::StatusOr<proto::TrainerState> ReadTrainerState(
    const checkpoint::proto::TrainingState& training_state,
    const checkpoint::proto::Metadata& metadata);

}  // namespace trainer

#endif  // TRAINER_TRAINER_STATE_H_
