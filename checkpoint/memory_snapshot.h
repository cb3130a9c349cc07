// A snapshot of ranges of this process's memory, taken without copying
// them: the kernel write-protects their pages (userfaultfd), and a page is
// copied aside only when some thread is about to write to it. Read()
// returns the bytes as they were when Take() returned, whatever was written
// since. AsyncCheckpointSaver uses it (SnapshotMode::kWriteProtect): the
// caller's pause is a page-table update, and the extra memory is the pages
// the caller writes while the save runs.
//
// Example:
//   std::vector<MemorySnapshot::Range> ranges = {{data, size}};
//   absl::StatusOr<std::unique_ptr<MemorySnapshot>> snapshot =
//       MemorySnapshot::Take(ranges);
//   if (!snapshot.ok()) return snapshot.status();  // e.g. kUnavailable
//   ...  // any thread may now write to `data`
//   std::vector<char> copy(size);
//   absl::Status read = (*snapshot)->Read(data, absl::MakeSpan(copy));
//
// How it behaves:
//   - A thread that writes to a protected page waits (in the kernel) until
//     the snapshot's fault server (a thread; see Server) has copied the
//     2 MiB block around it (on huge pages where the kernel has them),
//     then goes on: one round trip per 2 MiB written.
//   - Each byte is meant to be read once. Pages are unprotected in 2 MiB
//     blocks, as soon as every byte of every range in the block has been
//     read, so that writes to them no longer wait (a block, not a page: a
//     huge page unprotected in parts is split by the kernel for good); the
//     destructor unprotects the rest.
//   - Memory that is not anonymous and private (a file mapping, a mapping
//     already watched by another snapshot), a kernel before 6.4, or a
//     process without the right to use userfaultfd (root, CAP_SYS_PTRACE,
//     vm.unprivileged_userfaultfd=1, or access to /dev/userfaultfd) give
//     kUnavailable, and nothing is left protected.
//
// What the caller must not do while a snapshot lives: free or unmap the
// memory of its ranges (keep the tensors alive), write to them by DMA (a
// device copy into pinned memory does not fault, so it is not seen), or
// take a snapshot of the same pages in another MemorySnapshot
// (kUnavailable). Read() is thread-safe; Take() and the destructor are
// not to be run concurrently with Read().
#ifndef CHECKPOINT_MEMORY_SNAPSHOT_H_
#define CHECKPOINT_MEMORY_SNAPSHOT_H_

#include <cstddef>
#include <memory>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace checkpoint {

class MemorySnapshot {
 public:
  struct Range {
    const char* data;
    size_t size;
  };

  // Protects every page that holds a byte of `ranges` (overlapping ranges
  // are fine; empty ones are ignored): Prepare, then Protect.
  static absl::StatusOr<std::unique_ptr<MemorySnapshot>> Take(
      absl::Span<const Range> ranges);

  // Take in two steps, for a caller whose own memory may lie on the pages
  // it protects (the heap around small tensors): Prepare does all that
  // allocates (and everything that can be unavailable but the protection
  // itself), Protect only asks the kernel. Between the two nothing is
  // protected yet and Read returns the bytes as they are. After Protect
  // returns, any write of the caller's to a protected page (a malloc or
  // free of a block next to a tensor) waits for a 2 MiB copy, so a caller
  // that wants a short pause allocates nothing more until it has let go.
  //
  // `scratch`, if at least ScratchBytes(ranges.size()) bytes, is memory
  // Prepare works in instead of the heap, for a caller that keeps malloc
  // out of its pause: glibc's first request of 1 KiB or more consolidates
  // every small block freed since (malloc_consolidate), which took about
  // 1 ms of a 20,000-tensor pause in our benchmark. It is not needed once
  // Prepare returns.
  //
  // `server`, if given, serves this snapshot's faults instead of a thread
  // and a userfaultfd of its own (see Server).
  class Server;
  static absl::StatusOr<std::unique_ptr<MemorySnapshot>> Prepare(
      absl::Span<const Range> ranges, absl::Span<char> scratch = {},
      Server* server = nullptr);
  static size_t ScratchBytes(size_t range_count);

  // The thread that copies pages aside when they are written, and the
  // userfaultfd it reads, kept from one snapshot to the next by a caller
  // that takes many: starting both took about 0.1 ms of each pause of a
  // 20,000-tensor save here. It serves one snapshot at a time: Prepare
  // with a server whose last snapshot still lives gives
  // kFailedPrecondition. It must outlive the snapshots prepared with it.
  // Its thread writes only memory of its own (mmap), never the heap. It
  // keeps the memory the copies went to for its next snapshot, lazily
  // freed in between (MADV_FREE: the kernel takes it back when it needs
  // memory; until then it counts in the process's RSS), so that the next
  // snapshot's copies cost no page faults.
  class Server {
   public:
    // kUnavailable where snapshots are (see above).
    static absl::StatusOr<std::unique_ptr<Server>> Start();
    ~Server();
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

   private:
    friend class MemorySnapshot;
    struct Impl;
    explicit Server(Impl* impl) : impl_(impl) {}
    Impl* impl_;
  };
  // kUnavailable if the kernel refuses (nothing is left protected then).
  // Writes no memory but the snapshot's own mapping. Waits first (tens of
  // microseconds here, when Prepare started the server) until the thread
  // that serves faults has started: a thread's start may allocate (under
  // AddressSanitizer it does), and if that allocation fell on a protected
  // page the server would wait for itself. kUnavailable if the server has
  // stopped.
  absl::Status Protect();

  // Runs body(begin, end) over [0, count) in chunks of `chunk`, on one
  // thread or several at once, and returns when all have run.
  using ChunkRunner = absl::FunctionRef<void(
      size_t count, size_t chunk, absl::FunctionRef<void(size_t, size_t)>)>;
  // Protect, its kernel calls spread by `for_each_chunk` over pieces of
  // kProtectPiecePages pages when there are at least kMinSpreadPieces of
  // them and the first one proves slow: protecting
  // 4 KiB pages costs the kernel about 100 ns each (27 ms for 1 GiB
  // here), and two threads take about 0.55 of that. On huge pages the
  // first piece is quick and the rest stays on the calling thread.
  // `for_each_chunk` must write no heap memory either.
  absl::Status Protect(ChunkRunner for_each_chunk);
  static constexpr size_t kProtectPiecePages = 2048;
  static constexpr size_t kMinSpreadPieces = 16;

  // Unprotects every page still protected and frees the copies.
  ~MemorySnapshot();
  MemorySnapshot(const MemorySnapshot&) = delete;
  MemorySnapshot& operator=(const MemorySnapshot&) = delete;

  // Copies out.size() bytes from `address` as they were at Take. They must
  // lie within one page run of the snapshot (any range passed to Take
  // qualifies): kInvalidArgument otherwise. kFailedPrecondition if a page
  // is read more often than its ranges' bytes allow.
  absl::Status Read(const char* address, absl::Span<char> out);

  // Bytes protected by Take, and bytes copied aside so far.
  size_t protected_bytes() const;
  size_t copied_bytes() const;

 private:
  struct State;
  explicit MemorySnapshot(State* state);
  // Lives in memory of its own (mmap), never in a protected page: the
  // thread that serves faults must never fault itself.
  State* state_;
  // The server this snapshot is attached to (from the moment Prepare has
  // attached it), and the one it started for itself when given none.
  Server::Impl* server_ = nullptr;
  std::unique_ptr<Server> own_server_;
};

}  // namespace checkpoint

#endif  // CHECKPOINT_MEMORY_SNAPSHOT_H_
