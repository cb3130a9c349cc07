// The reader fuzzer's input format, shared by the fuzzer, the corpus
// generator and the corpus test: a 4-byte little-endian manifest length N,
// N bytes of manifest.pb, then the bytes of data-00000.bin. A length beyond
// the input is clamped, so every byte string is an input.
#ifndef CHECKPOINT_READER_FUZZER_INPUT_H_
#define CHECKPOINT_READER_FUZZER_INPUT_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "tools/base/endian.h"

namespace checkpoint {

struct FuzzerInput {
  absl::string_view manifest;
  absl::string_view data;
};

// Views into `input`; both empty when it is shorter than the length field.
inline FuzzerInput SplitFuzzerInput(absl::string_view input) {
  if (input.size() < 4) return {};
  uint64_t size = base::GetLittleEndian(input.data(), 4);
  input.remove_prefix(4);
  if (size > input.size()) size = input.size();
  return {input.substr(0, size), input.substr(size)};
}

inline std::string JoinFuzzerInput(absl::string_view manifest,
                                   absl::string_view data) {
  std::string input;
  base::AppendLittleEndian(static_cast<uint32_t>(manifest.size()), 4, &input);
  input.append(manifest.data(), manifest.size());
  input.append(data.data(), data.size());
  return input;
}

}  // namespace checkpoint

#endif  // CHECKPOINT_READER_FUZZER_INPUT_H_
