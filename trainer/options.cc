#include "trainer/options.h"

#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tools/base/warnings.h"

namespace trainer {
namespace {

absl::Status UsageError(absl::string_view message) {
  return absl::InvalidArgumentError(message);
}

std::string ExactDouble(double value) {
  return absl::StrFormat("%.17g", value);
}

// ---------------------------------------------------------------------------
// Options recorded in each checkpoint (TrainerState.options), so that a resumed
// run trains with the settings that shaped its state.

struct RecordedOption {
  const char* name;
  std::function<std::string(const TrainOptions&)> get;
  std::function<bool(const std::string&, TrainOptions&)> set;
};

const std::vector<RecordedOption>& RecordedOptions() {
  auto string_option = [](const char* name, std::string TrainOptions::*field) {
    return RecordedOption{name,
                          [field](const TrainOptions& o) { return o.*field; },
                          [field](const std::string& v, TrainOptions& o) {
                            o.*field = v;
                            return true;
                          }};
  };
  auto int_option = [](const char* name, int64_t TrainOptions::*field) {
    return RecordedOption{
        name, [field](const TrainOptions& o) { return absl::StrCat(o.*field); },
        [field](const std::string& v, TrainOptions& o) {
          return absl::SimpleAtoi(v, &(o.*field));
        }};
  };
  auto double_option = [](const char* name, double TrainOptions::*field) {
    return RecordedOption{
        name, [field](const TrainOptions& o) { return ExactDouble(o.*field); },
        [field](const std::string& v, TrainOptions& o) {
          return absl::SimpleAtod(v, &(o.*field));
        }};
  };
  static const auto* const options = new std::vector<RecordedOption>{
      string_option("model", &TrainOptions::model),
      string_option("optimizer", &TrainOptions::optimizer),
      double_option("lr", &TrainOptions::lr),
      double_option("momentum", &TrainOptions::momentum),
      double_option("weight_decay", &TrainOptions::weight_decay),
      int_option("batch_size", &TrainOptions::batch_size),
      string_option("lr_schedule", &TrainOptions::lr_schedule),
      RecordedOption{"seed",
                     [](const TrainOptions& o) { return absl::StrCat(o.seed); },
                     [](const std::string& v, TrainOptions& o) {
                       return absl::SimpleAtoi(v, &o.seed);
                     }},
      int_option("max_train_examples", &TrainOptions::max_train_examples),
      int_option("validation_size", &TrainOptions::validation_size),
      string_option("monitor", &TrainOptions::monitor),
      RecordedOption{"amp",
                     [](const TrainOptions& o) { return o.amp ? "1" : "0"; },
                     [](const std::string& v, TrainOptions& o) {
                       o.amp = v == "1";
                       return v == "0" || v == "1";
                     }},
  };
  return *options;
}

}  // namespace

void RecordOptions(const TrainOptions& options, proto::TrainerState* state) {
  for (const RecordedOption& option : RecordedOptions()) {
    (*state->mutable_options())[option.name] = option.get(options);
  }
}

// The checkpoint's settings win over the command line's: a resumed run must
// train the same way. Differences are reported, not fatal.
absl::Status ApplyRecordedOptions(const proto::TrainerState& state,
                                  TrainOptions* options) {
  for (const RecordedOption& option : RecordedOptions()) {
    auto it = state.options().find(option.name);
    if (it == state.options().end()) continue;
    const std::string given = option.get(*options);
    if (!option.set(it->second, *options)) {
      return absl::FailedPreconditionError(
          absl::StrCat("checkpoint records a malformed ", option.name, ": '",
                       it->second, "'"));
    }
    if (given != option.get(*options)) {
      base::Warn(absl::StrCat("train: resuming with the checkpoint's --",
                              option.name, "=", option.get(*options),
                              " (command line: ", given, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateOptions(const TrainOptions& options) {
  if (options.run_dir.empty()) return UsageError("--run_dir is required");
  if (options.epochs < 1) return UsageError("--epochs must be >= 1");
  if (options.model != "cnn" && options.model != "mlp") {
    return UsageError(
        absl::StrCat("--model=", options.model, ": expected mlp or cnn"));
  }
  if (options.optimizer != "sgd" && options.optimizer != "adamw") {
    return UsageError(absl::StrCat("--optimizer=", options.optimizer,
                                   ": expected sgd or adamw"));
  }
  if (options.lr_schedule != "none" && options.lr_schedule != "step" &&
      options.lr_schedule != "cosine") {
    return UsageError(absl::StrCat("--lr_schedule=", options.lr_schedule,
                                   ": expected step, cosine or none"));
  }
  if (!std::isfinite(options.lr) || options.lr < 0) {
    return UsageError("--lr must be a finite number > 0");
  }
  if (!(options.momentum >= 0 && options.momentum < 1)) {
    return UsageError("--momentum must be in [0, 1)");
  }
  if (!(options.weight_decay >= 0) || !std::isfinite(options.weight_decay)) {
    return UsageError("--weight_decay must be >= 0");
  }
  if (options.batch_size < 1 || options.batch_size > 65536) {
    return UsageError("--batch_size must be in [1, 65536]");
  }
  if (options.threads < 0) return UsageError("--threads must be >= 0");
  if (options.validation_size < 1) {
    return UsageError("--validation_size must be >= 1");
  }
  if (options.max_train_examples == 0 || options.max_val_examples == 0) {
    return UsageError("--max_train_examples/--max_val_examples must not be 0");
  }
  if (options.monitor != "val_loss" && options.monitor != "val_acc") {
    return UsageError(absl::StrCat("--monitor=", options.monitor,
                                   ": expected val_loss or val_acc"));
  }
  if (options.save_every_steps < 0) {
    return UsageError("--save_every_steps must be >= 0");
  }
  if (options.keep_last < -1 || options.keep_top_k < -1) {
    return UsageError("--keep_last/--keep_top_k must be >= -1");
  }
  if (options.snapshot != "protect" && options.snapshot != "fork" &&
      options.snapshot != "copy") {
    return UsageError(absl::StrCat("--snapshot=", options.snapshot,
                                   ": expected protect, fork or copy"));
  }
  if (options.progress != "auto" && options.progress != "bar" &&
      options.progress != "lines" && options.progress != "none") {
    return UsageError(absl::StrCat("--progress=", options.progress,
                                   ": expected auto, bar, lines or none"));
  }
  if (options.data_dir.empty()) return UsageError("--data_dir is empty");
  if (options.world_size < 0 || options.rank < 0 ||
      (options.world_size > 0 && options.rank >= options.world_size)) {
    return UsageError(
        "--world_size must be >= 0 and --rank in [0, --world_size)");
  }
  if (options.master_port < 0 || options.master_port > 65535) {
    return UsageError("--master_port must be in [1, 65535]");
  }
  if (options.dist_timeout_seconds < 1) {
    return UsageError("--dist_timeout_s must be >= 1");
  }
  return absl::OkStatus();
}

}  // namespace trainer
