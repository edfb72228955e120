// The multithreaded paths, compiled with OpenMP: a model's blocked log_prob / sample and the
// training objectives split among threads must give what one thread gives (bitwise where the
// work per column is the same, to rounding where sums are split), be reproducible, and report
// an exception thrown on any thread.
#include <omp.h>

#include <catch2/catch.hpp>
#include <nflow/nflow.hpp>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using nflow::Index;
template <class S>
using Mat = nflow::Matrix<S>;
template <class S>
using Row = nflow::RowVector<S>;

// Restores Eigen's thread count at the end of a test.
struct Threads {
  explicit Threads(int n) : saved(Eigen::nbThreads()) { Eigen::setNbThreads(n); }
  ~Threads() { Eigen::setNbThreads(saved); }
  int saved;
};

// A 4-D model mixing couplings, a permutation and planar layers on a trainable diagonal base,
// with every parameter away from its identity initialisation.
template <class S>
auto make_model(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  using nflow::AffineCoupling, nflow::Mask, nflow::Planar, nflow::Permutation;
  const nflow::CouplingOptions opt{{16, 16}, nflow::Activation::tanh, nflow::SoftClamp::tanh, 2.0};
  nflow::DynamicChain<nflow::AnyBijector<S>> chain(4);
  chain.push_back(AffineCoupling<S>(Mask::alternating(4), opt, rng));
  chain.push_back(Planar<S>(4, rng, 0.5));
  chain.push_back(Permutation<S>::random(4, 3));
  chain.push_back(AffineCoupling<S>(Mask::half(4, true), opt, rng));
  chain.push_back(Planar<S>(4, rng, 0.5));
  nflow::TransformedDistribution model(chain, nflow::DiagonalNormal<S>(4));
  std::normal_distribution<double> n(0.0, 0.2);
  model.for_each_parameter([&](const std::string&, Mat<S>& p, Mat<S>&) {
    for (Index i = 0; i < p.size(); ++i)
      p.data()[i] += S(n(rng));
  });
  return model;
}

template <class S>
Mat<S> points(Index cols, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> n(0.0, 1.5);
  Mat<S> x(4, cols);
  for (Index i = 0; i < x.size(); ++i)
    x.data()[i] = S(n(rng));
  return x;
}

template <class S>
std::vector<Mat<S>> gradients(auto& model) {
  std::vector<Mat<S>> g;
  model.for_each_parameter([&](const std::string&, Mat<S>&, Mat<S>& grad) { g.push_back(grad); });
  return g;
}

template <class S>
double tolerance() {
  return std::is_same_v<S, float> ? 1e-5 : 1e-12;
}

// Largest |a - b| / max(1, |b|) over the entries.
template <class A, class B>
double rel_diff(const A& a, const B& b) {
  double worst = 0;
  for (Index i = 0; i < a.size(); ++i) {
    const double x = double(a.data()[i]), y = double(b.data()[i]);
    worst = std::max(worst, std::abs(x - y) / std::max(1.0, std::abs(y)));
  }
  return worst;
}

// log p~(x) = -|x|^2 / 8 - x_1^4 / 16, with its gradient. With `fail` set it throws when
// called on OpenMP thread 1 (a worker, not the calling thread).
template <class S>
struct Target {
  bool fail = false;
  nflow::TargetEvaluation<S> operator()(const Mat<S>& x) const {
    if (fail && omp_get_thread_num() == 1) throw std::runtime_error("target failed");
    nflow::TargetEvaluation<S> t;
    t.log_prob = (S(-0.125) * x.colwise().squaredNorm()).array() - x.row(0).array().pow(4) / S(16);
    t.grad = S(-0.25) * x;
    t.grad.row(0).array() -= x.row(0).array().cube() / S(4);
    return t;
  }
};

}  // namespace

TEMPLATE_TEST_CASE("blocked, multithreaded log_prob and sampling match one thread exactly",
                   "[parallel]", float, double) {
  using S = TestType;
  auto model = make_model<S>(1);
  model.set_block_size(37);  // several blocks, the last one partial
  const Mat<S> x = points<S>(1000, 2);

  Row<S> lp1, lp2;
  Mat<S> s1, s2, sl1, sl2;
  Row<S> q1, q2;
  {
    Threads one(1);
    lp1 = model.log_prob(x);
    std::mt19937_64 rng(3);
    s1 = model.sample(1000, rng);
    auto r = model.sample_and_log_prob(1000, rng);
    sl1 = r.value;
    q1 = r.log_prob;
  }
  {
    Threads two(2);
    REQUIRE(Eigen::nbThreads() == 2);
    lp2 = model.log_prob(x);
    std::mt19937_64 rng(3);
    s2 = model.sample(1000, rng);
    auto r = model.sample_and_log_prob(1000, rng);
    sl2 = r.value;
    q2 = r.log_prob;
  }
  // Same blocks, same arithmetic per block: bitwise equal, NaN-free.
  CHECK(lp1.allFinite());
  CHECK((lp1.array() == lp2.array()).all());
  CHECK((s1.array() == s2.array()).all());
  CHECK((sl1.array() == sl2.array()).all());
  CHECK((q1.array() == q2.array()).all());

  // A different block size changes only the rounding of the matrix products.
  model.set_block_size(100000);
  const Row<S> whole = model.log_prob(x);
  CAPTURE(rel_diff(whole, lp1));
  CHECK(rel_diff(whole, lp1) <= 100 * tolerance<S>());

  // sample_and_log_prob's log-density is the model's log_prob at the samples.
  const Row<S> check = model.log_prob(sl1);
  CAPTURE(rel_diff(check, q1));
  CHECK(rel_diff(check, q1) <= 1000 * tolerance<S>());
}

TEMPLATE_TEST_CASE("the maximum-likelihood step split among threads matches one thread",
                   "[parallel][training]", float, double) {
  using S = TestType;
  const Mat<S> x = points<S>(256, 4);

  auto serial = make_model<S>(5);
  nflow::TrainingCache<decltype(serial)> c1;
  double loss1;
  {
    Threads one(1);
    serial.zero_grad();
    loss1 = double(nflow::mean_nll_backward(serial, x, c1));
    CHECK(c1.replicas.empty());
  }
  auto parallel = make_model<S>(5);
  nflow::TrainingCache<decltype(parallel)> c2;
  double loss2, loss3;
  std::vector<Mat<S>> g2;
  {
    Threads two(2);
    parallel.zero_grad();
    loss2 = double(nflow::mean_nll_backward(parallel, x, c2));
    CHECK(c2.replicas.size() == 1);
    g2 = gradients<S>(parallel);
    // A second step on the same buffers gives bitwise the same.
    parallel.zero_grad();
    loss3 = double(nflow::mean_nll_backward(parallel, x, c2));
  }
  CHECK(loss2 == loss3);
  const auto g1 = gradients<S>(serial);
  const auto g3 = gradients<S>(parallel);
  CAPTURE(loss1, loss2);
  CHECK(std::abs(loss1 - loss2) <= tolerance<S>() * std::max(1.0, std::abs(loss1)));
  REQUIRE(g1.size() == g2.size());
  for (std::size_t k = 0; k < g1.size(); ++k) {
    CAPTURE(k, rel_diff(g2[k], g1[k]));
    CHECK(rel_diff(g2[k], g1[k]) <= 10 * tolerance<S>());
    CHECK((g2[k].array() == g3[k].array()).all());
    CHECK(g1[k].norm() > 0);  // every parameter takes part
  }
}

TEMPLATE_TEST_CASE("the reverse-KL step split among threads matches one thread",
                   "[parallel][training]", float, double) {
  using S = TestType;
  const Mat<S> eps = points<S>(200, 6);
  const Target<S> target;

  auto serial = make_model<S>(7);
  nflow::TrainingCache<decltype(serial)> c1;
  nflow::ReverseKlBatch<S> r1;
  {
    Threads one(1);
    serial.zero_grad();
    r1 = nflow::reverse_kl_backward(serial, eps, target, S(0.6), c1);
  }
  auto parallel = make_model<S>(7);
  nflow::TrainingCache<decltype(parallel)> c2;
  nflow::ReverseKlBatch<S> r2;
  {
    Threads two(2);
    parallel.zero_grad();
    r2 = nflow::reverse_kl_backward(parallel, eps, target, S(0.6), c2);
  }
  CAPTURE(r1.loss, r2.loss, r1.elbo, r2.elbo);
  CHECK(std::abs(double(r1.loss - r2.loss)) <=
        tolerance<S>() * std::max(1.0, std::abs(double(r1.loss))));
  CHECK(std::abs(double(r1.elbo - r2.elbo)) <=
        tolerance<S>() * std::max(1.0, std::abs(double(r1.elbo))));
  const auto g1 = gradients<S>(serial), g2 = gradients<S>(parallel);
  for (std::size_t k = 0; k < g1.size(); ++k) {
    CAPTURE(k, rel_diff(g2[k], g1[k]));
    CHECK(rel_diff(g2[k], g1[k]) <= 10 * tolerance<S>());
  }
}

TEST_CASE("an exception on a worker thread reaches the caller", "[parallel][errors]") {
  using S = double;
  Threads two(2);
  auto model = make_model<S>(9);
  nflow::TrainingCache<decltype(model)> cache;
  Target<S> target;
  target.fail = true;
  const Mat<S> eps = points<S>(128, 10);
  model.zero_grad();
  CHECK_THROWS_WITH(nflow::reverse_kl_backward(model, eps, target, S(1), cache), "target failed");

  // A log_prob whose blocks fail (wrong rows) is rejected before any thread starts.
  CHECK_THROWS_AS(model.log_prob(Mat<S>::Zero(3, 100)), std::invalid_argument);
}

TEMPLATE_TEST_CASE("a fit on two threads is reproducible", "[parallel][training]", float, double) {
  using S = TestType;
  Threads two(2);
  const Mat<S> data = points<S>(600, 11);
  auto fit = [&] {
    auto model = make_model<S>(12);
    nflow::FitOptions o;
    o.max_steps = 40;
    o.batch_size = 128;
    o.eval_every = 20;
    o.seed = 13;
    nflow::fit_maximum_likelihood(model, data, Mat<S>(), o);
    return model.log_prob(data);
  };
  const Row<S> a = fit(), b = fit();
  CHECK(a.allFinite());
  CHECK((a.array() == b.array()).all());
}
