// The learning-rate schedule and the data order of the trainer: pure
// functions of small, checkpointed state, so that a resumed run computes the
// same learning rate and visits the same batches as an uninterrupted one.
// Torch-free.
//
// LibTorch 1.13's C++ schedulers have no serialization and hide their step
// count, so the schedule is ours: the learning rate at global step t is a
// function of (type, base rate, config, t), recorded in
// proto::SchedulerState. The data order of epoch e is a permutation derived
// from (seed, e) alone, so DataOrderState {seed, epoch, batches_consumed}
// is the whole state of the data pipeline.
//
// Example:
//   ASSIGN_OR_RETURN(LearningRateSchedule schedule,
//       LearningRateSchedule::Create("cosine", 0.05, total_steps));
//   double lr = schedule.RateAt(global_step);
//   std::vector<int64_t> order = EpochPermutation(seed, epoch, n);
#ifndef TRAINER_SCHEDULE_H_
#define TRAINER_SCHEDULE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "trainer/trainer_state.pb.h"

namespace trainer {

class LearningRateSchedule {
 public:
  // `type`:
  //   "none":   constant base_rate.
  //   "step":   base_rate * 0.1^floor(t / step_size), step_size =
  //             max(1, total_steps / 3) (three decays over the run).
  //   "cosine": base_rate * (1 + cos(pi * min(t, total_steps) / total_steps))
  //             / 2: from base_rate down to 0 at total_steps.
  // Errors: kInvalidArgument for another type, a rate that is not finite and
  // positive, or total_steps < 1.
  static absl::StatusOr<LearningRateSchedule> Create(absl::string_view type,
                                                     double base_rate,
                                                     int64_t total_steps);

  // Rebuilds the schedule recorded by ToProto (the step count is the
  // caller's global step, also in the proto).
  static absl::StatusOr<LearningRateSchedule> FromProto(
      const proto::SchedulerState& state);

  double RateAt(int64_t step) const;

  // State after `step` optimizer steps.
  proto::SchedulerState ToProto(int64_t step) const;

  const std::string& type() const { return type_; }
  double base_rate() const { return base_rate_; }
  int64_t total_steps() const { return total_steps_; }

 private:
  std::string type_;
  double base_rate_ = 0;
  int64_t total_steps_ = 1;
  int64_t step_size_ = 1;
  double gamma_ = 0.1;
};

// A uniformly random permutation of [0, n) for epoch `epoch`, determined by
// (seed, epoch) alone and identical on every platform (SplitMix64 +
// Fisher-Yates with an unbiased bounded draw; no std:: distributions, whose
// output differs between standard libraries).
std::vector<int64_t> EpochPermutation(uint64_t seed, int64_t epoch, int64_t n);

}  // namespace trainer

#endif  // TRAINER_SCHEDULE_H_
