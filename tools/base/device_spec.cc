#include "tools/base/device_spec.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace base {

absl::StatusOr<DeviceSpec> ParseDeviceSpec(absl::string_view text,
                                           bool allow_auto) {
  DeviceSpec spec;
  if (allow_auto && text == "auto") {
    spec.kind = DeviceSpec::Kind::kAuto;
    return spec;
  }
  if (text == "cpu") return spec;
  absl::string_view index = text;
  if (text == "cuda" ||
      (absl::ConsumePrefix(&index, "cuda:") && !index.empty() &&
       index.find_first_not_of("0123456789") == absl::string_view::npos &&
       index.size() <= 4 && absl::SimpleAtoi(index, &spec.index))) {
    spec.kind = DeviceSpec::Kind::kCuda;
    return spec;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported device '", text, "' (expected ",
                   allow_auto ? "auto, " : "", "cpu, cuda or cuda:N)"));
}

}  // namespace base
