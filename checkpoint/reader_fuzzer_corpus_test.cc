// Replays the fuzzer's seed corpus through the fuzz function (so every
// `bazel test`, and --config=asan, exercises the hostile-input paths) and
// checks that valid_* inputs open and verify while broken_* ones are
// refused with a Status.
#include <dirent.h>
#include <sys/stat.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "checkpoint/reader.h"
#include "checkpoint/writer.h"
#include "gtest/gtest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace checkpoint {
namespace {

std::string CorpusDir() {
  return std::string(std::getenv("TEST_SRCDIR")) +
         "/ckpt_project/checkpoint/testdata/fuzz_corpus";
}

std::vector<std::string> CorpusFiles() {
  std::vector<std::string> names;
  DIR* dir = ::opendir(CorpusDir().c_str());
  if (dir == nullptr) return names;
  while (struct dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] != '.') names.emplace_back(entry->d_name);
  }
  ::closedir(dir);
  return names;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Unpacks one corpus input into a checkpoint directory, as the fuzzer does.
std::string Unpack(const std::string& name, const std::string& input) {
  const std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/" + name;
  ::mkdir(dir.c_str(), 0755);
  uint32_t size = 0;
  for (int i = 0; i < 4; ++i) {
    size |= static_cast<uint32_t>(static_cast<uint8_t>(input[i])) << (8 * i);
  }
  std::ofstream(dir + "/manifest.pb", std::ios::binary)
      << input.substr(4, size);
  std::ofstream(dir + "/data-00000.bin", std::ios::binary)
      << input.substr(4 + size);
  return dir;
}

TEST(ReaderFuzzerCorpusTest, EveryInputReplaysWithoutCrashing) {
  const std::vector<std::string> files = CorpusFiles();
  ASSERT_GE(files.size(), 10u) << "corpus missing at " << CorpusDir();
  for (const std::string& name : files) {
    SCOPED_TRACE(name);
    const std::string input = ReadFile(CorpusDir() + "/" + name);
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()),
                           input.size());
  }
}

TEST(ReaderFuzzerCorpusTest, ValidInputsOpenAndBrokenOnesAreRefused) {
  int valid = 0;
  int broken = 0;
  for (const std::string& name : CorpusFiles()) {
    SCOPED_TRACE(name);
    const std::string dir = Unpack(name, ReadFile(CorpusDir() + "/" + name));
    auto reader = CheckpointReader::Open(dir);
    absl::Status status =
        reader.ok() ? (*reader)->VerifyAll() : reader.status();
    if (name.rfind("valid_", 0) == 0) {
      EXPECT_TRUE(status.ok()) << status;
      ++valid;
    } else if (name.rfind("broken_", 0) == 0) {
      EXPECT_FALSE(status.ok());
      ++broken;
    }
  }
  EXPECT_GE(valid, 4);
  EXPECT_GE(broken, 10);
}

}  // namespace
}  // namespace checkpoint
