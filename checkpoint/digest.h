// One hash over a checkpoint's tensors, for "are these the same weights?"
// questions (`ckpt digest`, `ckpt diff`, resume and export tests).
//
// The digest covers, for every tensor in name order: its name, dtype,
// shape and bytes. It ignores everything else: the order tensors were
// written in, offsets and padding, data file names, metadata and training
// state protos. Two checkpoints with equal digests hold the same tensors.
//
// Example:
//   ASSIGN_OR_RETURN(auto reader, CheckpointReader::Open(path));
//   ASSIGN_OR_RETURN(std::string digest, TensorDigest(*reader));
//   // digest: 32 lowercase hex digits (XXH3-128)
//
// Tensors are streamed in bounded chunks, so memory stays small for any
// checkpoint size. Checksums are verified on the way when the reader was
// opened with verify_checksums (the default): a corrupt tensor fails with
// kDataLoss instead of yielding a digest of bad bytes.
#ifndef CHECKPOINT_DIGEST_H_
#define CHECKPOINT_DIGEST_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "checkpoint/reader.h"

struct XXH3_state_s;  // <xxhash.h>

namespace checkpoint {

absl::StatusOr<std::string> TensorDigest(const CheckpointReader& reader);

// The same digest over tensors from anywhere (a .pt or safetensors file:
// checkpoint/interop/tensor_source.h), so that the same tensors give the
// same digest whichever format holds them. Feed `count` tensors in
// ascending name order: Begin, then the tensor's bytes in any number of
// Update calls. A dtype our format lacks is passed as DTYPE_UNSPECIFIED
// with its PyTorch name in `other_dtype` ("uint16").
class TensorDigester {
 public:
  explicit TensorDigester(uint64_t count);
  ~TensorDigester();
  TensorDigester(const TensorDigester&) = delete;
  TensorDigester& operator=(const TensorDigester&) = delete;

  void Begin(absl::string_view name, proto::DType dtype,
             absl::string_view other_dtype, absl::Span<const int64_t> shape,
             uint64_t size_bytes);
  void Update(absl::Span<const char> bytes);
  // 32 lowercase hex digits.
  std::string Finish() const;

 private:
  void U64(uint64_t value);
  void String(absl::string_view value);
  ::XXH3_state_s* state_;
};

}  // namespace checkpoint

#endif  // CHECKPOINT_DIGEST_H_
