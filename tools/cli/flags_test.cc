#include "tools/cli/flags.h"

#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "gtest/gtest.h"

ABSL_FLAG(int, test_epochs, 3, "For the test.");
ABSL_FLAG(bool, test_verbose, false, "For the test.");

namespace cli {
namespace {

absl::Status Validate(std::vector<std::string> arguments) {
  arguments.insert(arguments.begin(), "program");
  std::vector<char*> argv;
  for (std::string& argument : arguments) argv.push_back(argument.data());
  return ValidateFlags(static_cast<int>(argv.size()), argv.data());
}

TEST(ValidateFlagsTest, AcceptsKnownFlagsInEveryForm) {
  EXPECT_TRUE(Validate({"--test_epochs=5", "positional"}).ok());
  EXPECT_TRUE(Validate({"--test_epochs", "5"}).ok());
  EXPECT_TRUE(Validate({"--test_verbose", "--notest_verbose"}).ok());
  EXPECT_TRUE(Validate({"--", "--not_a_flag"}).ok());
}

TEST(ValidateFlagsTest, RejectsUnknownFlagNamingIt) {
  absl::Status status = Validate({"--test_epoch=5"});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("--test_epoch"), std::string::npos);
}

TEST(ValidateFlagsTest, RejectsBadValueNamingFlagAndValue) {
  absl::Status status = Validate({"--test_epochs=many"});
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("'many'"), std::string::npos);
  EXPECT_NE(status.message().find("--test_epochs"), std::string::npos);
}

TEST(ValidateFlagsTest, RejectsMissingValue) {
  EXPECT_FALSE(Validate({"--test_epochs"}).ok());
}

}  // namespace
}  // namespace cli
