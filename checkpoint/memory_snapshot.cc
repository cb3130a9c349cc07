#include "checkpoint/memory_snapshot.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <new>
#include <optional>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "checkpoint/huge_pages.h"

// Linux 6.4: protection reaches pages never touched yet. Without it, the
// first write to such a page would not fault and the snapshot would miss it.
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif

namespace checkpoint {
namespace {

// Pages are released in 2 MiB-aligned blocks (their parts inside a run): a
// write fault copies what its block still needs and releases it, so that
// rewriting a large tensor costs one round trip per 2 MiB instead of one
// per page, and reads release a block once all of it is read. A huge
// page released in parts would be split by the kernel into 4 KiB page
// table entries for good: later snapshots would protect those one by one,
// and every access would need 512 times the TLB entries.
constexpr size_t kBlockBytes = kHugePageBytes;

absl::Status Unavailable(absl::string_view what, int error) {
  return absl::UnavailableError(
      absl::StrCat("memory snapshot: ", what, ": ", std::strerror(error)));
}

// Sets or clears write protection; clearing wakes the threads waiting on
// those pages.
bool SetWriteProtection(int uffd, uintptr_t start, size_t length, bool on) {
  struct uffdio_writeprotect protect = {};
  protect.range.start = start;
  protect.range.len = length;
  protect.mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : 0;
  while (ioctl(uffd, UFFDIO_WRITEPROTECT, &protect) != 0) {
    if (errno != EINTR && errno != EAGAIN) return false;
  }
  return true;
}

// Copies whole pages: with them the bytes of whatever else shares a page
// with the ranges, which AddressSanitizer would report as an overflow of
// those objects. They are mapped and only read, so its builds copy them
// without instrumentation.
#if defined(__SANITIZE_ADDRESS__)
__attribute__((no_sanitize_address)) void CopyPage(char* to, const char* from,
                                                   size_t size) {
  const volatile uint64_t* source = reinterpret_cast<const uint64_t*>(from);
  uint64_t* destination = reinterpret_cast<uint64_t*>(to);
  for (size_t i = 0; i < size / sizeof(uint64_t); ++i) {
    destination[i] = source[i];
  }
}
#else
void CopyPage(char* to, const char* from, size_t size) {
  std::memcpy(to, from, size);
}
#endif

// The indices of the non-empty `ranges`, in the order of their first pages
// (page numbers: addresses >> page_shift), in `order` or `other` (each room
// for ranges.size() indices). `lowest` and `highest` bound those first
// pages (the caller has them already). A radix sort on the bits in which
// those pages differ, of indices rather than copies: the ranges of 20,000
// small tensors are rarely quite in order, std::sort of them took 0.7 ms,
// copies of them are fresh memory, and all this is in the pause of an
// asynchronous save.
absl::Span<const uint32_t> OrderByPage(
    absl::Span<const MemorySnapshot::Range> ranges, int page_shift,
    uintptr_t lowest, uintptr_t highest, uint32_t* order, uint32_t* other) {
  size_t count = 0;
  bool sorted = true;
  auto page = [&](uint32_t i) {
    return reinterpret_cast<uintptr_t>(ranges[i].data) >> page_shift;
  };
  for (uint32_t i = 0; i < ranges.size(); ++i) {
    if (ranges[i].size == 0) continue;
    sorted = sorted && (count == 0 || page(order[count - 1]) <= page(i));
    order[count++] = i;
  }
  if (sorted) return absl::MakeConstSpan(order, count);
  constexpr int kDigitBits = 8;
  constexpr uintptr_t kDigitMask = (uintptr_t{1} << kDigitBits) - 1;
  for (int shift = 0; shift < 64 && ((highest - lowest) >> shift) != 0;
       shift += kDigitBits) {
    size_t starts[(1 << kDigitBits) + 1] = {};
    for (size_t k = 0; k < count; ++k) {
      ++starts[(((page(order[k]) - lowest) >> shift) & kDigitMask) + 1];
    }
    for (size_t digit = 0; digit < (1 << kDigitBits); ++digit) {
      starts[digit + 1] += starts[digit];
    }
    for (size_t k = 0; k < count; ++k) {
      other[starts[((page(order[k]) - lowest) >> shift) & kDigitMask]++] =
          order[k];
    }
    std::swap(order, other);
  }
  return absl::MakeConstSpan(order, count);
}

// The pages of ranges that lie close together (the heap around small
// tensors) as a bitmap, one bit per page from the lowest: set, merged into
// runs and ranked in time linear in the ranges, where ordering 20,000 such
// ranges by page took 0.24 ms of the pause here.
class PageBitmap {
 public:
  // `words` (at least one) of memory for the bits and `ranks` as many.
  PageBitmap(uintptr_t lowest_page, uint64_t* words, uint32_t* ranks,
             size_t word_count)
      : lowest_(lowest_page), words_(words), ranks_(ranks), count_(word_count) {
    std::fill(words_, words_ + count_, 0);
  }

  // Pages [first, last] (absolute page numbers).
  void Set(uintptr_t first_page, uintptr_t last_page) {
    const size_t from = first_page - lowest_;
    const size_t to = last_page - lowest_;  // inclusive
    const uint64_t head = ~uint64_t{0} << (from % 64);
    const uint64_t tail = ~uint64_t{0} >> (63 - to % 64);
    size_t word = from / 64;
    if (word == to / 64) {
      words_[word] |= head & tail;
      return;
    }
    words_[word] |= head;
    for (++word; word < to / 64; ++word) words_[word] = ~uint64_t{0};
    words_[word] |= tail;
  }

  // Calls run(first_page, pages) for each run of set bits, in order, and
  // makes Rank valid. Returns the number of set bits.
  template <typename Run>
  size_t ForEachRun(Run&& run) {
    size_t rank = 0;
    size_t open = SIZE_MAX;  // bit where the current run began
    uint64_t carry = 0;      // the bit before this word's first one
    for (size_t w = 0; w < count_; ++w) {
      const uint64_t bits = words_[w];
      ranks_[w] = static_cast<uint32_t>(rank);
      rank += static_cast<size_t>(__builtin_popcountll(bits));
      const uint64_t before = bits << 1 | carry;
      uint64_t edges = (bits & ~before) | (~bits & before);
      while (edges != 0) {
        const size_t bit = w * 64 + static_cast<size_t>(__builtin_ctzll(edges));
        if (open == SIZE_MAX) {
          open = bit;
        } else {
          run(lowest_ + open, bit - open);
          open = SIZE_MAX;
        }
        edges &= edges - 1;
      }
      carry = bits >> 63;
    }
    if (open != SIZE_MAX) run(lowest_ + open, count_ * 64 - open);
    return rank;
  }

  // How many set pages lie below `page` (a set one).
  size_t Rank(uintptr_t page) const {
    const size_t bit = page - lowest_;
    const uint64_t below = (uint64_t{1} << (bit % 64)) - 1;
    return ranks_[bit / 64] +
           static_cast<size_t>(__builtin_popcountll(words_[bit / 64] & below));
  }

 private:
  uintptr_t lowest_;
  uint64_t* words_;
  uint32_t* ranks_;
  size_t count_;
};

}  // namespace

// Page runs, per-page bookkeeping and the copies, all in mmap'd memory of
// their own so that neither the fault server nor a Read holding the mutex
// can touch a protected page.
struct MemorySnapshot::State {
  struct Run {
    uintptr_t start;  // page-aligned
    size_t pages;
    size_t first_page;   // index of its first page in the arrays below
    size_t first_block;  // index of its first block in `pending`
  };

  std::mutex mutex;
  int uffd = -1;  // the server's
  size_t page_size = 0;
  size_t run_count = 0;
  size_t registered_runs = 0;
  size_t protected_runs = 0;
  Run* runs = nullptr;
  size_t page_count = 0;
  uint32_t* unread = nullptr;  // bytes of ranges on the page not yet read
  uint8_t* copied = nullptr;   // 1: the page's copy is in `copies`
  // Per block of a run: its pages neither read out nor copied.
  uint32_t* pending = nullptr;
  char* copies = nullptr;    // page_count pages, touched only when copied
  size_t control_bytes = 0;  // the mapping this State lives at the start of
  std::atomic<size_t> copied_pages{0};

  size_t Length(const Run& run) const { return run.pages * page_size; }

  bool ProtectRun(size_t i, bool on) const {
    return SetWriteProtection(uffd, runs[i].start, Length(runs[i]), on);
  }

  // The run holding `address`, or null.
  const Run* Find(uintptr_t address) const {
    const Run* end = runs + run_count;
    const Run* after = std::upper_bound(
        static_cast<const Run*>(runs), end, address,
        [](uintptr_t a, const Run& run) { return a < run.start; });
    if (after == runs) return nullptr;
    const Run* run = after - 1;
    return address < run->start + Length(*run) ? run : nullptr;
  }

  char* CopyOf(size_t page) { return copies + page * page_size; }

  // The block of page i of `run`, and the pages [first, last) of the run
  // in that block.
  size_t BlockOf(const Run& run, size_t i) const {
    return run.first_block + (run.start + i * page_size) / kBlockBytes -
           run.start / kBlockBytes;
  }
  std::pair<size_t, size_t> BlockPages(const Run& run, size_t i) const {
    const uintptr_t block =
        (run.start + i * page_size) & ~(uintptr_t{kBlockBytes} - 1);
    return {(std::max(block, run.start) - run.start) / page_size,
            std::min((block + kBlockBytes - run.start) / page_size, run.pages)};
  }
  void ReleaseBlock(const Run& run, size_t i) const {
    const auto [first, last] = BlockPages(run, i);
    SetWriteProtection(uffd, run.start + first * page_size,
                       (last - first) * page_size, false);
  }

  // The fault server's reply to a write at `address`: copy the pages of
  // its block still needed, then let writes through (and wake the writer).
  void ServeWrite(uintptr_t address) {
    const uintptr_t page_address = address & ~(page_size - 1);
    const Run* run = Find(page_address);
    if (run == nullptr) {
      SetWriteProtection(uffd, page_address, page_size, false);
      return;
    }
    const size_t index = (page_address - run->start) / page_size;
    const auto [first, last] = BlockPages(*run, index);
    {
      std::lock_guard<std::mutex> lock(mutex);
      for (size_t i = first; i < last; ++i) {
        const size_t page = run->first_page + i;
        if (unread[page] == 0 || copied[page]) continue;
        CopyPage(CopyOf(page),
                 reinterpret_cast<const char*>(run->start + i * page_size),
                 page_size);
        copied[page] = 1;
        copied_pages.fetch_add(1, std::memory_order_relaxed);
      }
      pending[BlockOf(*run, index)] = 0;
    }
    ReleaseBlock(*run, index);
  }

  // The server cannot go on (it never happened): writes must not wait
  // for it forever, so every page is let go, and the snapshot no longer
  // holds. Reads still return; what they return may be newer.
  void GiveUp() {
    for (size_t i = 0; i < run_count; ++i) {
      ProtectRun(i, false);
    }
  }
};

// In a mapping of its own, like State: the server's thread writes it (the
// mutex) while pages are protected.
struct MemorySnapshot::Server::Impl {
  int uffd = -1;
  int stop_fd = -1;
  size_t page_size = 0;
  std::thread thread;
  // Held while a fault is served, so that a snapshot that detaches (sets
  // `state` to null) knows the server no longer uses it.
  std::mutex attach_mutex;
  State* state = nullptr;  // the snapshot served, if any
  // Set once the thread runs Serve (see Protect); `failed` once it has
  // stopped serving for good.
  std::atomic<bool> serving{false};
  std::atomic<bool> failed{false};
  // Where the snapshots' copies go, kept from one snapshot to the next
  // and lazily freed between them (~MemorySnapshot): a copy into memory
  // mapped afresh also pays its page faults, and on our virtual machine a
  // huge page the kernel had not used for seconds cost 2.2 s per GiB to
  // fault in. Address space only until copied into; on huge pages where
  // the kernel allows them, because a fault per 4 KiB copied would cost
  // more than the copy. Used by the attached snapshot only.
  char* copies = nullptr;
  size_t copies_bytes = 0;

  absl::StatusOr<char*> CopiesFor(size_t bytes) {
    if (copies_bytes < bytes) {
      UnmapHugePages(copies, copies_bytes);
      copies = nullptr;
      copies_bytes = 0;
      absl::StatusOr<char*> mapped = MapHugePages(bytes, /*reserve=*/false);
      if (!mapped.ok()) return mapped.status();
      copies = *mapped;
      copies_bytes = bytes;
    }
    return copies;
  }

  void ServeWrite(uintptr_t address) {
    std::lock_guard<std::mutex> lock(attach_mutex);
    if (state != nullptr) {
      state->ServeWrite(address);
    } else {
      // A snapshot gone since: its pages are writable again already.
      SetWriteProtection(uffd, address & ~(page_size - 1), page_size, false);
    }
  }

  void GiveUp() {
    failed.store(true);
    std::lock_guard<std::mutex> lock(attach_mutex);
    if (state != nullptr) state->GiveUp();
  }

  void Serve() {
    struct pollfd fds[2] = {{uffd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
    struct uffd_msg messages[16];
    serving.store(true, std::memory_order_release);
    for (;;) {
      if (poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        return GiveUp();
      }
      if (fds[1].revents != 0) return;
      if ((fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) != 0) {
        return GiveUp();
      }
      const ssize_t got = read(uffd, messages, sizeof(messages));
      if (got < 0 && errno != EAGAIN && errno != EINTR) return GiveUp();
      if (got <= 0) continue;  // another wakeup took it
      for (size_t i = 0; i < static_cast<size_t>(got) / sizeof(uffd_msg); ++i) {
        if (messages[i].event == UFFD_EVENT_PAGEFAULT) {
          ServeWrite(messages[i].arg.pagefault.address);
        }
      }
    }
  }
};

absl::StatusOr<std::unique_ptr<MemorySnapshot::Server>>
MemorySnapshot::Server::Start() {
  void* memory = mmap(nullptr, sizeof(Impl), PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) return Unavailable("mmap", errno);
  // From here on the destructor cleans up whatever was set up.
  std::unique_ptr<Server> server(new Server(new (memory) Impl));
  Impl& impl = *server->impl_;
  impl.page_size = PageSize();
  int uffd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  if (uffd < 0 && errno == EPERM) {
    const int device = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    if (device >= 0) {
      uffd = ioctl(device, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
      close(device);
    } else {
      errno = EPERM;
    }
  }
  // Not UFFD_USER_MODE_ONLY, which any user may have: with it, a system
  // call that writes into a protected page (read(2) into a tensor, say)
  // fails with EFAULT instead of waiting for the copy. A forked snapshot
  // is the safe fallback for such a process.
  if (uffd < 0 && errno == EPERM) {
    return absl::UnavailableError(
        "memory snapshot: userfaultfd: not permitted to this process (it "
        "needs root, CAP_SYS_PTRACE, vm.unprivileged_userfaultfd=1 or "
        "read-write access to /dev/userfaultfd)");
  }
  if (uffd < 0) return Unavailable("userfaultfd", errno);
  impl.uffd = uffd;
  struct uffdio_api api = {};
  api.api = UFFD_API;
  api.features = UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_UNPOPULATED;
  if (ioctl(uffd, UFFDIO_API, &api) != 0) {
    return Unavailable("userfaultfd write protection (Linux >= 6.4)", errno);
  }
  impl.stop_fd = eventfd(0, EFD_CLOEXEC);
  if (impl.stop_fd < 0) return Unavailable("eventfd", errno);
  try {
    Impl* const serving = &impl;
    impl.thread = std::thread([serving] { serving->Serve(); });
  } catch (const std::system_error& error) {
    return Unavailable("starting its thread", error.code().value());
  }
  return server;
}

MemorySnapshot::Server::~Server() {
  Impl& impl = *impl_;
  if (impl.thread.joinable()) {
    const uint64_t one = 1;
    while (write(impl.stop_fd, &one, sizeof(one)) < 0 && errno == EINTR) {
    }
    impl.thread.join();
  }
  if (impl.uffd >= 0) close(impl.uffd);
  if (impl.stop_fd >= 0) close(impl.stop_fd);
  UnmapHugePages(impl.copies, impl.copies_bytes);
  impl.~Impl();
  munmap(impl_, sizeof(Impl));
}

absl::StatusOr<std::unique_ptr<MemorySnapshot>> MemorySnapshot::Take(
    absl::Span<const Range> ranges) {
  absl::StatusOr<std::unique_ptr<MemorySnapshot>> snapshot = Prepare(ranges);
  if (!snapshot.ok()) return snapshot;
  if (absl::Status status = (*snapshot)->Protect(); !status.ok()) {
    return status;
  }
  return snapshot;
}

size_t MemorySnapshot::ScratchBytes(size_t range_count) {
  // Runs, then two arrays of indices (ordered by page) or a bitmap of as
  // many words and its ranks.
  return alignof(State::Run) - 1 +
         range_count * (sizeof(State::Run) + 3 * sizeof(uint32_t));
}

absl::StatusOr<std::unique_ptr<MemorySnapshot>> MemorySnapshot::Prepare(
    absl::Span<const Range> ranges, absl::Span<char> scratch, Server* server) {
  const size_t page_size = PageSize();
  if (ranges.size() > UINT32_MAX) {
    return absl::InvalidArgumentError("memory snapshot: too many ranges");
  }
  // In the caller's scratch memory or, without enough of it, in memory of
  // our own.
  const size_t scratch_bytes = ScratchBytes(ranges.size());
  std::unique_ptr<char[]> own_scratch;
  if (scratch.size() < scratch_bytes) {
    own_scratch.reset(new char[scratch_bytes]);
    scratch = absl::MakeSpan(own_scratch.get(), scratch_bytes);
  }
  void* aligned = scratch.data();
  size_t space = scratch.size();
  std::align(alignof(State::Run), sizeof(State::Run), aligned, space);
  State::Run* const runs = static_cast<State::Run*>(aligned);
  uint32_t* const indices = reinterpret_cast<uint32_t*>(runs + ranges.size());
  // Page-rounded ranges merged into runs, in order: through a bitmap of
  // their pages where it takes no more words than there are ranges, else
  // by ordering them.
  const int page_shift = __builtin_ctzll(page_size);
  // The lowest first page, the highest first page and the highest last
  // page of the non-empty ranges.
  uintptr_t lowest = UINTPTR_MAX;
  uintptr_t highest_first = 0;
  uintptr_t highest = 0;
  for (const Range& range : ranges) {
    if (range.size == 0) continue;
    const uintptr_t data = reinterpret_cast<uintptr_t>(range.data);
    lowest = std::min(lowest, data >> page_shift);
    highest_first = std::max(highest_first, data >> page_shift);
    highest = std::max(highest, (data + range.size - 1) >> page_shift);
  }
  const size_t words = lowest > highest ? 0 : (highest - lowest) / 64 + 1;
  std::optional<PageBitmap> bitmap;
  absl::Span<const uint32_t> order;
  size_t run_count = 0;
  size_t page_count = 0;
  if (words != 0 && words <= ranges.size() && words * 64 <= UINT32_MAX) {
    bitmap.emplace(lowest, reinterpret_cast<uint64_t*>(indices),
                   indices + 2 * ranges.size(), words);
    for (const Range& range : ranges) {
      if (range.size == 0) continue;
      const uintptr_t data = reinterpret_cast<uintptr_t>(range.data);
      bitmap->Set(data >> page_shift, (data + range.size - 1) >> page_shift);
    }
    page_count = bitmap->ForEachRun([&](uintptr_t first_page, size_t pages) {
      const size_t first = run_count == 0 ? 0
                                          : runs[run_count - 1].first_page +
                                                runs[run_count - 1].pages;
      runs[run_count++] = {first_page << page_shift, pages, first};
    });
  } else {
    order = OrderByPage(ranges, page_shift, lowest, highest_first, indices,
                        indices + ranges.size());
    for (const uint32_t i : order) {
      const uintptr_t data = reinterpret_cast<uintptr_t>(ranges[i].data);
      const uintptr_t begin = data & ~(page_size - 1);
      const uintptr_t end =
          (data + ranges[i].size + page_size - 1) & ~(page_size - 1);
      State::Run* const last = run_count == 0 ? nullptr : &runs[run_count - 1];
      if (last != nullptr && begin <= last->start + last->pages * page_size) {
        const uintptr_t run_end =
            std::max<uintptr_t>(last->start + last->pages * page_size, end);
        const size_t pages = (run_end - last->start) / page_size;
        page_count += pages - last->pages;
        last->pages = pages;
      } else {
        runs[run_count++] = {begin, (end - begin) / page_size, page_count};
        page_count += runs[run_count - 1].pages;
      }
    }
  }

  // The State, its runs and its per-page arrays in one mapping.
  const size_t runs_offset = (sizeof(State) + alignof(State::Run) - 1) /
                             alignof(State::Run) * alignof(State::Run);
  const size_t unread_offset = runs_offset + run_count * sizeof(State::Run);
  size_t block_count = 0;
  for (State::Run& run : absl::MakeSpan(runs, run_count)) {
    run.first_block = block_count;
    block_count += (run.start + run.pages * page_size - 1) / kBlockBytes -
                   run.start / kBlockBytes + 1;
  }
  const size_t pending_offset = unread_offset + page_count * sizeof(uint32_t);
  const size_t copied_offset = pending_offset + block_count * sizeof(uint32_t);
  const size_t control_bytes = copied_offset + page_count;
  void* control = mmap(nullptr, control_bytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (control == MAP_FAILED) return Unavailable("mmap", errno);
  State* state = new (control) State;
  char* base = static_cast<char*>(control);
  state->control_bytes = control_bytes;
  state->page_size = page_size;
  state->run_count = run_count;
  state->runs = reinterpret_cast<State::Run*>(base + runs_offset);
  std::copy(runs, runs + run_count, state->runs);
  state->page_count = page_count;
  state->unread = reinterpret_cast<uint32_t*>(base + unread_offset);
  state->copied = reinterpret_cast<uint8_t*>(base + copied_offset);
  state->pending = reinterpret_cast<uint32_t*>(base + pending_offset);
  for (size_t r = 0; r < state->run_count; ++r) {
    const State::Run& run = state->runs[r];
    for (size_t i = 0; i < run.pages;) {
      const size_t last = state->BlockPages(run, i).second;
      state->pending[state->BlockOf(run, i)] = static_cast<uint32_t>(last - i);
      i = last;
    }
  }
  // From here on the destructor cleans up whatever was set up.
  std::unique_ptr<MemorySnapshot> snapshot(new MemorySnapshot(state));
  // Counts the bytes of [at, end) on each of its pages, the first of
  // which is page `index` of the runs.
  auto count_unread = [&](size_t index, uintptr_t at, uintptr_t end) {
    for (; at < end; ++index) {
      const uintptr_t piece_end =
          std::min(end, (at & ~(page_size - 1)) + page_size);
      // Only a million ranges over one page could overflow it.
      if (__builtin_add_overflow(state->unread[index],
                                 static_cast<uint32_t>(piece_end - at),
                                 &state->unread[index])) {
        return false;
      }
      at = piece_end;
    }
    return true;
  };
  bool counted = true;
  if (bitmap.has_value()) {
    // Ranges in the caller's order, which is mostly that of their pages: a
    // range that begins on the last page of the one before, or on the
    // page after, needs no Rank (a popcount, which x86-64's baseline makes
    // a call).
    uintptr_t last_page = 0;
    size_t last_index = SIZE_MAX;
    for (const Range& range : ranges) {
      if (range.size == 0) continue;
      const uintptr_t at = reinterpret_cast<uintptr_t>(range.data);
      const uintptr_t first_page = at >> page_shift;
      const size_t index =
          last_index != SIZE_MAX && first_page == last_page ? last_index
          : last_index != SIZE_MAX && first_page == last_page + 1
              ? last_index + 1
              : bitmap->Rank(first_page);
      counted = counted && count_unread(index, at, at + range.size);
      last_page = (at + range.size - 1) >> page_shift;
      last_index = index + (last_page - first_page);
    }
  } else {
    // In page order, each range lies in the run of the one before or in a
    // later one.
    const State::Run* run = state->runs;
    for (const uint32_t i : order) {
      const uintptr_t at = reinterpret_cast<uintptr_t>(ranges[i].data);
      while (at >= run->start + state->Length(*run)) ++run;
      counted = counted &&
                count_unread(run->first_page + (at - run->start) / page_size,
                             at, at + ranges[i].size);
    }
  }
  if (!counted) {
    return absl::UnavailableError(
        "memory snapshot: too many ranges overlap one page");
  }
  if (page_count == 0) return snapshot;

  if (server == nullptr) {
    absl::StatusOr<std::unique_ptr<Server>> own = Server::Start();
    if (!own.ok()) return own.status();
    snapshot->own_server_ = *std::move(own);
    server = snapshot->own_server_.get();
  }
  Server::Impl& serving = *server->impl_;
  if (serving.failed.load()) {
    return absl::UnavailableError(
        "memory snapshot: its fault server has stopped");
  }
  {
    std::lock_guard<std::mutex> lock(serving.attach_mutex);
    if (serving.state != nullptr) {
      return absl::FailedPreconditionError(
          "memory snapshot: its fault server serves another snapshot");
    }
    serving.state = state;
  }
  snapshot->server_ = &serving;
  absl::StatusOr<char*> copies = serving.CopiesFor(page_count * page_size);
  if (!copies.ok()) {
    return absl::UnavailableError(
        absl::StrCat("memory snapshot: ", copies.status().message()));
  }
  state->copies = *copies;
  const int uffd = serving.uffd;
  state->uffd = uffd;
  for (size_t i = 0; i < state->run_count; ++i) {
    struct uffdio_register registration = {};
    registration.range.start = state->runs[i].start;
    registration.range.len = state->Length(state->runs[i]);
    registration.mode = UFFDIO_REGISTER_MODE_WP;
    if (ioctl(uffd, UFFDIO_REGISTER, &registration) != 0) {
      return Unavailable(
          absl::StrCat("watching ", state->Length(state->runs[i]),
                       " bytes at 0x", absl::Hex(state->runs[i].start)),
          errno);
    }
    state->registered_runs = i + 1;
    if ((registration.ioctls & (uint64_t{1} << _UFFDIO_WRITEPROTECT)) == 0) {
      return Unavailable("write protection of this memory", EOPNOTSUPP);
    }
  }
  return snapshot;
}

absl::Status MemorySnapshot::Protect() {
  return Protect(
      [](size_t count, size_t chunk,
         absl::FunctionRef<void(size_t, size_t)> body) { body(0, count); });
}

absl::Status MemorySnapshot::Protect(ChunkRunner for_each_chunk) {
  State& state = *state_;
  // A write must never wait for nobody, and the server must never wait
  // for itself: a thread's start may allocate (AddressSanitizer's does,
  // and so can an allocator or a profiler preloaded by the user), and an
  // allocation next to a protected tensor would fault on the one thread
  // that serves faults. So nothing is protected until the server's thread
  // has started and runs Serve's own code, which writes only its stack,
  // the server's memory and the State.
  if (state.page_count == 0) return absl::OkStatus();
  while (!server_->serving.load(std::memory_order_acquire)) {
    std::this_thread::yield();
  }
  const size_t pieces =
      (state.page_count + kProtectPiecePages - 1) / kProtectPiecePages;
  // The first error's errno; pieces may fail on several threads at once.
  std::atomic<int> failure{0};
  auto protect_pieces = [&](size_t begin, size_t end) {
    // Pages [first, last) of all runs, in run order.
    const size_t first = begin * kProtectPiecePages;
    const size_t last = std::min(end * kProtectPiecePages, state.page_count);
    if (first >= last) return;
    // The run holding page `first`: the last one starting at or before it.
    size_t run = static_cast<size_t>(
        std::upper_bound(state.runs, state.runs + state.run_count, first,
                         [](size_t page, const State::Run& r) {
                           return page < r.first_page;
                         }) -
        state.runs - 1);
    for (size_t page = first; page < last; ++run) {
      const State::Run& r = state.runs[run];
      const size_t until = std::min(last, r.first_page + r.pages);
      if (!SetWriteProtection(state.uffd,
                              r.start + (page - r.first_page) * state.page_size,
                              (until - page) * state.page_size, true)) {
        int none = 0;
        failure.compare_exchange_strong(none, errno);
      }
      page = until;
    }
  };
  // The first piece, timed, decides. On huge pages a piece is a few
  // page-table entries and takes microseconds: the rest go on this thread,
  // a call per run as before (each call flushes TLBs), since waking
  // another thread costs more than it saves there (1 GiB: 1.7 ms
  // serially, 2.5-3.2 ms spread over pieces). Below kMinSpreadPieces the
  // gain is too small to see: the 20,000 small tensors' pause measured
  // the same either way.
  constexpr auto kSlowPiece = std::chrono::microseconds(50);
  const auto start = std::chrono::steady_clock::now();
  protect_pieces(0, std::min<size_t>(pieces, 1));
  if (pieces > 1) {
    if (pieces >= kMinSpreadPieces &&
        std::chrono::steady_clock::now() - start > kSlowPiece) {
      for_each_chunk(pieces - 1, 1, [&](size_t begin, size_t end) {
        protect_pieces(begin + 1, end + 1);
      });
    } else {
      protect_pieces(1, pieces);
    }
  }
  // A server that stopped meanwhile would leave writes waiting for ever.
  const int error = server_->failed.load() ? EPIPE : failure.load();
  if (error != 0) {
    // Unprotecting a page that is not protected changes nothing.
    for (size_t j = 0; j < state.run_count; ++j) state.ProtectRun(j, false);
    state.protected_runs = 0;
    return Unavailable("write-protecting memory", error);
  }
  state.protected_runs = state.run_count;
  return absl::OkStatus();
}

MemorySnapshot::MemorySnapshot(State* state) : state_(state) {}

MemorySnapshot::~MemorySnapshot() {
  State& state = *state_;
  const size_t page_size = state.page_size;
  // Unprotect first, while the server still answers; then nothing can
  // fault, and the server may let go of this State: once it is detached
  // (under the mutex the server holds while it serves a fault) the server
  // no longer reads it.
  for (size_t i = 0; i < state.protected_runs; ++i) {
    state.ProtectRun(i, false);
  }
  // The copies' pages stay with the server for its next snapshot, freed
  // lazily: the kernel takes them back when it needs memory, and until
  // then a copy into one costs no page fault. Before detaching: once
  // detached, the server's next snapshot may be copying into them. A
  // fault still being served may copy into them after this, which only
  // keeps that page.
  if (state.copies != nullptr && own_server_ == nullptr) {
    (void)madvise(state.copies, state.page_count * page_size, MADV_FREE);
  }
  if (server_ != nullptr) {
    std::lock_guard<std::mutex> lock(server_->attach_mutex);
    server_->state = nullptr;
  }
  for (size_t i = 0; i < state.registered_runs; ++i) {
    struct uffdio_range range = {state.runs[i].start,
                                 state.Length(state.runs[i])};
    (void)ioctl(state.uffd, UFFDIO_UNREGISTER, &range);
  }
  own_server_.reset();
  const size_t control_bytes = state.control_bytes;
  state.~State();
  munmap(state_, control_bytes);
}

absl::Status MemorySnapshot::Read(const char* address, absl::Span<char> out) {
  State& state = *state_;
  const size_t page_size = state.page_size;
  if (out.empty()) return absl::OkStatus();
  const uintptr_t begin = reinterpret_cast<uintptr_t>(address);
  const uintptr_t end = begin + out.size();
  const State::Run* run = state.Find(begin);
  if (run == nullptr || end < begin || end > run->start + state.Length(*run)) {
    return absl::InvalidArgumentError(
        absl::StrCat("memory snapshot: ", out.size(), " bytes at 0x",
                     absl::Hex(begin), " are not within one protected run"));
  }
  const size_t first = (begin - run->start) / page_size;
  const size_t last = (end - 1 - run->start) / page_size + 1;
  // The piece of page i within [begin, end).
  auto piece = [&](size_t i) {
    const uintptr_t page_begin = run->start + i * page_size;
    const uintptr_t from = std::max(begin, page_begin);
    const uintptr_t to = std::min(end, page_begin + page_size);
    return std::make_pair(from, to);
  };
  // Pages already copied are read from their copy; the others from where
  // they are, which is stable while they stay protected. A page copied
  // (and so released) while we read it is read again from its copy.
  //
  // Nothing is allocated or written outside the State while the mutex is
  // held: such a write could fault, and the fault server needs the mutex.
  // `flags` is written (and so unprotected, if it had to be) before.
  // kReleasesBlock: the page whose reading completed its block.
  enum : uint8_t { kWasCopied = 1, kReread = 2, kReleasesBlock = 4 };
  std::vector<uint8_t> flags(last - first, 0);
  {
    std::lock_guard<std::mutex> lock(state.mutex);
    for (size_t i = first; i < last; ++i) {
      if (state.copied[run->first_page + i]) flags[i - first] = kWasCopied;
    }
  }
  auto copy_piece = [&](size_t i, bool from_copy) {
    const auto [from, to] = piece(i);
    const char* source =
        from_copy ? state.CopyOf(run->first_page + i) + (from & (page_size - 1))
                  : reinterpret_cast<const char*>(from);
    std::memcpy(out.data() + (from - begin), source, to - from);
  };
  for (size_t i = first; i < last; ++i) {
    copy_piece(i, flags[i - first] & kWasCopied);
  }
  size_t overread = last;  // a page read more often than allowed
  {
    std::lock_guard<std::mutex> lock(state.mutex);
    for (size_t i = first; i < last; ++i) {
      const size_t page = run->first_page + i;
      uint8_t& flag = flags[i - first];
      if (!(flag & kWasCopied) && state.copied[page]) flag |= kReread;
      const auto [from, to] = piece(i);
      if (state.unread[page] < to - from) {
        overread = i;
        continue;
      }
      state.unread[page] -= static_cast<uint32_t>(to - from);
      if (state.unread[page] == 0 && !state.copied[page] &&
          --state.pending[state.BlockOf(*run, i)] == 0) {
        flag |= kReleasesBlock;
      }
    }
  }
  // Copies never change once made.
  for (size_t i = first; i < last; ++i) {
    if (flags[i - first] & kReread) copy_piece(i, true);
  }
  for (size_t i = first; i < last; ++i) {
    if (flags[i - first] & kReleasesBlock) state.ReleaseBlock(*run, i);
  }
  if (overread != last) {
    return absl::FailedPreconditionError(
        absl::StrCat("memory snapshot: the page at 0x",
                     absl::Hex(run->start + overread * page_size),
                     " was read more than once"));
  }
  return absl::OkStatus();
}

size_t MemorySnapshot::protected_bytes() const {
  return state_->page_count * state_->page_size;
}

size_t MemorySnapshot::copied_bytes() const {
  return state_->copied_pages.load(std::memory_order_relaxed) *
         state_->page_size;
}

}  // namespace checkpoint
