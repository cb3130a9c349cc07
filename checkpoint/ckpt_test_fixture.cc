// Writes the `ckpt` test fixtures (checkpoint/ckpt_testing.h) into DIR, for
// ckpt_test.sh. Usage: ckpt_test_fixture DIR
#include <cstdio>
#include <string>

#include "checkpoint/ckpt_testing.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: ckpt_test_fixture DIR\n");
    return 2;
  }
  absl::Status status = checkpoint::ckpt::WriteCkptFixtures(argv[1]);
  if (!status.ok()) {
    std::fprintf(stderr, "ckpt_test_fixture: error: %s\n",
                 std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
