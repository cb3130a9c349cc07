// Hugging Face safetensors files, read and written without Python and
// without trusting a byte before it is checked. Torch-free.
//
// Layout: a u64 little-endian header length N, N bytes of UTF-8 JSON (an
// object, possibly right-padded with spaces), then the tensor bytes. Each
// JSON entry is `"name": {"dtype": "F32", "shape": [..], "data_offsets":
// [begin, end]}` with offsets relative to the start of the tensor bytes;
// `"__metadata__"` is an optional string-to-string map.
//
// The reader enforces the reference implementation's rules
// (safetensors/src/tensor.rs): N at most 100,000,000 and 8 + N within the
// file; valid UTF-8 JSON beginning with '{'; known dtypes; no duplicate
// names; non-negative integer shapes whose byte size does not overflow;
// `end - begin` equal to that size; sorted by offset, the first tensor
// begins at 0 and each begins where the previous ends (no holes, no
// overlaps); the last end is exactly the rest of the file. It also refuses
// what the reference leaves unsaid: a FIFO, socket or device instead of a
// file (refused without blocking; a symlink is followed, as Hugging Face's
// cache is made of them), and duplicate keys inside an entry.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<interop::SafetensorsFile> file,
//                    interop::SafetensorsFile::Open("model.safetensors"));
//   for (const interop::SafetensorsEntry& entry : file->entries()) {
//     absl::Span<const char> bytes = file->Bytes(entry);  // zero-copy
//   }
//
// A SafetensorsFile is immutable after Open and may be shared between
// threads; its mapping lives as long as the object.
#ifndef CHECKPOINT_INTEROP_SAFETENSORS_H_
#define CHECKPOINT_INTEROP_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "checkpoint/manifest.pb.h"
#include "tools/base/files.h"

namespace interop {

inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

struct SafetensorsEntry {
  std::string name;
  std::string dtype;  // as written: "F32", "BF16", "U16", "F8_E4M3", ...
  // Our format's dtype, or null for the safetensors dtypes it has no
  // equivalent for (U16, U32, U64, C64, the 8-, 6- and 4-bit floats).
  std::optional<checkpoint::proto::DType> checkpoint_dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // relative to the first tensor byte
  uint64_t end = 0;
};

struct SafetensorsHeader {
  // By ascending offset (which is also how they lie in the file).
  std::vector<SafetensorsEntry> entries;
  std::map<std::string, std::string> metadata;
  // Where the tensor bytes start: 8 + N.
  uint64_t data_start = 0;
};

// Checks `file_start` (the file's first bytes: at least the length field
// and the whole header) against a file of `file_size` bytes. kDataLoss
// naming the rule broken.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(
    absl::string_view file_start, uint64_t file_size);

class SafetensorsFile {
 public:
  // Errors: kNotFound, kFailedPrecondition (not a regular file), kDataLoss
  // (any rule above), each naming `path`.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(
      const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::vector<SafetensorsEntry>& entries() const {
    return header_.entries;
  }
  const std::map<std::string, std::string>& metadata() const {
    return header_.metadata;
  }
  const SafetensorsEntry* Find(absl::string_view name) const;
  // The entry's bytes in the mapped file (valid while this object lives).
  absl::Span<const char> Bytes(const SafetensorsEntry& entry) const;
  const std::string& path() const { return path_; }

 private:
  SafetensorsFile(std::string path, SafetensorsHeader header,
                  std::unique_ptr<base::MappedFile> file);
  std::string path_;
  SafetensorsHeader header_;
  std::unique_ptr<base::MappedFile> file_;
};

struct SafetensorsTensor {
  std::string name;
  checkpoint::proto::DType dtype;
  std::vector<int64_t> shape;
  absl::Span<const char> bytes;  // product(shape) * element size
};

// Writes `tensors` and `metadata` as a safetensors file at `path`,
// atomically (the old file or the new one, never a mixture). Entries are
// laid out as the reference writer does: by descending element size, then
// name; the header is padded with spaces to a multiple of 8. Errors:
// kInvalidArgument for a duplicate or empty name, the reserved name
// "__metadata__", or bytes that do not match dtype and shape; I/O errors
// naming `path`.
absl::Status WriteSafetensors(
    const std::string& path, const std::vector<SafetensorsTensor>& tensors,
    const std::map<std::string, std::string>& metadata);

}  // namespace interop

#endif  // CHECKPOINT_INTEROP_SAFETENSORS_H_
