#include "checkpoint/interop/safetensors.h"

#include <sys/stat.h>

#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"
#include "tools/base/endian.h"

namespace interop {
namespace {

using ::testing::HasSubstr;

// A safetensors file from a header text and a buffer, as any writer
// (or attacker) could make it.
std::string File(const std::string& header, const std::string& buffer) {
  std::string file;
  base::AppendLittleEndian(header.size(), 8, &file);
  return file + header + buffer;
}

absl::Status Parse(const std::string& file) {
  return ParseSafetensorsHeader(file, file.size()).status();
}

TEST(SafetensorsTest, WhatWeWriteReadsBackZeroCopy) {
  const std::string path = test_paths::TempPath("model.safetensors");
  const float weight[6] = {1, 2, 3, 4, 5, 6};
  const uint8_t mask[3] = {1, 0, 1};
  const int64_t step = 42;
  std::vector<SafetensorsTensor> tensors = {
      {"fc.weight",
       checkpoint::proto::FLOAT32,
       {2, 3},
       absl::Span<const char>(reinterpret_cast<const char*>(weight), 24)},
      {"mask",
       checkpoint::proto::BOOL,
       {3},
       absl::Span<const char>(reinterpret_cast<const char*>(mask), 3)},
      {"step",
       checkpoint::proto::INT64,
       {},
       absl::Span<const char>(reinterpret_cast<const char*>(&step), 8)},
      {"empty", checkpoint::proto::FLOAT16, {0, 4}, {}},
  };
  ASSERT_TRUE(WriteSafetensors(path, tensors, {{"format", "pt"}}).ok());

  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  ASSERT_EQ((*file)->entries().size(), 4u);
  // Laid out as the reference writer does: 8-byte elements first.
  EXPECT_EQ((*file)->entries()[0].name, "step");
  const SafetensorsEntry* entry = (*file)->Find("fc.weight");
  ASSERT_NE(entry, nullptr);
  EXPECT_EQ(entry->dtype, "F32");
  EXPECT_EQ(entry->checkpoint_dtype, checkpoint::proto::FLOAT32);
  EXPECT_EQ(entry->shape, (std::vector<int64_t>{2, 3}));
  absl::Span<const char> bytes = (*file)->Bytes(*entry);
  ASSERT_EQ(bytes.size(), 24u);
  EXPECT_EQ(std::memcmp(bytes.data(), weight, 24), 0);
  EXPECT_EQ((*file)->Bytes(*(*file)->Find("empty")).size(), 0u);
  // The header is padded to a multiple of 8, so tensors start aligned.
  EXPECT_EQ((*file)->entries()[0].begin, 0u);
}

TEST(SafetensorsTest, TheReferenceRulesAreEnforcedNamingTheRule) {
  const std::string f32 = R"("dtype":"F32","shape":[2])";
  struct Case {
    const char* name;
    std::string file;
    const char* message;
  };
  std::string huge(8, '\xff');
  huge[7] = '\x7f';  // 2^63 - 1 bytes of header
  const std::vector<Case> cases = {
      {"short", "abc", "shorter than the 8-byte"},
      {"huge_header", huge, "above the limit"},
      {"past_end", File("{}", "").substr(0, 9), "runs past the end"},
      {"not_object", File("[1]", ""), "does not begin with '{'"},
      {"bad_json", File("{\"a\":", ""), "not a JSON object"},
      {"bad_utf8", File("{\"\xff\":{}}", ""), "not a JSON object"},
      {"duplicate",
       File("{\"a\":{" + f32 + ",\"data_offsets\":[0,8]},\"a\":{" + f32 +
                ",\"data_offsets\":[0,8]}}",
            std::string(8, 'x')),
       "names 'a' twice"},
      {"unknown_dtype",
       File(R"({"a":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}})",
            std::string(16, 'x')),
       "unknown dtype F128"},
      {"size_mismatch",
       File("{\"a\":{" + f32 + ",\"data_offsets\":[0,4]}}",
            std::string(4, 'x')),
       "need 8"},
      {"hole",
       File("{\"a\":{" + f32 + ",\"data_offsets\":[8,16]}}",
            std::string(16, 'x')),
       "(a hole)"},
      {"overlap",
       File("{\"a\":{" + f32 + ",\"data_offsets\":[0,8]},\"b\":{" + f32 +
                ",\"data_offsets\":[4,12]}}",
            std::string(12, 'x')),
       "(overlap)"},
      {"trailing",
       File("{\"a\":{" + f32 + ",\"data_offsets\":[0,8]}}",
            std::string(9, 'x')),
       "the file has 9"},
      {"truncated",
       File("{\"a\":{" + f32 + ",\"data_offsets\":[0,8]}}",
            std::string(7, 'x')),
       "the file has 7"},
      {"negative_dim",
       File(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", ""),
       "non-negative integers"},
      {"overflow",
       File(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],)"
            R"("data_offsets":[0,0]}})",
            ""),
       "overflows"},
      {"sub_byte",
       File(R"({"a":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}})", "x"),
       "whole bytes"},
      {"metadata_not_strings", File(R"({"__metadata__":{"epoch":3}})", ""),
       "is not a string"},
      {"deep", File(R"({"a":{"shape":[[[1]]]}})", ""), "nests deeper"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    absl::Status status = Parse(c.file);
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
    EXPECT_THAT(status.message(), HasSubstr(c.message));
  }
  // And what they allow: no tensors at all, spaces after the JSON, 0-dim.
  EXPECT_TRUE(Parse(File("{}      ", "")).ok());
  EXPECT_TRUE(
      Parse(File(R"({"s":{"dtype":"I64","shape":[],"data_offsets":[0,8]}})",
                 std::string(8, 'x')))
          .ok());
}

TEST(SafetensorsTest, DtypesLibTorchCannotHoldAreNamedNotGuessed) {
  const std::string file =
      File(R"({"a":{"dtype":"U16","shape":[2],"data_offsets":[0,4]}})",
           std::string(4, 'x'));
  absl::StatusOr<SafetensorsHeader> header =
      ParseSafetensorsHeader(file, file.size());
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->entries[0].dtype, "U16");
  EXPECT_FALSE(header->entries[0].checkpoint_dtype.has_value());
}

TEST(SafetensorsTest, AFifoIsRefusedWithoutBlocking) {
  const std::string fifo = test_paths::TempPath("fifo.safetensors");
  ::unlink(fifo.c_str());
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::Open(fifo);
  ASSERT_FALSE(file.ok());
  EXPECT_THAT(file.status().message(), HasSubstr("fifo.safetensors"));
  EXPECT_EQ(
      SafetensorsFile::Open(test_paths::TempPath("missing")).status().code(),
      absl::StatusCode::kNotFound);
}

TEST(SafetensorsTest, TheWriterRefusesWhatCannotBeWritten) {
  const std::string path = test_paths::TempPath("refused.safetensors");
  const char bytes[4] = {};
  EXPECT_EQ(WriteSafetensors(path,
                             {{"a",
                               checkpoint::proto::FLOAT32,
                               {2},
                               absl::Span<const char>(bytes, 4)}},
                             {})
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteSafetensors(path,
                             {{"__metadata__",
                               checkpoint::proto::UINT8,
                               {4},
                               absl::Span<const char>(bytes, 4)}},
                             {})
                .code(),
            absl::StatusCode::kInvalidArgument);
  struct stat info;
  EXPECT_NE(::stat(path.c_str(), &info), 0) << "nothing half-written";
}

// The fuzzer's seeds are files the reference format allows; each opens,
// through the symlinks Bazel's runfiles (like Hugging Face's cache) are.
TEST(SafetensorsTest, TheFuzzerSeedsAreValidFiles) {
  for (const char* name : {"empty", "small", "dtypes"}) {
    SCOPED_TRACE(name);
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
        SafetensorsFile::Open(test_paths::Runfile(absl::StrCat(
            "checkpoint/interop/testdata/safetensors_corpus/", name)));
    EXPECT_TRUE(file.ok()) << file.status();
  }
}

}  // namespace
}  // namespace interop
