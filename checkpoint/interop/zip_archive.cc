#include "checkpoint/interop/zip_archive.h"

#include <zlib.h>

#include <algorithm>
#include <limits>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "tools/base/endian.h"

namespace interop {
namespace {

constexpr uint32_t kLocalHeaderSignature = 0x04034b50;
constexpr uint32_t kCentralHeaderSignature = 0x02014b50;
constexpr uint32_t kEndSignature = 0x06054b50;
constexpr uint32_t kZip64EndSignature = 0x06064b50;
constexpr uint32_t kZip64LocatorSignature = 0x07064b50;
constexpr uint64_t kLocalHeaderSize = 30;
constexpr uint64_t kCentralHeaderSize = 46;
constexpr uint64_t kEndSize = 22;
constexpr uint64_t kZip64EndSize = 56;
constexpr uint64_t kZip64LocatorSize = 20;
constexpr uint32_t kSaturated32 = 0xffffffff;
constexpr uint16_t kZip64ExtraId = 0x0001;
// torch.save's padding field ("FB"), which aligns payloads.
constexpr uint16_t kPaddingExtraId = 0x4246;

absl::Status Bad(absl::string_view what) {
  return absl::DataLossError(absl::StrCat("zip archive: ", what));
}

uint64_t Get(absl::string_view file, uint64_t offset, size_t bytes) {
  return base::GetLittleEndian(file.data() + offset, bytes);
}

// The zip64 extended-information field of a central header, if present:
// it holds, in this order, exactly those of (size, compressed size, local
// header offset, disk) whose 32-bit fields are saturated.
absl::Status ApplyZip64Extra(absl::string_view extra, absl::string_view name,
                             uint64_t* size, uint64_t* compressed_size,
                             uint64_t* local_offset) {
  uint64_t position = 0;
  bool seen = false;
  while (position < extra.size()) {
    if (extra.size() - position < 4) {
      return Bad(absl::StrCat("entry '", name, "': truncated extra field"));
    }
    const uint64_t id = Get(extra, position, 2);
    const uint64_t length = Get(extra, position + 2, 2);
    if (extra.size() - position - 4 < length) {
      return Bad(absl::StrCat("entry '", name, "': extra field 0x",
                              absl::Hex(id), " runs past its header"));
    }
    if (id == kZip64ExtraId) {
      if (seen) {
        return Bad(absl::StrCat("entry '", name, "': two zip64 extra fields"));
      }
      seen = true;
      uint64_t field = position + 4;
      const uint64_t end = field + length;
      for (uint64_t* value : {size, compressed_size, local_offset}) {
        if (*value != kSaturated32) continue;
        if (end - field < 8) {
          return Bad(
              absl::StrCat("entry '", name, "': zip64 extra field too short"));
        }
        *value = Get(extra, field, 8);
        field += 8;
      }
    }
    position += 4 + length;
  }
  return absl::OkStatus();
}

struct EndRecord {
  uint64_t entries = 0;
  uint64_t directory_size = 0;
  uint64_t directory_offset = 0;
  uint64_t start = 0;  // where the end records begin (zip64 or not)
};

absl::StatusOr<EndRecord> FindEndRecord(absl::string_view file) {
  if (file.size() < kEndSize) {
    return Bad(absl::StrCat("only ", file.size(),
                            " bytes, too short for an end record"));
  }
  // The end record is followed by a comment of at most 65535 bytes; the
  // record's own length field must account for exactly what follows.
  const uint64_t lowest =
      file.size() >= kEndSize + 0xffff ? file.size() - kEndSize - 0xffff : 0;
  for (uint64_t at = file.size() - kEndSize + 1; at-- > lowest;) {
    if (Get(file, at, 4) != kEndSignature) continue;
    if (Get(file, at + 20, 2) != file.size() - at - kEndSize) continue;
    EndRecord end;
    end.start = at;
    const uint64_t disk = Get(file, at + 4, 2);
    const uint64_t directory_disk = Get(file, at + 6, 2);
    const uint64_t disk_entries = Get(file, at + 8, 2);
    end.entries = Get(file, at + 10, 2);
    end.directory_size = Get(file, at + 12, 4);
    end.directory_offset = Get(file, at + 16, 4);
    const bool has_locator =
        at >= kZip64LocatorSize &&
        Get(file, at - kZip64LocatorSize, 4) == kZip64LocatorSignature;
    if (has_locator) {
      const uint64_t locator = at - kZip64LocatorSize;
      const uint64_t record = Get(file, locator + 8, 8);
      if (Get(file, locator + 4, 4) != 0 || Get(file, locator + 16, 4) != 1) {
        return Bad("multi-disk archives are not supported");
      }
      if (record > locator || locator - record < kZip64EndSize ||
          Get(file, record, 4) != kZip64EndSignature) {
        return Bad(absl::StrCat("the zip64 locator at offset ", locator,
                                " does not point at a zip64 end record"));
      }
      if (Get(file, record + 4, 8) != locator - record - 12) {
        return Bad(absl::StrCat("the zip64 end record at offset ", record,
                                " does not end at the locator"));
      }
      if (Get(file, record + 16, 4) != 0 || Get(file, record + 20, 4) != 0) {
        return Bad("multi-disk archives are not supported");
      }
      if (Get(file, record + 24, 8) != Get(file, record + 32, 8)) {
        return Bad("multi-disk archives are not supported");
      }
      end.entries = Get(file, record + 32, 8);
      end.directory_size = Get(file, record + 40, 8);
      end.directory_offset = Get(file, record + 48, 8);
      end.start = record;
    } else if (disk != 0 || directory_disk != 0 ||
               disk_entries != end.entries) {
      return Bad("multi-disk archives are not supported");
    }
    if (end.directory_offset > end.start ||
        end.start - end.directory_offset != end.directory_size) {
      return Bad(absl::StrCat("the central directory (offset ",
                              end.directory_offset, ", ", end.directory_size,
                              " bytes) does not end where the end records "
                              "begin (offset ",
                              end.start, ")"));
    }
    if (end.entries > kMaxZipEntries) {
      return Bad(absl::StrCat(end.entries, " entries, more than the limit of ",
                              kMaxZipEntries));
    }
    if (end.entries > end.directory_size / kCentralHeaderSize) {
      return Bad(absl::StrCat(end.entries, " entries cannot fit in a ",
                              end.directory_size, "-byte central directory"));
    }
    return end;
  }
  return Bad(
      "no end-of-central-directory record (not a zip archive, or "
      "truncated)");
}

}  // namespace

const ZipEntry* ZipDirectory::Find(absl::string_view name) const {
  for (const ZipEntry& entry : entries) {
    if (entry.name == name) return &entry;
  }
  return nullptr;
}

absl::StatusOr<ZipDirectory> ParseZipArchive(absl::string_view file) {
  absl::StatusOr<EndRecord> end = FindEndRecord(file);
  if (!end.ok()) return end.status();
  ZipDirectory directory;
  directory.entries.reserve(end->entries);
  struct Span {
    uint64_t begin, end;
    size_t entry;
  };
  std::vector<Span> spans;
  uint64_t at = end->directory_offset;
  const uint64_t directory_end = end->start;
  for (uint64_t i = 0; i < end->entries; ++i) {
    if (directory_end - at < kCentralHeaderSize ||
        Get(file, at, 4) != kCentralHeaderSignature) {
      return Bad(absl::StrCat("central directory entry ", i, " at offset ", at,
                              " is missing or truncated"));
    }
    const uint64_t flags = Get(file, at + 8, 2);
    const uint64_t method = Get(file, at + 10, 2);
    const uint32_t crc = static_cast<uint32_t>(Get(file, at + 16, 4));
    uint64_t compressed_size = Get(file, at + 20, 4);
    uint64_t size = Get(file, at + 24, 4);
    const uint64_t name_length = Get(file, at + 28, 2);
    const uint64_t extra_length = Get(file, at + 30, 2);
    const uint64_t comment_length = Get(file, at + 32, 2);
    const uint64_t disk = Get(file, at + 34, 2);
    uint64_t local_offset = Get(file, at + 42, 4);
    const uint64_t record_size =
        kCentralHeaderSize + name_length + extra_length + comment_length;
    if (directory_end - at < record_size) {
      return Bad(absl::StrCat("central directory entry ", i, " at offset ", at,
                              " runs past the directory"));
    }
    ZipEntry entry;
    entry.name = std::string(file.substr(at + kCentralHeaderSize, name_length));
    const absl::string_view extra =
        file.substr(at + kCentralHeaderSize + name_length, extra_length);
    at += record_size;
    if (entry.name.empty()) {
      return Bad(absl::StrCat("central directory entry ", i, " has no name"));
    }
    const std::string quoted = absl::StrCat("entry '", entry.name, "'");
    if (flags & 1) return Bad(absl::StrCat(quoted, " is encrypted"));
    if (method != 0) {
      return Bad(absl::StrCat(quoted, " is compressed (method ", method,
                              "); torch.save stores records uncompressed"));
    }
    if (disk != 0 && disk != 0xffff) {
      return Bad("multi-disk archives are not supported");
    }
    absl::Status zip64 = ApplyZip64Extra(extra, entry.name, &size,
                                         &compressed_size, &local_offset);
    if (!zip64.ok()) return zip64;
    if (compressed_size != size) {
      return Bad(absl::StrCat(quoted, " is stored but its sizes differ (",
                              compressed_size, " and ", size, ")"));
    }
    // The local header must agree with the central one.
    if (local_offset > end->directory_offset ||
        end->directory_offset - local_offset < kLocalHeaderSize ||
        Get(file, local_offset, 4) != kLocalHeaderSignature) {
      return Bad(
          absl::StrCat(quoted, ": no local header at offset ", local_offset));
    }
    const uint64_t local_method = Get(file, local_offset + 8, 2);
    const uint64_t local_name_length = Get(file, local_offset + 26, 2);
    const uint64_t local_extra_length = Get(file, local_offset + 28, 2);
    const uint64_t header_size =
        kLocalHeaderSize + local_name_length + local_extra_length;
    if (end->directory_offset - local_offset < header_size) {
      return Bad(absl::StrCat(quoted, ": the local header at offset ",
                              local_offset,
                              " runs into the central directory"));
    }
    if (file.substr(local_offset + kLocalHeaderSize, local_name_length) !=
        entry.name) {
      return Bad(absl::StrCat(quoted, ": the local header at offset ",
                              local_offset, " names another file"));
    }
    if (local_method != method) {
      return Bad(absl::StrCat(quoted, ": the local header's method (",
                              local_method, ") differs from the directory's"));
    }
    entry.data_offset = local_offset + header_size;
    entry.size = size;
    entry.crc32 = crc;
    if (end->directory_offset - entry.data_offset < size) {
      return Bad(absl::StrCat(quoted, ": its ", size, " bytes at offset ",
                              entry.data_offset,
                              " run past the central directory"));
    }
    spans.push_back(
        {local_offset, entry.data_offset + size, directory.entries.size()});
    directory.entries.push_back(std::move(entry));
  }
  if (at != directory_end) {
    return Bad(absl::StrCat("the central directory holds ", directory_end - at,
                            " bytes after its ", end->entries, " entries"));
  }
  // Names once each (checked here, where the strings no longer move).
  std::set<absl::string_view> seen;
  for (const ZipEntry& entry : directory.entries) {
    if (!seen.insert(entry.name).second) {
      return Bad(absl::StrCat("two entries are named '", entry.name, "'"));
    }
  }
  std::sort(spans.begin(), spans.end(),
            [](const Span& a, const Span& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < spans.size(); ++i) {
    if (spans[i].begin < spans[i - 1].end) {
      return Bad(absl::StrCat(
          "entries '", directory.entries[spans[i - 1].entry].name, "' and '",
          directory.entries[spans[i].entry].name, "' overlap (offsets ",
          spans[i - 1].begin, " and ", spans[i].begin, ")"));
    }
  }
  return directory;
}

uint32_t Crc32(absl::string_view bytes, uint32_t crc) {
  // zlib takes a uInt length; feed it in pieces.
  uLong value = crc;
  while (!bytes.empty()) {
    const size_t piece = std::min<size_t>(bytes.size(), 1u << 30);
    value = ::crc32(value, reinterpret_cast<const Bytef*>(bytes.data()),
                    static_cast<uInt>(piece));
    bytes.remove_prefix(piece);
  }
  return static_cast<uint32_t>(value);
}

absl::Status CheckZipEntryCrc(const ZipEntry& entry,
                              absl::string_view payload) {
  const uint32_t actual = Crc32(payload);
  if (actual != entry.crc32) {
    return Bad(absl::StrCat(
        "entry '", entry.name, "': CRC-32 is ",
        absl::Hex(actual, absl::kZeroPad8), " but the directory records ",
        absl::Hex(entry.crc32, absl::kZeroPad8), " (the record is corrupt)"));
  }
  return absl::OkStatus();
}

ZipWriter::ZipWriter(WriteFunction write, uint64_t alignment)
    : write_(std::move(write)), alignment_(std::max<uint64_t>(alignment, 1)) {}

absl::Status ZipWriter::Write(absl::string_view bytes) {
  absl::Status status = write_(bytes);
  offset_ += bytes.size();
  return status;
}

absl::Status ZipWriter::Add(absl::string_view name, absl::string_view payload) {
  if (name.empty() || name.size() > 0xffff) {
    return absl::InvalidArgumentError(
        absl::StrCat("zip entry name '", name, "' is empty or too long"));
  }
  for (const ZipEntry& entry : written_) {
    if (entry.name == name) {
      return absl::InvalidArgumentError(
          absl::StrCat("zip entry '", name, "' is added twice"));
    }
  }
  ZipEntry entry;
  entry.name = std::string(name);
  entry.size = payload.size();
  entry.crc32 = Crc32(payload);
  const uint64_t header_offset = offset_;
  const bool zip64 = payload.size() >= kSaturated32;
  std::string header;
  base::AppendLittleEndian(kLocalHeaderSignature, 4, &header);
  base::AppendLittleEndian(zip64 ? 45 : 20, 2, &header);  // version needed
  base::AppendLittleEndian(0, 2, &header);                // flags
  base::AppendLittleEndian(0, 2, &header);                // stored
  base::AppendLittleEndian(0, 2, &header);                // time
  base::AppendLittleEndian(0x21, 2, &header);             // date: 1980-01-01
  base::AppendLittleEndian(entry.crc32, 4, &header);
  base::AppendLittleEndian(zip64 ? kSaturated32 : payload.size(), 4, &header);
  base::AppendLittleEndian(zip64 ? kSaturated32 : payload.size(), 4, &header);
  base::AppendLittleEndian(name.size(), 2, &header);
  std::string extra;
  if (zip64) {
    base::AppendLittleEndian(kZip64ExtraId, 2, &extra);
    base::AppendLittleEndian(16, 2, &extra);
    base::AppendLittleEndian(payload.size(), 8, &extra);
    base::AppendLittleEndian(payload.size(), 8, &extra);
  }
  // Pad with an "FB" field so that the payload starts aligned.
  uint64_t unpadded =
      header_offset + header.size() + 2 + name.size() + extra.size();
  uint64_t padding = (alignment_ - unpadded % alignment_) % alignment_;
  if (padding > 0 && padding < 4) padding += alignment_;
  if (padding > 0) {
    base::AppendLittleEndian(kPaddingExtraId, 2, &extra);
    base::AppendLittleEndian(padding - 4, 2, &extra);
    extra.append(padding - 4, 'Z');
  }
  base::AppendLittleEndian(extra.size(), 2, &header);
  header.append(name.data(), name.size());
  header += extra;
  absl::Status status = Write(header);
  if (status.ok()) status = Write(payload);
  if (!status.ok()) return status;
  entry.data_offset = header_offset + header.size();
  written_.push_back(std::move(entry));
  header_offsets_.push_back(header_offset);
  return absl::OkStatus();
}

absl::Status ZipWriter::Finish() {
  const uint64_t directory_offset = offset_;
  std::string directory;
  for (size_t i = 0; i < written_.size(); ++i) {
    const ZipEntry& entry = written_[i];
    const bool big_size = entry.size >= kSaturated32;
    const bool big_offset = header_offsets_[i] >= kSaturated32;
    std::string extra;
    if (big_size || big_offset) {
      base::AppendLittleEndian(kZip64ExtraId, 2, &extra);
      base::AppendLittleEndian((big_size ? 16 : 0) + (big_offset ? 8 : 0), 2,
                               &extra);
      if (big_size) {
        base::AppendLittleEndian(entry.size, 8, &extra);
        base::AppendLittleEndian(entry.size, 8, &extra);
      }
      if (big_offset) base::AppendLittleEndian(header_offsets_[i], 8, &extra);
    }
    base::AppendLittleEndian(kCentralHeaderSignature, 4, &directory);
    base::AppendLittleEndian(extra.empty() ? 20 : 45, 2, &directory);  // made
    base::AppendLittleEndian(extra.empty() ? 20 : 45, 2, &directory);  // need
    base::AppendLittleEndian(0, 2, &directory);                        // flags
    base::AppendLittleEndian(0, 2, &directory);                        // stored
    base::AppendLittleEndian(0, 2, &directory);                        // time
    base::AppendLittleEndian(0x21, 2, &directory);                     // date
    base::AppendLittleEndian(entry.crc32, 4, &directory);
    base::AppendLittleEndian(big_size ? kSaturated32 : entry.size, 4,
                             &directory);
    base::AppendLittleEndian(big_size ? kSaturated32 : entry.size, 4,
                             &directory);
    base::AppendLittleEndian(entry.name.size(), 2, &directory);
    base::AppendLittleEndian(extra.size(), 2, &directory);
    base::AppendLittleEndian(0, 2, &directory);  // comment
    base::AppendLittleEndian(0, 2, &directory);  // disk
    base::AppendLittleEndian(0, 2, &directory);  // internal attributes
    base::AppendLittleEndian(0, 4, &directory);  // external attributes
    base::AppendLittleEndian(big_offset ? kSaturated32 : header_offsets_[i], 4,
                             &directory);
    directory += entry.name;
    directory += extra;
  }
  const uint64_t count = written_.size();
  const uint64_t zip64_end_offset = directory_offset + directory.size();
  std::string end = directory;
  base::AppendLittleEndian(kZip64EndSignature, 4, &end);
  base::AppendLittleEndian(kZip64EndSize - 12, 8, &end);
  base::AppendLittleEndian(45, 2, &end);
  base::AppendLittleEndian(45, 2, &end);
  base::AppendLittleEndian(0, 4, &end);
  base::AppendLittleEndian(0, 4, &end);
  base::AppendLittleEndian(count, 8, &end);
  base::AppendLittleEndian(count, 8, &end);
  base::AppendLittleEndian(directory.size(), 8, &end);
  base::AppendLittleEndian(directory_offset, 8, &end);
  base::AppendLittleEndian(kZip64LocatorSignature, 4, &end);
  base::AppendLittleEndian(0, 4, &end);
  base::AppendLittleEndian(zip64_end_offset, 8, &end);
  base::AppendLittleEndian(1, 4, &end);
  base::AppendLittleEndian(kEndSignature, 4, &end);
  base::AppendLittleEndian(0, 2, &end);
  base::AppendLittleEndian(0, 2, &end);
  base::AppendLittleEndian(std::min<uint64_t>(count, 0xffff), 2, &end);
  base::AppendLittleEndian(std::min<uint64_t>(count, 0xffff), 2, &end);
  base::AppendLittleEndian(std::min<uint64_t>(directory.size(), kSaturated32),
                           4, &end);
  base::AppendLittleEndian(std::min<uint64_t>(directory_offset, kSaturated32),
                           4, &end);
  base::AppendLittleEndian(0, 2, &end);  // comment
  return Write(end);
}

}  // namespace interop
