#include "checkpoint/tensors.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "ATen/Context.h"
#include "ATen/detail/CUDAHooksInterface.h"
#include "absl/functional/function_ref.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "c10/core/CPUAllocator.h"
#include "c10/core/Event.h"
#include "c10/core/StreamGuard.h"
#include "c10/core/impl/VirtualGuardImpl.h"
#include "checkpoint/huge_pages.h"
#include "checkpoint/interop/tensor_source.h"
#include "checkpoint/library_versions.h"
#include "checkpoint/memory_snapshot.h"
#include "checkpoint/reader.h"
#include "third_party/libtorch/torch_compat.h"
#include "tools/base/files.h"
#include "tools/base/status.h"
#include "tools/base/version.h"
#include "tools/base/warnings.h"
#include "torch/cuda.h"
#include "torch/types.h"
#include "torch/utils.h"
#include "torch/version.h"

namespace checkpoint {
namespace {

constexpr char kProducerTool[] = "ckpt_project";
constexpr const char* kProducerVersion = project::kVersion;

using base::Annotate;

absl::Status FromException(absl::string_view context,
                           const std::exception& error) {
  const auto* torch_error = dynamic_cast<const c10::Error*>(&error);
  return absl::InternalError(absl::StrCat(
      context, ": ",
      torch_error != nullptr ? torch_error->what_without_backtrace()
                             : error.what()));
}

std::optional<torch::Dtype> FromProtoDType(proto::DType dtype) {
  switch (dtype) {
    case proto::FLOAT32:
      return torch::kFloat32;
    case proto::FLOAT64:
      return torch::kFloat64;
    case proto::FLOAT16:
      return torch::kFloat16;
    case proto::BFLOAT16:
      return torch::kBFloat16;
    case proto::INT8:
      return torch::kInt8;
    case proto::UINT8:
      return torch::kUInt8;
    case proto::INT16:
      return torch::kInt16;
    case proto::INT32:
      return torch::kInt32;
    case proto::INT64:
      return torch::kInt64;
    case proto::BOOL:
      return torch::kBool;
    default:
      return std::nullopt;
  }
}

void FillMetadata(proto::Metadata* metadata) {
  if (metadata->producer().tool().empty()) {
    metadata->mutable_producer()->set_tool(kProducerTool);
  }
  // A tool of this project (train, export) names itself; the version is
  // the project's either way.
  if (metadata->producer().version().empty()) {
    metadata->mutable_producer()->set_version(kProducerVersion);
  }
  if (metadata->libtorch_version().empty()) {
    metadata->set_libtorch_version(TORCH_VERSION);
  }
  const at::CUDAHooksInterface& cuda = at::detail::getCUDAHooks();
  if (metadata->cuda_version().empty() && cuda.hasCUDART()) {
    metadata->set_cuda_version(CudaVersionString(cuda.versionCUDART()));
  }
  if (metadata->cudnn_version().empty() && cuda.hasCuDNN()) {
    metadata->set_cudnn_version(CudnnVersionString(cuda.versionCuDNN()));
  }
  if (metadata->host().empty()) {
    char host[256] = {};
    if (gethostname(host, sizeof(host) - 1) == 0) metadata->set_host(host);
  }
  if (metadata->created_unix_micros() == 0) {
    metadata->set_created_unix_micros(absl::ToUnixMicros(absl::Now()));
  }
}

int ThreadCount(int requested) {
  if (requested > 0) return requested;
  const int hardware = static_cast<int>(std::thread::hardware_concurrency());
  return std::clamp(hardware, 1, 8);
}

// Runs body(i) for every i in [0, count) on up to `threads` threads, the
// caller's included. `body` must not throw.
void ParallelFor(size_t count, int threads,
                 const std::function<void(size_t)>& body) {
  const size_t workers =
      std::min<size_t>(static_cast<size_t>(std::max(threads, 1)), count);
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next.fetch_add(1); i < count; i = next.fetch_add(1)) {
      body(i);
    }
  };
  std::vector<std::thread> pool;
  for (size_t t = 1; t < workers; ++t) pool.emplace_back(work);
  work();
  for (std::thread& thread : pool) thread.join();
}

// Memory that the pause of a write-protected save builds its lists in
// (names, tensors, ranges, MemorySnapshot::Prepare's work), mapped once and
// reused by every save, since one starts only after the one before has
// ended. It keeps malloc out of the pause: glibc's first request of 1 KiB
// or more consolidates every small block freed since (malloc_consolidate),
// which took 0.86-1.09 ms of a 20,000-tensor pause in the benchmark after
// its large set had been loaded and freed.
class ScratchMemory {
 public:
  ScratchMemory() = default;
  ~ScratchMemory() {
    if (data_ != nullptr) munmap(data_, capacity_);
  }
  ScratchMemory(const ScratchMemory&) = delete;
  ScratchMemory& operator=(const ScratchMemory&) = delete;

  // Room for `bytes` (Bytes<T> of each later Take), forgetting what was
  // taken before. The mapping grows (mremap) keeping the pages it has.
  // kResourceExhausted if no mapping can be had.
  absl::Status Reset(size_t bytes) {
    used_ = 0;
    if (bytes <= capacity_) return absl::OkStatus();
    // 4 KiB pages: a huge page faulted in for a small state made the first
    // pause of the 1 GiB set 4-5 ms longer here.
    const size_t rounded = (bytes + PageSize() - 1) / PageSize() * PageSize();
    void* data = data_ == nullptr
                     ? mmap(nullptr, rounded, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                     : mremap(data_, capacity_, rounded, MREMAP_MAYMOVE);
    if (data == MAP_FAILED) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "saving: mapping ", rounded, " bytes: ", std::strerror(errno)));
    }
    data_ = static_cast<char*>(data);
    capacity_ = rounded;
    return absl::OkStatus();
  }
  // Reset, with every page faulted in now: the saver's thread reserves
  // memory for the first save's pause, which would otherwise fault in
  // each page of its lists (about 0.3 ms for 20,000 tensors here).
  absl::Status Reserve(size_t bytes) {
    if (absl::Status status = Reset(bytes); !status.ok()) return status;
    if (madvise(data_, capacity_, MADV_POPULATE_WRITE) != 0) {
      // Before Linux 5.14: one write per page.
      for (size_t at = 0; at < capacity_; at += PageSize()) data_[at] = 0;
    }
    return absl::OkStatus();
  }
  template <typename T>
  static size_t Bytes(size_t count) {
    return alignof(T) - 1 + count * sizeof(T);
  }
  // Memory for `count` objects (not constructed), within what Reset made
  // room for.
  template <typename T>
  T* Take(size_t count) {
    used_ = (used_ + alignof(T) - 1) / alignof(T) * alignof(T);
    T* taken = reinterpret_cast<T*>(data_ + used_);
    used_ += count * sizeof(T);
    return taken;
  }

 private:
  char* data_ = nullptr;
  size_t capacity_ = 0;
  size_t used_ = 0;
};

// The tensors of one save, by index: a caller's NamedTensors, or the
// compact copy that a write-protected SaveAsync keeps, its names in one
// string (a separate copy of each name was most of the pause for 20,000
// small tensors).
class SaveList {
 public:
  // A view of the caller's list. With `devices` (DevicesOf: one per
  // tensor, or none), each tensor's saved_device is its entry there: a
  // snapshot copied to CPU still says where its tensors were.
  explicit SaveList(const NamedTensors& named,
                    const std::vector<std::string>* devices = nullptr)
      : named_(&named), devices_(devices) {}

  // A compact list shaped like `named`, filled by Copy, in `scratch`
  // (CompactBytes of it). Only the names' offsets are computed here: the
  // copies may be spread over threads.
  struct Compact {};
  static size_t CompactBytes(const NamedTensors& named) {
    size_t names = 0;
    for (const auto& [name, tensor] : named) names += name.size();
    return ScratchMemory::Bytes<size_t>(named.size()) +
           ScratchMemory::Bytes<torch::Tensor>(named.size()) +
           ScratchMemory::Bytes<char>(names);
  }
  SaveList(Compact, const NamedTensors& named, ScratchMemory& scratch)
      : count_(named.size()),
        name_ends_(scratch.Take<size_t>(named.size())),
        tensors_(scratch.Take<torch::Tensor>(named.size())) {
    size_t end = 0;
    for (size_t i = 0; i < count_; ++i) {
      end += named[i].first.size();
      name_ends_[i] = end;
      new (&tensors_[i]) torch::Tensor();
    }
    names_ = scratch.Take<char>(end);
  }
  ~SaveList() {
    for (size_t i = 0; i < count_; ++i) tensors_[i].~Tensor();
  }
  SaveList(const SaveList&) = delete;
  SaveList& operator=(const SaveList&) = delete;

  // Copies entry i of `named` (the list this one was shaped like) and
  // returns its tensor. Threads may copy different entries at once.
  torch::Tensor& Copy(const NamedTensors& named, size_t i) {
    const std::string& name = named[i].first;
    std::memcpy(names_ + NameBegin(i), name.data(), name.size());
    tensors_[i] = named[i].second;
    return tensors_[i];
  }

  size_t size() const { return named_ != nullptr ? named_->size() : count_; }
  absl::string_view name(size_t i) const {
    if (named_ != nullptr) return (*named_)[i].first;
    return absl::string_view(names_ + NameBegin(i),
                             name_ends_[i] - NameBegin(i));
  }
  const torch::Tensor& tensor(size_t i) const {
    return named_ != nullptr ? (*named_)[i].second : tensors_[i];
  }
  std::string saved_device(size_t i) const {
    return devices_ != nullptr && !devices_->empty() ? (*devices_)[i]
                                                     : tensor(i).device().str();
  }
  // Compact lists only.
  torch::Tensor& mutable_tensor(size_t i) { return tensors_[i]; }

 private:
  size_t NameBegin(size_t i) const { return i == 0 ? 0 : name_ends_[i - 1]; }

  const NamedTensors* named_ = nullptr;
  const std::vector<std::string>* devices_ = nullptr;
  // Compact lists: in ScratchMemory.
  size_t count_ = 0;
  size_t* name_ends_ = nullptr;
  torch::Tensor* tensors_ = nullptr;
  char* names_ = nullptr;  // all names, back to back
};

// The device of each tensor of `tensors` ("cpu", "cuda:0"), or nothing
// when all are on the CPU: what a snapshot copied to CPU records.
std::vector<std::string> DevicesOf(const NamedTensors& tensors) {
  std::vector<std::string> devices;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const torch::Tensor& tensor = tensors[i].second;
    if (devices.empty() && (!tensor.defined() || tensor.device().is_cpu())) {
      continue;
    }
    if (devices.empty()) devices.assign(i, "cpu");
    devices.push_back(tensor.defined() ? tensor.device().str() : "cpu");
  }
  return devices;
}

// Tensors of a save whose bytes are read through a MemorySnapshot (the
// values they had when it was taken).
struct ProtectedTensors {
  MemorySnapshot* snapshot;
  // By index in the saved tensors; bytes, not bits: threads set them.
  // In ScratchMemory.
  uint8_t* is_protected = nullptr;
};

// Copies from a GPU made on other threads run on those threads' current
// streams, the devices' default streams, while the caller's queued work
// may be on a stream of its own: make each default stream wait for the
// calling thread's current stream of the same device.
void DefaultStreamsWaitForCurrentOnes(const NamedTensors& tensors) {
  std::vector<torch::Device> devices;
  for (const auto& [name, tensor] : tensors) {
    if (tensor.defined() && tensor.is_cuda() &&
        std::find(devices.begin(), devices.end(), tensor.device()) ==
            devices.end()) {
      devices.push_back(tensor.device());
    }
  }
  if (devices.empty()) return;
  // Only now: a LibTorch without CUDA has no such guard.
  const c10::impl::VirtualGuardImpl cuda(c10::DeviceType::CUDA);
  for (const torch::Device& device : devices) {
    const c10::Stream current = cuda.getStream(device);
    const c10::Stream default_stream = cuda.getDefaultStream(device);
    if (current == default_stream) continue;
    c10::Event queued(c10::DeviceType::CUDA);
    queued.record(current);
    queued.block(default_stream);
  }
}

// Writes every tensor of `tensors` through `writer` (a CheckpointWriter or
// a DataFileWriter), one staging copy alive at a time.
template <typename Writer>
absl::Status AddTensorsOrThrow(const SaveList& tensors, Writer& writer,
                               const ProtectedTensors* protect = nullptr) {
  torch::NoGradGuard no_grad;
  std::vector<int64_t> shape;
  auto context = [&](size_t i) {
    return absl::StrCat("tensor '", tensors.name(i), "'");
  };
  // The tensor's proto dtype, or why it cannot be saved.
  auto check = [&](size_t i) -> absl::StatusOr<proto::DType> {
    const torch::Tensor& tensor = tensors.tensor(i);
    if (!tensor.defined()) {
      return absl::InvalidArgumentError(
          absl::StrCat(context(i), ": undefined tensor"));
    }
    if (tensor.layout() != torch::kStrided) {
      return absl::InvalidArgumentError(absl::StrCat(
          context(i), ": only dense (strided) tensors are supported"));
    }
    const proto::DType dtype = ToProtoDType(tensor.scalar_type());
    if (dtype == proto::DTYPE_UNSPECIFIED) {
      return absl::InvalidArgumentError(
          absl::StrCat(context(i), ": unsupported dtype ",
                       c10::toString(tensor.scalar_type())));
    }
    return dtype;
  };
  // Adds tensor i from `host`, its bytes in CPU memory.
  auto add = [&](size_t i, proto::DType dtype, const torch::Tensor& host) {
    const torch::Tensor& tensor = tensors.tensor(i);
    shape.assign(tensor.sizes().begin(), tensor.sizes().end());
    absl::Span<const char> bytes(static_cast<const char*>(host.data_ptr()),
                                 host.nbytes());
    return Annotate(writer.AddTensor(tensors.name(i), dtype, shape, bytes,
                                     tensors.saved_device(i)),
                    context(i));
  };
  // Adds tensor i as the snapshot holds it.
  auto add_protected = [&](size_t i, proto::DType dtype) {
    const torch::Tensor& tensor = tensors.tensor(i);
    shape.assign(tensor.sizes().begin(), tensor.sizes().end());
    const char* data = static_cast<const char*>(tensor.data_ptr());
    auto source = [&](uint64_t offset, absl::Span<char> out) {
      return protect->snapshot->Read(data + offset, out);
    };
    return Annotate(
        writer.AddTensorFrom(tensors.name(i), dtype, shape, tensor.nbytes(),
                             source, tensors.saved_device(i)),
        context(i));
  };
  // GPU tensors reach the host through pinned memory (LibTorch's caching
  // host allocator keeps it for the next tensors and saves), copied with
  // non_blocking copies: the copy of the next GPU piece is queued before
  // the current one is hashed and written, so the two overlap. Small GPU
  // tensors of one dtype go in groups: one concatenation on the device and
  // one copy, instead of a copy per tensor, which is what 20,000 small
  // tensors cost.
  constexpr int64_t kGroupedTensorBytes = int64_t{1} << 20;
  constexpr int64_t kGroupBytes = int64_t{16} << 20;
  auto groupable = [&](size_t i) {
    const torch::Tensor& tensor = tensors.tensor(i);
    return check(i).ok() && tensor.is_cuda() && tensor.is_contiguous() &&
           static_cast<int64_t>(tensor.nbytes()) < kGroupedTensorBytes;
  };
  // Tensors [begin, end) being copied into `host`, one after another.
  struct Staged {
    size_t begin;
    size_t end;
    torch::Tensor host;
    std::unique_ptr<c10::Event> copied;
  };
  // Queues the copy of the GPU tensor i (and the group it starts).
  auto stage = [&](size_t i) {
    const torch::Tensor& tensor = tensors.tensor(i);
    Staged staged{i, i + 1, torch::Tensor(), nullptr};
    torch::Tensor source = tensor;
    if (groupable(i)) {
      int64_t bytes = tensor.nbytes();
      while (
          staged.end < tensors.size() && groupable(staged.end) &&
          tensors.tensor(staged.end).device() == tensor.device() &&
          tensors.tensor(staged.end).scalar_type() == tensor.scalar_type() &&
          bytes + static_cast<int64_t>(tensors.tensor(staged.end).nbytes()) <=
              kGroupBytes) {
        bytes += tensors.tensor(staged.end).nbytes();
        ++staged.end;
      }
      if (staged.end > i + 1) {
        std::vector<torch::Tensor> flat;
        for (size_t k = i; k < staged.end; ++k) {
          flat.push_back(tensors.tensor(k).reshape({-1}));
        }
        source = torch::cat(flat);
      }
    }
    staged.host = torch::empty(
        source.sizes(),
        torch::TensorOptions().dtype(source.scalar_type()).pinned_memory(true));
    staged.host.copy_(source, /*non_blocking=*/true);
    staged.copied = std::make_unique<c10::Event>(c10::DeviceType::CUDA);
    staged.copied->record(c10::impl::VirtualGuardImpl(c10::DeviceType::CUDA)
                              .getStream(tensor.device()));
    return staged;
  };
  std::optional<Staged> next;  // queued ahead
  for (size_t i = 0; i < tensors.size();) {
    absl::StatusOr<proto::DType> dtype = check(i);
    if (!dtype.ok()) return dtype.status();
    const torch::Tensor& tensor = tensors.tensor(i);
    if (tensor.is_cuda()) {
      Staged current = next && next->begin == i ? *std::move(next) : stage(i);
      next.reset();
      if (current.end < tensors.size() && check(current.end).ok() &&
          tensors.tensor(current.end).is_cuda()) {
        next = stage(current.end);
      }
      torch_compat::SynchronizeEvent(*current.copied);
      const torch::Tensor flat = current.host.reshape({-1});
      int64_t offset = 0;
      for (size_t k = current.begin; k < current.end; ++k) {
        const int64_t numel = tensors.tensor(k).numel();
        if (absl::Status added = add(k, *dtype, flat.narrow(0, offset, numel));
            !added.ok()) {
          return added;
        }
        offset += numel;
      }
      i = current.end;
      continue;
    }
    if (protect != nullptr && protect->is_protected[i]) {
      if (absl::Status added = add_protected(i, *dtype); !added.ok()) {
        return added;
      }
      ++i;
      continue;
    }
    // Only this tensor's staging copy is alive at a time.
    torch::Tensor host = tensor;
    if (!tensor.device().is_cpu() || !tensor.is_contiguous()) {
      host = tensor.to(torch::kCPU).contiguous();
    }
    if (absl::Status added = add(i, *dtype, host); !added.ok()) return added;
    ++i;
  }
  return absl::OkStatus();
}

absl::Status SaveCheckpointOrThrow(const std::string& path,
                                   const proto::Metadata& metadata,
                                   const proto::TrainingState& training_state,
                                   const SaveList& tensors,
                                   WriterOptions options,
                                   const BeforeCommit& before_commit,
                                   const ProtectedTensors* protect) {
  absl::StatusOr<std::unique_ptr<CheckpointWriter>> writer =
      CheckpointWriter::Create(path, options);
  if (!writer.ok()) return writer.status();
  *(*writer)->mutable_metadata() = metadata;
  FillMetadata((*writer)->mutable_metadata());
  *(*writer)->mutable_training_state() = training_state;
  if (absl::Status status = AddTensorsOrThrow(tensors, **writer, protect);
      !status.ok()) {
    return status;
  }
  if (before_commit) {
    if (absl::Status status = before_commit(**writer); !status.ok()) {
      return status;
    }
  }
  return (*writer)->Commit();
}

absl::StatusOr<DataFilePart> WriteDataFileOrThrow(const std::string& path,
                                                  const NamedTensors& tensors,
                                                  WriterOptions options) {
  absl::StatusOr<std::unique_ptr<DataFileWriter>> writer =
      DataFileWriter::Create(path, options);
  if (!writer.ok()) return writer.status();
  if (absl::Status status = AddTensorsOrThrow(SaveList(tensors), **writer);
      !status.ok()) {
    return status;
  }
  return (*writer)->Finish();
}

absl::Status CheckDevice(const torch::Device& device) {
  if (device.is_cpu()) return absl::OkStatus();
  if (!device.is_cuda()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unsupported device '", device.str(), "': use cpu or cuda:N"));
  }
  if (!torch::cuda::is_available()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot load onto ", device.str(),
        ": CUDA is not available (this LibTorch has no CUDA support or no "
        "GPU is visible); load onto cpu instead"));
  }
  const int64_t count = torch_compat::CudaDeviceCount();
  if (device.has_index() && device.index() >= count) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot load onto ", device.str(), ": only ", count,
                     " CUDA device(s) are visible"));
  }
  return absl::OkStatus();
}

// The bytes from one tensor's start to the next one's in a block of
// several (LibTorch's CPU allocator aligns to 64 bytes too).
size_t AlignedSize(uint64_t bytes) {
  return (bytes + kTensorAlignment - 1) / kTensorAlignment * kTensorAlignment;
}

// The bytes of a contiguous tensor of `dtype` and `shape`.
size_t ShapeBytes(torch::Dtype dtype, torch::IntArrayRef shape) {
  return static_cast<size_t>(c10::multiply_integers(shape)) *
         c10::elementSize(dtype);
}

// CPU tensors over pieces of one block of memory, each with a storage of
// its own, so that each is saved, resized and freed as if it were alone.
// The block's owner is let go with the last of them. For a batch of small
// tensors this replaces a posix_memalign and a free per tensor, which for
// 20,000 tensors of 4 KiB cost glibc about as much as reading them (perf
// of a warm load: 16% of its time allocating, 14% freeing, 21% reading).
// torch::from_blob would also cost a heap-allocated deleter and a second
// TensorImpl per tensor (it hands make_variable an lvalue, which copies).
// Thread-safe: Make may run on several threads at once.
class BlockTensors {
 public:
  // `resizable`: a tensor resized beyond its piece moves to memory of
  // LibTorch's CPU allocator (as one from torch::empty would); without
  // it, resizing throws (a read-only mapping must never be written).
  BlockTensors(std::shared_ptr<const void> owner, bool resizable)
      : shared_(new Shared{std::move(owner), {1}}), resizable_(resizable) {}
  ~BlockTensors() { Release(shared_); }
  BlockTensors(const BlockTensors&) = delete;
  BlockTensors& operator=(const BlockTensors&) = delete;

  // A contiguous tensor of `dtype` and `shape` at `data`, inside the block.
  torch::Tensor Make(const void* data, torch::Dtype dtype,
                     torch::IntArrayRef shape) const {
    const size_t bytes = ShapeBytes(dtype, shape);
    shared_->users.fetch_add(1, std::memory_order_relaxed);
    // From here on the DataPtr releases the user it was given.
    c10::DataPtr data_ptr(const_cast<void*>(data), shared_, &Release,
                          c10::Device(c10::kCPU));
    c10::Storage storage(
        c10::Storage::use_byte_size_t(), bytes, std::move(data_ptr),
        resizable_ ? c10::GetCPUAllocator() : nullptr, resizable_);
    torch::Tensor tensor = at::detail::make_tensor<c10::TensorImpl>(
        std::move(storage), c10::DispatchKeySet(c10::DispatchKey::CPU),
        c10::scalarTypeToTypeMeta(dtype));
    tensor.unsafeGetTensorImpl()->set_sizes_contiguous(shape);
    return tensor;
  }

 private:
  struct Shared {
    std::shared_ptr<const void> owner;
    std::atomic<size_t> users;
  };
  static void Release(void* context) {
    Shared* shared = static_cast<Shared*>(context);
    if (shared->users.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      delete shared;
    }
  }
  Shared* shared_;
  bool resizable_;
};

// A CPU tensor of `dtype` and `shape` on memory of its own, mapped on
// huge pages (MapHugePages): a write-protected snapshot of it protects one
// page-table entry per 2 MiB. Resizable like one from torch::empty.
// kResourceExhausted if no mapping can be had (memory, the process's map
// count).
absl::StatusOr<torch::Tensor> HugePagesTensor(torch::Dtype dtype,
                                              torch::IntArrayRef shape) {
  const size_t bytes = ShapeBytes(dtype, shape);
  ASSIGN_OR_RETURN(char* memory, MapHugePages(bytes));
  std::shared_ptr<char> owner(
      memory, [bytes](char* data) { UnmapHugePages(data, bytes); });
  return BlockTensors(std::move(owner), /*resizable=*/true)
      .Make(memory, dtype, shape);
}

// The dtype a loaded tensor ends with: LoadOptions::dtype casts the
// floating-point model tensors.
torch::Dtype LoadedDtype(const LoadOptions& options, const std::string& name,
                         torch::Dtype saved) {
  if (options.dtype && torch::isFloatingType(saved) &&
      !IsTrainingStateName(name)) {
    return *options.dtype;
  }
  return saved;
}

// A CPU tensor for a load to fill. One of 2 MiB or more that the load
// hands over as it is (on the CPU, not cast) goes on huge pages
// (LoadOptions::huge_pages), else where LibTorch's allocator puts it.
torch::Tensor NewLoadedTensor(const LoadOptions& options,
                              const std::string& name, torch::Dtype dtype,
                              torch::IntArrayRef shape) {
  const size_t bytes = ShapeBytes(dtype, shape);
  if (options.huge_pages && options.device.is_cpu() &&
      bytes >= kHugePageBytes && LoadedDtype(options, name, dtype) == dtype) {
    absl::StatusOr<torch::Tensor> huge = HugePagesTensor(dtype, shape);
    // Without a mapping (the process's map count), the allocator's memory.
    if (huge.ok()) return *std::move(huge);
  }
  return torch::empty(shape, torch::TensorOptions().dtype(dtype));
}

// Phase 2 of a load, in order: the first error wins; then casts and device
// moves of the tensors that phase 1 left in `state`, named and on CPU (or
// on the device already, ReadOntoDevice). Phase 1 names them too, in
// parallel: copying 20,000 names here, after the reads, took 3 ms.
absl::Status FinishLoad(const std::vector<absl::Status>& errors,
                        const LoadOptions& options, CheckpointState* state) {
  for (const absl::Status& error : errors) {
    if (!error.ok()) return error;
  }
  for (auto& [name, tensor] : state->tensors) {
    const torch::Dtype saved_dtype = tensor.scalar_type();
    const torch::Dtype dtype = LoadedDtype(options, name, saved_dtype);
    if (!tensor.device().is_cpu()) {
      if (dtype != saved_dtype) tensor = tensor.to(dtype);
    } else if (!options.device.is_cpu() || dtype != saved_dtype) {
      // copy=true: never a view of the read-only mapping.
      tensor = tensor.to(options.device, dtype, /*non_blocking=*/false,
                         /*copy=*/true);
    }
  }
  return absl::OkStatus();
}

// A .pt/.ckpt or safetensors file (interop/tensor_source.h): its tensors
// under the project's names, its values in the metadata. Integrity is what
// the format allows (TensorSource::Verify); nothing in it is executed.
absl::StatusOr<CheckpointState> LoadForeignOrThrow(const std::string& path,
                                                   const LoadOptions& options) {
  interop::SourceOptions source_options;
  source_options.lenient = options.lenient;
  absl::StatusOr<std::unique_ptr<interop::TensorSource>> opened =
      interop::TensorSource::Open(path, source_options);
  if (!opened.ok()) return opened.status();
  std::shared_ptr<const interop::TensorSource> source = *std::move(opened);
  CheckpointState state;
  state.metadata = interop::ForeignMetadata(*source);
  const size_t count = source->tensors().size();
  state.tensors.resize(count);
  std::vector<absl::Status> errors(count);
  std::optional<BlockTensors> mapped;
  if (options.use_mmap) mapped.emplace(source, /*resizable=*/false);
  ParallelFor(count, ThreadCount(options.num_threads), [&](size_t i) {
    const interop::SourceTensor& tensor = source->tensors()[i];
    state.tensors[i].first = tensor.name;
    torch::Tensor& loaded = state.tensors[i].second;
    const std::string context = absl::StrCat("tensor '", tensor.name, "'");
    std::optional<torch::Dtype> dtype;
    if (tensor.checkpoint_dtype)
      dtype = FromProtoDType(*tensor.checkpoint_dtype);
    if (tensor.dtype == "complex64") dtype = torch::kComplexFloat;
    if (tensor.dtype == "complex128") dtype = torch::kComplexDouble;
    if (!dtype) {
      errors[i] = absl::FailedPreconditionError(absl::StrCat(
          context, ": dtype ", tensor.dtype,
          " is not supported by LoadCheckpoint (convert or drop it with "
          "`ckpt convert --rename`)"));
      return;
    }
    try {
      std::string scratch;
      absl::StatusOr<absl::string_view> bytes =
          source->TensorBytes(i, &scratch);
      if (!bytes.ok()) {
        errors[i] = Annotate(bytes.status(), context);
        return;
      }
      if (options.use_mmap && scratch.empty() && !bytes->empty() &&
          reinterpret_cast<uintptr_t>(bytes->data()) %
                  c10::elementSize(*dtype) ==
              0) {
        // They hold the file's mapping.
        loaded = mapped->Make(bytes->data(), *dtype, tensor.shape);
      } else {
        loaded = NewLoadedTensor(options, tensor.name, *dtype, tensor.shape);
        if (!bytes->empty()) {
          std::memcpy(loaded.data_ptr(), bytes->data(), bytes->size());
        }
      }
    } catch (const std::exception& error) {
      errors[i] = FromException(context, error);
    }
  });
  RETURN_IF_ERROR(FinishLoad(errors, options, &state));
  return state;
}

// The dtype and shape of a tensor of our manifest. The reader validated
// dtypes already; this guards against a reader newer than this mapping.
absl::StatusOr<torch::Dtype> EntryDtype(const proto::TensorEntry& entry) {
  std::optional<torch::Dtype> dtype = FromProtoDType(entry.dtype());
  if (!dtype) {
    return absl::DataLossError(absl::StrCat(
        "tensor '", entry.name(), "': unsupported dtype ", entry.dtype()));
  }
  return *dtype;
}
// A view of the entry's own dimensions: a copy was a malloc per tensor.
torch::IntArrayRef EntryShape(const proto::TensorEntry& entry) {
  return torch::IntArrayRef(entry.shape().data(), entry.shape_size());
}

// Tensors larger than this go to a device in chunks of this size.
constexpr int64_t kMaxStagingBytes = int64_t{64} << 20;

// A tensor of `dtype` and `shape` over `bytes` of `storage` from byte
// `offset` (a multiple of the element size).
torch::Tensor ViewOfStorage(const torch::Tensor& storage, int64_t offset,
                            torch::Dtype dtype, torch::IntArrayRef shape) {
  return torch::empty({0}, storage.options().dtype(dtype))
      .set_(storage.storage(), offset / c10::elementSize(dtype), shape);
}

// Reads the tensors `entries` onto `device` through pinned host memory,
// into the tensors of `out` (same order). A batch shares one staging block:
// it is read and verified there, then copied with non_blocking copies
// queued on the current stream, so that the device copies one batch while
// the next is read. LibTorch's caching host allocator keeps the block from
// reuse until those copies have run. A tensor larger than kMaxStagingBytes goes
// through in chunks (copied as they come, verified at its end).
absl::Status ReadOntoDevice(const CheckpointReader& reader,
                            absl::Span<const proto::TensorEntry* const> entries,
                            torch::Device device,
                            absl::Span<NamedTensors::value_type> out) {
  const auto pinned =
      torch::TensorOptions().dtype(torch::kByte).pinned_memory(true);
  if (entries.size() == 1 &&
      static_cast<int64_t>(entries[0]->size_bytes()) > kMaxStagingBytes) {
    const proto::TensorEntry& entry = *entries[0];
    ASSIGN_OR_RETURN(const torch::Dtype dtype, EntryDtype(entry));
    out[0].second = torch::empty(
        EntryShape(entry), torch::TensorOptions().dtype(dtype).device(device));
    const torch::Tensor bytes =
        ViewOfStorage(out[0].second, 0, torch::kByte,
                      {out[0].second.numel() * out[0].second.element_size()});
    int64_t done = 0;
    return reader.ReadTensorChunks(
        entry, kMaxStagingBytes, [&](absl::Span<const char> chunk) {
          const int64_t size = static_cast<int64_t>(chunk.size());
          torch::Tensor staging = torch::empty({size}, pinned);
          std::memcpy(staging.data_ptr(), chunk.data(), chunk.size());
          bytes.narrow(0, done, size).copy_(staging, /*non_blocking=*/true);
          done += size;
          return absl::OkStatus();
        });
  }
  std::vector<int64_t> offsets;
  int64_t total = 0;
  for (const proto::TensorEntry* entry : entries) {
    offsets.push_back(total);
    total += static_cast<int64_t>(AlignedSize(entry->size_bytes()));
  }
  const torch::Tensor staging = torch::empty({total}, pinned);
  std::vector<absl::Span<char>> destinations;
  for (size_t k = 0; k < entries.size(); ++k) {
    destinations.emplace_back(
        static_cast<char*>(staging.data_ptr()) + offsets[k],
        entries[k]->size_bytes());
  }
  RETURN_IF_ERROR(reader.ReadTensors(entries, destinations));
  for (size_t k = 0; k < entries.size(); ++k) {
    ASSIGN_OR_RETURN(const torch::Dtype dtype, EntryDtype(*entries[k]));
    const torch::IntArrayRef shape = EntryShape(*entries[k]);
    out[k].second =
        torch::empty(shape, torch::TensorOptions().dtype(dtype).device(device));
    // A view of the staging storage, not from_blob: the host allocator
    // tracks the copy by the storage it reads.
    out[k].second.copy_(ViewOfStorage(staging, offsets[k], dtype, shape),
                        /*non_blocking=*/true);
  }
  return absl::OkStatus();
}

absl::StatusOr<CheckpointState> LoadCheckpointOrThrow(
    const std::string& path, const LoadOptions& options) {
  struct stat info;
  if (::stat(path.c_str(), &info) == 0 && !S_ISDIR(info.st_mode)) {
    return LoadForeignOrThrow(path, options);
  }
  ReaderOptions reader_options;
  reader_options.verify_checksums = options.verify_checksums;
  reader_options.use_mmap = options.use_mmap;
  absl::StatusOr<std::unique_ptr<CheckpointReader>> reader =
      CheckpointReader::Open(path, reader_options);
  if (!reader.ok()) return reader.status();
  const proto::Manifest& manifest = (*reader)->manifest();
  CheckpointState state;
  state.metadata = manifest.metadata();
  state.training_state = manifest.training_state();
  std::optional<BlockTensors> mapped;
  if (options.use_mmap) {
    mapped.emplace((*reader)->mapping_owner(), /*resizable=*/false);
  }
  const int count = manifest.tensors_size();
  state.tensors.resize(count);
  std::vector<absl::Status> errors(count);
  // Phase 1, in parallel: read (or map) and verify every tensor on CPU, in
  // batches: a run of small tensors is read with one call (ReadTensors).
  constexpr int64_t kSmallTensorBytes = int64_t{64} << 10;
  std::vector<std::pair<int, int>> batches;  // [first, end)
  for (int i = 0; i < count;) {
    int end = i + 1;
    int64_t bytes = manifest.tensors(i).size_bytes();
    if (!options.use_mmap && bytes < kSmallTensorBytes) {
      while (end < count && end - i < static_cast<int>(kMaxReadRunTensors) &&
             manifest.tensors(end).size_bytes() < kSmallTensorBytes &&
             bytes + manifest.tensors(end).size_bytes() <= kMaxReadRunBytes) {
        bytes += manifest.tensors(end).size_bytes();
        ++end;
      }
    }
    batches.emplace_back(i, end);
    i = end;
  }
  // Onto a GPU (read into pinned memory, copied as batches are read) on
  // the caller's current stream, so its work after the load is ordered
  // after the copies.
  const bool onto_device = options.device.is_cuda() && !options.use_mmap;
  std::optional<c10::Stream> stream;
  if (onto_device) {
    stream = c10::impl::VirtualGuardImpl(c10::DeviceType::CUDA)
                 .getStream(options.device);
  }
  ParallelFor(batches.size(), ThreadCount(options.num_threads), [&](size_t b) {
    const auto [first, end] = batches[b];
    if (onto_device) {
      const c10::StreamGuard on_callers_stream(*stream);
      std::vector<const proto::TensorEntry*> entries;
      for (int i = first; i < end; ++i) {
        entries.push_back(&manifest.tensors(i));
        state.tensors[i].first = manifest.tensors(i).name();
      }
      try {
        errors[first] = ReadOntoDevice(
            **reader, entries, options.device,
            absl::MakeSpan(state.tensors).subspan(first, end - first));
      } catch (const std::exception& error) {
        errors[first] = FromException(
            absl::StrCat("tensor '", manifest.tensors(first).name(), "'"),
            error);
      }
      return;
    }
    std::vector<const proto::TensorEntry*> entries;
    std::vector<absl::Span<char>> destinations;
    // A batch of small tensors is read into one block (BlockTensors).
    std::optional<BlockTensors> block;
    char* block_at = nullptr;
    if (!options.use_mmap && end - first > 1) {
      size_t total = 0;
      for (int i = first; i < end; ++i) {
        total += AlignedSize(manifest.tensors(i).size_bytes());
      }
      try {
        auto memory = std::make_shared<c10::DataPtr>(
            c10::GetCPUAllocator()->allocate(total));
        block_at = static_cast<char*>(memory->get());
        block.emplace(std::move(memory), /*resizable=*/true);
      } catch (const std::exception& error) {
        errors[first] = FromException(
            absl::StrCat("allocating ", total, " bytes for tensor '",
                         manifest.tensors(first).name(), "' and the ",
                         end - first - 1, " after it"),
            error);
        return;
      }
    }
    for (int i = first; i < end; ++i) {
      const proto::TensorEntry& entry = manifest.tensors(i);
      state.tensors[i].first = entry.name();
      torch::Tensor& loaded = state.tensors[i].second;
      // Only on an error: building it for each of 20,000 small tensors
      // shows in their load.
      auto context = [&entry] {
        return absl::StrCat("tensor '", entry.name(), "'");
      };
      try {
        absl::StatusOr<torch::Dtype> dtype = EntryDtype(entry);
        if (!dtype.ok()) {
          errors[i] = dtype.status();
          return;
        }
        const torch::IntArrayRef shape = EntryShape(entry);
        if (options.use_mmap && entry.size_bytes() > 0) {
          absl::StatusOr<absl::Span<const char>> view =
              (*reader)->MappedTensor(entry);
          if (!view.ok()) {
            errors[i] = Annotate(view.status(), context());
            return;
          }
          // They hold the mapping: the view outlives the reader.
          loaded = mapped->Make(view->data(), *dtype, shape);
        } else if (block) {
          loaded = block->Make(block_at, *dtype, shape);
          block_at += AlignedSize(entry.size_bytes());
          entries.push_back(&entry);
          destinations.emplace_back(static_cast<char*>(loaded.data_ptr()),
                                    loaded.nbytes());
        } else {
          loaded = NewLoadedTensor(options, entry.name(), *dtype, shape);
          entries.push_back(&entry);
          destinations.emplace_back(static_cast<char*>(loaded.data_ptr()),
                                    loaded.nbytes());
        }
      } catch (const std::exception& error) {
        errors[i] = FromException(context(), error);
        return;
      }
    }
    if (!entries.empty()) {
      // The reader names the tensor in its errors.
      errors[first] = (*reader)->ReadTensors(entries, destinations);
    }
  });
  RETURN_IF_ERROR(FinishLoad(errors, options, &state));
  return state;
}

}  // namespace

proto::DType ToProtoDType(torch::Dtype dtype) {
  switch (dtype) {
    case torch::kFloat32:
      return proto::FLOAT32;
    case torch::kFloat64:
      return proto::FLOAT64;
    case torch::kFloat16:
      return proto::FLOAT16;
    case torch::kBFloat16:
      return proto::BFLOAT16;
    case torch::kInt8:
      return proto::INT8;
    case torch::kUInt8:
      return proto::UINT8;
    case torch::kInt16:
      return proto::INT16;
    case torch::kInt32:
      return proto::INT32;
    case torch::kInt64:
      return proto::INT64;
    case torch::kBool:
      return proto::BOOL;
    default:
      return proto::DTYPE_UNSPECIFIED;
  }
}

namespace {

absl::Status SaveCheckpointFrom(const std::string& path,
                                const proto::Metadata& metadata,
                                const proto::TrainingState& training_state,
                                const SaveList& tensors, WriterOptions options,
                                const BeforeCommit& before_commit,
                                const ProtectedTensors* protect) {
  const std::string context = absl::StrCat("saving checkpoint ", path);
  try {
    return Annotate(
        SaveCheckpointOrThrow(path, metadata, training_state, tensors, options,
                              before_commit, protect),
        context);
  } catch (const std::exception& error) {
    return FromException(context, error);
  }
}

}  // namespace

absl::Status SaveCheckpoint(const std::string& path,
                            const CheckpointState& state, WriterOptions options,
                            const BeforeCommit& before_commit) {
  return SaveCheckpointFrom(path, state.metadata, state.training_state,
                            SaveList(state.tensors), options, before_commit,
                            nullptr);
}

absl::StatusOr<DataFilePart> WriteDataFile(const std::string& path,
                                           const NamedTensors& tensors,
                                           WriterOptions options) {
  const std::string context = absl::StrCat("writing data file ", path);
  try {
    absl::StatusOr<DataFilePart> part =
        WriteDataFileOrThrow(path, tensors, options);
    if (!part.ok()) return Annotate(part.status(), context);
    return part;
  } catch (const std::exception& error) {
    return FromException(context, error);
  }
}

absl::StatusOr<CheckpointState> LoadCheckpoint(const std::string& path,
                                               const LoadOptions& options) {
  const std::string context = absl::StrCat("loading checkpoint ", path);
  absl::Status valid = CheckDevice(options.device);
  if (!valid.ok()) return Annotate(valid, context);
  if (options.dtype && !torch::isFloatingType(*options.dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        context, ": the dtype to cast to must be floating point, not ",
        c10::toString(*options.dtype)));
  }
  try {
    absl::StatusOr<CheckpointState> state =
        LoadCheckpointOrThrow(path, options);
    if (!state.ok()) return Annotate(state.status(), context);
    return state;
  } catch (const std::exception& error) {
    return FromException(context, error);
  }
}

class StagingBuffer {
 public:
  static absl::StatusOr<std::shared_ptr<StagingBuffer>> Allocate(size_t bytes) {
    bytes = std::max<size_t>(bytes, 1);
    // MAP_POPULATE faults every page in one kernel call: far cheaper than
    // one fault per 4 KiB page on first touch during the copy.
    void* data = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (data == MAP_FAILED) {
      return absl::ResourceExhaustedError(
          absl::StrCat("allocating ", bytes,
                       " bytes of snapshot memory: ", std::strerror(errno)));
    }
    return std::shared_ptr<StagingBuffer>(
        new StagingBuffer(static_cast<char*>(data), bytes));
  }
  ~StagingBuffer() { munmap(data_, size_); }
  StagingBuffer(const StagingBuffer&) = delete;
  StagingBuffer& operator=(const StagingBuffer&) = delete;

  char* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  StagingBuffer(char* data, size_t size) : data_(data), size_(size) {}
  char* data_;
  size_t size_;
};

namespace {

// Copies `size` bytes as pieces of at most kPiece bytes spread over the
// ParallelFor threads, so one large tensor uses every thread too.
struct CopyPiece {
  size_t tensor;
  size_t offset;
  size_t size;
};
constexpr size_t kCopyPieceBytes = size_t{4} << 20;

}  // namespace

absl::StatusOr<CheckpointState> SnapshotToCpu(
    const CheckpointState& state, std::shared_ptr<StagingBuffer>* staging) {
  CheckpointState snapshot;
  snapshot.metadata = state.metadata;
  snapshot.training_state = state.training_state;
  const size_t count = state.tensors.size();
  std::vector<size_t> offsets(count);
  size_t total = 0;
  for (size_t i = 0; i < count; ++i) {
    const torch::Tensor& tensor = state.tensors[i].second;
    if (!tensor.defined()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "snapshot of tensor '", state.tensors[i].first, "': undefined"));
    }
    if (tensor.layout() != torch::kStrided) {
      return absl::InvalidArgumentError(
          absl::StrCat("snapshot of tensor '", state.tensors[i].first,
                       "': only dense (strided) tensors are supported"));
    }
    offsets[i] = total;
    total += AlignedSize(tensor.nbytes());
  }
  std::shared_ptr<StagingBuffer> buffer;
  if (staging != nullptr && *staging != nullptr && staging->use_count() == 1 &&
      (*staging)->size() >= total) {
    buffer = *staging;
  } else {
    if (staging != nullptr) staging->reset();  // Free before allocating.
    absl::StatusOr<std::shared_ptr<StagingBuffer>> allocated =
        StagingBuffer::Allocate(total);
    if (!allocated.ok()) return allocated.status();
    buffer = std::move(*allocated);
  }
  try {
    std::vector<torch::Tensor> copies(count);
    std::vector<CopyPiece> pieces;
    // They keep the buffer from reuse as long as any of them lives.
    const BlockTensors block(buffer, /*resizable=*/false);
    for (size_t i = 0; i < count; ++i) {
      const torch::Tensor& tensor = state.tensors[i].second;
      copies[i] = block.Make(buffer->data() + offsets[i], tensor.scalar_type(),
                             tensor.sizes());
      if (tensor.device().is_cpu() && tensor.is_contiguous()) {
        for (size_t done = 0; done < tensor.nbytes(); done += kCopyPieceBytes) {
          pieces.push_back(
              {i, done, std::min(kCopyPieceBytes, tensor.nbytes() - done)});
        }
      } else {
        pieces.push_back({i, 0, 0});  // size 0: a LibTorch copy_.
      }
    }
    DefaultStreamsWaitForCurrentOnes(state.tensors);
    std::vector<absl::Status> errors(pieces.size());
    ParallelFor(pieces.size(), ThreadCount(0), [&](size_t p) {
      const CopyPiece& piece = pieces[p];
      const torch::Tensor& tensor = state.tensors[piece.tensor].second;
      if (piece.size > 0) {
        std::memcpy(buffer->data() + offsets[piece.tensor] + piece.offset,
                    static_cast<const char*>(tensor.data_ptr()) + piece.offset,
                    piece.size);
        return;
      }
      try {
        torch::NoGradGuard no_grad;
        copies[piece.tensor].copy_(tensor);
      } catch (const std::exception& error) {
        errors[p] =
            FromException(absl::StrCat("snapshot of tensor '",
                                       state.tensors[piece.tensor].first, "'"),
                          error);
      }
    });
    for (const absl::Status& error : errors) {
      if (!error.ok()) return error;
    }
    snapshot.tensors.reserve(count);
    for (size_t i = 0; i < count; ++i) {
      snapshot.tensors.emplace_back(state.tensors[i].first,
                                    std::move(copies[i]));
    }
  } catch (const std::exception& error) {
    return FromException("snapshot of checkpoint tensors", error);
  }
  if (staging != nullptr) *staging = std::move(buffer);
  return snapshot;
}

absl::StatusOr<HugePagesMoved> MoveToHugePages(const NamedTensors& tensors) {
  HugePagesMoved result;
  // The memory of tensors left where they are, collapsed in place.
  std::vector<std::pair<uintptr_t, uintptr_t>> left;
  try {
    torch::NoGradGuard no_grad;
    for (const auto& [name, tensor] : tensors) {
      if (!tensor.defined() || tensor.layout() != torch::kStrided ||
          !tensor.device().is_cpu() || tensor.nbytes() == 0) {
        continue;
      }
      const uintptr_t data = reinterpret_cast<uintptr_t>(tensor.data_ptr());
      if (!tensor.is_contiguous() || tensor.nbytes() < kHugePageBytes ||
          tensor.storage_offset() != 0 ||
          tensor.storage().nbytes() != tensor.nbytes() ||
          tensor.storage().use_count() != 1 || data % kHugePageBytes == 0) {
        left.emplace_back(data, data + tensor.nbytes());
        continue;
      }
      const size_t bytes = tensor.nbytes();
      absl::StatusOr<torch::Tensor> huge =
          HugePagesTensor(tensor.scalar_type(), tensor.sizes());
      if (!huge.ok()) {
        return Annotate(huge.status(),
                        absl::StrCat("moving tensor '", name, "'"));
      }
      huge->copy_(tensor);
      // set_data keeps the tensor object (and its autograd identity).
      torch::Tensor(tensor).set_data(*huge);
      result.moved_bytes += bytes;
    }
  } catch (const std::exception& error) {
    return FromException("moving tensors to huge pages", error);
  }
  result.collapsed_bytes = CollapseIntoHugePages(left);
  return result;
}

// Lives in a mapping of its own, never on a heap page next to a small
// tensor: a write-protected save hands the worker its job after the pages
// are protected, and a write to a protected page would wait for a copy.
// For the same reason its queue is a fixed ring, which never allocates.
class AsyncCheckpointSaver::Worker {
 public:
  // With `protected_saves`, also the thread that serves the faults of
  // write-protected saves, kept for all of them.
  explicit Worker(bool protected_saves)
      : fault_server_(protected_saves
                          ? MemorySnapshot::Server::Start()
                          : absl::UnavailableError("no protected saves")),
        thread_([this] { Loop(); }) {
    // Without it, the first save would map and fault in these pages in
    // its pause; a bigger state grows it then.
    if (protected_saves) {
      Run([this] { scratch_.Reserve(kReservedScratchBytes).IgnoreError(); });
    }
  }
  static void* operator new(size_t size) {
    void* memory = mmap(nullptr, size, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) throw std::bad_alloc();
    return memory;
  }
  static void operator delete(void* memory, size_t size) {
    munmap(memory, size);
  }
  ~Worker() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_all();
    thread_.join();
  }

  // Queues `job` (waiting for room first); jobs run one at a time, in
  // order. Moving `job` in allocates nothing.
  void Run(std::function<void()> job) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      changed_.wait(lock, [this] { return queued_ < kQueueLength; });
      jobs_[(first_ + queued_) % kQueueLength] = std::move(job);
      ++queued_;
    }
    changed_.notify_all();
  }

  // Memory for the pause of the next save (ScratchMemory): the caller's
  // only, and only while no save runs. The first kReservedScratchBytes
  // (the lists of about 20,000 tensors with 17-byte names) are faulted in
  // when the saver starts.
  static constexpr size_t kReservedScratchBytes = size_t{2} << 20;
  ScratchMemory& scratch() { return scratch_; }
  // The server of write-protected saves, or why there is none.
  absl::StatusOr<MemorySnapshot::Server*> fault_server() {
    if (!fault_server_.ok()) return fault_server_.status();
    return fault_server_->get();
  }

  void WaitUntilIdle() {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [this] { return queued_ == 0 && !running_; });
  }

  // Runs body(begin, end) over [0, count) in chunks of `chunk` on the
  // calling thread and, while the worker is idle, on its thread too, and
  // returns when all have run. A helper that has not started when the
  // caller runs out of chunks is not waited for (the worker may be slow
  // to wake on a busy machine). `body` must not throw. Allocates nothing
  // and writes only this object's mapping: it also spreads the protection
  // of a write-protected save (MemorySnapshot::Protect).
  void ForEachChunk(size_t count, size_t chunk,
                    absl::FunctionRef<void(size_t, size_t)> body) {
    if (count <= chunk) {
      body(0, count);
      return;
    }
    // The call's state lives here, not in the job: the job captures only
    // this call's generation, which a helper queued by an earlier call
    // (one that started too late) finds changed, and then touches nothing.
    const uint64_t generation = ++generation_;
    body_ = &body;
    count_ = count;
    chunk_ = chunk;
    next_.store(0);
    helper_.store(Word(generation, kNotStarted));
    Run([this, generation] {
      uint64_t expected = Word(generation, kNotStarted);
      if (!helper_.compare_exchange_strong(expected,
                                           Word(generation, kHelping))) {
        return;
      }
      Work();
      helper_.store(Word(generation, kDone));
    });
    Work();
    uint64_t expected = Word(generation, kNotStarted);
    if (!helper_.compare_exchange_strong(expected,
                                         Word(generation, kTooLate))) {
      while (helper_.load() != Word(generation, kDone)) {
        std::this_thread::yield();
      }
    }
  }

 private:
  void Loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      changed_.wait(lock, [this] { return queued_ > 0 || stopping_; });
      if (queued_ == 0) return;
      std::function<void()> job = std::move(jobs_[first_]);
      jobs_[first_] = nullptr;
      first_ = (first_ + 1) % kQueueLength;
      --queued_;
      running_ = true;
      lock.unlock();
      job();
      // The job's captures (a snapshot's tensors) are released before a
      // waiter learns that it has finished.
      job = nullptr;
      lock.lock();
      running_ = false;
      changed_.notify_all();
    }
  }

  // ForEachChunk's chunks, for the caller and the helper.
  void Work() {
    const size_t count = count_;
    const size_t chunk = chunk_;
    const absl::FunctionRef<void(size_t, size_t)> body = *body_;
    for (size_t begin = next_.fetch_add(chunk); begin < count;
         begin = next_.fetch_add(chunk)) {
      body(begin, std::min(begin + chunk, count));
    }
  }

  // ForEachChunk's state: the helper's, in the low two bits of a word
  // whose upper bits are the call's generation.
  enum : uint64_t { kNotStarted, kHelping, kDone, kTooLate };
  static uint64_t Word(uint64_t generation, uint64_t helper) {
    return generation << 2 | helper;
  }
  uint64_t generation_ = 0;  // the caller's only
  // Apart from the rest: the two threads take turns writing them.
  alignas(64) std::atomic<uint64_t> helper_{0};
  alignas(64) std::atomic<size_t> next_{0};
  alignas(64) const absl::FunctionRef<void(size_t, size_t)>* body_ = nullptr;
  size_t count_ = 0;
  size_t chunk_ = 0;

  std::mutex mutex_;
  std::condition_variable changed_;
  // A save queues at most two helpers (gathering, protecting) and its own
  // job.
  static constexpr size_t kQueueLength = 4;
  std::function<void()> jobs_[kQueueLength];
  size_t first_ = 0;
  size_t queued_ = 0;
  bool running_ = false;
  bool stopping_ = false;
  ScratchMemory scratch_;
  absl::StatusOr<std::unique_ptr<MemorySnapshot::Server>> fault_server_;
  std::thread thread_;  // last: starts once the rest exists
};

AsyncCheckpointSaver::AsyncCheckpointSaver(WriterOptions options,
                                           bool keep_staging_buffers,
                                           SnapshotMode snapshot)
    : options_(options),
      keep_staging_buffers_(keep_staging_buffers),
      snapshot_(snapshot),
      worker_(
          std::make_unique<Worker>(snapshot == SnapshotMode::kWriteProtect)) {}

namespace {

// A forked save's status travels to the parent as "<code> <message>".
std::string EncodeStatus(const absl::Status& status) {
  return absl::StrCat(static_cast<int>(status.code()), " ", status.message());
}

absl::Status ForkedSaveStatus(const std::string& path, pid_t pid, bool reaped,
                              int wait_status, const std::string& report) {
  const std::string context =
      absl::StrCat("saving checkpoint ", path, " in process ", pid);
  int code = -1;
  const size_t space = report.find(' ');
  if (space != std::string::npos) {
    code = std::atoi(report.substr(0, space).c_str());
  }
  if (code >= 0 &&
      code <= static_cast<int>(absl::StatusCode::kUnauthenticated)) {
    if (code == 0) return absl::OkStatus();
    return absl::Status(static_cast<absl::StatusCode>(code),
                        report.substr(space + 1));
  }
  if (reaped && WIFSIGNALED(wait_status)) {
    return absl::AbortedError(
        absl::StrCat(context, ": killed by signal ", WTERMSIG(wait_status)));
  }
  return absl::InternalError(absl::StrCat(
      context, ": it ended without a report (exit status ",
      reaped && WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : -1, ")"));
}

}  // namespace

absl::Status AsyncCheckpointSaver::StartForkedSave(
    const std::string& path, const CheckpointState& state,
    std::function<void(const absl::Status&)>& on_committed) {
  // The child writes CPU, contiguous tensors where they are; any other is
  // copied here, because the child must not run a LibTorch kernel. Nothing
  // else is built for the child before the fork: after it, every page the
  // caller writes is copied by the kernel, so even dropping references to
  // 20,000 tensors (their refcounts) would cost a fault per page.
  proto::Metadata metadata = state.metadata;
  // Here, not in the child: it asks LibTorch's CUDA hooks for versions.
  FillMetadata(&metadata);
  const std::vector<std::string> devices = DevicesOf(state.tensors);
  std::vector<std::pair<size_t, torch::Tensor>> copies;
  try {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < state.tensors.size(); ++i) {
      const torch::Tensor& tensor = state.tensors[i].second;
      if (tensor.defined() && tensor.layout() == torch::kStrided &&
          (!tensor.device().is_cpu() || !tensor.is_contiguous())) {
        copies.emplace_back(i, tensor.to(torch::kCPU).contiguous());
      }
    }
  } catch (const std::exception& error) {
    return FromException(absl::StrCat("saving checkpoint ", path), error);
  }
  int report_pipe[2];
  if (pipe2(report_pipe, O_CLOEXEC) != 0) {
    return absl::UnavailableError(
        absl::StrCat("pipe for a forked save: ", std::strerror(errno)));
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    const int error = errno;
    close(report_pipe[0]);
    close(report_pipe[1]);
    return absl::UnavailableError(
        absl::StrCat("fork for a save: ", std::strerror(error)));
  }
  if (pid == 0) {
    // The child: dies with the caller, keeps only its report pipe (as fd 3)
    // and the standard streams, writes, reports, and leaves without running
    // the caller's exit handlers.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(2);
    int report = report_pipe[1];
    if (report != 3) {
      if (dup2(report, 3) < 0) _exit(2);
      report = 3;
    }
    close_range(4, ~0U, 0);
    CheckpointState snapshot;
    snapshot.metadata = std::move(metadata);
    snapshot.training_state = state.training_state;
    snapshot.tensors = state.tensors;
    for (auto& [index, copy] : copies) {
      snapshot.tensors[index].second = std::move(copy);
    }
    absl::Status status = SaveCheckpointFrom(
        path, snapshot.metadata, snapshot.training_state,
        SaveList(snapshot.tensors, &devices), options_, nullptr, nullptr);
    (void)base::WriteFully(report, EncodeStatus(status), "report pipe");
    _exit(status.ok() ? 0 : 1);
  }
  close(report_pipe[1]);
  pending_path_ = path;
  const int report_fd = report_pipe[0];
  worker_->Run(
      [this, path, pid, report_fd, on_committed = std::move(on_committed)]() {
        std::string report;
        char buffer[4096];
        for (;;) {
          const ssize_t got = read(report_fd, buffer, sizeof(buffer));
          if (got > 0) {
            report.append(buffer, static_cast<size_t>(got));
          } else if (got == 0 || errno != EINTR) {
            break;
          }
        }
        close(report_fd);
        int wait_status = 0;
        pid_t reaped;
        do {
          reaped = waitpid(pid, &wait_status, 0);
        } while (reaped < 0 && errno == EINTR);
        // ECHILD: the caller ignores SIGCHLD and the kernel reaped the child;
        // the report alone tells.
        absl::Status status =
            ForkedSaveStatus(path, pid, reaped == pid, wait_status, report);
        if (on_committed) on_committed(status);
        pending_error_ = std::move(status);
      });
  return absl::OkStatus();
}

namespace {

// How many tensors ahead StartProtectedSave fetches the objects of, and
// how many it copies in one piece of work.
constexpr size_t kPrefetchAhead = 16;
constexpr size_t kGatherChunk = 512;

// Fetches the cache line at `address` to be written: the reference count
// of a tensor that the previous save released on its own thread sits
// modified in another core's cache, and a read prefetch
// (__builtin_prefetch emits one on x86 without -mprfchw) would leave the
// increment to wait for that copy to be invalidated.
inline void PrefetchForWrite(const void* address) {
#if defined(__x86_64__)
  asm volatile("prefetchw %0" : : "m"(*static_cast<const char*>(address)));
#else
  __builtin_prefetch(address, /*rw=*/1);
#endif
}

// What a write-protected save's worker holds: copies of the protos, the
// caller's tensors (references; GPU ones copied) and the snapshot of the
// CPU ones' memory, released before the tensors (members are destroyed in
// reverse order).
struct ProtectedSave {
  ProtectedSave(const NamedTensors& named, ScratchMemory& scratch)
      : tensors(SaveList::Compact(), named, scratch) {}
  proto::Metadata metadata;
  proto::TrainingState training_state;
  SaveList tensors;
  ProtectedTensors protect;
  std::function<void(const absl::Status&)> on_committed;
  BeforeCommit before_commit;
  std::unique_ptr<MemorySnapshot> snapshot;
};

}  // namespace

absl::Status AsyncCheckpointSaver::StartProtectedSave(
    const std::string& path, const CheckpointState& state,
    std::function<void(const absl::Status&)>& on_committed,
    BeforeCommit& before_commit) {
  // Everything the worker needs is built before the pages are protected:
  // after, each first write to one of them waits for a copy.
  const NamedTensors& tensors = state.tensors;
  const size_t count = tensors.size();
  // The previous save has ended (SaveAsync waited for it).
  ScratchMemory& scratch = worker_->scratch();
  absl::StatusOr<MemorySnapshot::Server*> fault_server =
      worker_->fault_server();
  if (!fault_server.ok()) return fault_server.status();
  const size_t prepare_bytes = MemorySnapshot::ScratchBytes(count);
  RETURN_IF_ERROR(scratch.Reset(
      SaveList::CompactBytes(tensors) + ScratchMemory::Bytes<uint8_t>(count) +
      ScratchMemory::Bytes<MemorySnapshot::Range>(count) +
      ScratchMemory::Bytes<char>(prepare_bytes)));
  auto save = std::make_shared<ProtectedSave>(tensors, scratch);
  save->metadata = state.metadata;
  save->training_state = state.training_state;
  save->protect.is_protected = scratch.Take<uint8_t>(count);
  // Unprotected entries are empty, which Prepare ignores. Both are filled
  // by the threads that gather.
  MemorySnapshot::Range* const ranges =
      scratch.Take<MemorySnapshot::Range>(count);
  // Copies entries [begin, end) and notes the memory of each CPU,
  // contiguous tensor. Each tensor's objects lie on pages of their own:
  // fetching those of the tensors ahead while one is copied keeps this
  // from being one memory latency after another (for 20,000 small tensors
  // it is most of the pause, and why it is shared with the worker).
  auto gather = [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      if (i + kPrefetchAhead < end) {
        const auto& [name, tensor] = tensors[i + kPrefetchAhead];
        __builtin_prefetch(name.data());
        const char* impl =
            reinterpret_cast<const char*>(tensor.unsafeGetTensorImpl());
        for (size_t line = 0; line < sizeof(c10::TensorImpl); line += 64) {
          PrefetchForWrite(impl + line);
        }
      }
      if (i + kPrefetchAhead / 2 < end) {
        const c10::TensorImpl* impl =
            tensors[i + kPrefetchAhead / 2].second.unsafeGetTensorImpl();
        if (impl->has_storage()) {
          const char* storage = reinterpret_cast<const char*>(
              impl->unsafe_storage().unsafeGetStorageImpl());
          __builtin_prefetch(storage);
          __builtin_prefetch(storage + 64);
        }
      }
      const torch::Tensor& tensor = save->tensors.Copy(tensors, i);
      ranges[i] = {nullptr, 0};
      save->protect.is_protected[i] = 0;
      try {
        if (tensor.defined() && tensor.layout() == torch::kStrided &&
            tensor.device().is_cpu() && tensor.is_contiguous()) {
          ranges[i] = {static_cast<const char*>(tensor.data_ptr()),
                       tensor.nbytes()};
          save->protect.is_protected[i] = 1;
        }
      } catch (const std::exception&) {
        // Left to the pass below, which reports it.
      }
    }
  };
  worker_->ForEachChunk(count, kGatherChunk, gather);
  // A GPU tensor is copied on its device, queued on the caller's stream,
  // so the pause does not wait for the copy (nor for the caller's queued
  // work). Without room on the device it is copied into CPU memory.
  try {
    torch::NoGradGuard no_grad;
    bool device_has_room = true;
    NamedTensors device_copies;  // unnamed
    for (size_t i = 0; i < count; ++i) {
      if (save->protect.is_protected[i]) continue;
      torch::Tensor& tensor = save->tensors.mutable_tensor(i);
      if (!tensor.defined() || tensor.layout() != torch::kStrided) continue;
      if (tensor.is_cuda() && device_has_room) {
        try {
          tensor = tensor.clone(at::MemoryFormat::Contiguous);
          device_copies.emplace_back(std::string(), tensor);
          continue;
        } catch (const std::exception&) {
          device_has_room = false;  // out of memory: the host copy below
        }
      }
      tensor = tensor.to(torch::kCPU).contiguous();
    }
    // The worker reads the device copies on its own (default) streams.
    DefaultStreamsWaitForCurrentOnes(device_copies);
  } catch (const std::exception& error) {
    return FromException(absl::StrCat("saving checkpoint ", path), error);
  }
  absl::StatusOr<std::unique_ptr<MemorySnapshot>> prepared =
      MemorySnapshot::Prepare(
          absl::MakeConstSpan(ranges, count),
          absl::MakeSpan(scratch.Take<char>(prepare_bytes), prepare_bytes),
          *fault_server);
  if (!prepared.ok()) return prepared.status();
  MemorySnapshot* snapshot = prepared->get();
  save->snapshot = *std::move(prepared);
  save->protect.snapshot = snapshot;
  pending_path_ = path;
  ProtectedSave& callbacks = *save;
  callbacks.on_committed = std::move(on_committed);
  callbacks.before_commit = std::move(before_commit);
  std::function<void()> job = [this, path, save = std::move(save)]() mutable {
    absl::Status status = SaveCheckpointFrom(
        path, save->metadata, save->training_state, save->tensors, options_,
        save->before_commit, &save->protect);
    std::function<void(const absl::Status&)> on_committed =
        std::move(save->on_committed);
    save.reset();
    if (on_committed) on_committed(status);
    pending_error_ = std::move(status);
  };
  // Nothing from here on writes the heap, whose pages around small tensors
  // are now protected (MemorySnapshot::Prepare says why): the job was made
  // above, `save` was moved into it, the worker lives in a mapping of its
  // own.
  if (absl::Status status = snapshot->Protect(
          [this](size_t count, size_t chunk,
                 absl::FunctionRef<void(size_t, size_t)> body) {
            worker_->ForEachChunk(count, chunk, body);
          });
      !status.ok()) {
    // The fallback save takes the callbacks.
    on_committed = std::move(callbacks.on_committed);
    before_commit = std::move(callbacks.before_commit);
    return status;
  }
  worker_->Run(std::move(job));
  return absl::OkStatus();
}

AsyncCheckpointSaver::~AsyncCheckpointSaver() {
  absl::Status unreported = JoinAndTakeError();
  if (!unreported.ok()) {
    base::Warn(absl::StrCat(
        "AsyncCheckpointSaver: the asynchronous save to ", pending_path_,
        " failed and nobody called Wait(): ", unreported.ToString()));
  }
}

absl::Status AsyncCheckpointSaver::JoinAndTakeError() {
  worker_->WaitUntilIdle();
  absl::Status error = std::move(pending_error_);
  pending_error_ = absl::OkStatus();
  return error;
}

absl::Status AsyncCheckpointSaver::SaveAsync(
    const std::string& path, const CheckpointState& state,
    std::function<void(const absl::Status&)> on_committed,
    BeforeCommit before_commit) {
  absl::Status previous = JoinAndTakeError();
  if (!previous.ok()) {
    return absl::Status(
        previous.code(),
        absl::StrCat("the previous asynchronous save failed (this save to ",
                     path, " was not started): ", previous.message()));
  }
  // Unavailable: that snapshot cannot be had here; the next one still
  // saves.
  if (snapshot_ == SnapshotMode::kWriteProtect) {
    // Before: nothing is written after the pages are protected.
    last_snapshot_ = SnapshotMode::kWriteProtect;
    absl::Status started =
        StartProtectedSave(path, state, on_committed, before_commit);
    if (!absl::IsUnavailable(started)) return started;
    if (!warned_unavailable_) {
      base::Warn(absl::StrCat(
          "AsyncCheckpointSaver: write-protected snapshots are not available "
          "here (",
          started.message(), "); saving with ",
          before_commit ? "copied" : "forked", " snapshots instead"));
      warned_unavailable_ = true;
    }
  }
  if (snapshot_ != SnapshotMode::kCopy && !before_commit) {
    absl::Status forked = StartForkedSave(path, state, on_committed);
    if (!absl::IsUnavailable(forked)) {
      last_snapshot_ = SnapshotMode::kFork;
      return forked;
    }
  }
  last_snapshot_ = SnapshotMode::kCopy;
  std::vector<std::string> devices = DevicesOf(state.tensors);
  absl::StatusOr<CheckpointState> snapshot =
      SnapshotToCpu(state, keep_staging_buffers_ ? &staging_ : nullptr);
  if (!snapshot.ok()) {
    return Annotate(snapshot.status(),
                    absl::StrCat("saving checkpoint ", path));
  }
  pending_path_ = path;
  auto owned = std::make_shared<CheckpointState>(std::move(*snapshot));
  worker_->Run([this, path, owned = std::move(owned),
                devices = std::move(devices),
                on_committed = std::move(on_committed),
                before_commit = std::move(before_commit)]() mutable {
    absl::Status status = SaveCheckpointFrom(
        path, owned->metadata, owned->training_state,
        SaveList(owned->tensors, &devices), options_, before_commit, nullptr);
    // Frees the snapshot (or hands its slab back to staging_) before
    // reporting.
    owned.reset();
    if (on_committed) on_committed(status);
    pending_error_ = std::move(status);
  });
  return absl::OkStatus();
}

absl::Status AsyncCheckpointSaver::Wait() { return JoinAndTakeError(); }

}  // namespace checkpoint
