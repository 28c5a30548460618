// Golden fixtures on the CUDA backend: the same logits and greedy tokens as transformers, with the
// same tolerances as the CPU backends (tests/models/test_golden.cpp).
#include "golden_check.h"

namespace redhare::cuda_test {
namespace {

class CudaGolden : public CudaTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(CudaGolden, LogitsAndGreedyMatchTransformers) {
  const float worst = check_golden_fixture(GetParam(), *gpu);
  RecordProperty("max_logit_error", std::to_string(worst));
  std::printf("[ golden   ] %s: max |logit - transformers| = %.3g\n", GetParam().c_str(), worst);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaGolden, ::testing::ValuesIn(fixture_names()),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

}  // namespace
}  // namespace redhare::cuda_test
