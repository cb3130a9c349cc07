#include "trainer/loss_scaler.h"

namespace trainer {

proto::LossScalerState LossScaler::DefaultState() {
  proto::LossScalerState state;
  state.set_enabled(true);
  state.set_scale(65536.0);
  state.set_growth_factor(2.0);
  state.set_backoff_factor(0.5);
  state.set_growth_interval(2000);
  state.set_growth_tracker(0);
  return state;
}

at::Tensor LossScaler::Scale(const at::Tensor& loss) const {
  if (!state_.enabled()) return loss;
  return loss * state_.scale();
}

bool LossScaler::UnscaleAndCheck(const std::vector<at::Tensor>& parameters) {
  last_found_non_finite_ = false;
  if (!state_.enabled()) return true;
  const double inverse = 1.0 / state_.scale();
  at::Tensor all_finite;
  for (const at::Tensor& parameter : parameters) {
    at::Tensor grad = parameter.grad();
    if (!grad.defined()) continue;
    grad.mul_(inverse);
    // Accumulate on the device; one sync at the end.
    at::Tensor finite = at::isfinite(grad).all();
    all_finite =
        all_finite.defined() ? at::logical_and(all_finite, finite) : finite;
  }
  last_found_non_finite_ = all_finite.defined() && !all_finite.item<bool>();
  return !last_found_non_finite_;
}

void LossScaler::Update() {
  if (!state_.enabled()) return;
  if (last_found_non_finite_) {
    state_.set_scale(state_.scale() * state_.backoff_factor());
    state_.set_growth_tracker(0);
    ++skipped_steps_;
    return;
  }
  state_.set_growth_tracker(state_.growth_tracker() + 1);
  if (state_.growth_tracker() >= state_.growth_interval()) {
    state_.set_scale(state_.scale() * state_.growth_factor());
    state_.set_growth_tracker(0);
  }
}

}  // namespace trainer
