#include "trainer/trainer_state.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "checkpoint/extensions.h"
#include "checkpoint/upgrade.h"

namespace trainer {
namespace {

// Format version 1 kept the flags and the epoch's running sums as strings
// in metadata.user, under this prefix.
constexpr char kVersion1UserPrefix[] = "train.";

absl::StatusOr<proto::TrainerState> FromVersion1(
    const checkpoint::proto::Extension& legacy,
    const checkpoint::proto::Metadata& metadata) {
  proto::Version1TrainingState old_state;
  // These are version 1's bytes, moved verbatim by `ckpt upgrade`: version 1
  // did not promise a canonical encoding, so they parse leniently. The
  // manifest's checksum still covers them.
  if (!old_state.ParseFromString(legacy.payload())) {
    return absl::DataLossError(absl::StrCat("extension ", legacy.type(),
                                            " does not parse as ",
                                            old_state.GetTypeName()));
  }
  proto::TrainerState state;
  *state.mutable_scheduler() = old_state.scheduler();
  *state.mutable_loss_scaler() = old_state.loss_scaler();
  *state.mutable_data_order() = old_state.data_order();
  for (const auto& [key, value] : metadata.user()) {
    absl::string_view name = key;
    if (!absl::ConsumePrefix(&name, kVersion1UserPrefix)) continue;
    if (name == "epoch_loss_sum") {
      double sum;
      if (!absl::SimpleAtod(value, &sum)) {
        return absl::DataLossError(
            absl::StrCat("metadata.user[", key, "] is not a number"));
      }
      state.set_epoch_loss_sum(sum);
    } else if (name == "epoch_examples") {
      int64_t examples;
      if (!absl::SimpleAtoi(value, &examples)) {
        return absl::DataLossError(
            absl::StrCat("metadata.user[", key, "] is not an integer"));
      }
      state.set_epoch_examples(examples);
    } else {
      (*state.mutable_options())[std::string(name)] = value;
    }
  }
  return state;
}

}  // namespace

void WriteTrainerState(const proto::TrainerState& trainer_state,
                       checkpoint::proto::TrainingState* training_state) {
  checkpoint::SetExtension(kTrainerStateExtension, kTrainerStateVersion,
                           trainer_state, training_state);
}

absl::StatusOr<proto::TrainerState> ReadTrainerState(
    const checkpoint::proto::TrainingState& training_state,
    const checkpoint::proto::Metadata& metadata) {
  if (checkpoint::FindExtension(training_state, kTrainerStateExtension) ==
      nullptr) {
    const checkpoint::proto::Extension* legacy = checkpoint::FindExtension(
        training_state, checkpoint::kVersion1TrainingStateExtension);
    if (legacy != nullptr && legacy->version() == 1) {
      return FromVersion1(*legacy, metadata);
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "the checkpoint has no ", kTrainerStateExtension,
        " extension, so `train` cannot resume from it (it was not written by "
        "`train`)"));
  }
  proto::TrainerState state;
  absl::Status status = checkpoint::GetExtension(
      training_state, kTrainerStateExtension, kTrainerStateVersion, &state);
  if (!status.ok()) return status;
  return state;
}

}  // namespace trainer
