// One test that touches LibTorch, Abseil, Protobuf, GoogleTest and xxHash
// together, so a broken dependency wiring fails here first and clearly.

#include <xxhash.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "testing/testdata/smoke.pb.h"
#include "torch/torch.h"

namespace {

TEST(DependenciesSmokeTest, AllLibrariesWorkTogether) {
  torch::Tensor sum = torch::ones({2, 3}).sum();
  EXPECT_EQ(sum.item<float>(), 6.0f);

  absl::Status status = absl::NotFoundError(absl::StrCat("tensor ", 42));
  EXPECT_EQ(status.ToString(), "NOT_FOUND: tensor 42");

  testing::SmokeMessage message;
  message.set_name("weight");
  message.add_shape(2);
  message.add_shape(3);
  testing::SmokeMessage parsed;
  ASSERT_TRUE(parsed.ParseFromString(message.SerializeAsString()));
  EXPECT_EQ(parsed.shape_size(), 2);
  EXPECT_EQ(parsed.name(), "weight");

  // XXH3 of the empty input is a published constant.
  EXPECT_EQ(XXH3_64bits("", 0), 0x2D06800538D394C2ull);
}

}  // namespace
