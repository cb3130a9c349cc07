// Anonymous memory on transparent huge pages, for state that snapshots
// protect or fork: the kernel's work in a MemorySnapshot or a fork is per
// page table entry, about 100 ns per 4 KiB page on our machine (25 ms per
// GiB), and 512 times less on 2 MiB pages.
#ifndef CHECKPOINT_HUGE_PAGES_H_
#define CHECKPOINT_HUGE_PAGES_H_

#include <cstddef>

#include "absl/status/statusor.h"

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

}  // namespace checkpoint

#endif  // CHECKPOINT_HUGE_PAGES_H_
