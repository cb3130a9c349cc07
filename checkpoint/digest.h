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

#include <string>

#include "absl/status/statusor.h"
#include "checkpoint/reader.h"

namespace checkpoint {

absl::StatusOr<std::string> TensorDigest(const CheckpointReader& reader);

}  // namespace checkpoint

#endif  // CHECKPOINT_DIGEST_H_
