#include "checkpoint/library_versions.h"

#include "gtest/gtest.h"

namespace checkpoint {
namespace {

TEST(CudaVersionStringTest, MajorAndMinor) {
  EXPECT_EQ(CudaVersionString(11070), "11.7");
  EXPECT_EQ(CudaVersionString(12080), "12.8");
  EXPECT_EQ(CudaVersionString(13000), "13.0");
}

TEST(CudnnVersionStringTest, Cudnn8Encoding) {
  EXPECT_EQ(CudnnVersionString(8500), "8.5.0");
  EXPECT_EQ(CudnnVersionString(8907), "8.9.7");
  EXPECT_EQ(CudnnVersionString(7605), "7.6.5");
}

TEST(CudnnVersionStringTest, Cudnn9Encoding) {
  // What torch 2.11.0+cu130 reports (torch.backends.cudnn.version()).
  EXPECT_EQ(CudnnVersionString(91900), "9.19.0");
  EXPECT_EQ(CudnnVersionString(90100), "9.1.0");
  EXPECT_EQ(CudnnVersionString(100203), "10.2.3");
}

}  // namespace
}  // namespace checkpoint
