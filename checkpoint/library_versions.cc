#include "checkpoint/library_versions.h"

#include "absl/strings/str_cat.h"

namespace checkpoint {

std::string CudaVersionString(long version) {
  return absl::StrCat(version / 1000, ".", (version % 1000) / 10);
}

std::string CudnnVersionString(long version) {
  const long major_unit = version >= 90000 ? 10000 : 1000;
  return absl::StrCat(version / major_unit, ".", (version % major_unit) / 100,
                      ".", version % 100);
}

}  // namespace checkpoint
