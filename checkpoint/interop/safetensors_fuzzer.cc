// libFuzzer target over the safetensors header parser: any byte string as
// the start of a file of any claimed size must give a Status, never a
// crash, an out-of-bounds read, a hang or a huge allocation. Entries that
// pass are checked against the rules the parser promises.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "checkpoint/interop/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view input(reinterpret_cast<const char*>(data), size);
  // The file is the input itself, or (from its last byte) a little larger,
  // so that the "exact file length" rule is not all the fuzzer meets.
  for (uint64_t extra :
       {uint64_t{0}, size > 0 ? uint64_t{data[size - 1]} : 0}) {
    absl::StatusOr<interop::SafetensorsHeader> header =
        interop::ParseSafetensorsHeader(input, size + extra);
    if (!header.ok()) continue;
    uint64_t end = 0;
    for (const interop::SafetensorsEntry& entry : header->entries) {
      if (entry.begin != end || entry.end < entry.begin) std::abort();
      end = entry.end;
    }
    if (header->data_start + end != size + extra) std::abort();
  }
  return 0;
}
