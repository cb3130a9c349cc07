#include "runner/report.h"

#include <cmath>
#include <cstdlib>
#include <vector>

#include "gtest/gtest.h"

namespace runner {
namespace {

TEST(ReportTest, SoftmaxIsStableAndSumsToOne) {
  std::vector<float> logits = {1000.0f, 1000.0f, 0.0f};
  std::vector<double> probabilities = Softmax(logits.data(), 3);
  EXPECT_NEAR(probabilities[0], 0.5, 1e-12);
  EXPECT_NEAR(probabilities[1], 0.5, 1e-12);
  EXPECT_NEAR(probabilities[2], 0.0, 1e-12);
  logits = {1.0f, 2.0f, 3.0f};
  probabilities = Softmax(logits.data(), 3);
  double e = std::exp(1.0), sum = e + e * e + e * e * e;
  EXPECT_NEAR(probabilities[2], e * e * e / sum, 1e-12);
}

TEST(ReportTest, TopKOrdersByProbabilityThenIndex) {
  std::vector<std::pair<int64_t, double>> top = TopK({0.1, 0.4, 0.1, 0.4}, 3);
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(top[0].first, 1);
  EXPECT_EQ(top[1].first, 3);
  EXPECT_EQ(top[2].first, 0);
  EXPECT_EQ(TopK({0.5, 0.5}, 10).size(), 2u);
  std::vector<float> logits = {0.0f, 3.0f, 3.0f, -1.0f};
  EXPECT_EQ(ArgMax(logits.data(), 4), 1);
}

TEST(ReportTest, DigestIsXxh3Hex) {
  // XXH3_64bits of the empty input, from xxHash's own test vectors.
  EXPECT_EQ(Xxh3Hex(""), "2d06800538d394c2");
  EXPECT_EQ(Xxh3Hex("a").size(), 16u);
  EXPECT_NE(Xxh3Hex("a"), Xxh3Hex("b"));
}

TEST(ReportTest, SummarizeMatchesNumpyPercentiles) {
  std::vector<double> samples;
  for (int i = 100; i >= 1; --i) samples.push_back(i);
  LatencySummary summary = Summarize(samples);
  EXPECT_EQ(summary.count, 100);
  EXPECT_EQ(summary.min, 1);
  EXPECT_EQ(summary.max, 100);
  EXPECT_DOUBLE_EQ(summary.mean, 50.5);
  // numpy.percentile(range(1, 101), [50, 90, 99]) == [50.5, 90.1, 99.01]
  EXPECT_DOUBLE_EQ(summary.p50, 50.5);
  EXPECT_NEAR(summary.p90, 90.1, 1e-9);
  EXPECT_NEAR(summary.p99, 99.01, 1e-9);
  EXPECT_NEAR(summary.std_dev, std::sqrt((100.0 * 100 - 1) / 12), 1e-9);
  EXPECT_EQ(Summarize({}).count, 0);
  EXPECT_EQ(Summarize({3}).p99, 3);
}

TEST(ReportTest, PeakResidentMemoryIsReported) {
  EXPECT_GT(PeakResidentKib(), 0);
}

TEST(ReportTest, RelativePathsResolveAgainstBazelRunDirectory) {
  unsetenv("BUILD_WORKING_DIRECTORY");
  EXPECT_EQ(ResolveUserPath("a/b.pt"), "a/b.pt");
  setenv("BUILD_WORKING_DIRECTORY", "/home/me", 1);
  EXPECT_EQ(ResolveUserPath("a/b.pt"), "/home/me/a/b.pt");
  EXPECT_EQ(ResolveUserPath("/abs/b.pt"), "/abs/b.pt");
  EXPECT_EQ(ResolveUserPath(""), "");
}

}  // namespace
}  // namespace runner
