#include <atomic>
#include <fstream>
#include <numeric>
#include <vector>

#include <gtest/gtest.h>

#include "core/error.h"
#include "core/mapped_file.h"
#include "core/tensor.h"
#include "core/thread_pool.h"

namespace redhare {
namespace {

TEST(ThreadPool, CoversEveryIndexExactlyOnce) {
  ThreadPool pool(3);
  for (int64_t n : {1, 2, 7, 100, 1001}) {
    for (int64_t grain : {1, 4, 16}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      pool.parallel_for(n, grain, [&](int, int64_t b, int64_t e) {
        EXPECT_TRUE(b % grain == 0) << "range starts off the grain";
        for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
      });
      for (auto& h : hits) ASSERT_EQ(h.load(), 1);
    }
  }
}

TEST(ThreadPool, ManyShortLoops) {
  ThreadPool pool(2);
  std::atomic<int64_t> sum{0};
  for (int rep = 0; rep < 5000; ++rep)
    pool.parallel_for(64, 1, [&](int, int64_t b, int64_t e) { sum += e - b; });
  EXPECT_EQ(sum.load(), 5000 * 64);
}

TEST(Tensor, SliceAndReshapeShareStorage) {
  Tensor t = Tensor::from_f32({0, 1, 2, 3, 4, 5}, {3, 2});
  Tensor s = t.slice_rows(1, 3);
  EXPECT_EQ(s.shape(), (Shape{2, 2}));
  EXPECT_EQ(s.data_as<float>()[0], 2.0f);
  Tensor r = t.reshape({2, 3});
  EXPECT_EQ(r.data(), t.data());
  EXPECT_EQ(r.str(), "f32[2, 3]");
  EXPECT_ANY_THROW(t.reshape({4, 2}));
}

TEST(MappedFile, MapsAndReportsMissingFiles) {
  std::string path = ::testing::TempDir() + "/redhare_mapped.bin";
  {
    std::ofstream f(path, std::ios::binary);
    f << "hello";
  }
  auto m = MappedFile::open(path);
  EXPECT_EQ(m->size(), 5u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(m->data()), 5), "hello");
  try {
    MappedFile::open(path + ".missing");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(".missing: cannot open"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace redhare
