// Real files both ways: PyPI's safetensors (under the Python whose torch
// matches @libtorch: Debian's 1.13, or 2.11 under --config=torch2) writes a
// file our reader must read bitwise; ours, written from those bytes, must
// load in Python bitwise-equal.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "checkpoint/interop/safetensors.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"

namespace interop {
namespace {

TEST(SafetensorsInteropTest, PythonsFilesReadBitwiseAndOursLoadInPython) {
  const std::string dir = test_paths::EmptyDir("interop");
  const std::string script =
      test_paths::Runfile("checkpoint/interop/safetensors_interop.py");
  const std::string python = test_paths::TorchPython();
  test_paths::RunOrDie(absl::StrCat(python, " ", script, " write ", dir));

  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::Open(dir + "/python.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata().at("producer"), "python");
  ASSERT_EQ((*file)->entries().size(), 13u);
  std::vector<std::string> kept;  // the bytes the spans below point into
  std::vector<SafetensorsTensor> tensors;
  for (const SafetensorsEntry& entry : (*file)->entries()) {
    SCOPED_TRACE(entry.name);
    ASSERT_TRUE(entry.checkpoint_dtype.has_value()) << entry.dtype;
    const absl::Span<const char> bytes = (*file)->Bytes(entry);
    const std::string expected =
        test_paths::ReadFile(absl::StrCat(dir, "/", entry.name, ".bin"));
    EXPECT_EQ(std::string(bytes.data(), bytes.size()), expected);
    tensors.push_back(
        {entry.name, *entry.checkpoint_dtype, entry.shape, bytes});
  }
  EXPECT_EQ((*file)->Find("scalar")->shape, std::vector<int64_t>{});
  EXPECT_EQ((*file)->Find("bfloat16")->dtype, "BF16");

  ASSERT_TRUE(
      WriteSafetensors(dir + "/ours.safetensors", tensors, {{"format", "pt"}})
          .ok());
  const std::string report =
      test_paths::RunOrDie(absl::StrCat(python, " ", script, " check ", dir));
  EXPECT_NE(report.find("bitwise-equal"), std::string::npos) << report;
}

}  // namespace
}  // namespace interop
