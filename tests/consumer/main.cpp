// A program outside the project, built against the installed nflow package.
#include <cmath>
#include <cstdio>
#include <nflow/nflow.hpp>
#include <random>

int main() {
  std::mt19937_64 rng(3);
  nflow::DynamicChain<nflow::AffineCoupling<float>> chain(2);
  for (int i = 0; i < 4; ++i) {
    chain.push_back(nflow::AffineCoupling<float>(nflow::Mask::alternating(2, i % 2 == 1), {}, i));
  }
  nflow::TransformedDistribution model(chain);
  auto [x, log_prob] = model.sample_and_log_prob(100, rng);
  const float err = (model.log_prob(x) - log_prob).cwiseAbs().maxCoeff();
  std::printf("consumer: 100 samples, max |log_prob difference| = %g\n", err);
  return std::isfinite(err) && err < 1e-4f ? 0 : 1;
}
