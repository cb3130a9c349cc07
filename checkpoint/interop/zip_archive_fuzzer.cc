// libFuzzer target over the zip layer (zip_archive.h): any byte string must
// give a Status, never a crash or an out-of-bounds read. What it accepts
// must keep the header's promises: payloads inside the file, no overlaps,
// unique names.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/interop/zip_archive.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view input(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<interop::ZipDirectory> zip = interop::ParseZipArchive(input);
  if (!zip.ok()) return 0;
  std::set<std::string> names;
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (const interop::ZipEntry& entry : zip->entries) {
    if (entry.data_offset > size || size - entry.data_offset < entry.size) {
      std::abort();
    }
    if (!names.insert(entry.name).second) std::abort();
    spans.emplace_back(entry.data_offset, entry.data_offset + entry.size);
    (void)interop::CheckZipEntryCrc(entry,
                                    input.substr(entry.data_offset, entry.size))
        .ok();
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i) {
    if (spans[i].first < spans[i - 1].second) std::abort();
  }
  return 0;
}
