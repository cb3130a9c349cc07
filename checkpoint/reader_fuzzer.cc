// libFuzzer target over CheckpointReader: hostile manifests and data files
// must produce a Status, never a crash, an out-of-bounds read or a huge
// allocation.
//
// Input: checkpoint/reader_fuzzer_input.h (a manifest length, the
// manifest, the data file). Both
// files go into a scratch checkpoint directory, which is opened with
// checksum verification on, in pread mode and in mmap mode; every tensor
// is read into a bounded buffer (alone and with ReadTensors), mapped,
// digested and VerifyAll() runs.
//
// Run (see checkpoint/FORMAT.md section 10):
//   tools/bazel --output_base=/root/.cache/bazel_fuzz run --config=fuzz
//       //checkpoint:reader_fuzzer -- -max_total_time=60
//       $PWD/checkpoint/testdata/fuzz_corpus
// (one command line).
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "checkpoint/digest.h"
#include "checkpoint/manifest_file.h"
#include "checkpoint/reader.h"
#include "checkpoint/reader_fuzzer_input.h"
#include "checkpoint/writer.h"
#include "tools/base/endian.h"

namespace {

// The largest tensor read in one piece; bigger ones are streamed.
constexpr size_t kMaxWholeRead = size_t{1} << 20;

const std::string& ScratchCheckpoint() {
  static const std::string* path = [] {
    const char* base = std::getenv("TEST_TMPDIR");
    std::string pattern =
        std::string(base != nullptr ? base : "/tmp") + "/reader_fuzz.XXXXXX";
    std::vector<char> buffer(pattern.begin(), pattern.end());
    buffer.push_back('\0');
    if (::mkdtemp(buffer.data()) == nullptr) {
      std::perror("reader_fuzzer: mkdtemp");
      std::abort();
    }
    return new std::string(buffer.data());
  }();
  return *path;
}

void WriteWholeFile(const std::string& path, absl::string_view bytes) {
  const char* data = bytes.data();
  size_t size = bytes.size();
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    std::perror(path.c_str());
    std::abort();
  }
  while (size > 0) {
    ssize_t written = ::write(fd, data, size);
    if (written <= 0) {
      std::perror(path.c_str());
      std::abort();
    }
    data += written;
    size -= static_cast<size_t>(written);
  }
  ::close(fd);
}

void Exercise(const std::string& path, bool use_mmap) {
  checkpoint::ReaderOptions options;
  options.use_mmap = use_mmap;
  auto reader = checkpoint::CheckpointReader::Open(path, options);
  if (!reader.ok()) return;
  const checkpoint::CheckpointReader& r = **reader;
  std::vector<char> buffer;
  for (const checkpoint::proto::TensorEntry& entry : r.manifest().tensors()) {
    if (r.FindTensor(entry.name()) != &entry) std::abort();
    if (entry.size_bytes() <= kMaxWholeRead) {
      buffer.resize(entry.size_bytes());
      (void)r.ReadTensor(entry, absl::MakeSpan(buffer)).ok();
    } else {
      uint64_t seen = 0;
      (void)r
          .ReadTensorChunks(entry, kMaxWholeRead,
                            [&](absl::Span<const char> chunk) {
                              seen += chunk.size();
                              return absl::OkStatus();
                            })
          .ok();
      if (seen > entry.size_bytes()) std::abort();
    }
    if (use_mmap) {
      auto view = r.MappedTensor(entry);
      if (view.ok()) {
        // Touch every byte: ASan and the page tables check the bounds.
        unsigned sum = 0;
        for (char byte : *view) sum += static_cast<unsigned char>(byte);
        if (view->size() != entry.size_bytes()) std::abort();
        (void)sum;
      }
    }
  }
  // Every small tensor at once: ReadTensors reads runs of neighbours with
  // one call, so the run arithmetic meets hostile offsets too.
  std::vector<const checkpoint::proto::TensorEntry*> entries;
  std::vector<std::vector<char>> copies;
  for (const checkpoint::proto::TensorEntry& entry : r.manifest().tensors()) {
    if (entry.size_bytes() > kMaxWholeRead) continue;
    entries.push_back(&entry);
    copies.emplace_back(entry.size_bytes());
  }
  std::vector<absl::Span<char>> destinations;
  for (std::vector<char>& copy : copies) {
    destinations.push_back(absl::MakeSpan(copy));
  }
  (void)r.ReadTensors(entries, destinations).ok();
  (void)r.VerifyAll().ok();
  (void)checkpoint::TensorDigest(r).ok();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  const checkpoint::FuzzerInput input = checkpoint::SplitFuzzerInput(
      absl::string_view(reinterpret_cast<const char*>(data), size));
  const std::string& dir = ScratchCheckpoint();
  WriteWholeFile(dir + "/" + checkpoint::kManifestFileName, input.manifest);
  WriteWholeFile(dir + "/data-00000.bin", input.data);
  Exercise(dir, /*use_mmap=*/false);
  Exercise(dir, /*use_mmap=*/true);
  // Mutations almost never keep the manifest's checksum right, which would
  // leave the parser and the layout rules unexplored: run the payload again
  // in a valid frame (with the header's version when there is one).
  const absl::string_view manifest = input.manifest;
  if (manifest.size() >= checkpoint::kManifestHeaderSize &&
      std::memcmp(manifest.data(), checkpoint::kManifestMagic, 8) == 0) {
    const uint32_t version =
        static_cast<uint32_t>(base::GetLittleEndian(manifest.data() + 8, 4));
    WriteWholeFile(
        dir + "/" + checkpoint::kManifestFileName,
        checkpoint::FrameManifestPayload(
            manifest.substr(checkpoint::kManifestHeaderSize), version));
    Exercise(dir, /*use_mmap=*/false);
    Exercise(dir, /*use_mmap=*/true);
  }
  return 0;
}
