// A main for //checkpoint:reader_fuzzer in builds without libFuzzer: runs
// each file named on the command line through LLVMFuzzerTestOneInput once,
// so a crashing input found by the fuzzer can be replayed under any
// sanitizer config.
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::ifstream in(argv[i], std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "reader_fuzzer: error: cannot read %s\n", argv[i]);
      return 1;
    }
    const std::string input((std::istreambuf_iterator<char>(in)), {});
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()),
                           input.size());
    std::fprintf(stderr, "reader_fuzzer: %s: ok\n", argv[i]);
  }
  return 0;
}
