// The bytes of `manifest.pb` in format version 2 (FORMAT.md section 2): a
// 32-byte header that a reader checks before it parses anything, then the
// Manifest in canonical protobuf encoding.
//
//   offset  size  field
//        0     8  magic "CKPTMFST"
//        8     4  format version, u32 little-endian (2)
//       12     4  flags, u32 little-endian, must be 0
//       16     8  payload size, u64 little-endian; header + payload is the
//                 whole file
//       24     8  XXH3-64 (seed 0) of the file without these 8 bytes
//       32     n  payload: checkpoint.proto.Manifest, canonical encoding
//
// Canonical means: the payload is byte for byte what protobuf's
// deterministic serializer writes for the message it parses to, with no
// unknown fields. So every byte has one meaning and any change to one is
// either a checksum mismatch or a refused encoding.
#ifndef CHECKPOINT_MANIFEST_FILE_H_
#define CHECKPOINT_MANIFEST_FILE_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "checkpoint/manifest.pb.h"
#include "google/protobuf/message_lite.h"

namespace checkpoint {

inline constexpr uint32_t kFormatVersion = 2;
inline constexpr char kManifestMagic[] = "CKPTMFST";
inline constexpr size_t kManifestHeaderSize = 32;
// A manifest holds names, shapes and metadata, never tensor bytes: anything
// larger is hostile or broken.
inline constexpr uint64_t kMaxManifestBytes = uint64_t{256} << 20;

// Deterministic protobuf encoding (map entries sorted by key).
std::string SerializeCanonical(const google::protobuf::MessageLite& message);

// Parses `bytes` into `message` and accepts them only if they are the
// canonical encoding of the result: no unknown fields, no repeated or
// out-of-order fields, no over-long varints, packed repeated scalars, valid
// UTF-8 strings. kDataLoss naming `what` otherwise.
absl::Status ParseCanonical(absl::string_view bytes, absl::string_view what,
                            google::protobuf::Message* message);

// Header + canonical payload. kInvalidArgument when a string field is not
// valid UTF-8 (the file would not read back).
absl::StatusOr<std::string> EncodeManifestFile(const proto::Manifest& manifest);

// Header (with `version`) + checksum around any `payload`. The writer's
// path is EncodeManifestFile; this exists so that tests and the fuzzer
// corpus can build well-framed hostile manifests.
std::string FrameManifestPayload(absl::string_view payload,
                                 uint32_t version = kFormatVersion);

// Checks the header, size and checksum, then parses canonically; the
// Manifest's own format_version must equal the header's. Errors:
// kDataLoss for damage; kFailedPrecondition for a newer format version or a
// format version 1 manifest (it names `ckpt upgrade`).
absl::StatusOr<proto::Manifest> DecodeManifestFile(absl::string_view bytes);
// The same, into `manifest` (which may live on an arena: the reader's
// does, so that a manifest of many tensors is cheap to build and to free).
// On error `manifest` holds an unspecified value.
absl::Status DecodeManifestFile(absl::string_view bytes,
                                proto::Manifest* manifest);

// Format version 1 had no header: a plain Manifest. Only `ckpt upgrade`
// reads it.
absl::StatusOr<proto::Manifest> DecodeManifestFileV1(absl::string_view bytes);

}  // namespace checkpoint

#endif  // CHECKPOINT_MANIFEST_FILE_H_
