// Saving and loading torch::Tensor checkpoints: the LibTorch face of the
// torch-free format in writer.h / reader.h.
//
// Example:
//   CheckpointState state;
//   state.tensors = NamedParametersAndBuffers(*model);   // module_loading.h
//   state.metadata.mutable_progress()->set_epoch(3);
//   RETURN_IF_ERROR(SaveCheckpoint("/runs/a/epoch=3", state));
//
//   LoadOptions options;
//   options.device = torch::Device("cuda:0");
//   ASSIGN_OR_RETURN(CheckpointState loaded,
//                    LoadCheckpoint("/runs/a/epoch=3", options));
//
// Saving streams one tensor at a time: a contiguous CPU tensor is written
// straight from its memory, any other (non-contiguous, CUDA) is first copied
// into one contiguous CPU tensor, so the extra memory of a save is about the
// largest tensor. Commit is atomic (see writer.h).
//
// Loading maps devices: tensors saved on "cuda:1" load onto
// LoadOptions::device, and asking for CUDA where there is none is a clear
// error rather than a LibTorch exception. With use_mmap on CPU (and no dtype
// cast) tensors are zero-copy views of the read-only file mapping: they keep
// the mapping alive, and WRITING TO THEM CRASHES (SIGSEGV). Copy them into a
// module (module_loading.h) or clone() them before modifying. Without
// mmap, tensors under 64 KiB are read in runs of up to 1 MiB into one
// allocation: each still has a storage of its own (its own size,
// resizable, saved alone), but a run's memory goes back to the allocator
// only with the last of its tensors.
//
// Every function here catches c10::Error and returns an absl::Status.
#ifndef CHECKPOINT_TENSORS_H_
#define CHECKPOINT_TENSORS_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "checkpoint/manifest.pb.h"
#include "checkpoint/named_tensors.h"
#include "checkpoint/writer.h"

namespace checkpoint {

// Page-aligned memory for snapshots (defined in tensors.cc).
class StagingBuffer;

struct CheckpointState {
  // Model tensors ("fc1.weight") and training-state tensors
  // ("optimizer/exp_avg/fc1.weight", "rng/cpu"), in save order.
  NamedTensors tensors;
  proto::Metadata metadata;
  proto::TrainingState training_state;
};

// Runs after a save's own tensors are written and before its commit, on
// the saving thread: a data-parallel job adds the other processes' data
// files here (CheckpointWriter::AddDataFile). An error aborts the save,
// which is then never committed.
using BeforeCommit = std::function<absl::Status(CheckpointWriter&)>;

// Writes `state` to the checkpoint directory `path` (its parent must exist)
// and commits it atomically. Fills metadata fields left empty: producer,
// libtorch_version, cuda_version/cudnn_version (when CUDA is available),
// host and created_unix_micros. Errors name the tensor being written.
absl::Status SaveCheckpoint(const std::string& path,
                            const CheckpointState& state,
                            WriterOptions options = {},
                            const BeforeCommit& before_commit = nullptr);

// Writes `tensors` into one data file at `path` (not a checkpoint: a part
// of one, for another process's CheckpointWriter::AddDataFile), fsync'ed.
// The file must not exist; it is removed again on error.
absl::StatusOr<DataFilePart> WriteDataFile(const std::string& path,
                                           const NamedTensors& tensors,
                                           WriterOptions options = {});

struct LoadOptions {
  // "cpu" or "cuda:N".
  torch::Device device = torch::kCPU;
  // Casts floating-point MODEL tensors (names without '/') to this type;
  // integer, bool and training-state tensors keep their saved dtype.
  std::optional<torch::Dtype> dtype;
  // See the file comment: zero-copy read-only views on CPU.
  bool use_mmap = false;
  // Check each tensor's XXH3 as it is read (with mmap: when the view is
  // created, which reads the whole tensor once).
  bool verify_checksums = true;
  // .pt/.ckpt files: unknown Python classes in a training dict's extras
  // (a Lightning checkpoint's hyper-parameters) become placeholders instead
  // of refusing the file (interop/torch_pickle.h). Nothing is executed
  // either way.
  bool lenient = false;
  // Tensors are read (and verified) on this many threads; 0 means the
  // number of hardware threads, at most 8. Reading is bound by page
  // faults, memory bandwidth and hashing more than by one disk stream.
  int num_threads = 0;
  // CPU tensors of 2 MiB or more (not cast by `dtype`, not mmap views) are
  // read into memory of their own on transparent huge pages, as
  // MoveToHugePages would leave them, without its copy: a write-protected
  // snapshot of the loaded state (a resumed run's SaveAsync) then protects
  // one page-table entry per 2 MiB, and the load takes one page fault per
  // 2 MiB. Whether that load is faster depends on the machine: on our
  // virtual machine a warm 1 GiB load took 0.12 s instead of 0.31 s when
  // the kernel had huge pages freed moments before, but 0.8-2.0 s instead
  // of 0.3 s when it had to take huge pages it had not used for seconds
  // (the host backs them again: 2.2 s per GiB to fault in, against 0.42 s
  // for 4 KiB pages; docs/PERFORMANCE.md). Where the kernel gives no huge pages
  // (THP "never") it is ordinary memory; without a mapping, LibTorch's
  // allocator's.
  bool huge_pages = false;
};

// Loads every tensor, the metadata and the training state of the
// checkpoint at `path`, recognised by content: our checkpoint directory, or
// a file PyTorch users have (a torch.save .pt/.pth, a Lightning .ckpt, a
// safetensors file; checkpoint/interop/tensor_source.h), read without
// Python and without executing anything. A foreign file's tensors get the
// project's names (a training dict's model state_dict by its keys, the rest
// by "/" paths such as "optimizer/state/0/exp_avg"), its plain values go to
// metadata.user as "python/<name>" (interop::ForeignMetadata), and it has
// no training state; its integrity is what its format can check (CRC-32
// for .pt, layout only for safetensors). Errors: those of
// CheckpointReader::Open or TensorSource::Open (kNotFound, kDataLoss, ...),
// kFailedPrecondition for a CUDA device without CUDA or with too few GPUs
// or a dtype LibTorch cannot hold here, kInvalidArgument for another device
// type or a non-floating dtype.
absl::StatusOr<CheckpointState> LoadCheckpoint(const std::string& path,
                                               const LoadOptions& options = {});

// Saves in the background: SaveAsync takes a snapshot of the tensors on
// the caller's thread (see SnapshotMode below; that is the caller's pause,
// and training may then change its tensors freely), then the saver's
// background thread (started with the saver, one per saver), or a forked
// process, writes and commits the values they had at the call. At most
// one save is in flight: a new SaveAsync first waits for the previous one.
//
// Errors are never lost: a failed save is returned by the next SaveAsync
// (which then does NOT start its own save) or by Wait(); if neither is
// called, the destructor prints it to stderr.
//
// Example:
//   AsyncCheckpointSaver saver;
//   for (...) {
//     ...
//     RETURN_IF_ERROR(saver.SaveAsync(path, state));
//   }
//   RETURN_IF_ERROR(saver.Wait());
//
// Staging memory (SnapshotMode::kCopy): the snapshot lives in one slab
// pre-faulted by mmap's MAP_POPULATE (one kernel call instead of a fault per
// page), filled by memcpy on several threads. With `keep_staging_buffers` (the
// default) the slab is kept after a save and reused by the next one if it is
// big enough, so steady-state pauses are a parallel memcpy without page faults;
// the price is holding one copy of the state between saves.
//
// Methods must be called from one thread; `before_commit` and
// `on_committed` run on the background thread, the latter with the save's
// final status.
//
// How SaveAsync takes its snapshot (the pause is the caller's):
//
// SnapshotMode::kWriteProtect (the default) copies nothing up front: the
// kernel write-protects the pages of the caller's CPU tensors
// (checkpoint/memory_snapshot.h, userfaultfd), the background thread
// writes them from where they are, and a page is copied aside only when a
// thread of the caller is about to write it while it is still unsaved;
// saved pages are released as the write goes on. The pause is a
// page-table update, per page: about 16 ms per GiB of 4 KiB pages on our
// machine (the saver's thread takes half when there is much of it), under
// 2 ms per GiB on huge pages (MoveToHugePages), plus taking
// a reference to each tensor and copying its name, which the saver's
// thread shares when it is free (1.1-1.4 ms in all for 20,000 small
// tensors whose heap MoveToHugePages collapsed; docs/PERFORMANCE.md). The
// extra memory is the pages the caller writes during the save (after it,
// kept for the next save's copies as memory the kernel may take back at
// any time: MADV_FREE; it counts in RSS until taken), and, kept
// by the saver for the next pause, about 40 bytes per tensor plus its
// name (so that the pause calls no malloc; 2 MiB of it, enough for about
// 20,000 tensors, is faulted in when the saver starts, so that the first
// pause is no longer than the others). Such a saver has a second thread,
// which copies the pages that are written while they are protected.
// What the caller must know:
//   - A thread that writes to a still-protected tensor page waits for the
//     saver's thread to copy its 2 MiB block: a rewrite of every tensor
//     right after SaveAsync pays for copying what the save has not yet
//     written (docs/PERFORMANCE.md has figures), and nothing once the save
//     has passed those tensors.
//   - Tensors must not be resized in place or have their storage
//     replaced (`set_`) while the save runs (the saver holds references,
//     not the old memory), nor be written by DMA (a non_blocking copy from
//     a GPU into a pinned CPU tensor is not seen by the protection).
//   - A GPU tensor is copied on its device, queued on the caller's current
//     stream: the pause is queuing the copy, and the device needs room for
//     one more copy of its tensors while the save runs (without it, they
//     are copied into CPU memory, which the pause waits for). Other
//     tensors that are not CPU-contiguous are copied on the caller's
//     thread, as in every mode.
//   - It needs Linux >= 6.4 and the right to use userfaultfd (root,
//     CAP_SYS_PTRACE, vm.unprivileged_userfaultfd=1 or access to
//     /dev/userfaultfd; an ordinary user of our Debian machines has none
//     of these), and anonymous memory (not tensors over a file mapping).
//     Otherwise the save falls back to kFork, then kCopy (said once on
//     stderr, with the reason); last_snapshot() says which one was taken.
//
// SnapshotMode::kFork takes the snapshot without copying either: SaveAsync
// forks, and the child process writes and commits the checkpoint from
// memory the kernel shares copy-on-write with the caller, who goes on at
// once. The pause is fork's page-table copy, which grows with all the
// memory of the process (about 24 ms per GiB of 4 KiB pages), not with
// what is saved; the extra memory is one page per page the caller writes
// while the child runs. What the caller must know:
//   - The child runs our writer only: no LibTorch kernel, no CUDA, no
//     OpenMP; only the forking thread exists in it. It uses malloc,
//     protobuf serialization, XXH3 and file-system calls, so another thread
//     of the caller must not be inside protobuf code on the checkpoint's
//     own messages while SaveAsync runs (glibc's malloc is fork-safe).
//   - The child closes every inherited file descriptor but its report
//     pipe, keeps the caller's signal dispositions (a handler that only
//     sets a flag is harmless; SIGKILL or SIGTERM to the whole process
//     group ends the save, which then fails), ends with _exit (no atexit
//     handlers, no static destructors), and is killed if the caller dies
//     (its .tmp- directory is removed when the run directory is next
//     opened).
//   - A save with `before_commit` (it needs the caller's process: its
//     peers, its threads), or a fork that fails, falls back to kCopy.
//
// SnapshotMode::kCopy copies every tensor into the staging slab described
// above; the pause is that copy.
enum class SnapshotMode { kCopy, kFork, kWriteProtect };

class AsyncCheckpointSaver {
 public:
  explicit AsyncCheckpointSaver(
      WriterOptions options = {}, bool keep_staging_buffers = true,
      SnapshotMode snapshot = SnapshotMode::kWriteProtect);
  ~AsyncCheckpointSaver();
  AsyncCheckpointSaver(const AsyncCheckpointSaver&) = delete;
  AsyncCheckpointSaver& operator=(const AsyncCheckpointSaver&) = delete;

  absl::Status SaveAsync(
      const std::string& path, const CheckpointState& state,
      std::function<void(const absl::Status&)> on_committed = nullptr,
      BeforeCommit before_commit = nullptr);

  // Waits for the save in flight; returns the error of the last save if
  // it failed and was not returned before, OK otherwise.
  absl::Status Wait();

  // The snapshot the last SaveAsync took (a fallback may differ from the
  // mode asked for).
  SnapshotMode last_snapshot() const { return last_snapshot_; }

 private:
  // Joins the worker and returns (and clears) an unreported error.
  absl::Status JoinAndTakeError();
  // kFork: forks a child that saves `state` (CPU, contiguous tensors) and
  // starts the worker that waits for it. Unavailable when fork fails.
  absl::Status StartForkedSave(
      const std::string& path, const CheckpointState& state,
      std::function<void(const absl::Status&)>& on_committed);

  // kWriteProtect: protects the pages of `state`'s CPU tensors and starts
  // the worker that writes them. Unavailable where userfaultfd is.
  absl::Status StartProtectedSave(
      const std::string& path, const CheckpointState& state,
      std::function<void(const absl::Status&)>& on_committed,
      BeforeCommit& before_commit);

  WriterOptions options_;
  bool keep_staging_buffers_;
  SnapshotMode snapshot_;
  SnapshotMode last_snapshot_ = SnapshotMode::kCopy;
  // The fallback from kWriteProtect is said once, on stderr.
  bool warned_unavailable_ = false;
  // Reused when no snapshot tensor references it any more.
  std::shared_ptr<StagingBuffer> staging_;
  std::string pending_path_;
  // Written by the worker's job; read once the worker is idle.
  absl::Status pending_error_;
  // One thread for every save of this saver, started with it: a thread
  // created per save took up to 3 ms of a pause here. Last: its jobs use
  // the members above.
  class Worker;
  std::unique_ptr<Worker> worker_;
};

// Snapshot used by AsyncCheckpointSaver: contiguous CPU copies of every
// tensor (and a copy of the protos) in one staging slab, copied on several
// threads. With `staging` non-null, the slab it holds is reused when it is
// large enough and no tensor of an earlier snapshot still uses it; on
// return it holds the slab of this snapshot.
absl::StatusOr<CheckpointState> SnapshotToCpu(
    const CheckpointState& state,
    std::shared_ptr<StagingBuffer>* staging = nullptr);

// Puts the memory of the CPU tensors of `tensors` on transparent huge
// pages (checkpoint/huge_pages.h). Why: the pause of a kWriteProtect or
// kFork snapshot is per page, and huge pages have 512 times fewer. Call it
// once the state exists (after the optimizer's first step made its
// buffers), before saving.
//   - A tensor of at least 2 MiB is moved: a copy on fresh huge pages, put
//     in place with set_data, so the tensor object stays the same and
//     modules and optimizers holding it see the new memory. Not moved:
//     tensors not contiguous, views (a storage offset or a storage larger
//     than the tensor), tensors whose storage another tensor shares
//     (moving one would break the sharing), and tensors already at a 2 MiB
//     boundary (moved before, or placed by LibTorch's THP_MEM_ALLOC_ENABLE).
//   - The memory of every other tensor (small ones: thousands of them
//     share the heap) stays where it is and is collapsed onto huge pages
//     in place, 2 MiB around each (CollapseIntoHugePages; best effort, and
//     the heap's untouched pages in those blocks get memory).
// kResourceExhausted if memory runs out (the tensors moved so far stay
// moved).
struct HugePagesMoved {
  uint64_t moved_bytes = 0;      // tensors copied onto huge pages
  uint64_t collapsed_bytes = 0;  // memory collapsed in place
};
absl::StatusOr<HugePagesMoved> MoveToHugePages(const NamedTensors& tensors);

// The proto dtype for a torch dtype, or DTYPE_UNSPECIFIED if unsupported.
proto::DType ToProtoDType(torch::Dtype dtype);

}  // namespace checkpoint

#endif  // CHECKPOINT_TENSORS_H_
