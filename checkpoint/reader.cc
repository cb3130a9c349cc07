#include "checkpoint/reader.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "checkpoint/extensions.h"
#include "checkpoint/hash_state.h"
#include "checkpoint/writer.h"
#include "google/protobuf/arena.h"
#include "tools/base/files.h"
#include "tools/base/paths.h"
#include "tools/base/status.h"

namespace checkpoint {
namespace {

constexpr size_t kDefaultChunkBytes = size_t{4} << 20;

// Reads exactly the bytes of `pieces` (consumed as it goes), in order, from
// `offset` on: one system call for many destinations. A short file is data
// loss.
absl::Status PreadvFully(int fd, absl::Span<iovec> pieces, uint64_t offset,
                         const std::string& path) {
  for (;;) {
    // Empty pieces left at the front would read as an end of file.
    while (!pieces.empty() && pieces.front().iov_len == 0) {
      pieces.remove_prefix(1);
    }
    if (pieces.empty()) return absl::OkStatus();
    const int count =
        static_cast<int>(std::min<size_t>(pieces.size(), IOV_MAX));
    ssize_t got =
        ::preadv(fd, pieces.data(), count, static_cast<off_t>(offset));
    if (got < 0) {
      if (errno == EINTR) continue;
      return base::ErrnoToStatus(errno, "reading", path);
    }
    if (got == 0) {
      return absl::DataLossError(
          absl::StrCat("reading ", path, ": unexpected end of file at offset ",
                       offset, " (the file was truncated)"));
    }
    offset += static_cast<uint64_t>(got);
    size_t left = static_cast<size_t>(got);
    while (!pieces.empty() && left >= pieces.front().iov_len) {
      left -= pieces.front().iov_len;
      pieces.remove_prefix(1);
    }
    if (left > 0) {
      pieces.front().iov_base =
          static_cast<char*>(pieces.front().iov_base) + left;
      pieces.front().iov_len -= left;
    }
  }
}

// Reads exactly `size` bytes at `offset`; a short file is data loss.
absl::Status PreadFully(int fd, char* destination, size_t size, uint64_t offset,
                        const std::string& path) {
  iovec piece = {destination, size};
  return PreadvFully(fd, absl::MakeSpan(&piece, 1), offset, path);
}

// The data files' mappings; shared so that views outlive the reader.
struct Mappings {
  std::vector<std::pair<void*, size_t>> regions;
  ~Mappings() {
    for (auto& [address, size] : regions) {
      if (address != nullptr) ::munmap(address, size);
    }
  }
};

bool IsPlainFileName(const std::string& name) {
  return !name.empty() && name.find('/') == std::string::npos &&
         name.find("..") == std::string::npos &&
         name.find('\0') == std::string::npos && name != ".";
}

}  // namespace

class CheckpointReader::Impl {
 public:
  Impl(std::string path, ReaderOptions options)
      : path_(std::move(path)), options_(options) {}

  ~Impl() {
    for (int fd : fds_) {
      if (fd >= 0) ::close(fd);
    }
  }

  absl::Status Open() {
    // A temporary is never a checkpoint, whatever it holds (FORMAT.md
    // section 6), also when reached through a symlink.
    std::string resolved = path_;
    if (char* real = ::realpath(path_.c_str(), nullptr)) {
      resolved = real;
      std::free(real);
    }
    if (absl::StartsWith(base::BaseName(path_), kTemporaryPrefix) ||
        absl::StartsWith(base::BaseName(resolved), kTemporaryPrefix)) {
      return absl::FailedPreconditionError(
          absl::StrCat(Context(), ": an uncommitted temporary (",
                       kTemporaryPrefix, "*), never a checkpoint"));
    }
    int dir_fd = ::open(path_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0) {
      return base::ErrnoToStatus(errno, "checkpoint", path_);
    }
    // Everything below is opened relative to this descriptor, so a
    // `best` symlink switched mid-open cannot mix two checkpoints.
    absl::Status status = OpenFrom(dir_fd);
    ::close(dir_fd);
    return status;
  }

  const proto::Manifest& manifest() const { return manifest_; }
  const std::string& path() const { return path_; }
  bool verify_checksums() const { return options_.verify_checksums; }

  const proto::TensorEntry* FindTensor(absl::string_view name) const {
    auto it = index_.find(name);
    if (it == index_.end()) return nullptr;
    return &manifest_.tensors(it->second);
  }

  absl::Status ReadTensor(const proto::TensorEntry& entry,
                          absl::Span<char> destination) const {
    absl::StatusOr<int> index = Resolve(entry);
    if (!index.ok()) return index.status();
    const proto::TensorEntry& own = manifest_.tensors(*index);
    RETURN_IF_ERROR(CheckDestination(own, destination));
    if (own.size_bytes() > 0) {
      if (mappings_ != nullptr) {
        std::memcpy(destination.data(), MappedBytes(own), own.size_bytes());
      } else if (options_.verify_checksums &&
                 own.size_bytes() > kVerifiedReadPieceBytes) {
        // Each piece is hashed as soon as it is read, while it is still
        // in the core's cache: hashing the whole tensor after reading it
        // would fetch it from memory a second time.
        HashState hash;
        RETURN_IF_ERROR(PreadPieces(
            own, kVerifiedReadPieceBytes,
            [&](uint64_t done) { return destination.data() + done; },
            [&](absl::Span<const char> piece, uint64_t) {
              XXH3_64bits_update(hash.state, piece.data(), piece.size());
              return absl::OkStatus();
            }));
        RETURN_IF_ERROR(CheckChecksum(own, XXH3_64bits_digest(hash.state)));
        return CheckBools(own, destination, 0);
      } else {
        absl::Status status =
            PreadFully(fds_[own.data_file()], destination.data(),
                       own.size_bytes(), own.offset(), DataPath(own));
        if (!status.ok()) return Annotate(own, status);
      }
    }
    return CheckCopy(own, destination);
  }

  absl::Status ReadTensors(
      absl::Span<const proto::TensorEntry* const> entries,
      absl::Span<const absl::Span<char>> destinations) const {
    if (entries.size() != destinations.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": ", entries.size(), " tensors but ",
                       destinations.size(), " destinations"));
    }
    // Each run is read with one preadv straight into its destinations;
    // the alignment gaps between them go to `gap`, which holds any gap a
    // run allows (at most the alignment, and within the run's bytes).
    std::vector<char> gap(static_cast<size_t>(
        std::min<uint64_t>(manifest_.alignment(), kMaxReadRunBytes)));
    std::vector<iovec> pieces;
    size_t i = 0;
    while (i < entries.size()) {
      // The run [i, end): same data file, each entry after the previous
      // with a gap no larger than the alignment, at most kMaxReadRunBytes
      // and kMaxReadRunTensors in all.
      absl::StatusOr<int> first = Resolve(*entries[i]);
      if (!first.ok()) return first.status();
      const proto::TensorEntry& head = manifest_.tensors(*first);
      std::vector<const proto::TensorEntry*> run = {&head};
      uint64_t run_end = head.offset() + head.size_bytes();
      size_t end = i + 1;
      for (; mappings_ == nullptr && end < entries.size() &&
             run.size() < kMaxReadRunTensors;
           ++end) {
        absl::StatusOr<int> next = Resolve(*entries[end]);
        if (!next.ok()) return next.status();
        const proto::TensorEntry& own = manifest_.tensors(*next);
        if (own.data_file() != head.data_file() || own.offset() < run_end ||
            own.offset() - run_end > manifest_.alignment() ||
            own.offset() + own.size_bytes() - head.offset() >
                kMaxReadRunBytes) {
          break;
        }
        run.push_back(&own);
        run_end = own.offset() + own.size_bytes();
      }
      if (run.size() == 1) {
        RETURN_IF_ERROR(ReadTensor(head, destinations[i]));
        i = end;
        continue;
      }
      pieces.clear();
      uint64_t at = head.offset();
      for (size_t k = 0; k < run.size(); ++k) {
        const proto::TensorEntry& own = *run[k];
        RETURN_IF_ERROR(CheckDestination(own, destinations[i + k]));
        if (own.offset() > at) {
          pieces.push_back({gap.data(), own.offset() - at});
        }
        if (own.size_bytes() > 0) {
          pieces.push_back({destinations[i + k].data(), own.size_bytes()});
        }
        at = own.offset() + own.size_bytes();
      }
      RETURN_IF_ERROR(Annotate(
          head, PreadvFully(fds_[head.data_file()], absl::MakeSpan(pieces),
                            head.offset(), DataPath(head))));
      for (size_t k = 0; k < run.size(); ++k) {
        RETURN_IF_ERROR(CheckCopy(*run[k], destinations[i + k]));
      }
      i = end;
    }
    return absl::OkStatus();
  }

  // Reads `own`'s bytes from its data file in pieces of at most
  // `piece_bytes`, the piece at byte `done` of the tensor into
  // into(done), and hands each to consume(piece, done) as soon as it is
  // read. The first error stops it.
  absl::Status PreadPieces(
      const proto::TensorEntry& own, size_t piece_bytes,
      absl::FunctionRef<char*(uint64_t done)> into,
      absl::FunctionRef<absl::Status(absl::Span<const char>, uint64_t done)>
          consume) const {
    for (uint64_t done = 0; done < own.size_bytes();) {
      const size_t piece = static_cast<size_t>(
          std::min<uint64_t>(piece_bytes, own.size_bytes() - done));
      char* const at = into(done);
      absl::Status status = PreadFully(fds_[own.data_file()], at, piece,
                                       own.offset() + done, DataPath(own));
      if (!status.ok()) return Annotate(own, status);
      RETURN_IF_ERROR(consume(absl::Span<const char>(at, piece), done));
      done += piece;
    }
    return absl::OkStatus();
  }

  absl::Status ReadTensorChunks(
      const proto::TensorEntry& entry, size_t chunk_bytes,
      const std::function<absl::Status(absl::Span<const char>)>& consume,
      bool verify) const {
    absl::StatusOr<int> index = Resolve(entry);
    if (!index.ok()) return index.status();
    const proto::TensorEntry& own = manifest_.tensors(*index);
    if (chunk_bytes == 0) chunk_bytes = kDefaultChunkBytes;
    HashState hash;
    const uint64_t size = own.size_bytes();
    if (mappings_ != nullptr) {
      const char* bytes = MappedBytes(own);
      for (uint64_t done = 0; done < size;) {
        const size_t piece =
            static_cast<size_t>(std::min<uint64_t>(chunk_bytes, size - done));
        absl::Span<const char> span(bytes + done, piece);
        if (verify) XXH3_64bits_update(hash.state, span.data(), span.size());
        RETURN_IF_ERROR(CheckBools(own, span, done));
        if (absl::Status status = consume(span); !status.ok()) return status;
        done += piece;
      }
    } else {
      std::vector<char> buffer(
          static_cast<size_t>(std::min<uint64_t>(chunk_bytes, size)));
      RETURN_IF_ERROR(PreadPieces(
          own, chunk_bytes, [&](uint64_t) { return buffer.data(); },
          [&](absl::Span<const char> piece, uint64_t done) {
            if (verify) {
              XXH3_64bits_update(hash.state, piece.data(), piece.size());
            }
            RETURN_IF_ERROR(CheckBools(own, piece, done));
            return consume(piece);
          }));
    }
    if (!verify) return absl::OkStatus();
    return CheckChecksum(own, XXH3_64bits_digest(hash.state));
  }

  absl::StatusOr<absl::Span<const char>> MappedTensor(
      const proto::TensorEntry& entry) const {
    if (mappings_ == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("checkpoint ", path_,
                       ": MappedTensor requires ReaderOptions::use_mmap"));
    }
    absl::StatusOr<int> index = Resolve(entry);
    if (!index.ok()) return index.status();
    if (absl::Status status = VerifyMapped(*index, options_.verify_checksums);
        !status.ok()) {
      return status;
    }
    const proto::TensorEntry& own = manifest_.tensors(*index);
    return absl::Span<const char>(MappedBytes(own),
                                  static_cast<size_t>(own.size_bytes()));
  }

  std::shared_ptr<const void> mapping_owner() const { return mappings_; }

  absl::Status VerifyAll() const {
    // File order keeps the reads sequential.
    std::vector<int> order(manifest_.tensors_size());
    for (int i = 0; i < manifest_.tensors_size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](int a, int b) {
      const proto::TensorEntry& x = manifest_.tensors(a);
      const proto::TensorEntry& y = manifest_.tensors(b);
      return std::make_tuple(x.data_file(), x.offset()) <
             std::make_tuple(y.data_file(), y.offset());
    });
    for (int i : order) {
      absl::Status status;
      if (mappings_ != nullptr) {
        status = VerifyMapped(i, /*checksum=*/true);
      } else {
        status = ReadTensorChunks(
            manifest_.tensors(i), kDefaultChunkBytes,
            [](absl::Span<const char>) { return absl::OkStatus(); },
            /*verify=*/true);
      }
      if (!status.ok()) return status;
    }
    return VerifyPadding();
  }

 private:
  struct Verification {
    std::once_flag once;
    absl::Status status;
  };

  std::string Context() const { return absl::StrCat("checkpoint ", path_); }

  std::string TensorContext(const proto::TensorEntry& entry) const {
    return absl::StrCat("checkpoint ", path_, ": tensor '", entry.name(),
                        "': ");
  }

  absl::Status Annotate(const proto::TensorEntry& entry,
                        const absl::Status& status) const {
    return absl::Status(status.code(),
                        absl::StrCat(TensorContext(entry), status.message()));
  }

  std::string DataPath(const proto::TensorEntry& entry) const {
    return absl::StrCat(path_, "/",
                        manifest_.data_files(entry.data_file()).name());
  }

  const char* MappedBytes(const proto::TensorEntry& entry) const {
    const auto& region = mappings_->regions[entry.data_file()];
    return static_cast<const char*>(region.first) + entry.offset();
  }

  // A destination must hold exactly the tensor's bytes.
  absl::Status CheckDestination(const proto::TensorEntry& own,
                                absl::Span<const char> destination) const {
    if (destination.size() == own.size_bytes()) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(
        TensorContext(own), "destination holds ", destination.size(),
        " bytes, the tensor has ", own.size_bytes()));
  }

  // Checks the copy the caller gets, not the file: that is what matters.
  absl::Status CheckCopy(const proto::TensorEntry& own,
                         absl::Span<const char> copy) const {
    if (options_.verify_checksums) {
      RETURN_IF_ERROR(
          CheckChecksum(own, XXH3_64bits(copy.data(), copy.size())));
    }
    return CheckBools(own, copy, 0);
  }

  absl::Status CheckChecksum(const proto::TensorEntry& entry,
                             uint64_t computed) const {
    if (computed == entry.xxh3_64()) return absl::OkStatus();
    return absl::DataLossError(absl::StrFormat(
        "%schecksum mismatch (stored xxh3_64 %016x, computed %016x): the "
        "tensor's bytes in %s are corrupt",
        TensorContext(entry), entry.xxh3_64(), computed, DataPath(entry)));
  }

  // BOOL bytes are 0 or 1 (FORMAT.md section 3); `offset` is where `bytes`
  // begin within the tensor.
  absl::Status CheckBools(const proto::TensorEntry& entry,
                          absl::Span<const char> bytes, uint64_t offset) const {
    if (entry.dtype() != proto::BOOL) return absl::OkStatus();
    std::optional<size_t> bad = FirstInvalidBool(bytes);
    if (!bad.has_value()) return absl::OkStatus();
    return absl::DataLossError(
        absl::StrCat(TensorContext(entry), "element ", offset + *bad,
                     " of a bool tensor is ",
                     static_cast<int>(static_cast<unsigned char>(bytes[*bad])),
                     ", not 0 or 1"));
  }

  // Once per tensor: the bool check always, the checksum when asked. A
  // reader opened without verification never pays for the checksum here;
  // VerifyAll() asks for it explicitly.
  absl::Status VerifyMapped(int index, bool checksum) const {
    const proto::TensorEntry& entry = manifest_.tensors(index);
    absl::Span<const char> bytes(MappedBytes(entry),
                                 static_cast<size_t>(entry.size_bytes()));
    if (!checksum) return CheckBools(entry, bytes, 0);
    Verification& verification = verifications_[index];
    std::call_once(verification.once, [&] {
      verification.status =
          CheckChecksum(entry, XXH3_64bits(bytes.data(), bytes.size()));
      if (verification.status.ok()) {
        verification.status = CheckBools(entry, bytes, 0);
      }
    });
    return verification.status;
  }

  // Every byte of a data file outside the tensors must be zero padding, so
  // that no byte of a checkpoint escapes a check (FORMAT.md section 3).
  absl::Status VerifyPadding() const {
    for (int file = 0; file < manifest_.data_files_size(); ++file) {
      std::vector<std::pair<uint64_t, uint64_t>> used;
      for (const proto::TensorEntry& entry : manifest_.tensors()) {
        if (static_cast<int>(entry.data_file()) == file &&
            entry.size_bytes() > 0) {
          used.emplace_back(entry.offset(),
                            entry.offset() + entry.size_bytes());
        }
      }
      std::sort(used.begin(), used.end());
      const uint64_t file_size = manifest_.data_files(file).size_bytes();
      used.emplace_back(file_size, file_size);
      uint64_t position = 0;
      for (const auto& [begin, end] : used) {
        RETURN_IF_ERROR(CheckZero(file, position, begin));
        position = std::max(position, end);
      }
    }
    return absl::OkStatus();
  }

  absl::Status CheckZero(int file, uint64_t begin, uint64_t end) const {
    const std::string path =
        absl::StrCat(path_, "/", manifest_.data_files(file).name());
    char buffer[4096];
    for (uint64_t at = begin; at < end;) {
      const size_t piece =
          static_cast<size_t>(std::min<uint64_t>(sizeof(buffer), end - at));
      const char* bytes = buffer;
      if (mappings_ != nullptr) {
        bytes = static_cast<const char*>(mappings_->regions[file].first) + at;
      } else {
        RETURN_IF_ERROR(PreadFully(fds_[file], buffer, piece, at, path));
      }
      for (size_t i = 0; i < piece; ++i) {
        if (bytes[i] != 0) {
          return absl::DataLossError(absl::StrCat(
              Context(), ": byte ", at + i, " of ", path,
              " lies between tensors and must be zero padding, but is ",
              static_cast<int>(static_cast<unsigned char>(bytes[i]))));
        }
      }
      at += piece;
    }
    return absl::OkStatus();
  }

  // Maps a caller's entry to ours. Callers normally pass a pointer from
  // FindTensor() or manifest(); anything else must describe the same bytes,
  // so a stray entry can never steer a read outside the validated ranges.
  absl::StatusOr<int> Resolve(const proto::TensorEntry& entry) const {
    auto it = index_.find(entry.name());
    if (it != index_.end()) {
      const proto::TensorEntry& own = manifest_.tensors(it->second);
      if (&own == &entry || (own.data_file() == entry.data_file() &&
                             own.offset() == entry.offset() &&
                             own.size_bytes() == entry.size_bytes() &&
                             own.xxh3_64() == entry.xxh3_64())) {
        return it->second;
      }
    }
    return absl::InvalidArgumentError(
        absl::StrCat(Context(), ": tensor entry '", entry.name(),
                     "' does not belong to this checkpoint"));
  }

  absl::Status Invalid(absl::string_view what) const {
    return absl::DataLossError(absl::StrCat(Context(), ": ", what));
  }

  absl::Status ReadManifest(int dir_fd) {
    const std::string manifest_path =
        absl::StrCat(path_, "/", kManifestFileName);
    uint64_t size = 0;
    absl::StatusOr<int> fd =
        base::OpenRegularFile(dir_fd, kManifestFileName, manifest_path, &size);
    if (!fd.ok()) {
      if (fd.status().code() == absl::StatusCode::kNotFound) {
        return absl::NotFoundError(absl::StrCat(
            Context(), ": no ", kManifestFileName,
            " (not a checkpoint, or a write that never committed)"));
      }
      if (fd.status().code() == absl::StatusCode::kFailedPrecondition) {
        return absl::DataLossError(
            absl::StrCat(Context(), ": ", fd.status().message()));
      }
      return fd.status();
    }
    absl::Status status;
    if (size > kMaxManifestBytes) {
      status = Invalid(absl::StrCat(kManifestFileName, " has ", size,
                                    " bytes, more than the limit of ",
                                    kMaxManifestBytes));
    } else {
      std::string bytes(static_cast<size_t>(size), '\0');
      status = PreadFully(*fd, bytes.data(), bytes.size(), 0, manifest_path);
      if (status.ok()) {
        if (options_.read_format_v1) {
          absl::StatusOr<proto::Manifest> manifest =
              DecodeManifestFileV1(bytes);
          status = manifest.status();
          if (manifest.ok()) manifest_ = *std::move(manifest);
        } else {
          status = DecodeManifestFile(bytes, &manifest_);
        }
        if (!status.ok()) {
          status = absl::Status(
              status.code(), absl::StrCat(Context(), ": ", status.message()));
        }
      }
    }
    ::close(*fd);
    return status;
  }

  absl::Status OpenFrom(int dir_fd) {
    if (absl::Status status = ReadManifest(dir_fd); !status.ok()) {
      return status;
    }
    const uint32_t alignment = manifest_.alignment();
    if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
      return Invalid(
          absl::StrCat("alignment ", alignment, " is not a power of two"));
    }
    if (absl::Status status = ValidateExtensions(manifest_.training_state());
        !status.ok()) {
      return Invalid(status.message());
    }

    std::unordered_map<std::string, int> file_names;
    for (int i = 0; i < manifest_.data_files_size(); ++i) {
      const proto::DataFile& file = manifest_.data_files(i);
      if (!IsPlainFileName(file.name())) {
        return Invalid(absl::StrCat("data file name '", file.name(),
                                    "' is not a plain file name"));
      }
      if (!file_names.emplace(file.name(), i).second) {
        return Invalid(
            absl::StrCat("data file '", file.name(), "' is listed twice"));
      }
      const std::string file_path = absl::StrCat(path_, "/", file.name());
      uint64_t actual_size = 0;
      absl::StatusOr<int> fd =
          base::OpenRegularFile(dir_fd, file.name(), file_path, &actual_size);
      if (!fd.ok()) {
        if (fd.status().code() == absl::StatusCode::kNotFound) {
          return absl::NotFoundError(absl::StrCat(Context(), ": data file ",
                                                  file.name(), " is missing"));
        }
        if (fd.status().code() == absl::StatusCode::kFailedPrecondition) {
          return Invalid(fd.status().message());
        }
        return fd.status();
      }
      fds_.push_back(*fd);
      if (actual_size != file.size_bytes()) {
        return Invalid(absl::StrCat("data file ", file.name(), " has ",
                                    actual_size, " bytes, the manifest says ",
                                    file.size_bytes(), " (truncated?)"));
      }
    }

    struct Range {
      uint32_t file;
      uint64_t begin;
      uint64_t end;
      int tensor;
    };
    std::vector<Range> ranges;
    ranges.reserve(manifest_.tensors_size());
    index_.reserve(manifest_.tensors_size());
    for (int i = 0; i < manifest_.tensors_size(); ++i) {
      const proto::TensorEntry& entry = manifest_.tensors(i);
      if (entry.name().empty()) {
        return Invalid(absl::StrCat("tensor #", i, " has an empty name"));
      }
      auto rule = [&](absl::string_view what) {
        return Invalid(absl::StrCat("tensor '", entry.name(), "': ", what));
      };
      if (!index_.emplace(entry.name(), i).second) {
        return rule("duplicate tensor name");
      }
      const size_t element_size = ElementSize(entry.dtype());
      if (element_size == 0) {
        return rule(
            absl::StrCat("unknown dtype ", static_cast<int>(entry.dtype())));
      }
      uint64_t expected = element_size;
      bool overflow = false;
      for (int64_t dim : entry.shape()) {
        if (dim < 0) return rule(absl::StrCat("negative dimension ", dim));
        overflow =
            overflow || __builtin_mul_overflow(
                            expected, static_cast<uint64_t>(dim), &expected);
      }
      // A zero dimension makes an overflowing product legitimate zero, so
      // the overflow only counts when every dimension is positive.
      const bool has_zero_dim =
          std::find(entry.shape().begin(), entry.shape().end(), 0) !=
          entry.shape().end();
      if (has_zero_dim) {
        expected = 0;
      } else if (overflow) {
        return rule("shape's byte size overflows 64 bits");
      }
      if (expected != entry.size_bytes()) {
        return rule(absl::StrCat("size_bytes ", entry.size_bytes(),
                                 " does not match shape and dtype (", expected,
                                 ")"));
      }
      if (entry.data_file() >= static_cast<uint32_t>(fds_.size())) {
        return rule(absl::StrCat("data_file ", entry.data_file(),
                                 " out of range (", fds_.size(), " files)"));
      }
      if (entry.offset() % alignment != 0) {
        return rule(absl::StrCat("offset ", entry.offset(),
                                 " is not a multiple of the alignment ",
                                 alignment));
      }
      const uint64_t file_size =
          manifest_.data_files(entry.data_file()).size_bytes();
      if (entry.offset() > file_size ||
          entry.size_bytes() > file_size - entry.offset()) {
        return rule(absl::StrCat("bytes [", entry.offset(), ", +",
                                 entry.size_bytes(), ") lie outside ",
                                 manifest_.data_files(entry.data_file()).name(),
                                 " (", file_size, " bytes)"));
      }
      if (entry.size_bytes() > 0) {
        ranges.push_back({entry.data_file(), entry.offset(),
                          entry.offset() + entry.size_bytes(), i});
      }
    }
    // Like safetensors: tensors never share bytes.
    auto in_file_order = [](const Range& a, const Range& b) {
      return std::tie(a.file, a.begin) < std::tie(b.file, b.begin);
    };
    // Writers lay tensors out in order; sorting is for other files.
    if (!std::is_sorted(ranges.begin(), ranges.end(), in_file_order)) {
      std::sort(ranges.begin(), ranges.end(), in_file_order);
    }
    for (size_t i = 1; i < ranges.size(); ++i) {
      if (ranges[i].file == ranges[i - 1].file &&
          ranges[i].begin < ranges[i - 1].end) {
        return Invalid(absl::StrCat(
            "tensors '", manifest_.tensors(ranges[i - 1].tensor).name(),
            "' and '", manifest_.tensors(ranges[i].tensor).name(),
            "' overlap"));
      }
    }

    verifications_.reset(new Verification[manifest_.tensors_size()]);
    if (options_.use_mmap) return MapFiles();
    return absl::OkStatus();
  }

  absl::Status MapFiles() {
    auto mappings = std::make_shared<Mappings>();
    for (int i = 0; i < manifest_.data_files_size(); ++i) {
      const size_t size =
          static_cast<size_t>(manifest_.data_files(i).size_bytes());
      void* address = nullptr;
      if (size > 0) {
        address = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fds_[i], 0);
        if (address == MAP_FAILED) {
          return base::ErrnoToStatus(
              errno, "mmap",
              absl::StrCat(path_, "/", manifest_.data_files(i).name()));
        }
      }
      mappings->regions.emplace_back(address, size);
    }
    mappings_ = std::move(mappings);
    return absl::OkStatus();
  }

  const std::string path_;
  const ReaderOptions options_;
  // The manifest lives on an arena: for 20,000 tensors, building and
  // freeing it message by message (a malloc and a free for each entry,
  // name and shape) took about 2 ms more.
  google::protobuf::Arena arena_;
  proto::Manifest& manifest_ =
      *google::protobuf::Arena::CreateMessage<proto::Manifest>(&arena_);
  std::vector<int> fds_;
  // Keyed by the manifest's own names (it never changes once read).
  absl::flat_hash_map<absl::string_view, int> index_;
  std::shared_ptr<Mappings> mappings_;
  std::unique_ptr<Verification[]> verifications_;
};

absl::StatusOr<std::unique_ptr<CheckpointReader>> CheckpointReader::Open(
    const std::string& path, ReaderOptions options) {
  auto impl = std::make_unique<Impl>(path, options);
  if (absl::Status status = impl->Open(); !status.ok()) return status;
  return std::unique_ptr<CheckpointReader>(
      new CheckpointReader(std::move(impl)));
}

CheckpointReader::CheckpointReader(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}

CheckpointReader::~CheckpointReader() = default;

const proto::Manifest& CheckpointReader::manifest() const {
  return impl_->manifest();
}

const std::string& CheckpointReader::path() const { return impl_->path(); }

const proto::TensorEntry* CheckpointReader::FindTensor(
    absl::string_view name) const {
  return impl_->FindTensor(name);
}

absl::Status CheckpointReader::ReadTensor(const proto::TensorEntry& entry,
                                          absl::Span<char> destination) const {
  return impl_->ReadTensor(entry, destination);
}

absl::Status CheckpointReader::ReadTensors(
    absl::Span<const proto::TensorEntry* const> entries,
    absl::Span<const absl::Span<char>> destinations) const {
  return impl_->ReadTensors(entries, destinations);
}

absl::Status CheckpointReader::ReadTensorChunks(
    const proto::TensorEntry& entry, size_t chunk_bytes,
    const std::function<absl::Status(absl::Span<const char>)>& consume) const {
  return impl_->ReadTensorChunks(entry, chunk_bytes, consume,
                                 impl_->verify_checksums());
}

absl::StatusOr<absl::Span<const char>> CheckpointReader::MappedTensor(
    const proto::TensorEntry& entry) const {
  return impl_->MappedTensor(entry);
}

std::shared_ptr<const void> CheckpointReader::mapping_owner() const {
  return impl_->mapping_owner();
}

absl::Status CheckpointReader::VerifyAll() const { return impl_->VerifyAll(); }

}  // namespace checkpoint
