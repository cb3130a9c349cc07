#include "trainer/schedule.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace trainer {
namespace {

constexpr double kPi = 3.14159265358979323846;

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Uniform in [0, bound) without modulo bias (Lemire's method).
uint64_t Bounded(uint64_t& state, uint64_t bound) {
  while (true) {
    const unsigned __int128 product =
        static_cast<unsigned __int128>(SplitMix64(state)) * bound;
    const uint64_t low = static_cast<uint64_t>(product);
    if (low >= bound || low >= (-bound) % bound) {
      return static_cast<uint64_t>(product >> 64);
    }
  }
}

}  // namespace

absl::StatusOr<LearningRateSchedule> LearningRateSchedule::Create(
    absl::string_view type, double base_rate, int64_t total_steps) {
  if (type != "none" && type != "step" && type != "cosine") {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown learning-rate schedule '", type, "' (none, step, cosine)"));
  }
  if (!std::isfinite(base_rate) || base_rate <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("learning rate must be finite and > 0, got ", base_rate));
  }
  if (total_steps < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("schedule needs at least one step, got ", total_steps));
  }
  LearningRateSchedule schedule;
  schedule.type_ = std::string(type);
  schedule.base_rate_ = base_rate;
  schedule.total_steps_ = total_steps;
  schedule.step_size_ = std::max<int64_t>(1, total_steps / 3);
  return schedule;
}

absl::StatusOr<LearningRateSchedule> LearningRateSchedule::FromProto(
    const proto::SchedulerState& state) {
  auto config = [&](const char* key, double fallback) {
    auto it = state.config().find(key);
    return it == state.config().end() ? fallback : it->second;
  };
  absl::StatusOr<LearningRateSchedule> schedule =
      Create(state.type(), state.base_learning_rate(),
             static_cast<int64_t>(config("total_steps", 0)));
  if (!schedule.ok()) {
    return absl::Status(schedule.status().code(),
                        absl::StrCat("checkpointed scheduler state: ",
                                     schedule.status().message()));
  }
  schedule->step_size_ = std::max<int64_t>(
      1, static_cast<int64_t>(config("step_size", schedule->step_size_)));
  schedule->gamma_ = config("gamma", schedule->gamma_);
  return schedule;
}

double LearningRateSchedule::RateAt(int64_t step) const {
  if (type_ == "step") {
    return base_rate_ *
           std::pow(gamma_, static_cast<double>(step / step_size_));
  }
  if (type_ == "cosine") {
    const double progress =
        static_cast<double>(std::min(step, total_steps_)) / total_steps_;
    return base_rate_ * 0.5 * (1.0 + std::cos(kPi * progress));
  }
  return base_rate_;
}

proto::SchedulerState LearningRateSchedule::ToProto(int64_t step) const {
  proto::SchedulerState state;
  state.set_type(type_);
  state.set_step_count(step);
  state.set_base_learning_rate(base_rate_);
  state.set_last_learning_rate(RateAt(step));
  (*state.mutable_config())["total_steps"] = static_cast<double>(total_steps_);
  (*state.mutable_config())["step_size"] = static_cast<double>(step_size_);
  (*state.mutable_config())["gamma"] = gamma_;
  return state;
}

std::vector<int64_t> EpochPermutation(uint64_t seed, int64_t epoch, int64_t n) {
  std::vector<int64_t> order(static_cast<size_t>(std::max<int64_t>(n, 0)));
  std::iota(order.begin(), order.end(), int64_t{0});
  // Mix seed and epoch so that nearby (seed, epoch) pairs give unrelated
  // streams.
  uint64_t state = seed;
  state = SplitMix64(state) ^ static_cast<uint64_t>(epoch);
  SplitMix64(state);
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j =
        static_cast<int64_t>(Bounded(state, static_cast<uint64_t>(i) + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

}  // namespace trainer
