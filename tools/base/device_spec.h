// The one parser of the device strings the tools accept on the command line
// ("auto", "cpu", "cuda", "cuda:N"). Torch-free: callers turn the result
// into a torch::Device after checking what the machine has.
#ifndef TOOLS_BASE_DEVICE_SPEC_H_
#define TOOLS_BASE_DEVICE_SPEC_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace base {

struct DeviceSpec {
  enum class Kind { kAuto, kCpu, kCuda };
  Kind kind = Kind::kCpu;
  // CUDA device index; 0 for a bare "cuda".
  int index = 0;
};

// kInvalidArgument naming `text` and the accepted spellings otherwise.
// `allow_auto` admits "auto" (the trainer's default: CUDA when present).
absl::StatusOr<DeviceSpec> ParseDeviceSpec(absl::string_view text,
                                           bool allow_auto);

}  // namespace base

#endif  // TOOLS_BASE_DEVICE_SPEC_H_
