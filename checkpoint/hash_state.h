// An XXH3-64 streaming state, owned: for the checksums that the reader and
// the writer compute over a tensor's bytes piece by piece.
#ifndef CHECKPOINT_HASH_STATE_H_
#define CHECKPOINT_HASH_STATE_H_

#include <xxhash.h>

namespace checkpoint {

struct HashState {
  HashState() : state(XXH3_createState()) { XXH3_64bits_reset(state); }
  ~HashState() { XXH3_freeState(state); }
  HashState(const HashState&) = delete;
  HashState& operator=(const HashState&) = delete;
  XXH3_state_t* state;
};

}  // namespace checkpoint

#endif  // CHECKPOINT_HASH_STATE_H_
