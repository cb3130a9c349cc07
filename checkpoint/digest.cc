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

}  // namespace

TensorDigester::TensorDigester(uint64_t count) : state_(XXH3_createState()) {
  XXH3_128bits_reset(state_);
  U64(count);
}

TensorDigester::~TensorDigester() { XXH3_freeState(state_); }

// Fixed-width little-endian, so the digest is the same on every host.
void TensorDigester::U64(uint64_t value) {
  char bytes[8];
  base::PutLittleEndian(value, 8, bytes);
  XXH3_128bits_update(state_, bytes, sizeof(bytes));
}

// Length-prefixed: ("ab", "c") and ("a", "bc") must not collide.
void TensorDigester::String(absl::string_view value) {
  U64(value.size());
  XXH3_128bits_update(state_, value.data(), value.size());
}

void TensorDigester::Begin(absl::string_view name, proto::DType dtype,
                           absl::string_view other_dtype,
                           absl::Span<const int64_t> shape,
                           uint64_t size_bytes) {
  String(name);
  U64(static_cast<uint64_t>(dtype));
  // No dtype of ours is 0, so the name cannot be confused with one.
  if (dtype == proto::DTYPE_UNSPECIFIED) String(other_dtype);
  U64(shape.size());
  for (int64_t dim : shape) U64(static_cast<uint64_t>(dim));
  U64(size_bytes);
}

void TensorDigester::Update(absl::Span<const char> bytes) {
  XXH3_128bits_update(state_, bytes.data(), bytes.size());
}

std::string TensorDigester::Finish() const {
  XXH128_hash_t hash = XXH3_128bits_digest(state_);
  return absl::StrFormat("%016x%016x", hash.high64, hash.low64);
}

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
  TensorDigester digester(entries.size());
  for (const proto::TensorEntry* entry : entries) {
    digester.Begin(
        entry->name(), entry->dtype(), "",
        absl::MakeConstSpan(entry->shape().data(), entry->shape_size()),
        entry->size_bytes());
    absl::Status status = reader.ReadTensorChunks(
        *entry, kChunkBytes, [&](absl::Span<const char> chunk) {
          digester.Update(chunk);
          return absl::OkStatus();
        });
    if (!status.ok()) {
      return absl::Status(status.code(),
                          absl::StrCat("digest: ", status.message()));
    }
  }
  return digester.Finish();
}

}  // namespace checkpoint
