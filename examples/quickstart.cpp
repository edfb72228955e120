// Fit a RealNVP to points on a noisy ring, then evaluate densities and draw samples.
#include <cmath>
#include <cstdio>
#include <nflow/nflow.hpp>
#include <random>

int main() {
  using Coupling = nflow::AffineCoupling<double>;
  std::mt19937_64 rng(0);

  // Data: 4,000 points near the circle of radius 2, one sample per column.
  std::normal_distribution<double> noise(0.0, 0.1);
  std::uniform_real_distribution<double> angle(0.0, 2 * M_PI);
  nflow::Matrix<double> x(2, 4000);
  for (Eigen::Index j = 0; j < x.cols(); ++j) {
    const double a = angle(rng), r = 2.0 + noise(rng);
    x.col(j) << r * std::cos(a), r * std::sin(a);
  }

  // Six couplings over alternating coordinates on a standard normal base.
  nflow::DynamicChain<Coupling> chain(2);
  for (int i = 0; i < 6; ++i)
    chain.push_back(Coupling(nflow::Mask::alternating(2, i % 2), {}, rng));
  nflow::TransformedDistribution model(chain);

  // Maximum likelihood with Adam, then density and samples.
  nflow::FitOptions options;
  options.max_steps = 2000;
  nflow::fit_maximum_likelihood(model, x, {}, options);
  std::printf("mean NLL on the data: %.3f nats\n", nflow::mean_nll(model, x));

  nflow::Matrix<double> points(2, 2);
  points << 2.0, 0.0, 0.0, 0.0;  // columns (2, 0) on the ring and (0, 0) at its centre
  const auto log_p = model.log_prob(points);
  std::printf("log p(2, 0) = %.3f, log p(0, 0) = %.3f\n", log_p(0), log_p(1));

  auto [samples, log_q] = model.sample_and_log_prob(3, rng);
  for (Eigen::Index j = 0; j < samples.cols(); ++j) {
    std::printf("sample (%6.3f, %6.3f), radius %.3f, log p %.3f\n", samples(0, j), samples(1, j),
                samples.col(j).norm(), log_q(j));
  }
}
