#include "checkpoint/interop/zip_archive.h"

#include <filesystem>
#include <string>

#include "gtest/gtest.h"
#include "testing/test_paths.h"
#include "tools/base/endian.h"

namespace interop {
namespace {

std::string Archive(
    const std::vector<std::pair<std::string, std::string>>& entries) {
  std::string out;
  ZipWriter writer([&out](absl::string_view bytes) {
    out.append(bytes.data(), bytes.size());
    return absl::OkStatus();
  });
  for (const auto& [name, payload] : entries) {
    EXPECT_TRUE(writer.Add(name, payload).ok());
  }
  EXPECT_TRUE(writer.Finish().ok());
  return out;
}

// The offset of the central header of entry `index`.
size_t CentralHeader(const std::string& zip, int index) {
  size_t at = 0;
  for (int i = 0; i <= index; ++i) {
    at = zip.find(std::string("PK\x01\x02", 4), i == 0 ? 0 : at + 4);
  }
  return at;
}

void Expect(const std::string& zip, absl::string_view reason) {
  absl::StatusOr<ZipDirectory> parsed = ParseZipArchive(zip);
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(parsed.status().message().find(reason), std::string::npos)
      << parsed.status();
}

TEST(ZipArchiveTest, WrittenEntriesReadBackAlignedWithCrcs) {
  const std::string zip = Archive({{"sd/data.pkl", "pickle bytes"},
                                   {"sd/data/0", std::string(1000, 'x')},
                                   {"sd/version", "3\n"}});
  absl::StatusOr<ZipDirectory> parsed = ParseZipArchive(zip);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->entries.size(), 3u);
  for (const ZipEntry& entry : parsed->entries) {
    EXPECT_EQ(entry.data_offset % 64, 0u) << entry.name;
    EXPECT_TRUE(CheckZipEntryCrc(entry, absl::string_view(zip).substr(
                                            entry.data_offset, entry.size))
                    .ok());
  }
  const ZipEntry* data = parsed->Find("sd/data/0");
  ASSERT_NE(data, nullptr);
  EXPECT_EQ(zip.substr(data->data_offset, data->size), std::string(1000, 'x'));
  EXPECT_EQ(parsed->Find("sd/missing"), nullptr);
}

TEST(ZipArchiveTest, CorruptPayloadFailsItsCrc) {
  std::string zip = Archive({{"a/data.pkl", "payload"}});
  absl::StatusOr<ZipDirectory> parsed = ParseZipArchive(zip);
  ASSERT_TRUE(parsed.ok());
  zip[parsed->entries[0].data_offset] ^= 1;
  absl::Status crc = CheckZipEntryCrc(
      parsed->entries[0],
      absl::string_view(zip).substr(parsed->entries[0].data_offset, 7));
  EXPECT_EQ(crc.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(crc.message().find("'a/data.pkl': CRC-32"), std::string::npos);
}

TEST(ZipArchiveTest, EveryTruncationIsRefused) {
  const std::string zip = Archive({{"a/data.pkl", "payload"}});
  for (size_t size = 0; size < zip.size(); ++size) {
    EXPECT_FALSE(ParseZipArchive(zip.substr(0, size)).ok()) << size;
  }
}

TEST(ZipArchiveTest, GarbageAfterTheEndRecordIsRefused) {
  Expect(Archive({{"a/x", "1"}}) + "junk", "no end-of-central-directory");
}

TEST(ZipArchiveTest, OverlappingEntriesAreRefused) {
  std::string zip = Archive({{"a/x", std::string(100, '1')}, {"a/y", "2"}});
  // Point the second entry's local header offset at the first's.
  const size_t second = CentralHeader(zip, 1);
  const size_t first_offset =
      base::GetLittleEndian(zip.data() + CentralHeader(zip, 0) + 42, 4);
  base::PutLittleEndian(first_offset, 4, zip.data() + second + 42);
  Expect(zip, "names another file");
  // Same name, so the local header matches: the overlap rule catches it.
  std::string same = Archive({{"a/x", std::string(100, '1')}, {"a/x2", "2"}});
  const size_t header = CentralHeader(same, 1);
  base::PutLittleEndian(
      base::GetLittleEndian(same.data() + CentralHeader(same, 0) + 42, 4), 4,
      same.data() + header + 42);
  same[header + 46 + 3] = '\0';  // rename "a/x2" in the directory only
  Expect(same, "local header");
}

TEST(ZipArchiveTest, AnEntryPastTheDirectoryIsRefused) {
  std::string zip = Archive({{"a/x", "12345"}});
  base::PutLittleEndian(1 << 20, 4, zip.data() + CentralHeader(zip, 0) + 20);
  base::PutLittleEndian(1 << 20, 4, zip.data() + CentralHeader(zip, 0) + 24);
  Expect(zip, "run past the central directory");
}

TEST(ZipArchiveTest, CompressedAndEncryptedEntriesAreRefused) {
  std::string zip = Archive({{"a/x", "12345"}});
  std::string deflated = zip;
  deflated[CentralHeader(zip, 0) + 10] = 8;
  Expect(deflated, "is compressed (method 8)");
  std::string encrypted = zip;
  encrypted[CentralHeader(zip, 0) + 8] = 1;
  Expect(encrypted, "is encrypted");
}

TEST(ZipArchiveTest, DuplicateNamesAreRefused) {
  std::string zip = Archive({{"a/x", "1"}, {"a/y", "2"}});
  // Rename the second entry to the first's name in both headers.
  for (size_t at = zip.find("a/y"); at != std::string::npos;
       at = zip.find("a/y", at + 1)) {
    zip[at + 2] = 'x';
  }
  Expect(zip, "two entries are named 'a/x'");
}

TEST(ZipArchiveTest, WriterRefusesRepeatedNames) {
  std::string out;
  ZipWriter writer([&out](absl::string_view bytes) {
    out.append(bytes.data(), bytes.size());
    return absl::OkStatus();
  });
  ASSERT_TRUE(writer.Add("a/x", "1").ok());
  EXPECT_EQ(writer.Add("a/x", "2").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(writer.Add("", "2").code(), absl::StatusCode::kInvalidArgument);
}

// The fuzzer's seeds are .pt files torch 1.13 and 2.11 wrote: each must
// parse, with every payload 64-byte aligned and its CRC-32 right.
TEST(ZipArchiveTest, TorchSavedArchivesParse) {
  const std::string corpus =
      test_paths::Runfile("checkpoint/interop/testdata/zip_corpus");
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(corpus)) {
    SCOPED_TRACE(entry.path().string());
    const std::string bytes = test_paths::ReadFile(entry.path().string());
    absl::StatusOr<ZipDirectory> zip = ParseZipArchive(bytes);
    ASSERT_TRUE(zip.ok()) << zip.status();
    for (const ZipEntry& zipped : zip->entries) {
      EXPECT_EQ(zipped.data_offset % 64, 0u) << zipped.name;
      EXPECT_TRUE(CheckZipEntryCrc(zipped, absl::string_view(bytes).substr(
                                               zipped.data_offset, zipped.size))
                      .ok());
    }
    ++files;
  }
  EXPECT_GE(files, 4);
}

}  // namespace
}  // namespace interop
