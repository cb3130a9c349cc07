#include "runner/data/npy.h"

#include <dirent.h>

#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"

namespace runner {
namespace {

using test_paths::TempPath;
using ::testing::HasSubstr;

// Runs Python code with numpy as `np`; the test fails if it exits non-zero.
void RunPython(const std::string& code) {
  const std::string script = TempPath("script.py");
  test_paths::WriteFile(script, "import numpy as np\n" + code);
  const test_paths::CommandResult python =
      test_paths::RunCommand("/usr/bin/python3 " + script);
  ASSERT_EQ(python.exit_code, 0)
      << code << python.stdout_text << python.stderr_text;
}

std::string FloatBytes(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()),
                     values.size() * sizeof(float));
}

// A v1.0 file with the given header dict and data, padded like numpy does.
std::string NpyWithHeader(const std::string& dict, const std::string& data) {
  std::string header = dict;
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out = "\x93NUMPY\x01";
  out.push_back(0);
  out.push_back(static_cast<char>(header.size() & 0xff));
  out.push_back(static_cast<char>(header.size() >> 8));
  return out + header + data;
}

TEST(NpyTest, RoundTripsFloat32AndUint8) {
  std::vector<float> values = {1.5f, -2.0f, 3.25f, 0.0f, 1e-7f, 42.0f};
  std::string path = TempPath("roundtrip_f32.npy");
  ASSERT_TRUE(
      WriteNpy(path, NpyDtype::kFloat32, {2, 3}, FloatBytes(values)).ok());
  absl::StatusOr<NpyArray> array = ReadNpy(path);
  ASSERT_TRUE(array.ok()) << array.status();
  EXPECT_EQ(array->dtype, NpyDtype::kFloat32);
  EXPECT_EQ(array->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(array->data, FloatBytes(values));

  std::string bytes = {1, 2, 3, static_cast<char>(255)};
  path = TempPath("roundtrip_u8.npy");
  ASSERT_TRUE(WriteNpy(path, NpyDtype::kUint8, {4}, bytes).ok());
  array = ReadNpy(path);
  ASSERT_TRUE(array.ok()) << array.status();
  EXPECT_EQ(array->dtype, NpyDtype::kUint8);
  EXPECT_EQ(array->shape, (std::vector<int64_t>{4}));
  EXPECT_EQ(array->data, bytes);
}

TEST(NpyTest, DataStartsAligned) {
  absl::StatusOr<std::string> bytes = SerializeNpy(
      NpyDtype::kFloat32, {1, 1, 28, 28}, std::string(28 * 28 * 4, '\0'));
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ((bytes->size() - 28 * 28 * 4) % 64, 0u);
}

TEST(NpyTest, ReadsFilesWrittenByNumpy) {
  std::string dir = TempPath();
  RunPython(absl::StrCat(
      "d = '", dir, "'\n",
      "np.save(d + '/np_f32.npy', np.arange(24, dtype=np.float32)"
      ".reshape(2, 3, 4) / 8)\n"
      "np.save(d + '/np_u8.npy', np.arange(10, dtype=np.uint8))\n"
      "np.save(d + '/np_scalar.npy', np.float32(7.5))\n"
      "np.save(d + '/np_empty.npy', np.zeros((0, 3), np.float32))\n"
      "with open(d + '/np_v2.npy', 'wb') as f:\n"
      "  np.lib.format.write_array(f, np.ones((3,), np.float32), "
      "version=(2, 0))\n"
      "np.save(d + '/np_f64.npy', np.ones(3))\n"
      "np.save(d + '/np_fortran.npy', np.asfortranarray("
      "np.ones((2, 3), np.float32)))\n"
      "np.save(d + '/np_big.npy', np.ones(3, dtype='>f4'))\n"));

  absl::StatusOr<NpyArray> array = ReadNpy(dir + "/np_f32.npy");
  ASSERT_TRUE(array.ok()) << array.status();
  EXPECT_EQ(array->shape, (std::vector<int64_t>{2, 3, 4}));
  ASSERT_EQ(array->num_elements(), 24);
  for (int i = 0; i < 24; ++i) EXPECT_EQ(array->float_data()[i], i / 8.0f);

  array = ReadNpy(dir + "/np_u8.npy");
  ASSERT_TRUE(array.ok()) << array.status();
  EXPECT_EQ(array->dtype, NpyDtype::kUint8);
  EXPECT_EQ(array->uint8_data()[9], 9);

  array = ReadNpy(dir + "/np_scalar.npy");
  ASSERT_TRUE(array.ok()) << array.status();
  EXPECT_TRUE(array->shape.empty());
  EXPECT_EQ(array->float_data()[0], 7.5f);

  array = ReadNpy(dir + "/np_empty.npy");
  ASSERT_TRUE(array.ok()) << array.status();
  EXPECT_EQ(array->shape, (std::vector<int64_t>{0, 3}));

  array = ReadNpy(dir + "/np_v2.npy");
  ASSERT_TRUE(array.ok()) << array.status();
  EXPECT_EQ(array->shape, (std::vector<int64_t>{3}));

  array = ReadNpy(dir + "/np_f64.npy");
  EXPECT_THAT(array.status().message(), HasSubstr("unsupported dtype '<f8'"));
  EXPECT_THAT(array.status().message(), HasSubstr("np_f64.npy"));
  array = ReadNpy(dir + "/np_fortran.npy");
  EXPECT_THAT(array.status().message(), HasSubstr("Fortran-order"));
  array = ReadNpy(dir + "/np_big.npy");
  EXPECT_THAT(array.status().message(), HasSubstr("'>f4'"));
}

TEST(NpyTest, NumpyReadsOurFiles) {
  std::string dir = TempPath();
  std::vector<float> values = {0.5f, -1.0f, 2.0f, 8.0f, 1.0f / 3, 100.0f};
  ASSERT_TRUE(WriteNpy(dir + "/ours_f32.npy", NpyDtype::kFloat32, {3, 2},
                       FloatBytes(values))
                  .ok());
  ASSERT_TRUE(WriteNpy(dir + "/ours_u8.npy", NpyDtype::kUint8, {5},
                       "\x01\x02\x03\x04\x05")
                  .ok());
  ASSERT_TRUE(WriteNpy(dir + "/ours_scalar.npy", NpyDtype::kFloat32, {},
                       FloatBytes({3.0f}))
                  .ok());
  RunPython(absl::StrCat(
      "d = '", dir, "'\n",
      "a = np.load(d + '/ours_f32.npy')\n"
      "assert a.dtype == np.float32 and a.shape == (3, 2), (a.dtype, a.shape)\n"
      "assert (a == np.array([[0.5, -1], [2, 8], [np.float32(1) / 3, 100]], "
      "np.float32)).all(), a\n"
      "b = np.load(d + '/ours_u8.npy')\n"
      "assert b.dtype == np.uint8 and list(b) == [1, 2, 3, 4, 5], b\n"
      "c = np.load(d + '/ours_scalar.npy')\n"
      "assert c.shape == () and c == 3.0, c\n"));
}

TEST(NpyTest, RejectsMalformedFilesWithOneLineNamingTheFile) {
  std::string data(24, '\0');
  struct Case {
    std::string name;
    std::string bytes;
    std::string problem;
  };
  std::string good_header =
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  std::string good = NpyWithHeader(good_header, data);
  std::vector<Case> cases = {
      {"empty.npy", "", "missing \\x93NUMPY magic"},
      {"magic.npy", "\x93NUMPX\x01" + good.substr(7), "magic"},
      {"version.npy", good.substr(0, 6) + "\x09" + good.substr(7),
       "unsupported format version 9.0"},
      {"short_header.npy", good.substr(0, 40), "truncated header"},
      {"only_prefix.npy", good.substr(0, 9), "truncated header"},
      {"truncated_data.npy", good.substr(0, good.size() - 1), "(truncated)"},
      {"extra_data.npy", good + "x", "25 are present"},
      {"not_dict.npy", NpyWithHeader("[1, 2]", data), "not a dict"},
      {"missing_key.npy",
       NpyWithHeader("{'descr': '<f4', 'shape': (2, 3), }", data),
       "lacks one of"},
      {"bad_shape.npy",
       NpyWithHeader(
           "{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }", data),
       "non-integer dimension"},
      {"unclosed.npy",
       NpyWithHeader("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)",
                     data),
       "malformed"},
      {"unknown_key.npy",
       NpyWithHeader("{'descr': '<f4', 'fortran_order': False, 'shape': (6,), "
                     "'extra': 1}",
                     data),
       "unexpected header key 'extra'"},
      {"absurd.npy",
       NpyWithHeader("{'descr': '<f4', 'fortran_order': False, 'shape': "
                     "(4294967296, 4294967296, 4294967296), }",
                     data),
       "absurdly large"},
      {"huge_count.npy",
       NpyWithHeader("{'descr': '<f4', 'fortran_order': False, 'shape': "
                     "(1000000000000, ), }",
                     data),
       "needs 4000000000000 data bytes but 24 are present"},
      {"bad_bool.npy",
       NpyWithHeader("{'descr': '<f4', 'fortran_order': maybe, 'shape': (6,)}",
                     data),
       "'fortran_order' is not True or False"},
  };
  // A v2 header length beyond the cap.
  std::string huge_header = "\x93NUMPY\x02";
  huge_header += std::string(1, '\0') + std::string("\xff\xff\xff\x7f", 4);
  cases.push_back({"huge_header.npy", huge_header, "absurdly large"});

  for (const Case& c : cases) {
    std::string path = TempPath(c.name);
    test_paths::WriteFile(path, c.bytes);
    absl::StatusOr<NpyArray> array = ReadNpy(path);
    ASSERT_FALSE(array.ok()) << c.name;
    EXPECT_EQ(array.status().code(), absl::StatusCode::kInvalidArgument)
        << c.name;
    EXPECT_THAT(array.status().message(), HasSubstr(path)) << c.name;
    EXPECT_THAT(array.status().message(), HasSubstr(c.problem)) << c.name;
    EXPECT_EQ(std::string(array.status().message()).find('\n'),
              std::string::npos)
        << c.name;
  }
}

TEST(NpyTest, MissingFileIsNotFound) {
  absl::StatusOr<NpyArray> array = ReadNpy(TempPath("does_not_exist.npy"));
  EXPECT_EQ(array.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(array.status().message(), HasSubstr("does_not_exist.npy"));
}

TEST(NpyTest, SerializeRejectsSizeMismatch) {
  EXPECT_FALSE(SerializeNpy(NpyDtype::kFloat32, {2, 3}, "abc").ok());
  EXPECT_FALSE(SerializeNpy(NpyDtype::kUint8, {-1}, "").ok());
}

TEST(NpyTest, AtomicWriteReplacesAndLeavesNoTemporary) {
  std::string dir = test_paths::TempDir("atomic");
  std::string path = dir + "/out.npy";
  ASSERT_TRUE(WriteNpy(path, NpyDtype::kUint8, {1}, "a").ok());
  ASSERT_TRUE(WriteNpy(path, NpyDtype::kUint8, {2}, "bc").ok());
  absl::StatusOr<NpyArray> array = ReadNpy(path);
  ASSERT_TRUE(array.ok());
  EXPECT_EQ(array->data, "bc");
  int entries = 0;
  DIR* listing = opendir(dir.c_str());
  while (dirent* entry = readdir(listing)) {
    if (std::strcmp(entry->d_name, ".") && std::strcmp(entry->d_name, "..")) {
      ++entries;
    }
  }
  closedir(listing);
  EXPECT_EQ(entries, 1);
  // A destination that cannot be written: an error, not a crash.
  EXPECT_FALSE(
      WriteNpy(dir + "/no/such/dir/out.npy", NpyDtype::kUint8, {1}, "a").ok());
}

}  // namespace
}  // namespace runner
