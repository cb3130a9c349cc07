// Reads and writes NumPy .npy files (format versions 1.0, 2.0 and 3.0) for
// the runner's inputs and outputs. Torch-free.
//
// Only what the runner exchanges is supported: little-endian float32
// ('<f4') and uint8 ('|u1') arrays in C order. Everything else (Fortran
// order, other dtypes, big-endian data, malformed or truncated headers, a
// data section whose size does not match the shape) is refused with an
// absl::Status whose one-line message names the file and the problem. The
// file's size bounds every allocation, so a hostile header cannot make the
// reader allocate more than the file holds.
//
// Example:
//   absl::StatusOr<runner::NpyArray> array = runner::ReadNpy("x.npy");
//   if (!array.ok()) return array.status();
//   const float* values = array->float_data();  // dtype == kFloat32
//
//   absl::Status written = runner::WriteNpy(
//       "logits.npy", runner::NpyDtype::kFloat32, {64, 10}, bytes);
#ifndef RUNNER_DATA_NPY_H_
#define RUNNER_DATA_NPY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace runner {

enum class NpyDtype { kFloat32, kUint8 };

// Size in bytes of one element of `dtype`.
int64_t NpyElementSize(NpyDtype dtype);
// "float32" or "uint8".
const char* NpyDtypeName(NpyDtype dtype);

struct NpyArray {
  NpyDtype dtype = NpyDtype::kFloat32;
  std::vector<int64_t> shape;
  // The raw little-endian element bytes, C order.
  std::string data;

  int64_t num_elements() const;
  // REQUIRES: dtype == kFloat32 (resp. kUint8).
  const float* float_data() const {
    return reinterpret_cast<const float*>(data.data());
  }
  const uint8_t* uint8_data() const {
    return reinterpret_cast<const uint8_t*>(data.data());
  }
};

// Parses the bytes of a whole .npy file. `name` appears in error messages.
absl::StatusOr<NpyArray> ParseNpy(absl::string_view bytes,
                                  absl::string_view name);

// Reads and parses `path`.
absl::StatusOr<NpyArray> ReadNpy(const std::string& path);

// Returns the bytes of a version 1.0 .npy file (2.0 when the header needs
// more than 65535 bytes). REQUIRES: data.size() == product(shape) *
// NpyElementSize(dtype); checked, kInvalidArgument otherwise.
absl::StatusOr<std::string> SerializeNpy(NpyDtype dtype,
                                         absl::Span<const int64_t> shape,
                                         absl::string_view data);

// Writes a .npy file atomically: a temporary in the destination directory,
// fsync, rename. A failure leaves any previous file at `path` untouched.
absl::Status WriteNpy(const std::string& path, NpyDtype dtype,
                      absl::Span<const int64_t> shape, absl::string_view data);

// Reads a whole file. kNotFound when it does not exist.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

}  // namespace runner

#endif  // RUNNER_DATA_NPY_H_
