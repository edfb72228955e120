// A model built from every bijector type evaluates and samples.
#include <catch2/catch.hpp>
#include <nflow/nflow.hpp>

TEST_CASE("a chain of every bijector gives finite samples and log-densities", "[smoke]") {
  std::mt19937_64 rng(7);
  nflow::AffineCoupling<double> coupling(nflow::Mask::alternating(2), {}, 1);
  nflow::TransformedDistribution model(nflow::Chain(
      coupling, nflow::Permutation<double>::reverse(2), nflow::Planar<double>(2, rng, 0.5)));
  auto [x, log_prob] = model.sample_and_log_prob(64, rng);
  REQUIRE(x.allFinite());
  REQUIRE(log_prob.allFinite());
  CHECK((model.log_prob(x) - log_prob).cwiseAbs().maxCoeff() < 1e-9);
}
