// Human-readable versions of the CUDA libraries a checkpoint was made with,
// decoded from the integers their runtimes report. Torch-free.
#ifndef CHECKPOINT_LIBRARY_VERSIONS_H_
#define CHECKPOINT_LIBRARY_VERSIONS_H_

#include <string>

namespace checkpoint {

// "13.0" from CUDART's 13000 (major * 1000 + minor * 10).
std::string CudaVersionString(long version);

// cuDNN's version integer as "major.minor.patch". cuDNN up to 8 encodes
// major * 1000 + minor * 100 + patch (8907 is 8.9.7); cuDNN 9 and later
// encode major * 10000 + minor * 100 + patch (91900 is 9.19.0). The two
// ranges do not overlap, since 8.x stays below 9000.
std::string CudnnVersionString(long version);

}  // namespace checkpoint

#endif  // CHECKPOINT_LIBRARY_VERSIONS_H_
