// Opens and validates a checkpoint directory written by CheckpointWriter.
// Torch-free: hands out bytes; checkpoint/tensors.h makes torch::Tensor.
//
// Open() validates everything before anything is trusted: the manifest
// parses; format_version is supported; alignment is a power of two; data
// file names are plain names inside the directory and each file exists with
// exactly the recorded size; tensor names are unique and non-empty; each
// dtype is known; shape dims are non-negative and product(shape) *
// element_size equals size_bytes without overflow; each [offset,
// offset+size) lies inside its data file; offsets are aligned. A violation
// is an absl::Status naming the checkpoint, the tensor and the rule
// (kDataLoss for corruption, kFailedPrecondition for a newer format,
// kNotFound for missing files). Hostile input never reads out of bounds
// and never allocates more than the manifest file's own size plus the
// tensors the caller asks for.
//
// Checksums: with ReaderOptions::verify_checksums (the default) every
// ReadTensor() checks XXH3 and returns kDataLoss on mismatch. With mmap,
// MappedTensor() verifies on first access unless verify_checksums is off;
// VerifyAll() checks every tensor up front.
//
// A reader is safe to use from several threads at once after Open().
#ifndef CHECKPOINT_READER_H_
#define CHECKPOINT_READER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "checkpoint/manifest.pb.h"

namespace checkpoint {

// ReadTensors reads a run of neighbouring tensors of at most this many
// bytes (and tensors) with one preadv straight into their destinations; a
// caller batching small tensors for it uses the same bounds.
inline constexpr uint64_t kMaxReadRunBytes = uint64_t{1} << 20;
inline constexpr size_t kMaxReadRunTensors = 512;  // half of IOV_MAX

// With verify_checksums, ReadTensor reads a larger tensor in pieces of
// this size and hashes each as soon as it is read, while it is still in
// the core's cache: hashing the whole tensor afterwards fetched it from
// memory a second time, which made a cold verified load of 1 GiB about 10%
// slower than an unverified one (docs/PERFORMANCE.md).
inline constexpr size_t kVerifiedReadPieceBytes = size_t{256} << 10;

struct ReaderOptions {
  bool verify_checksums = true;
  // Map data files into memory (read-only, MAP_SHARED); MappedTensor()
  // then returns views into the mapping without copying. Committed
  // checkpoints are never modified in place; a data file truncated by
  // another program while mapped raises SIGBUS on access (pread mode
  // returns kDataLoss instead).
  bool use_mmap = false;
  // Accept only a format version 1 manifest (plain protobuf, no header or
  // manifest checksum). For `ckpt upgrade`, which converts it; nothing else
  // should open version 1.
  bool read_format_v1 = false;
};

class CheckpointReader {
 public:
  // `path` is a checkpoint directory, or a symlink to one (RUN_DIR/best).
  static absl::StatusOr<std::unique_ptr<CheckpointReader>> Open(
      const std::string& path, ReaderOptions options = {});
  ~CheckpointReader();

  const proto::Manifest& manifest() const;
  const std::string& path() const;

  // Null when `name` is not in the checkpoint.
  const proto::TensorEntry* FindTensor(absl::string_view name) const;

  // Copies the tensor's bytes into `destination` (size must equal
  // entry.size_bytes()) and verifies the checksum if enabled.
  absl::Status ReadTensor(const proto::TensorEntry& entry,
                          absl::Span<char> destination) const;

  // ReadTensor for several tensors at once: entries that follow each other
  // closely in one data file (gaps of at most the alignment padding, runs
  // of at most kMaxReadRunBytes and kMaxReadRunTensors) are read with one
  // preadv per run, straight into their destinations, instead of one read
  // per tensor, which is what loading many small tensors costs. Each
  // destination is checked like ReadTensor's; the first error names its
  // tensor.
  absl::Status ReadTensors(
      absl::Span<const proto::TensorEntry* const> entries,
      absl::Span<const absl::Span<char>> destinations) const;

  // Streams the tensor's bytes to `consume` in pieces of at most
  // `chunk_bytes` (from the mapping with use_mmap, else through a bounded
  // buffer), so memory stays bounded for any tensor size. With
  // verify_checksums the checksum is checked at the end: on a mismatch
  // `consume` has already seen the bad bytes and kDataLoss is returned.
  // An error from `consume` stops the stream and is returned.
  absl::Status ReadTensorChunks(
      const proto::TensorEntry& entry, size_t chunk_bytes,
      const std::function<absl::Status(absl::Span<const char>)>& consume) const;

  // Requires use_mmap. The view stays valid while the reader lives (or
  // while a shared_ptr from mapping_owner() is held).
  absl::StatusOr<absl::Span<const char>> MappedTensor(
      const proto::TensorEntry& entry) const;
  std::shared_ptr<const void> mapping_owner() const;

  // Reads and checks every tensor's checksum; the first mismatch fails.
  absl::Status VerifyAll() const;

 private:
  class Impl;
  explicit CheckpointReader(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace checkpoint

#endif  // CHECKPOINT_READER_H_
