// Dynamic loss scaling for mixed-precision training, written with ordinary
// tensor ops because LibTorch 1.13 has no C++ GradScaler (pytorch #44710).
//
// The scaler multiplies the loss by `scale` before backward so that small
// float16 gradients do not flush to zero; before the optimizer step the
// gradients are divided by `scale` and checked: if any is inf or NaN the
// step is skipped and the scale shrinks (backoff), otherwise the step runs
// and after `growth_interval` clean steps in a row the scale grows. Its
// whole state is proto::LossScalerState, saved in every checkpoint.
//
// Example:
//   LossScaler scaler(LossScaler::DefaultState());
//   (scaler.Scale(loss)).backward();
//   if (scaler.UnscaleAndCheck(parameters)) optimizer.step();
//   scaler.Update();
//
// Works on any device; tests exercise it on CPU with injected inf/NaN.
#ifndef TRAINER_LOSS_SCALER_H_
#define TRAINER_LOSS_SCALER_H_

#include <ATen/ATen.h>

#include <vector>

#include "trainer/trainer_state.pb.h"

namespace trainer {

class LossScaler {
 public:
  // enabled, scale 65536, growth 2, backoff 0.5, interval 2000 (PyTorch's
  // torch.cuda.amp.GradScaler defaults).
  static proto::LossScalerState DefaultState();

  explicit LossScaler(proto::LossScalerState state)
      : state_(std::move(state)) {}

  // loss * scale (or loss when disabled).
  at::Tensor Scale(const at::Tensor& loss) const;

  // Divides every defined gradient by the scale in place; returns false if
  // any gradient holds inf or NaN (then the step must be skipped). One
  // device-to-host sync per call.
  bool UnscaleAndCheck(const std::vector<at::Tensor>& parameters);

  // After the step (or the skip): grow or back off the scale according to
  // the last UnscaleAndCheck().
  void Update();

  const proto::LossScalerState& state() const { return state_; }
  double scale() const { return state_.enabled() ? state_.scale() : 1.0; }
  int64_t skipped_steps() const { return skipped_steps_; }

 private:
  proto::LossScalerState state_;
  bool last_found_non_finite_ = false;
  int64_t skipped_steps_ = 0;
};

}  // namespace trainer

#endif  // TRAINER_LOSS_SCALER_H_
