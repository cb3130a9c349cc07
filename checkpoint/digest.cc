#include "checkpoint/digest.h"

#include <xxhash.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tools/base/endian.h"

namespace checkpoint {
namespace {

constexpr size_t kChunkBytes = size_t{1} << 20;

class Hasher {
 public:
  Hasher() : state_(XXH3_createState()) { XXH3_128bits_reset(state_); }
  ~Hasher() { XXH3_freeState(state_); }
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;

  void Bytes(const void* data, size_t size) {
    XXH3_128bits_update(state_, data, size);
  }
  // Fixed-width little-endian, so the digest is the same on every host.
  void U64(uint64_t value) {
    char bytes[8];
    base::PutLittleEndian(value, 8, bytes);
    Bytes(bytes, sizeof(bytes));
  }
  // Length-prefixed: ("ab", "c") and ("a", "bc") must not collide.
  void String(const std::string& value) {
    U64(value.size());
    Bytes(value.data(), value.size());
  }
  std::string Hex() const {
    XXH128_hash_t hash = XXH3_128bits_digest(state_);
    return absl::StrFormat("%016x%016x", hash.high64, hash.low64);
  }

 private:
  XXH3_state_t* state_;
};

}  // namespace

absl::StatusOr<std::string> TensorDigest(const CheckpointReader& reader) {
  const proto::Manifest& manifest = reader.manifest();
  std::vector<const proto::TensorEntry*> entries;
  entries.reserve(manifest.tensors_size());
  for (const proto::TensorEntry& entry : manifest.tensors()) {
    entries.push_back(&entry);
  }
  std::sort(entries.begin(), entries.end(),
            [](const proto::TensorEntry* a, const proto::TensorEntry* b) {
              return a->name() < b->name();
            });
  Hasher hasher;
  hasher.U64(entries.size());
  for (const proto::TensorEntry* entry : entries) {
    hasher.String(entry->name());
    hasher.U64(static_cast<uint64_t>(entry->dtype()));
    hasher.U64(static_cast<uint64_t>(entry->shape_size()));
    for (int64_t dim : entry->shape()) hasher.U64(static_cast<uint64_t>(dim));
    hasher.U64(entry->size_bytes());
    absl::Status status = reader.ReadTensorChunks(
        *entry, kChunkBytes, [&](absl::Span<const char> chunk) {
          hasher.Bytes(chunk.data(), chunk.size());
          return absl::OkStatus();
        });
    if (!status.ok()) {
      return absl::Status(status.code(),
                          absl::StrCat("digest: ", status.message()));
    }
  }
  return hasher.Hex();
}

}  // namespace checkpoint
