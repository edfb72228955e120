// The optimiser, the fitting loops and parameter I/O: what they must achieve, how they must
// fail, and that they are deterministic.
#include <catch2/catch.hpp>
#include <nflow/nflow.hpp>
#include <sstream>

#include "gradient_check.hpp"

using Catch::Matchers::Contains;
using gradcheck::Mat;
using gradcheck::Row;

namespace {

// A quadratic "model" for optimiser tests: L = 0.5 ||p - target||^2, grad = p - target.
struct Quadratic {
  using Scalar = double;
  Mat p = Mat::Zero(3, 1), g = Mat::Zero(3, 1);
  template <class F>
  void for_each_parameter(F&& f) {
    f("p", p, g);
  }
};

// Samples of N(mean, diag(std^2)) in 2-D.
Mat gaussian_data(nflow::Index n, double m1, double m2, double s1, double s2, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  Mat x(2, n);
  for (nflow::Index j = 0; j < n; ++j)
    x.col(j) << m1 + s1 * normal(rng), m2 + s2 * normal(rng);
  return x;
}

auto small_realnvp(unsigned seed) {
  nflow::CouplingOptions o;
  o.hidden = {16, 16};
  std::mt19937_64 rng(seed);
  nflow::DynamicChain<nflow::AffineCoupling<double>> chain(2);
  for (int i = 0; i < 4; ++i) {
    chain.push_back(nflow::AffineCoupling<double>(nflow::Mask::alternating(2, i % 2), o, rng));
  }
  return nflow::TransformedDistribution(chain);
}

}  // namespace

TEST_CASE("Adam: first step moves each coordinate by the learning rate", "[training]") {
  Quadratic q;
  Mat target(3, 1);
  target << 1.0, -2.0, 1e-3;
  q.g = q.p - target;
  nflow::Adam<double> adam({.learning_rate = 0.01});
  REQUIRE(adam.step(q) == nflow::StepStatus::applied);
  // With bias correction the first update is lr * g / (|g| + eps) per coordinate.
  for (int i = 0; i < 3; ++i) {
    INFO("coordinate " << i);
    CHECK(q.p(i) == Approx(0.01 * (target(i) > 0 ? 1 : -1)).epsilon(1e-4));
  }
}

TEST_CASE("Adam converges on a quadratic; clipping and decay behave", "[training]") {
  Quadratic q;
  Mat target(3, 1);
  target << 1.0, -2.0, 0.5;
  nflow::Adam<double> adam({.learning_rate = 0.05});
  for (int t = 0; t < 2000; ++t) {
    q.g = q.p - target;
    adam.step(q);
  }
  CHECK((q.p - target).norm() < 1e-3);

  // Clipping: a huge gradient is rescaled to clip_norm before entering the moments.
  Quadratic c;
  c.g << 1e6, 0, 0;
  nflow::Adam<double> clipped({.learning_rate = 0.1, .clip_norm = 1.0});
  clipped.step(c);
  CHECK(clipped.last_grad_norm() == Approx(1e6));
  CHECK(c.p(0) == Approx(-0.1).epsilon(1e-6));

  // Decoupled weight decay with zero gradient shrinks parameters by lr * decay.
  Quadratic d;
  d.p << 2, 2, 2;
  nflow::Adam<double> decayed({.learning_rate = 0.1, .weight_decay = 0.5});
  decayed.step(d);
  CHECK(d.p(0) == Approx(2 * (1 - 0.05)));
}

TEST_CASE("Adam refuses non-finite gradients and leaves parameters untouched", "[training]") {
  Quadratic q;
  q.p << 1, 2, 3;
  const Mat before = q.p;
  q.g << 0.5, std::numeric_limits<double>::quiet_NaN(), 0.1;
  nflow::Adam<double> adam;
  CHECK(adam.step(q) == nflow::StepStatus::non_finite_grad);
  CHECK(q.p == before);
  CHECK_THROWS_WITH(nflow::Adam<double>({.learning_rate = -1}),
                    Contains("Adam") && Contains("learning_rate"));
}

TEST_CASE("maximum likelihood recovers a Gaussian's mean and scale", "[training]") {
  const Mat x = gaussian_data(4000, 1.5, -0.5, 0.5, 2.0, 1);
  nflow::TransformedDistribution model(nflow::Chain(nflow::Permutation<double>::reverse(2)),
                                       nflow::DiagonalNormal<double>(2));
  nflow::FitOptions o;
  o.max_steps = 3000;
  o.adam.learning_rate = 0.01;
  const auto report = nflow::fit_maximum_likelihood(model, x, Mat(), o);
  CHECK(report.status == nflow::FitStatus::completed);
  // The permutation swaps the axes: the base sees (x2, x1).
  const auto mean = model.base().mean();
  const nflow::Vector<double> scale = model.base().log_scale().array().exp();
  INFO("mean " << mean.transpose() << " scale " << scale.transpose());
  CHECK(std::abs(mean(0) - x.row(1).mean()) < 0.02);
  CHECK(std::abs(mean(1) - x.row(0).mean()) < 0.02);
  CHECK(std::abs(scale(0) - 2.0) < 0.1);
  CHECK(std::abs(scale(1) - 0.5) < 0.03);
}

TEST_CASE("a RealNVP fit lowers the validation NLL and is deterministic", "[training]") {
  const Mat train = gaussian_data(2000, 0, 0, 1.0, 0.2, 2).array().sin().matrix() * 2.0;
  const Mat valid = gaussian_data(500, 0, 0, 1.0, 0.2, 3).array().sin().matrix() * 2.0;
  nflow::FitOptions o;
  o.max_steps = 300;
  o.eval_every = 100;
  o.seed = 9;
  auto a = small_realnvp(4), b = small_realnvp(4);
  const double before = nflow::mean_nll(a, valid);
  std::vector<double> seen;
  nflow::fit_maximum_likelihood(
      a, train, valid, o, [&](const nflow::FitProgress& p) { seen.push_back(p.validation_nll); });
  nflow::fit_maximum_likelihood(b, train, valid, o);
  const double after = nflow::mean_nll(a, valid);
  INFO("validation NLL before " << before << ", after " << after);
  CHECK(after < before - 0.3);
  CHECK(seen.size() == 3);
  CHECK(nflow::mean_nll(b, valid) == after);  // same seed, same numbers, bit for bit
}

TEST_CASE("early stopping restores the best parameters", "[training]") {
  // Validation data far from the training data: its NLL rises once the fit sharpens.
  const Mat train = gaussian_data(1000, 0, 0, 0.3, 0.3, 4);
  const Mat valid = gaussian_data(200, 3, 3, 0.3, 0.3, 5);
  auto model = small_realnvp(5);
  nflow::FitOptions o;
  o.max_steps = 2000;
  o.eval_every = 20;
  o.patience = 3;
  o.adam.learning_rate = 3e-3;
  std::vector<double> seen;
  const auto report = nflow::fit_maximum_likelihood(
      model, train, valid, o,
      [&](const nflow::FitProgress& p) { seen.push_back(p.validation_nll); });
  CHECK(report.status == nflow::FitStatus::early_stopped);
  CHECK(report.steps < o.max_steps);
  CHECK(report.best_nll == Approx(*std::min_element(seen.begin(), seen.end())));
  CHECK(nflow::mean_nll(model, valid) == Approx(report.best_nll).epsilon(1e-12));
}

TEST_CASE("a parameter average follows the fit and is what the fit evaluates and keeps",
          "[training]") {
  const Mat train = gaussian_data(1000, 0, 0, 1.0, 0.2, 10).array().sin().matrix() * 2.0;
  const Mat valid = gaussian_data(300, 0, 0, 1.0, 0.2, 11).array().sin().matrix() * 2.0;
  nflow::FitOptions o;
  o.max_steps = 60;
  o.eval_every = 1;
  o.batch_size = 64;
  o.seed = 3;
  o.restore_best = false;
  o.adam.learning_rate = 1e-2;
  const double decay = 0.9;

  // The raw trajectory, step by step, and the average it implies: a_0 = theta_0,
  // a_t = d a_{t-1} + (1 - d) theta_t.
  auto raw = small_realnvp(12);
  auto expected = nflow::snapshot_parameters(raw);
  nflow::fit_maximum_likelihood(raw, train, valid, o, [&](const nflow::FitProgress&) {
    std::size_t k = 0;
    raw.for_each_parameter([&](const std::string&, Mat& p, Mat&) {
      expected[k] = decay * expected[k] + (1 - decay) * p;
      ++k;
    });
  });
  const auto raw_final = nflow::snapshot_parameters(raw);

  // The same fit with the average kept: the optimiser's path is unchanged, the model ends with
  // the average, and every reported validation NLL is that of the average at that step.
  auto averaged = small_realnvp(12);
  o.average_decay = decay;
  std::vector<double> seen;
  const auto report = nflow::fit_maximum_likelihood(
      averaged, train, valid, o,
      [&](const nflow::FitProgress& p) { seen.push_back(p.validation_nll); });
  const auto got = nflow::snapshot_parameters(averaged);
  REQUIRE(got.size() == expected.size());
  double worst = 0, moved = 0;
  for (std::size_t k = 0; k < got.size(); ++k) {
    worst = std::max(worst, (got[k] - expected[k]).cwiseAbs().maxCoeff());
    moved = std::max(moved, (got[k] - raw_final[k]).cwiseAbs().maxCoeff());
  }
  INFO("largest difference from the expected average " << worst << "; from the last iterate "
                                                       << moved);
  CHECK(worst < 1e-12);
  CHECK(moved > 1e-3);  // the average is not the last iterate
  REQUIRE(seen.size() == 60);
  CHECK(seen.back() == nflow::mean_nll(averaged, valid));
  CHECK(report.best_nll == *std::min_element(seen.begin(), seen.end()));

  // With restore_best, the model ends with the best evaluated average.
  auto best = small_realnvp(12);
  o.restore_best = true;
  const auto best_report = nflow::fit_maximum_likelihood(best, train, valid, o);
  CHECK(best_report.best_nll == report.best_nll);
  CHECK(nflow::mean_nll(best, valid) == best_report.best_nll);

  // The decay must lie in [0, 1).
  for (double bad : {1.0, -0.5, std::numeric_limits<double>::quiet_NaN()}) {
    o.average_decay = bad;
    CHECK_THROWS_WITH(nflow::fit_maximum_likelihood(best, train, valid, o),
                      Contains("fit_maximum_likelihood") && Contains("average_decay"));
  }
}

TEST_CASE("a parameter average of a noisy fit lies closer to the optimum than the last iterate",
          "[training]") {
  // Maximum likelihood for a diagonal Gaussian at a constant, large learning rate: the iterates
  // jitter around the sample mean and scale; their average jitters much less.
  const Mat x = gaussian_data(4000, 1.0, -2.0, 0.5, 1.5, 13);
  const auto fit = [&](double decay) {
    nflow::TransformedDistribution model(nflow::Chain(nflow::Permutation<double>::reverse(2)),
                                         nflow::DiagonalNormal<double>(2));
    nflow::FitOptions o;
    o.max_steps = 3000;
    o.batch_size = 32;
    o.restore_best = false;
    o.adam.learning_rate = 0.05;
    o.average_decay = decay;
    nflow::fit_maximum_likelihood(model, x, Mat(), o);
    // Distance from the maximum-likelihood estimate (the base sees the axes swapped).
    const nflow::Vector<double> mean = model.base().mean();
    const nflow::Vector<double> log_scale = model.base().log_scale();
    const auto sd = [&](int r) {
      return std::sqrt((x.row(r).array() - x.row(r).mean()).square().mean());
    };
    return std::hypot(mean(0) - x.row(1).mean(), mean(1) - x.row(0).mean(),
                      std::hypot(log_scale(0) - std::log(sd(1)), log_scale(1) - std::log(sd(0))));
  };
  const double last = fit(0.0), average = fit(0.995);
  INFO("distance from the optimum: last iterate " << last << ", average " << average);
  CHECK(average < 0.5 * last);
}

namespace {

// A trainable identity map whose log-det turns NaN after `fuse` training calls, to test how the
// fit handles a loss that goes non-finite mid-way.
class FailingLayer : public nflow::BijectorBase<FailingLayer, double> {
 public:
  struct Cache {};
  explicit FailingLayer(int fuse) : m_fuse(fuse) {}
  nflow::Index dim() const { return 2; }
  Result forward_and_log_det(const ConstRef& z) const { return {Mat(z), Row::Zero(z.cols())}; }
  Result inverse_and_log_det(const ConstRef& x) const { return forward_and_log_det(x); }
  Result forward_and_log_det(const ConstRef& z, Cache&) const {
    Result r = forward_and_log_det(z);
    if (++*m_calls > m_fuse) r.log_det.setConstant(std::numeric_limits<double>::quiet_NaN());
    return r;
  }
  Result inverse_and_log_det(const ConstRef& x, Cache& c) const {
    return forward_and_log_det(x, c);
  }
  Mat backward(const Cache&, const Mat& g, const Row&) { return g; }
  template <class F>
  void for_each_parameter(F&&, const std::string& = "") {}
  void zero_grad() {}

 private:
  int m_fuse;
  std::shared_ptr<int> m_calls = std::make_shared<int>(0);
};

}  // namespace

TEST_CASE("a non-finite loss stops the fit and keeps the best parameters", "[training]") {
  const Mat train = gaussian_data(1000, 1, 1, 0.5, 0.5, 6);
  nflow::TransformedDistribution model(
      nflow::Chain(nflow::Planar<double>(2, std::mt19937_64(1), 0.3), FailingLayer(250)),
      nflow::DiagonalNormal<double>(2));
  nflow::FitOptions o;
  o.max_steps = 1000;
  o.eval_every = 100;
  const auto report = nflow::fit_maximum_likelihood(model, train, Mat(), o);
  CHECK(report.status == nflow::FitStatus::non_finite_loss);
  CHECK(report.steps == 251);
  CHECK(report.best_step == 200);
  CHECK_THAT(report.message, Contains("non-finite loss") && Contains("step 251"));
  bool finite = true;
  model.for_each_parameter([&](const std::string&, Mat& p, Mat&) { finite &= p.allFinite(); });
  CHECK(finite);
}

TEST_CASE("fits reject bad data and settings with a clear message", "[training]") {
  auto model = small_realnvp(7);
  Mat x = gaussian_data(100, 0, 0, 1, 1, 7);
  x(1, 42) = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(nflow::fit_maximum_likelihood(model, x, Mat(), {}),
                    Contains("fit_maximum_likelihood") && Contains("column 42"));
  nflow::FitOptions o;
  o.batch_size = 0;
  CHECK_THROWS_WITH(
      nflow::fit_maximum_likelihood(model, gaussian_data(10, 0, 0, 1, 1, 8), Mat(), o),
      Contains("batch_size"));
  CHECK_THROWS_WITH(nflow::fit_maximum_likelihood(model, Mat::Zero(3, 10), Mat(), {}),
                    Contains("rows"));
}

TEST_CASE("reverse KL fits a correlated Gaussian target: ELBO reaches log Z", "[training]") {
  // p~(x) = exp(-x^T A x / 2), A = [[2, 1.2], [1.2, 1]] (positive definite), so
  // log Z = log(2 pi) - 0.5 log det A.
  Mat a(2, 2);
  a << 2.0, 1.2, 1.2, 1.0;
  const double log_z =
      std::log(2 * std::numbers::pi) - 0.5 * std::log(a(0, 0) * a(1, 1) - a(0, 1) * a(1, 0));
  auto target = [&](const Mat& x) {
    nflow::TargetEvaluation<double> t;
    t.grad = -a * x;
    t.log_prob = 0.5 * (x.array() * t.grad.array()).colwise().sum();
    return t;
  };
  std::mt19937_64 rng(10);
  nflow::DynamicChain<nflow::Planar<double>> chain(2);
  for (int i = 0; i < 4; ++i)
    chain.push_back(nflow::Planar<double>(2, rng, 0.1));
  nflow::TransformedDistribution model(chain);
  nflow::ReverseKlOptions o;
  o.max_steps = 3000;
  o.adam.learning_rate = 0.01;
  o.anneal_steps = 500;
  o.initial_beta = 0.1;
  const auto report = nflow::fit_reverse_kl(model, target, o);
  CHECK(report.status == nflow::FitStatus::completed);
  std::mt19937_64 eval_rng(11);
  const auto elbo = nflow::estimate_elbo(model, target, 100000, eval_rng);
  INFO("ELBO " << elbo.mean << " +- " << elbo.standard_error << ", log Z " << log_z);
  CHECK(elbo.mean <= log_z + 4 * elbo.standard_error);  // the ELBO is a lower bound
  CHECK(elbo.mean > log_z - 0.02);                      // and the fit nearly closes the gap
}

TEST_CASE("parameters save and load exactly; mismatches leave the model unchanged", "[io]") {
  auto a = small_realnvp(12), b = small_realnvp(13);
  std::mt19937_64 rng(14);
  gradcheck::randomise_parameters(a, rng, 0.5);
  const Mat x = gaussian_data(50, 0, 0, 1, 1, 15);
  std::stringstream file;
  nflow::save_parameters(a, file);
  nflow::load_parameters(b, file);
  CHECK(b.log_prob(x) == a.log_prob(x));

  // A model of another architecture rejects the file and keeps its own parameters.
  nflow::TransformedDistribution other(nflow::DynamicChain<nflow::Planar<double>>(
      std::vector<nflow::Planar<double>>(2, nflow::Planar<double>(2))));
  const Row before = other.log_prob(x);
  std::stringstream again;
  nflow::save_parameters(a, again);
  CHECK_THROWS_WITH(nflow::load_parameters(other, again), Contains("load_parameters"));
  CHECK(other.log_prob(x) == before);

  // A corrupted value is reported with the parameter's name.
  std::stringstream bad;
  nflow::save_parameters(a, bad);
  std::string text = bad.str();
  const auto pos = text.find('\n', text.find("flow.0.conditioner.weight0")) + 1;
  text.replace(pos, text.find(' ', pos) - pos, "nan");
  std::stringstream corrupted(text);
  CHECK_THROWS_WITH(nflow::load_parameters(b, corrupted),
                    Contains("flow.0.conditioner.weight0") && Contains("finite"));
  CHECK(b.log_prob(x) == a.log_prob(x));
}
