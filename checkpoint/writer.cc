#include "checkpoint/writer.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <set>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "checkpoint/extensions.h"
#include "checkpoint/hash_state.h"
#include "checkpoint/manifest_file.h"
#include "tools/base/files.h"
#include "tools/base/paths.h"
#include "tools/base/status.h"
#include "tools/base/stop_point.h"
#include "tools/base/warnings.h"

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

namespace checkpoint {
namespace {

// Small tensors are gathered here so that a model of many small parameters
// costs a few large writes instead of one syscall per tensor.
constexpr size_t kWriteBufferSize = size_t{4} << 20;
// Tensors at least this large skip the buffer and go from the caller's
// memory straight to the file (together with whatever is buffered).
constexpr size_t kDirectWriteThreshold = size_t{1} << 20;
// Writeback is started after each this many bytes written.
constexpr uint64_t kWritebackStep = uint64_t{8} << 20;

// Writes every byte of `iov` at the file's current position, resuming
// after short writes and EINTR. The kernel caps one write at ~2 GiB, so
// huge tensors take a few iterations.
absl::Status WriteFully(int fd, struct iovec* iov, int iov_count,
                        const std::string& path) {
  while (iov_count > 0) {
    if (iov[0].iov_len == 0) {
      ++iov;
      --iov_count;
      continue;
    }
    ssize_t written = ::writev(fd, iov, iov_count);
    if (written < 0) {
      if (errno == EINTR) continue;
      return base::ErrnoToStatus(errno, "writing", path);
    }
    if (written == 0) return base::ErrnoToStatus(ENOSPC, "writing", path);
    size_t remaining = static_cast<size_t>(written);
    while (iov_count > 0 && remaining >= iov[0].iov_len) {
      remaining -= iov[0].iov_len;
      ++iov;
      --iov_count;
    }
    if (remaining > 0) {
      iov[0].iov_base = static_cast<char*>(iov[0].iov_base) + remaining;
      iov[0].iov_len -= remaining;
    }
  }
  return absl::OkStatus();
}

}  // namespace

size_t ElementSize(proto::DType dtype) {
  switch (dtype) {
    case proto::FLOAT32:
    case proto::INT32:
      return 4;
    case proto::FLOAT64:
    case proto::INT64:
      return 8;
    case proto::FLOAT16:
    case proto::BFLOAT16:
    case proto::INT16:
      return 2;
    case proto::INT8:
    case proto::UINT8:
    case proto::BOOL:
      return 1;
    default:
      return 0;
  }
}

std::optional<size_t> FirstInvalidBool(absl::Span<const char> bytes) {
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (static_cast<unsigned char>(bytes[i]) > 1) return i;
  }
  return std::nullopt;
}

absl::string_view DTypeName(proto::DType dtype) {
  switch (dtype) {
    case proto::FLOAT32:
      return "float32";
    case proto::FLOAT64:
      return "float64";
    case proto::FLOAT16:
      return "float16";
    case proto::BFLOAT16:
      return "bfloat16";
    case proto::INT8:
      return "int8";
    case proto::UINT8:
      return "uint8";
    case proto::INT16:
      return "int16";
    case proto::INT32:
      return "int32";
    case proto::INT64:
      return "int64";
    case proto::BOOL:
      return "bool";
    default:
      return "unknown";
  }
}

// Hashes a large tensor on a thread of its own while the caller writes the
// same bytes, so that a disk faster than one core's XXH3 plus the kernel's
// copy into the page cache does not wait for the hash. One job at a time.
class BackgroundHasher {
 public:
  BackgroundHasher() : thread_([this] { Run(); }) {}
  ~BackgroundHasher() {
    {
      absl::MutexLock lock(&mutex_);
      stop_ = true;
    }
    thread_.join();
  }
  BackgroundHasher(const BackgroundHasher&) = delete;
  BackgroundHasher& operator=(const BackgroundHasher&) = delete;

  // `data` must stay valid and unchanged until Result() returns.
  void Start(const char* data, size_t size) {
    absl::MutexLock lock(&mutex_);
    data_ = data;
    size_ = size;
    posted_ = true;
    done_ = false;
  }

  uint64_t Result() {
    absl::MutexLock lock(&mutex_);
    mutex_.Await(absl::Condition(&done_));
    return result_;
  }

 private:
  void Run() {
    for (;;) {
      const char* data;
      size_t size;
      {
        absl::MutexLock lock(&mutex_);
        mutex_.Await(absl::Condition(
            +[](BackgroundHasher* self) {
              return self->posted_ || self->stop_;
            },
            this));
        if (stop_) return;
        posted_ = false;
        data = data_;
        size = size_;
      }
      const uint64_t result = XXH3_64bits(data, size);
      absl::MutexLock lock(&mutex_);
      result_ = result;
      done_ = true;
    }
  }

  absl::Mutex mutex_;
  const char* data_ = nullptr;
  size_t size_ = 0;
  bool posted_ = false;
  bool done_ = false;
  bool stop_ = false;
  uint64_t result_ = 0;
  std::thread thread_;  // last: starts after the fields it reads
};

// ---------------------------------------------------------------------------
// DataFileWriter: one data file, shared by CheckpointWriter (data-00000.bin)
// and the parts other processes write.

class DataFileWriter::Impl {
 public:
  Impl(std::string path, std::string label, WriterOptions options)
      : path_(std::move(path)),
        label_(std::move(label)),
        options_(options),
        buffer_(new char[kWriteBufferSize]) {}

  ~Impl() {
    if (fd_ >= 0) ::close(fd_);
    if (opened_ && !finished_) ::unlink(path_.c_str());
  }

  absl::Status Open() {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd_ < 0) return Fail(base::ErrnoToStatus(errno, "creating", path_));
    opened_ = true;
    return absl::OkStatus();
  }

  absl::Status AddTensor(absl::string_view name, proto::DType dtype,
                         absl::Span<const int64_t> shape,
                         absl::Span<const char> bytes,
                         absl::string_view saved_device) {
    if (absl::Status status = CheckTensor(name, dtype, shape, bytes.size());
        !status.ok()) {
      return status;
    }
    if (dtype == proto::BOOL) {
      if (absl::Status status = CheckBools(name, 0, bytes); !status.ok()) {
        return status;
      }
    }
    const uint64_t padding = Padding();
    const uint64_t tensor_offset = offset_ + padding;
    uint64_t checksum = 0;
    if (bytes.size() < kDirectWriteThreshold) {
      if (absl::Status status = BufferPadding(padding, bytes.size());
          !status.ok()) {
        return status;
      }
      char* copy = buffer_.get() + buffered_;
      if (!bytes.empty()) std::memcpy(copy, bytes.data(), bytes.size());
      // Hash the copy: those are exactly the bytes that reach the file even
      // if the caller's memory changes under us.
      checksum = XXH3_64bits(copy, bytes.size());
      buffered_ += bytes.size();
    } else {
      if (absl::Status status = BufferPadding(padding, 0); !status.ok()) {
        return status;
      }
      if (hasher_ == nullptr) hasher_ = std::make_unique<BackgroundHasher>();
      hasher_->Start(bytes.data(), bytes.size());
      absl::Status written = Flush(bytes.data(), bytes.size());
      checksum = hasher_->Result();
      if (!written.ok()) return written;
    }
    Record(name, dtype, shape, tensor_offset, bytes.size(), checksum,
           saved_device);
    return absl::OkStatus();
  }

  absl::Status AddTensorFrom(absl::string_view name, proto::DType dtype,
                             absl::Span<const int64_t> shape,
                             uint64_t size_bytes, TensorBytesSource source,
                             absl::string_view saved_device) {
    if (absl::Status status = CheckTensor(name, dtype, shape, size_bytes);
        !status.ok()) {
      return status;
    }
    const uint64_t padding = Padding();
    const uint64_t tensor_offset = offset_ + padding;
    if (absl::Status status = BufferPadding(padding, 0); !status.ok()) {
      return status;
    }
    // Pieces go straight into the write buffer and are hashed there: the
    // bytes hashed are the bytes written.
    HashState hash;
    for (uint64_t done = 0; done < size_bytes;) {
      if (buffered_ == kWriteBufferSize) {
        if (absl::Status status = Flush(nullptr, 0); !status.ok()) {
          return status;
        }
      }
      const size_t piece = static_cast<size_t>(
          std::min<uint64_t>(size_bytes - done, kWriteBufferSize - buffered_));
      const absl::Span<char> out(buffer_.get() + buffered_, piece);
      absl::Status status = source(done, out);
      if (status.ok() && dtype == proto::BOOL) {
        status = CheckBools(name, done, out);
      }
      // Part of the tensor may be in the file already: the writer cannot
      // take it back, so it stops here.
      if (!status.ok()) {
        return Fail(base::Annotate(
            status, absl::StrCat(label_, ": tensor '", name, "'")));
      }
      XXH3_64bits_update(hash.state, out.data(), out.size());
      buffered_ += piece;
      done += piece;
    }
    Record(name, dtype, shape, tensor_offset, size_bytes,
           XXH3_64bits_digest(hash.state), saved_device);
    return absl::OkStatus();
  }

  absl::StatusOr<DataFilePart> Finish() {
    if (!error_.ok()) return error_;
    if (finished_) {
      return absl::FailedPreconditionError(
          absl::StrCat(label_, ": Commit called twice"));
    }
    if (absl::Status status = Flush(nullptr, 0); !status.ok()) return status;
    if (options_.sync && ::fsync(fd_) != 0) {
      return Fail(base::ErrnoToStatus(errno, "fsync", path_));
    }
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) {
      return Fail(base::ErrnoToStatus(errno, "closing", path_));
    }
    finished_ = true;
    part_.path = path_;
    part_.size_bytes = offset_;
    return std::move(part_);
  }

  // An I/O error happened: the file is unusable.
  bool failed() const { return !error_.ok(); }

 private:
  // Checks what AddTensor and AddTensorFrom are given, before any byte.
  absl::Status CheckTensor(absl::string_view name, proto::DType dtype,
                           absl::Span<const int64_t> shape,
                           uint64_t size_bytes) {
    if (!error_.ok()) return error_;
    if (finished_) {
      return absl::FailedPreconditionError(
          absl::StrCat(label_, ": AddTensor after Commit"));
    }
    auto context = [&](absl::string_view what) {
      return absl::StrCat(label_, ": tensor '", name, "': ", what);
    };
    if (name.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(label_, ": empty tensor name"));
    }
    if (names_.count(std::string(name)) != 0) {
      return absl::InvalidArgumentError(context("duplicate name"));
    }
    const size_t element_size = ElementSize(dtype);
    if (element_size == 0) {
      return absl::InvalidArgumentError(
          context(absl::StrCat("unsupported dtype ", static_cast<int>(dtype))));
    }
    uint64_t expected = element_size;
    bool overflow = false;
    for (int64_t dim : shape) {
      if (dim < 0) {
        return absl::InvalidArgumentError(
            context(absl::StrCat("negative dimension ", dim)));
      }
      overflow |= __builtin_mul_overflow(expected, static_cast<uint64_t>(dim),
                                         &expected);
    }
    // Same rule as the reader: any zero dimension makes an empty tensor.
    if (std::find(shape.begin(), shape.end(), 0) != shape.end()) {
      expected = 0;
    } else if (overflow) {
      return absl::InvalidArgumentError(context("shape overflows"));
    }
    if (expected != size_bytes) {
      return absl::InvalidArgumentError(
          context(absl::StrCat("got ", size_bytes, " bytes, shape and ",
                               DTypeName(dtype), " need ", expected)));
    }
    return absl::OkStatus();
  }

  // `bytes` are the tensor's bytes from `offset` on.
  absl::Status CheckBools(absl::string_view name, uint64_t offset,
                          absl::Span<const char> bytes) {
    if (std::optional<size_t> bad = FirstInvalidBool(bytes)) {
      return absl::InvalidArgumentError(absl::StrCat(
          label_, ": tensor '", name, "': element ", offset + *bad,
          " of a bool tensor is ",
          static_cast<int>(static_cast<unsigned char>(bytes[*bad])),
          ", not 0 or 1"));
    }
    return absl::OkStatus();
  }

  uint64_t Padding() const {
    return (kTensorAlignment - offset_ % kTensorAlignment) % kTensorAlignment;
  }

  // Buffers the zeros before a tensor, flushing first unless they and the
  // `following` bytes to be buffered behind them fit. The buffer starts at
  // whatever file offset the last flush ended at, so even the zeros alone
  // may not fit behind the buffered bytes.
  absl::Status BufferPadding(uint64_t padding, uint64_t following) {
    if (buffered_ + padding + following > kWriteBufferSize) {
      if (absl::Status status = Flush(nullptr, 0); !status.ok()) {
        return status;
      }
    }
    std::memset(buffer_.get() + buffered_, 0, padding);
    buffered_ += padding;
    return absl::OkStatus();
  }

  void Record(absl::string_view name, proto::DType dtype,
              absl::Span<const int64_t> shape, uint64_t tensor_offset,
              uint64_t size_bytes, uint64_t checksum,
              absl::string_view saved_device) {
    offset_ = tensor_offset + size_bytes;
    proto::TensorEntry& entry = part_.tensors.emplace_back();
    entry.set_name(std::string(name));
    entry.set_dtype(dtype);
    for (int64_t dim : shape) entry.add_shape(dim);
    entry.set_offset(tensor_offset);
    entry.set_size_bytes(size_bytes);
    entry.set_xxh3_64(checksum);
    entry.set_saved_device(std::string(saved_device));
    names_.emplace(name);
  }

  // Writes the buffered bytes followed by `direct` (may be null) in as few
  // syscalls as the kernel allows.
  absl::Status Flush(const char* direct, size_t direct_size) {
    struct iovec iov[2];
    iov[0].iov_base = buffer_.get();
    iov[0].iov_len = buffered_;
    iov[1].iov_base = const_cast<char*>(direct);
    iov[1].iov_len = direct_size;
    absl::Status status = WriteFully(fd_, iov, 2, path_);
    written_ += buffered_ + direct_size;
    buffered_ = 0;
    if (status.ok() && options_.sync &&
        written_ - writeback_started_ >= kWritebackStep) {
      // Starts the disk on what is written so far while we go on filling
      // the page cache, so that the final fsync finds little left to do.
      // Only a hint: fsync reports any error.
      (void)::sync_file_range(fd_, writeback_started_,
                              written_ - writeback_started_,
                              SYNC_FILE_RANGE_WRITE);
      writeback_started_ = written_;
    }
    return Fail(status);
  }

  absl::Status Fail(absl::Status status) {
    if (!status.ok() && error_.ok()) error_ = status;
    return status;
  }

  const std::string path_;
  const std::string label_;
  const WriterOptions options_;
  std::unique_ptr<char[]> buffer_;
  size_t buffered_ = 0;
  // Logical size of the file: bytes written plus bytes buffered.
  uint64_t offset_ = 0;
  // Bytes in the file, and how many of them the disk was asked to write.
  uint64_t written_ = 0;
  uint64_t writeback_started_ = 0;
  int fd_ = -1;
  bool opened_ = false;
  bool finished_ = false;
  absl::Status error_;
  std::unordered_set<std::string> names_;
  DataFilePart part_;
  // Started by the first tensor written directly (>= 1 MiB).
  std::unique_ptr<BackgroundHasher> hasher_;
};

absl::StatusOr<std::unique_ptr<DataFileWriter>> DataFileWriter::Create(
    std::string path, WriterOptions options) {
  std::string label = path;
  return Create(std::move(path), std::move(label), options);
}

absl::StatusOr<std::unique_ptr<DataFileWriter>> DataFileWriter::Create(
    std::string path, std::string label, WriterOptions options) {
  auto impl =
      std::make_unique<Impl>(std::move(path), std::move(label), options);
  if (absl::Status status = impl->Open(); !status.ok()) return status;
  return std::unique_ptr<DataFileWriter>(new DataFileWriter(std::move(impl)));
}

DataFileWriter::DataFileWriter(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}

DataFileWriter::~DataFileWriter() = default;

absl::Status DataFileWriter::AddTensor(absl::string_view name,
                                       proto::DType dtype,
                                       absl::Span<const int64_t> shape,
                                       absl::Span<const char> bytes,
                                       absl::string_view saved_device) {
  return impl_->AddTensor(name, dtype, shape, bytes, saved_device);
}

absl::Status DataFileWriter::AddTensorFrom(absl::string_view name,
                                           proto::DType dtype,
                                           absl::Span<const int64_t> shape,
                                           uint64_t size_bytes,
                                           TensorBytesSource source,
                                           absl::string_view saved_device) {
  return impl_->AddTensorFrom(name, dtype, shape, size_bytes, source,
                              saved_device);
}

absl::StatusOr<DataFilePart> DataFileWriter::Finish() {
  absl::StatusOr<DataFilePart> part = impl_->Finish();
  if (part.ok()) base::StopPoint("writer.part_written");
  return part;
}

// ---------------------------------------------------------------------------
// CheckpointWriter.

class CheckpointWriter::Impl {
 public:
  Impl(std::string final_path, std::string parent, std::string temporary_name,
       WriterOptions options)
      : final_path_(std::move(final_path)),
        parent_(std::move(parent)),
        temporary_name_(std::move(temporary_name)),
        temporary_(base::JoinPath(parent_, temporary_name_)),
        options_(options) {}

  ~Impl() {
    if (!committed_) Abort();
  }

  absl::Status OpenDataFile() {
    absl::StatusOr<std::unique_ptr<DataFileWriter>> data =
        DataFileWriter::Create(DataFileName(0), final_path_, options_);
    if (!data.ok()) return Fail(data.status());
    data_ = *std::move(data);
    return absl::OkStatus();
  }

  absl::Status AddTensor(absl::string_view name, proto::DType dtype,
                         absl::Span<const int64_t> shape,
                         absl::Span<const char> bytes,
                         absl::string_view saved_device) {
    RETURN_IF_ERROR(CheckAddable());
    absl::Status status =
        data_->AddTensor(name, dtype, shape, bytes, saved_device);
    // A refused tensor leaves the writer usable; a failed write does not.
    return data_->impl_->failed() ? Fail(status) : status;
  }

  absl::Status AddTensorFrom(absl::string_view name, proto::DType dtype,
                             absl::Span<const int64_t> shape,
                             uint64_t size_bytes, TensorBytesSource source,
                             absl::string_view saved_device) {
    RETURN_IF_ERROR(CheckAddable());
    absl::Status status = data_->AddTensorFrom(name, dtype, shape, size_bytes,
                                               source, saved_device);
    return data_->impl_->failed() ? Fail(status) : status;
  }

  absl::Status AddDataFile(const DataFilePart& part) {
    if (!error_.ok()) return error_;
    if (committed_) {
      return absl::FailedPreconditionError(
          absl::StrCat(final_path_, ": AddDataFile after Commit"));
    }
    const uint32_t index = static_cast<uint32_t>(parts_.size() + 1);
    const std::string destination = DataFileName(index);
    auto context = [&](absl::string_view what) {
      return absl::StrCat(final_path_, ": data file ", part.path, ": ", what);
    };
    // Check what was reported against the file before moving it in: the
    // bytes are checksummed per tensor, the size and layout are ours to
    // check now (the reader checks them again, FORMAT.md section 5).
    struct stat info;
    if (::lstat(part.path.c_str(), &info) != 0) {
      return Fail(
          base::ErrnoToStatus(errno, "data file of another writer", part.path));
    }
    if (!S_ISREG(info.st_mode)) {
      return Fail(absl::DataLossError(context("not a regular file")));
    }
    if (static_cast<uint64_t>(info.st_size) != part.size_bytes) {
      return Fail(absl::DataLossError(context(
          absl::StrCat("holds ", info.st_size, " bytes, its writer reported ",
                       part.size_bytes))));
    }
    for (const proto::TensorEntry& entry : part.tensors) {
      const uint64_t element_size = ElementSize(entry.dtype());
      if (entry.name().empty() || element_size == 0 ||
          entry.offset() % kTensorAlignment != 0 ||
          entry.offset() > part.size_bytes ||
          entry.size_bytes() > part.size_bytes - entry.offset()) {
        return Fail(absl::InvalidArgumentError(context(absl::StrCat(
            "tensor '", entry.name(), "' is not a valid entry of this file"))));
      }
    }
    if (::rename(part.path.c_str(), destination.c_str()) != 0) {
      return Fail(base::ErrnoToStatus(
          errno, absl::StrCat("moving ", part.path, " to"), destination));
    }
    proto::DataFile& file = parts_.emplace_back();
    file.set_name(base::BaseName(destination));
    file.set_size_bytes(part.size_bytes);
    for (const proto::TensorEntry& entry : part.tensors) {
      proto::TensorEntry* added = adopted_tensors_.Add();
      *added = entry;
      added->set_data_file(index);
    }
    return absl::OkStatus();
  }

  absl::Status Commit() {
    if (!error_.ok()) return error_;
    if (committed_) {
      return absl::FailedPreconditionError(
          absl::StrCat(final_path_, ": Commit called twice"));
    }
    absl::StatusOr<DataFilePart> data = data_->Finish();
    if (!data.ok()) return Fail(data.status());
    base::StopPoint("writer.data_written");

    manifest_.set_format_version(kFormatVersion);
    manifest_.set_alignment(kTensorAlignment);
    manifest_.clear_data_files();
    proto::DataFile* data_file = manifest_.add_data_files();
    data_file->set_name(base::BaseName(data->path));
    data_file->set_size_bytes(data->size_bytes);
    for (const proto::DataFile& part : parts_) {
      *manifest_.add_data_files() = part;
    }
    manifest_.clear_tensors();
    std::unordered_set<std::string> names;
    for (proto::TensorEntry& entry : data->tensors) {
      names.insert(entry.name());
      *manifest_.add_tensors() = std::move(entry);
    }
    for (const proto::TensorEntry& entry : adopted_tensors_) {
      if (!names.insert(entry.name()).second) {
        return Fail(absl::InvalidArgumentError(absl::StrCat(
            final_path_, ": tensor '", entry.name(), "' of data file ",
            manifest_.data_files(static_cast<int>(entry.data_file())).name(),
            ": duplicate name")));
      }
      *manifest_.add_tensors() = entry;
    }
    if (absl::Status status = WriteManifest(); !status.ok()) return status;
    base::StopPoint("writer.manifest_written");
    if (options_.sync) {
      if (absl::Status status = base::FsyncPath(temporary_); !status.ok()) {
        return Fail(status);
      }
    }
    return Fail(Publish());
  }

  proto::Metadata* mutable_metadata() { return manifest_.mutable_metadata(); }
  proto::TrainingState* mutable_training_state() {
    return manifest_.mutable_training_state();
  }
  const std::string& final_path() const { return final_path_; }
  const std::string& temporary_path() const { return temporary_; }

 private:
  // A tensor may still be added: no earlier failure, no commit yet.
  absl::Status CheckAddable() const {
    if (!error_.ok()) return error_;
    if (committed_) {
      return absl::FailedPreconditionError(
          absl::StrCat(final_path_, ": AddTensor after Commit"));
    }
    return absl::OkStatus();
  }

  std::string DataFileName(uint32_t index) const {
    char name[32];
    std::snprintf(name, sizeof(name), "data-%05u.bin", index);
    return base::JoinPath(temporary_, name);
  }

  absl::Status WriteManifest() {
    if (absl::Status status = ValidateExtensions(manifest_.training_state());
        !status.ok()) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat(final_path_, ": ", status.message())));
    }
    absl::StatusOr<std::string> encoded = EncodeManifestFile(manifest_);
    if (!encoded.ok()) {
      return Fail(absl::Status(
          encoded.status().code(),
          absl::StrCat(final_path_, ": ", encoded.status().message())));
    }
    std::string& serialized = *encoded;
    const std::string path = base::JoinPath(temporary_, kManifestFileName);
    int fd =
        ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) return Fail(base::ErrnoToStatus(errno, "creating", path));
    struct iovec iov;
    iov.iov_base = serialized.data();
    iov.iov_len = serialized.size();
    absl::Status status = WriteFully(fd, &iov, 1, path);
    if (status.ok() && options_.sync && ::fsync(fd) != 0) {
      status = base::ErrnoToStatus(errno, "fsync", path);
    }
    if (::close(fd) != 0 && status.ok()) {
      status = base::ErrnoToStatus(errno, "closing", path);
    }
    return Fail(status);
  }

  // The commit point: after this rename a reader of final_path_ sees the
  // new checkpoint; before it, the old one (or nothing).
  absl::Status Publish() {
    bool exchanged = false;
    if (::rename(temporary_.c_str(), final_path_.c_str()) != 0) {
      if (errno != EEXIST && errno != ENOTEMPTY) {
        return base::ErrnoToStatus(
            errno, absl::StrCat("renaming ", temporary_, " to"), final_path_);
      }
      if (::syscall(SYS_renameat2, AT_FDCWD, temporary_.c_str(), AT_FDCWD,
                    final_path_.c_str(), RENAME_EXCHANGE) != 0) {
        return base::ErrnoToStatus(
            errno,
            absl::StrCat("replacing (renameat2 RENAME_EXCHANGE) with ",
                         temporary_),
            final_path_);
      }
      exchanged = true;
    }
    // From here on the new checkpoint is in place: failures below must
    // not delete it.
    committed_ = true;
    absl::Status status;
    if (options_.sync) status = base::FsyncPath(parent_);
    if (exchanged) {
      // temporary_ now holds the previous checkpoint.
      absl::Status removed = base::RemoveTree(temporary_);
      if (!removed.ok()) {
        base::Warn(absl::StrCat(
            "checkpoint: could not remove the replaced checkpoint: ",
            removed.message()));
      }
    }
    return status;
  }

  // Records the first error, drops the temporary, and returns `status`.
  absl::Status Fail(absl::Status status) {
    if (status.ok() || committed_) return status;
    if (error_.ok()) error_ = status;
    Abort();
    return status;
  }

  void Abort() {
    data_.reset();
    if (!aborted_) {
      aborted_ = true;
      absl::Status removed = base::RemoveTree(temporary_);
      if (!removed.ok())
        base::Warn(absl::StrCat("checkpoint: ", removed.message()));
    }
  }

  const std::string final_path_;
  const std::string parent_;
  const std::string temporary_name_;
  const std::string temporary_;
  const WriterOptions options_;
  std::unique_ptr<DataFileWriter> data_;
  // Data files 1, 2, ... written by others (AddDataFile), and their tensors.
  std::vector<proto::DataFile> parts_;
  google::protobuf::RepeatedPtrField<proto::TensorEntry> adopted_tensors_;
  bool committed_ = false;
  bool aborted_ = false;
  absl::Status error_;
  proto::Manifest manifest_;
};

absl::StatusOr<std::unique_ptr<CheckpointWriter>> CheckpointWriter::Create(
    std::string final_path, WriterOptions options) {
  while (final_path.size() > 1 && final_path.back() == '/') {
    final_path.pop_back();
  }
  const size_t slash = final_path.rfind('/');
  std::string parent = slash == std::string::npos ? "."
                       : slash == 0               ? "/"
                                                  : final_path.substr(0, slash);
  std::string name =
      slash == std::string::npos ? final_path : final_path.substr(slash + 1);
  if (name.empty() || name == "." || name == "..") {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid checkpoint path '", final_path, "'"));
  }
  struct stat parent_stat;
  if (::stat(parent.c_str(), &parent_stat) != 0) {
    return base::ErrnoToStatus(errno, "checkpoint parent directory", parent);
  }
  if (!S_ISDIR(parent_stat.st_mode)) {
    return base::ErrnoToStatus(ENOTDIR, "checkpoint parent directory", parent);
  }

  std::string temporary_name;
  std::string temporary;
  for (int attempt = 0;; ++attempt) {
    temporary_name = base::TemporaryName(name);
    temporary = base::JoinPath(parent, temporary_name);
    if (::mkdir(temporary.c_str(), 0755) == 0) break;
    if (errno != EEXIST || attempt > 100) {
      return base::ErrnoToStatus(errno, "creating temporary directory",
                                 temporary);
    }
  }
  auto impl =
      std::make_unique<Impl>(final_path, parent, temporary_name, options);
  if (absl::Status status = impl->OpenDataFile(); !status.ok()) return status;
  return std::unique_ptr<CheckpointWriter>(
      new CheckpointWriter(std::move(impl)));
}

CheckpointWriter::CheckpointWriter(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}

CheckpointWriter::~CheckpointWriter() = default;

absl::Status CheckpointWriter::AddTensor(absl::string_view name,
                                         proto::DType dtype,
                                         absl::Span<const int64_t> shape,
                                         absl::Span<const char> bytes,
                                         absl::string_view saved_device) {
  return impl_->AddTensor(name, dtype, shape, bytes, saved_device);
}

absl::Status CheckpointWriter::AddTensorFrom(absl::string_view name,
                                             proto::DType dtype,
                                             absl::Span<const int64_t> shape,
                                             uint64_t size_bytes,
                                             TensorBytesSource source,
                                             absl::string_view saved_device) {
  return impl_->AddTensorFrom(name, dtype, shape, size_bytes, source,
                              saved_device);
}

proto::Metadata* CheckpointWriter::mutable_metadata() {
  return impl_->mutable_metadata();
}

proto::TrainingState* CheckpointWriter::mutable_training_state() {
  return impl_->mutable_training_state();
}

absl::Status CheckpointWriter::Commit() { return impl_->Commit(); }

const std::string& CheckpointWriter::final_path() const {
  return impl_->final_path();
}

const std::string& CheckpointWriter::temporary_path() const {
  return impl_->temporary_path();
}

absl::Status CheckpointWriter::AddDataFile(const DataFilePart& part) {
  return impl_->AddDataFile(part);
}

absl::StatusOr<int> RemoveStaleTemporaries(const std::string& directory) {
  return base::RemoveStaleTemporaries(directory);
}

}  // namespace checkpoint
