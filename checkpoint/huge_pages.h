// Anonymous memory on transparent huge pages, for state that snapshots
// protect or fork: the kernel's work in a MemorySnapshot or a fork is per
// page table entry, about 100 ns per 4 KiB page on our machine (25 ms per
// GiB), and 512 times less on 2 MiB pages.
#ifndef CHECKPOINT_HUGE_PAGES_H_
#define CHECKPOINT_HUGE_PAGES_H_

#include <cstddef>
#include <cstdint>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace checkpoint {

inline constexpr size_t kHugePageBytes = size_t{2} << 20;

// The kernel's base page size (4 KiB on x86-64).
size_t PageSize();

// Maps `bytes` (rounded up to 4 KiB pages) of zeroed memory starting at a
// 2 MiB boundary, and asks for huge pages (madvise(MADV_HUGEPAGE)) before
// any page is touched. Where the kernel has no huge pages to give (THP
// "never", or memory too fragmented) it is ordinary memory. With
// `reserve` false the memory is not accounted (MAP_NORESERVE) until
// touched. Release it with UnmapHugePages(data, bytes). kResourceExhausted
// when mmap fails.
absl::StatusOr<char*> MapHugePages(size_t bytes, bool reserve = true);
void UnmapHugePages(char* data, size_t bytes);

// Puts memory already in use (the heap blocks of many small tensors) on
// huge pages now: every 2 MiB-aligned block holding a byte of one of the
// [begin, end) address spans is collapsed by the kernel
// (madvise(MADV_COLLAPSE), Linux >= 6.1), its untouched pages filled with
// zeros. The contents stay as they were. Best effort: a block the kernel
// refuses (not anonymous, crossing the end of its mapping, no huge page
// free, an older kernel) stays as it is. Returns the bytes collapsed.
uint64_t CollapseIntoHugePages(
    absl::Span<const std::pair<uintptr_t, uintptr_t>> spans);

}  // namespace checkpoint

#endif  // CHECKPOINT_HUGE_PAGES_H_
