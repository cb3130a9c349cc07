#include "checkpoint/huge_pages.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

// Linux 6.1; glibc's headers here predate it.
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

namespace checkpoint {
namespace {

size_t RoundToPages(size_t bytes) {
  const size_t page = PageSize();
  return (bytes + page - 1) / page * page;
}

}  // namespace

size_t PageSize() {
  static const size_t size = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return size;
}

absl::StatusOr<char*> MapHugePages(size_t bytes, bool reserve) {
  const size_t length = RoundToPages(bytes == 0 ? 1 : bytes);
  // Over-map by one huge page, then give back what lies outside the
  // aligned range.
  const size_t mapped = length + kHugePageBytes;
  void* mapping =
      mmap(nullptr, mapped, PROT_READ | PROT_WRITE,
           MAP_PRIVATE | MAP_ANONYMOUS | (reserve ? 0 : MAP_NORESERVE), -1, 0);
  if (mapping == MAP_FAILED) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "mapping ", length, " bytes of memory: ", std::strerror(errno)));
  }
  const uintptr_t start = reinterpret_cast<uintptr_t>(mapping);
  const uintptr_t aligned =
      (start + kHugePageBytes - 1) & ~(uintptr_t{kHugePageBytes} - 1);
  if (aligned > start) munmap(mapping, aligned - start);
  const uintptr_t end = start + mapped;
  if (end > aligned + length) {
    munmap(reinterpret_cast<void*>(aligned + length), end - aligned - length);
  }
  char* data = reinterpret_cast<char*>(aligned);
  // Only a wish: without THP the memory is still good.
  (void)madvise(data, length, MADV_HUGEPAGE);
  return data;
}

void UnmapHugePages(char* data, size_t bytes) {
  if (data != nullptr) munmap(data, RoundToPages(bytes == 0 ? 1 : bytes));
}

uint64_t CollapseIntoHugePages(
    absl::Span<const std::pair<uintptr_t, uintptr_t>> spans) {
  constexpr uintptr_t kMask = ~(uintptr_t{kHugePageBytes} - 1);
  std::vector<uintptr_t> blocks;
  for (const auto& [begin, end] : spans) {
    for (uintptr_t block = begin & kMask; block < end;
         block += kHugePageBytes) {
      blocks.push_back(block);
    }
  }
  std::sort(blocks.begin(), blocks.end());
  blocks.erase(std::unique(blocks.begin(), blocks.end()), blocks.end());
  uint64_t collapsed = 0;
  // One block per call: one refused block must not cost its neighbours.
  for (const uintptr_t block : blocks) {
    if (madvise(reinterpret_cast<void*>(block), kHugePageBytes,
                MADV_COLLAPSE) == 0) {
      collapsed += kHugePageBytes;
    }
  }
  return collapsed;
}

}  // namespace checkpoint
