#include "tools/base/warnings.h"

#include <cstdio>
#include <utility>

namespace base {
namespace {

absl::Mutex sink_mutex(absl::kConstInit);

WarningSink& CurrentSink() {
  static auto* sink = new WarningSink();
  return *sink;
}

}  // namespace

void Warn(absl::string_view message) {
  absl::MutexLock lock(&sink_mutex);
  if (CurrentSink()) {
    CurrentSink()(message);
    return;
  }
  std::fprintf(stderr, "warning: %.*s\n", static_cast<int>(message.size()),
               message.data());
}

WarningSink SetWarningSink(WarningSink sink) {
  absl::MutexLock lock(&sink_mutex);
  return std::exchange(CurrentSink(), std::move(sink));
}

CapturedWarnings::CapturedWarnings() {
  previous_ = SetWarningSink([this](absl::string_view message) {
    absl::MutexLock lock(&mutex_);
    messages_.emplace_back(message);
  });
}

CapturedWarnings::~CapturedWarnings() { SetWarningSink(std::move(previous_)); }

std::vector<std::string> CapturedWarnings::messages() const {
  absl::MutexLock lock(&mutex_);
  return messages_;
}

}  // namespace base
