// Fixed-width little-endian integers in byte buffers, the one way every
// file format here (manifest header, safetensors, .npy, digests, fuzzer
// inputs) reads and writes them, independent of the host's byte order.
#ifndef TOOLS_BASE_ENDIAN_H_
#define TOOLS_BASE_ENDIAN_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace base {

// The low `bytes` (at most 8) bytes of `value` into out[0, bytes).
inline void PutLittleEndian(uint64_t value, size_t bytes, char* out) {
  for (size_t i = 0; i < bytes; ++i) {
    out[i] = static_cast<char>((value >> (8 * i)) & 0xff);
  }
}

// The same, appended to `out`.
inline void AppendLittleEndian(uint64_t value, size_t bytes, std::string* out) {
  for (size_t i = 0; i < bytes; ++i) {
    out->push_back(static_cast<char>((value >> (8 * i)) & 0xff));
  }
}

// The unsigned integer in in[0, bytes) (at most 8 bytes).
inline uint64_t GetLittleEndian(const char* in, size_t bytes) {
  uint64_t value = 0;
  for (size_t i = 0; i < bytes; ++i) {
    value |= uint64_t{static_cast<unsigned char>(in[i])} << (8 * i);
  }
  return value;
}

}  // namespace base

#endif  // TOOLS_BASE_ENDIAN_H_
