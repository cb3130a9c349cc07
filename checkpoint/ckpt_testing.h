// Test fixtures for the `ckpt` tool: a small run directory and pairs of
// checkpoints that differ in known ways. Used by ckpt_commands_test and, via
// the ckpt_test_fixture binary, by the shell test of the real `ckpt`.
//
// WriteCkptFixtures(dir) creates:
//   dir/run/                 three checkpoints (val_loss 0.5, 0.25, 0.75;
//                            steps 10, 20, 30), best -> step 20, last -> 30
//   dir/a                    the reference checkpoint (every dtype kind)
//   dir/same                 a's tensors, other metadata: diff identical
//   dir/b                    a changed: fc.weight[0] += 0.5, emb (float16)
//                            element 1 changed by 1, fc.bias reshaped,
//                            mask dropped, extra added
//   dir/corrupt              a with one byte of fc.bias flipped on disk
//   dir/not_a_checkpoint/    an empty directory
//   dir/file.txt             a regular file
#ifndef CHECKPOINT_CKPT_TESTING_H_
#define CHECKPOINT_CKPT_TESTING_H_

#include <string>

#include "absl/status/status.h"

namespace checkpoint {
namespace ckpt {

absl::Status WriteCkptFixtures(const std::string& dir);

}  // namespace ckpt
}  // namespace checkpoint

#endif  // CHECKPOINT_CKPT_TESTING_H_
