#include "checkpoint/ckpt_commands.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "checkpoint/ckpt_testing.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"
#include "tools/base/paths.h"

namespace checkpoint {
namespace ckpt {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

struct Result {
  int code;
  std::string out;
  std::string err;
};

class CkptCommandsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(test_paths::FreshDir("ckpt_fixtures"));
    absl::Status status = WriteCkptFixtures(*dir_);
    ASSERT_TRUE(status.ok()) << status;
  }
  static void TearDownTestSuite() { delete dir_; }

  static std::string Path(const std::string& name) {
    return absl::StrCat(*dir_, "/", name);
  }

  static Result Run(std::vector<std::string> args, bool json = false) {
    std::ostringstream out, err;
    Flags flags;
    flags.json = json;
    int code = RunCkpt(args, flags, out, err);
    return {code, out.str(), err.str()};
  }

  // A user error is exactly one line starting with "ckpt: error: ".
  static void ExpectOneErrorLine(const Result& result) {
    EXPECT_THAT(result.err, StartsWith("ckpt: error: "));
    EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1)
        << result.err;
    EXPECT_EQ(result.out, "");
  }

  static std::string* dir_;
};

std::string* CkptCommandsTest::dir_ = nullptr;

TEST(HalfTest, ConvertsInSoftware) {
  EXPECT_EQ(HalfToFloat(0x3C00), 1.0f);
  EXPECT_EQ(HalfToFloat(0xC000), -2.0f);
  EXPECT_EQ(HalfToFloat(0x7BFF), 65504.0f);
  EXPECT_EQ(HalfToFloat(0x0400), std::ldexp(1.0f, -14));  // Smallest normal.
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));  // Subnormal.
  EXPECT_EQ(HalfToFloat(0x03FF), std::ldexp(1023.0f, -24));
  EXPECT_TRUE(std::signbit(HalfToFloat(0x8000)));
  EXPECT_EQ(HalfToFloat(0x7C00), INFINITY);
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7E00)));
  EXPECT_EQ(BFloat16ToFloat(0x3F80), 1.0f);
  EXPECT_EQ(BFloat16ToFloat(0xC020), -2.5f);
}

TEST_F(CkptCommandsTest, InspectShowsMetadataTrainingStateAndTensors) {
  Result result = Run({"inspect", Path("a")});
  ASSERT_EQ(result.code, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("global step 20"));
  EXPECT_THAT(result.out, HasSubstr("val_loss (min) = 0.25"));
  EXPECT_THAT(result.out, HasSubstr("accuracy"));
  EXPECT_THAT(result.out, HasSubstr("mlp (hidden=8)"));
  EXPECT_THAT(result.out, HasSubstr("adam: 1 param group(s) {lr=0.001}"));
  EXPECT_THAT(result.out, HasSubstr("2023-11-14 22:13:20.123456 UTC"));
  EXPECT_THAT(result.out, HasSubstr("tensors         7 (316 B)"));
  // Table row: name, dtype, shape, size, offset.
  bool found_row = false;
  std::istringstream lines(result.out);
  for (std::string line; std::getline(lines, line);) {
    if (absl::StrContains(line, " emb ")) {
      found_row = true;
      EXPECT_THAT(line, HasSubstr("float16"));
      EXPECT_THAT(line, HasSubstr("[3, 2]"));
      EXPECT_THAT(line, HasSubstr(" 12 "));
    }
  }
  EXPECT_TRUE(found_row) << result.out;
}

// A path that is not UTF-8 (legal on Linux) must not make the JSON
// encoder throw and terminate the process.
TEST_F(CkptCommandsTest, InspectJsonOfANonUtf8PathIsValidJson) {
  const std::string odd = Path("caf\xe9");
  std::filesystem::copy(Path("run/best"), odd,
                        std::filesystem::copy_options::recursive);
  Result result = Run({"inspect", odd}, /*json=*/true);
  ASSERT_EQ(result.code, 0) << result.err;
  EXPECT_NO_THROW(nlohmann::json::parse(result.out)) << result.out;
}

TEST_F(CkptCommandsTest, InspectJsonIsMachineReadable) {
  Result result = Run({"inspect", Path("run/best")}, /*json=*/true);
  ASSERT_EQ(result.code, 0) << result.err;
  nlohmann::json json = nlohmann::json::parse(result.out);
  EXPECT_EQ(json["metadata"]["progress"]["global_step"], 20);
  EXPECT_EQ(json["metadata"]["monitored"]["mode"], "min");
  EXPECT_EQ(json["metadata"]["metrics"]["val_loss"], 0.25);
  EXPECT_EQ(json["training_state"]["optimizer"]["type"], "adam");
  ASSERT_EQ(json["tensors"].size(), 7u);
  EXPECT_EQ(json["tensors"][0]["name"], "fc.weight");
  EXPECT_EQ(json["tensors"][0]["dtype"], "float32");
  EXPECT_EQ(json["tensors"][0]["shape"], nlohmann::json::array({4, 8}));
  EXPECT_EQ(json["tensors"][0]["size_bytes"], 128);
  EXPECT_EQ(json["tensor_bytes"], 316);
}

TEST_F(CkptCommandsTest, VerifyReportsTensorsAndBytes) {
  Result result = Run({"verify", Path("run/last")});
  EXPECT_EQ(result.code, 0) << result.err;
  EXPECT_EQ(result.out, "OK: 7 tensors, 316 bytes verified\n");
}

TEST_F(CkptCommandsTest, VerifyFailsNamingTheCorruptTensor) {
  Result result = Run({"verify", Path("corrupt")});
  EXPECT_EQ(result.code, 1);
  ExpectOneErrorLine(result);
  EXPECT_THAT(result.err, HasSubstr("fc.bias"));
  EXPECT_THAT(result.err, HasSubstr("checksum"));
}

TEST_F(CkptCommandsTest, LsMarksBestAndLast) {
  Result result = Run({"ls", Path("run")});
  ASSERT_EQ(result.code, 0) << result.err;
  std::vector<std::string> lines;
  std::istringstream stream(result.out);
  for (std::string line; std::getline(stream, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 5u) << result.out;
  EXPECT_THAT(lines[0], StartsWith("NAME"));
  EXPECT_THAT(lines[1], HasSubstr("step=000010"));
  EXPECT_THAT(lines[1], Not(HasSubstr("best")));
  EXPECT_THAT(lines[2], HasSubstr("val_loss=0.25"));
  EXPECT_THAT(lines[2], testing::EndsWith("best"));
  EXPECT_THAT(lines[3], testing::EndsWith("last"));
  EXPECT_THAT(lines[4], HasSubstr("3 checkpoint(s)"));
}

TEST_F(CkptCommandsTest, DiffIdenticalTensorsExitsZero) {
  Result result = Run({"diff", Path("a"), Path("same")});
  EXPECT_EQ(result.code, 0) << result.out << result.err;
  EXPECT_THAT(result.out, HasSubstr("7 tensors: 7 equal, 0 different"));
}

TEST_F(CkptCommandsTest, DiffReportsEveryKindOfChange) {
  Result result = Run({"diff", Path("a"), Path("b")});
  EXPECT_EQ(result.code, 1) << result.err;
  EXPECT_THAT(result.out,
              HasSubstr("~ fc.weight  max abs diff 0.5, 1 of 32 elements "
                        "differ\n"));
  EXPECT_THAT(result.out,
              HasSubstr("~ emb  max abs diff 1, 1 of 6 elements differ\n"));
  EXPECT_THAT(result.out,
              HasSubstr("~ norm  max abs diff 0.5, 1 of 2 elements differ\n"));
  EXPECT_THAT(result.out,
              HasSubstr("~ counts  max abs diff 7, 1 of 3 elements differ\n"));
  EXPECT_THAT(result.out, HasSubstr("! fc.bias  shape [4] -> [5]\n"));
  EXPECT_THAT(result.out, HasSubstr("- mask  only in A\n"));
  EXPECT_THAT(result.out, HasSubstr("+ extra  only in B\n"));
  EXPECT_THAT(result.out, HasSubstr("= optimizer/exp_avg/fc.weight\n"));
}

TEST_F(CkptCommandsTest, DigestIgnoresMetadata) {
  Result a = Run({"digest", Path("a")});
  Result same = Run({"digest", Path("same")});
  Result b = Run({"digest", Path("b")});
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_EQ(a.out.size(), 33u) << a.out;  // 32 hex digits and a newline.
  EXPECT_EQ(a.out, same.out);
  EXPECT_NE(a.out, b.out);
  Result corrupt = Run({"digest", Path("corrupt")});
  EXPECT_EQ(corrupt.code, 1);
  ExpectOneErrorLine(corrupt);
}

TEST_F(CkptCommandsTest, UsageErrorsExitTwo) {
  for (const auto& args :
       std::vector<std::vector<std::string>>{{},
                                             {"frobnicate", Path("a")},
                                             {"inspect"},
                                             {"verify", Path("a"), Path("b")},
                                             {"diff", Path("a")},
                                             {"convert", Path("a")},
                                             {"ls"}}) {
    Result result = Run(args);
    EXPECT_EQ(result.code, 2) << absl::StrJoin(args, " ");
    ExpectOneErrorLine(result);
  }
  Result json_elsewhere = Run({"verify", Path("a")}, /*json=*/true);
  EXPECT_EQ(json_elsewhere.code, 2);
  ExpectOneErrorLine(json_elsewhere);
  Flags convert_only;
  convert_only.strip_prefixes = {"module."};
  std::ostringstream out, err;
  EXPECT_EQ(RunCkpt({"verify", Path("a")}, convert_only, out, err), 2);
  EXPECT_THAT(err.str(), HasSubstr("apply to convert only"));
}

// Ours -> safetensors -> ours through the command, digest unchanged; a
// corrupt source converts to nothing.
TEST_F(CkptCommandsTest, ConvertRoundTripKeepsTheDigest) {
  const std::string digest = Run({"digest", Path("a")}).out;
  Result to_safetensors =
      Run({"convert", Path("a"), Path("a_converted.safetensors")});
  ASSERT_EQ(to_safetensors.code, 0) << to_safetensors.err;
  EXPECT_THAT(to_safetensors.out, HasSubstr("converted checkpoint -> "
                                            "safetensors"));
  EXPECT_EQ(Run({"digest", Path("a_converted.safetensors")}).out, digest);
  Result back = Run(
      {"convert", Path("a_converted.safetensors"), Path("a_converted_back")});
  ASSERT_EQ(back.code, 0) << back.err;
  EXPECT_EQ(Run({"digest", Path("a_converted_back")}).out, digest);
  EXPECT_EQ(Run({"verify", Path("a_converted_back")}).code, 0);
  Result inspect = Run({"inspect", Path("a_converted.safetensors")});
  EXPECT_THAT(inspect.out, HasSubstr("format          safetensors"));
  Result diff = Run({"diff", Path("a"), Path("a_converted.safetensors")});
  EXPECT_EQ(diff.code, 0) << diff.out;
  Result again = Run({"convert", Path("a"), Path("a_converted.safetensors")});
  EXPECT_EQ(again.code, 1);
  ExpectOneErrorLine(again);
  EXPECT_THAT(again.err, HasSubstr("already exists"));
  Result corrupt = Run({"convert", Path("corrupt"), Path("corrupt.pt")});
  EXPECT_EQ(corrupt.code, 1);
  ExpectOneErrorLine(corrupt);
  EXPECT_FALSE(std::filesystem::exists(Path("corrupt.pt")));
}

TEST_F(CkptCommandsTest, BadPathsFailWithOneLine) {
  struct Case {
    std::vector<std::string> args;
    int code;
    const char* message;
  } cases[] = {
      {{"inspect", Path("missing")}, 1, "no such file or directory"},
      {{"verify", Path("not_a_checkpoint")}, 1, "not a checkpoint"},
      {{"digest", Path("file.txt")}, 1, "not a checkpoint"},
      {{"inspect", Path("run")}, 1, "ckpt ls"},
      {{"ls", Path("a")}, 1, "is a checkpoint, not a run directory"},
      {{"ls", Path("missing")}, 1, "no such file or directory"},
      {{"diff", Path("a"), Path("missing")}, 2, "no such file or directory"},
      {{"diff", Path("a"), Path("corrupt")}, 2, "fc.bias"},
  };
  for (const Case& test_case : cases) {
    Result result = Run(test_case.args);
    EXPECT_EQ(result.code, test_case.code)
        << absl::StrJoin(test_case.args, " ");
    ExpectOneErrorLine(result);
    EXPECT_THAT(result.err, HasSubstr(test_case.message));
  }
}

TEST_F(CkptCommandsTest, RelativePathsResolveAgainstBuildWorkingDirectory) {
  ASSERT_EQ(::setenv("BUILD_WORKING_DIRECTORY", dir_->c_str(), 1), 0);
  EXPECT_EQ(base::ResolveUserPath("run/best"), Path("run/best"));
  EXPECT_EQ(base::ResolveUserPath("/abs"), "/abs");
  Result result = Run({"verify", "a"});
  ::unsetenv("BUILD_WORKING_DIRECTORY");
  EXPECT_EQ(result.code, 0) << result.err;
  EXPECT_EQ(base::ResolveUserPath("rel"), "rel");
}

}  // namespace
}  // namespace ckpt
}  // namespace checkpoint
