#include "tools/base/files.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"

namespace base {
namespace {

TEST(OpenRegularFileTest, RefusesFifoWithoutBlocking) {
  const std::string dir = test_paths::EmptyDir("fifo");
  const std::string fifo = dir + "/manifest.pb";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  absl::StatusOr<int> fd = OpenRegularFile(AT_FDCWD, fifo, fifo, nullptr);
  ASSERT_FALSE(fd.ok());
  EXPECT_EQ(fd.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(fd.status().message().find("is a FIFO"), std::string::npos)
      << fd.status();
}

TEST(OpenRegularFileTest, RefusesSymlink) {
  const std::string dir = test_paths::EmptyDir("symlink");
  test_paths::WriteFile(dir + "/real", "x");
  std::filesystem::create_symlink("real", dir + "/link");
  absl::StatusOr<int> fd =
      OpenRegularFile(AT_FDCWD, dir + "/link", "link", nullptr);
  ASSERT_FALSE(fd.ok());
  EXPECT_NE(fd.status().message().find("link is a symlink"), std::string::npos)
      << fd.status();
}

TEST(ReadRegularFileTest, ReadsAndBoundsSize) {
  const std::string dir = test_paths::EmptyDir("read");
  test_paths::WriteFile(dir + "/f", "hello");
  EXPECT_EQ(*ReadRegularFile(dir + "/f", 5), "hello");
  EXPECT_EQ(ReadRegularFile(dir + "/f", 4).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReadRegularFile(dir + "/missing", 4).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(ErrnoToStatusTest, DiskFullIsResourceExhausted) {
  absl::Status status = ErrnoToStatus(ENOSPC, "writing", "/x/y");
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(status.message(), "writing /x/y: No space left on device");
  EXPECT_EQ(ErrnoToStatus(EDQUOT, "w", "p").code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(TemporaryOwnerTest, ParsesPidFromNamesWithDashes) {
  const std::string name = TemporaryName("step-0004");
  ASSERT_TRUE(TemporaryOwner(name).has_value());
  EXPECT_EQ(*TemporaryOwner(name), ::getpid());
  EXPECT_FALSE(TemporaryOwner(".tmp-x").has_value());
  EXPECT_FALSE(TemporaryOwner("x-1-2").has_value());
}

// Another live process's temporary must survive; a dead one's must go.
TEST(RemoveStaleTemporariesTest, SparesLiveProcessesAndRemovesDeadOnes) {
  const std::string dir = test_paths::EmptyDir("stale");
  pid_t live = ::fork();
  if (live == 0) {
    ::pause();
    ::_exit(0);
  }
  pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ASSERT_EQ(::waitpid(dead, nullptr, 0), dead);
  const std::string live_name = absl::StrCat(".tmp-ck-", live, "-1");
  const std::string dead_name = absl::StrCat(".tmp-ck-", dead, "-1");
  std::filesystem::create_directories(dir + "/" + live_name + "/sub");
  std::filesystem::create_directories(dir + "/" + dead_name + "/sub");
  test_paths::WriteFile(dir + "/.tmp-nopid", "");
  absl::StatusOr<int> removed = RemoveStaleTemporaries(dir);
  ::kill(live, SIGKILL);
  ::waitpid(live, nullptr, 0);
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 2);
  EXPECT_TRUE(std::filesystem::exists(dir + "/" + live_name));
  EXPECT_FALSE(std::filesystem::exists(dir + "/" + dead_name));
}

TEST(PendingFileTest, PublishesAndCleansUpDeadWritersTemporaries) {
  const std::string dir = test_paths::EmptyDir("pending");
  pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ASSERT_EQ(::waitpid(dead, nullptr, 0), dead);
  const std::string left = absl::StrCat(dir, "/.tmp-model.pt-", dead, "-7");
  test_paths::WriteFile(left, "partial");
  ASSERT_TRUE(WriteFileAtomically(dir + "/model.pt", "whole").ok());
  EXPECT_EQ(*ReadRegularFile(dir + "/model.pt", 100), "whole");
  EXPECT_FALSE(std::filesystem::exists(left));
  int entries = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    (void)entry;
    ++entries;
  }
  EXPECT_EQ(entries, 1);
}

}  // namespace
}  // namespace base
