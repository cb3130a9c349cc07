// The zip container of torch.save (since PyTorch 1.6), read and written
// without trusting a byte before it is checked. Torch-free.
//
// torch.save writes every record STORED (uncompressed), each payload
// aligned to 64 bytes by a padding extra field, and always a zip64 end
// record. The reader accepts any zip that holds STORED entries only, and
// refuses, naming the rule and where:
//   - no end-of-central-directory record, or one whose comment does not
//     end exactly at the end of the file; multi-disk archives;
//   - a zip64 locator or record out of place, or pointing outside the file;
//   - a central directory outside the file or overlapping the entries;
//   - an entry that is compressed, encrypted, or whose sizes disagree, or
//     whose zip64 extra field is malformed;
//   - a local header that is missing, names another file, or whose payload
//     runs past the central directory;
//   - two entries that overlap, or share a name;
//   - more than kMaxZipEntries entries.
// CRC-32s are read, not checked, by ParseZipArchive: checking costs a pass
// over every byte, so callers do it (CheckZipEntryCrc) on the records they
// use.
//
//   ASSIGN_OR_RETURN(interop::ZipDirectory zip,
//                    interop::ParseZipArchive(file_bytes));
//   for (const interop::ZipEntry& entry : zip.entries) {
//     absl::string_view payload = file_bytes.substr(entry.data_offset,
//                                                   entry.size);
//   }
#ifndef CHECKPOINT_INTEROP_ZIP_ARCHIVE_H_
#define CHECKPOINT_INTEROP_ZIP_ARCHIVE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace interop {

inline constexpr uint64_t kMaxZipEntries = 1'000'000;

struct ZipEntry {
  std::string name;
  uint64_t data_offset = 0;  // of the payload, from the start of the file
  uint64_t size = 0;
  uint32_t crc32 = 0;  // as the central directory records it
};

struct ZipDirectory {
  std::vector<ZipEntry> entries;  // in central-directory order
  // The entry called `name`, or null.
  const ZipEntry* Find(absl::string_view name) const;
};

// Parses the zip archive that is all of `file`. kDataLoss naming the rule
// broken and the byte offset or entry concerned.
absl::StatusOr<ZipDirectory> ParseZipArchive(absl::string_view file);

// OK when the CRC-32 of `payload` is `entry.crc32`; kDataLoss naming the
// entry otherwise.
absl::Status CheckZipEntryCrc(const ZipEntry& entry, absl::string_view payload);

// The CRC-32 (ISO-HDLC, as zip uses) of `bytes`, continuing from `crc`.
uint32_t Crc32(absl::string_view bytes, uint32_t crc = 0);

// Writes a zip of STORED entries, each payload aligned to `alignment`
// bytes as torch.save aligns them (so that a reader can map tensors in
// place), with zip64 records where sizes or offsets need them and a zip64
// end record always, as torch.save writes. The caller supplies the output:
// `write` receives the archive's bytes in order.
//
// Not thread-safe. Finish must be called once, after the last entry.
class ZipWriter {
 public:
  using WriteFunction = std::function<absl::Status(absl::string_view)>;
  explicit ZipWriter(WriteFunction write, uint64_t alignment = 64);

  // Adds an entry. kInvalidArgument for an empty, over-long or repeated
  // name; the writer's error otherwise.
  absl::Status Add(absl::string_view name, absl::string_view payload);
  // Writes the central directory and the end records.
  absl::Status Finish();

 private:
  absl::Status Write(absl::string_view bytes);
  WriteFunction write_;
  uint64_t alignment_;
  uint64_t offset_ = 0;
  std::vector<ZipEntry> written_;
  std::vector<uint64_t> header_offsets_;  // of each entry's local header
};

}  // namespace interop

#endif  // CHECKPOINT_INTEROP_ZIP_ARCHIVE_H_
