#include "tools/base/stop_point.h"

#include <signal.h>

#include <atomic>
#include <cstdlib>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/string_view.h"

namespace base {
namespace {

struct Target {
  std::string point;  // empty: no stop point requested
  int64_t nth = 1;
};

const Target& RequestedTarget() {
  static const Target* target = [] {
    auto* parsed = new Target;
    const char* value = std::getenv("CKPT_STOP_AT");
    if (value == nullptr) return parsed;
    absl::string_view text = value;
    const size_t colon = text.rfind(':');
    int64_t nth = 1;
    if (colon != absl::string_view::npos &&
        absl::SimpleAtoi(text.substr(colon + 1), &nth) && nth >= 1) {
      text = text.substr(0, colon);
    } else {
      nth = 1;
    }
    parsed->point = std::string(text);
    parsed->nth = nth;
    return parsed;
  }();
  return *target;
}

}  // namespace

void StopPoint(const char* point) {
  const Target& target = RequestedTarget();
  if (target.point.empty() || target.point != point) return;
  static std::atomic<int64_t> reached{0};
  if (reached.fetch_add(1) + 1 == target.nth) ::raise(SIGSTOP);
}

}  // namespace base
