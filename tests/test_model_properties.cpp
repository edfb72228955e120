// Properties of whole density models: TransformedDistribution over a chain mixing every kind of
// bijector, with a standard and a diagonal normal base.
//
// - The density integrates to one (composite Simpson quadrature on a box that provably holds
//   all but e^{-R^2/2} of the mass).
// - Samples follow the density (chi-square goodness of fit of a binned histogram against bin
//   probabilities computed by quadrature of exp(log_prob)), and sample_and_log_prob's log_prob
//   equals log_prob at its samples, without calling any inverse.
// - A Chain's and a DynamicChain's log-det is the sum of its layers' log-dets at the
//   intermediate points, in both directions, and so is the model's log_prob.
#include <memory>

#include "property_helpers.hpp"

using nflow::Index;
using props::Mat;
using props::Row;

namespace {

// ---------------------------------------------------------------------------------------------
// The models.

/// Coupling, permutation, planar, inverse planar, coupling, at fixed non-identity parameters.
/// The planar layers have w^T u_hat = softplus(k) - 1 for k = w^T u: k = -1 gives c = -0.69
/// (a contracting fold, 1 + c h' >= 0.31), k = 1.5 gives c = +0.70. The couplings' output
/// layers are random (seeded), with log-scales soft-clamped to |s| < 2 and < 1.5.
template <class S>
auto mixed_flow() {
  Eigen::Vector2d w1(0.9, -0.6), w2(-0.4, 1.1);
  const auto u_for = [](const Eigen::Vector2d& w, double k, double orth) {
    const Eigen::Vector2d perp(-w(1), w(0));
    return Eigen::Vector2d((k / w.squaredNorm()) * w + orth * perp.normalized());
  };
  nflow::Planar<S> planar(u_for(w1, -1.0, 0.5).template cast<S>(), w1.cast<S>(), S(0.3));
  nflow::Planar<S> to_invert(u_for(w2, 1.5, -0.7).template cast<S>(), w2.cast<S>(), S(-0.4));
  auto c0 = props::make_coupling<S>(2, props::Regime::random, 11, 0);
  auto c4 = props::make_coupling<S>(2, props::Regime::random, 12, 1);
  return nflow::Chain(std::move(c0), nflow::Permutation<S>::reverse(2), std::move(planar),
                      nflow::Inverse<nflow::Planar<S>>(std::move(to_invert)), std::move(c4));
}

template <class S>
nflow::DiagonalNormal<S> diagonal_base() {
  nflow::Vector<S> mean(2), log_scale(2);
  mean << S(0.4), S(-0.7);
  log_scale << S(0.3), S(-0.25);
  return nflow::DiagonalNormal<S>(mean, log_scale);
}

template <class S>
auto standard_model() {
  return nflow::TransformedDistribution(mixed_flow<S>());
}

template <class S>
auto diagonal_model() {
  return nflow::TransformedDistribution(mixed_flow<S>(), diagonal_base<S>());
}

// ---------------------------------------------------------------------------------------------
// Boxes that hold the mass.

struct Box {
  double x0, x1, y0, y1;
  double area() const { return (x1 - x0) * (y1 - y0); }
  bool contains(double x, double y) const { return x >= x0 && x <= x1 && y >= y0 && y <= y1; }
};

/// The model is x = f(z), z = base.transform_noise(eps) with eps ~ N(0, I_2), a homeomorphism
/// of the plane in eps. The disc |eps| <= R has probability 1 - e^{-R^2/2}, and its image is
/// the region bounded by the image of its circle (Jordan-Schoenflies); a box holding that
/// curve holds the region, so the box's complement has probability at most e^{-R^2/2}. The
/// curve is sampled at `n` angles; the box is grown by the larger of 5% of its size and twice
/// the largest gap between consecutive image points, for the curve between samples.
template <class Model>
Box mass_box(const Model& model, double radius, Index n = 8192) {
  using S = typename Model::Scalar;
  Mat<S> eps(2, n);
  for (Index j = 0; j < n; ++j) {
    const double a = 2 * M_PI * double(j) / double(n);
    eps(0, j) = S(radius * std::cos(a));
    eps(1, j) = S(radius * std::sin(a));
  }
  const Mat<S> x = model.flow().forward(model.base().transform_noise(eps).value);
  REQUIRE(x.allFinite());
  double gap = 0;
  for (Index j = 0; j < n; ++j)
    gap = std::max(gap, double((x.col(j) - x.col((j + 1) % n)).norm()));
  Box b{double(x.row(0).minCoeff()), double(x.row(0).maxCoeff()), double(x.row(1).minCoeff()),
        double(x.row(1).maxCoeff())};
  const double mx = std::max(0.05 * (b.x1 - b.x0), 2 * gap);
  const double my = std::max(0.05 * (b.y1 - b.y0), 2 * gap);
  return Box{b.x0 - mx, b.x1 + mx, b.y0 - my, b.y1 + my};
}

// ---------------------------------------------------------------------------------------------
// Composite Simpson quadrature of exp(log_prob).

/// Simpson weights 1, 4, 2, 4, ..., 4, 1 (times h/3) on n intervals, n even.
inline std::vector<double> simpson_weights(Index n, double h) {
  std::vector<double> w(n + 1);
  for (Index i = 0; i <= n; ++i)
    w[i] = (i == 0 || i == n ? 1.0 : (i % 2 == 1 ? 4.0 : 2.0)) * h / 3.0;
  return w;
}

/// The density exp(log_prob) on the (nx + 1) x (ny + 1) nodes of a grid over `box`, evaluated
/// row by row in the model's Scalar and returned in double (row-major: node (i, j) at
/// j * (nx + 1) + i). Any non-finite log_prob is reported as a failure.
template <class Model>
std::vector<double> density_on_grid(const Model& model, const Box& box, Index nx, Index ny) {
  using S = typename Model::Scalar;
  std::vector<double> p((nx + 1) * (ny + 1));
  const double hx = (box.x1 - box.x0) / double(nx), hy = (box.y1 - box.y0) / double(ny);
  Mat<S> row(2, nx + 1);
  Index non_finite = 0;
  for (Index j = 0; j <= ny; ++j) {
    for (Index i = 0; i <= nx; ++i) {
      row(0, i) = S(box.x0 + hx * double(i));
      row(1, i) = S(box.y0 + hy * double(j));
    }
    const Row<S> lp = model.log_prob(row);
    for (Index i = 0; i <= nx; ++i) {
      if (!std::isfinite(lp(i)) && !(lp(i) == -std::numeric_limits<S>::infinity())) ++non_finite;
      p[j * (nx + 1) + i] = std::exp(double(lp(i)));
    }
  }
  INFO("log_prob on the quadrature grid over [" << box.x0 << ", " << box.x1 << "] x [" << box.y0
                                                << ", " << box.y1 << "]");
  CAPTURE(non_finite);
  CHECK(non_finite == 0);
  return p;
}

/// Composite Simpson on an n x n grid over the box.
template <class Model>
double integrate(const Model& model, const Box& box, Index n) {
  const std::vector<double> p = density_on_grid(model, box, n, n);
  const auto wx = simpson_weights(n, (box.x1 - box.x0) / double(n));
  const auto wy = simpson_weights(n, (box.y1 - box.y0) / double(n));
  double sum = 0;
  for (Index j = 0; j <= n; ++j) {
    double row = 0;
    for (Index i = 0; i <= n; ++i)
      row += wx[i] * p[j * (n + 1) + i];
    sum += wy[j] * row;
  }
  return sum;
}

/// Probabilities of the nb x nb equal bins of `box`, each by composite Simpson with m (even)
/// intervals per side, as a vector indexed by bin (bx, by) at by * nb + bx.
template <class Model>
std::vector<double> bin_probabilities(const Model& model, const Box& box, Index nb, Index m) {
  const Index n = nb * m;
  const std::vector<double> p = density_on_grid(model, box, n, n);
  const auto wx = simpson_weights(m, (box.x1 - box.x0) / double(n));
  const auto wy = simpson_weights(m, (box.y1 - box.y0) / double(n));
  std::vector<double> prob(nb * nb, 0.0);
  for (Index by = 0; by < nb; ++by)
    for (Index bx = 0; bx < nb; ++bx) {
      double s = 0;
      for (Index j = 0; j <= m; ++j)
        for (Index i = 0; i <= m; ++i)
          s += wx[i] * wy[j] * p[(by * m + j) * (n + 1) + (bx * m + i)];
      prob[by * nb + bx] = s;
    }
  return prob;
}

// ---------------------------------------------------------------------------------------------
// Chi-square.

/// Upper quantile of the chi-square distribution with k degrees of freedom by the
/// Wilson-Hilferty cube-root normal approximation, k (1 - 2/(9k) + z sqrt(2/(9k)))^3, with z the
/// standard normal upper quantile. For k >= 30 and tail 1e-4 it is within about 0.2% of the
/// exact quantile, far less than the gap between a fitting and a misfitting model here.
inline double chi2_quantile_wh(double k, double z) {
  const double a = 2.0 / (9.0 * k);
  return k * std::pow(1.0 - a + z * std::sqrt(a), 3);
}

/// z with P(N(0,1) > z) = 1e-4.
inline constexpr double z_1e4 = 3.7190164854556804;

struct ChiSquare {
  double statistic = 0;
  int cells = 0;  // after pooling; degrees of freedom = cells - 1
  double critical = 0;
};

/// Pearson's statistic of the samples' histogram on the nb x nb bins of `box` plus one cell for
/// everything outside it, against the given bin probabilities (the outside cell gets
/// 1 - their sum). Bins expected to hold fewer than 5 samples are pooled into the outside cell.
template <class S>
ChiSquare chi_square(const Mat<S>& x, const Box& box, Index nb, const std::vector<double>& prob) {
  const double n = double(x.cols());
  std::vector<double> counts(nb * nb, 0.0);
  double outside = 0;
  for (Index j = 0; j < x.cols(); ++j) {
    const double u = (double(x(0, j)) - box.x0) / (box.x1 - box.x0) * double(nb);
    const double v = (double(x(1, j)) - box.y0) / (box.y1 - box.y0) * double(nb);
    if (u >= 0 && u < double(nb) && v >= 0 && v < double(nb)) {
      counts[Index(v) * nb + Index(u)] += 1;
    } else {
      outside += 1;
    }
  }
  ChiSquare r;
  double pooled_count = outside, pooled_prob = 1.0;
  for (std::size_t b = 0; b < prob.size(); ++b)
    pooled_prob -= prob[b];
  for (std::size_t b = 0; b < prob.size(); ++b) {
    const double e = n * prob[b];
    if (e < 5) {
      pooled_count += counts[b];
      pooled_prob += prob[b];
      continue;
    }
    r.statistic += (counts[b] - e) * (counts[b] - e) / e;
    r.cells += 1;
  }
  const double e = n * pooled_prob;
  if (e > 0) {
    r.statistic += (pooled_count - e) * (pooled_count - e) / e;
    r.cells += 1;
  }
  r.critical = chi2_quantile_wh(double(r.cells - 1), z_1e4);
  return r;
}

// ---------------------------------------------------------------------------------------------
// A bijector that counts the calls of each direction.

struct CallCounts {
  long forward = 0, inverse = 0;
};

/// Wraps a bijector and counts how many of its calls ran each direction (copies share the
/// counts). Everything a user-defined bijector needs, by BijectorBase.
template <class B>
class Counted : public nflow::BijectorBase<Counted<B>, typename B::Scalar> {
 public:
  using Base = nflow::BijectorBase<Counted<B>, typename B::Scalar>;
  using typename Base::ConstRef;
  using typename Base::Result;

  Counted(B b, std::shared_ptr<CallCounts> counts) : m_b(std::move(b)), m_counts(counts) {}
  Index dim() const { return m_b.dim(); }
  Result forward_and_log_det(const ConstRef& z) const {
    ++m_counts->forward;
    return m_b.forward_and_log_det(z);
  }
  Result inverse_and_log_det(const ConstRef& x) const {
    ++m_counts->inverse;
    return m_b.inverse_and_log_det(x);
  }

 private:
  B m_b;
  std::shared_ptr<CallCounts> m_counts;
};

/// Eight planar layers with c = w^T u_hat between -0.9 and 0.9, so that their composition
/// folds strongly and its inverse needs real root finding.
template <class S>
std::vector<nflow::Planar<S>> planar_stack(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  std::vector<nflow::Planar<S>> layers;
  for (int l = 0; l < 8; ++l) {
    Eigen::Vector2d w(normal(rng), normal(rng));
    w *= 1.5 / w.norm();
    const double c = -0.9 + 1.8 * l / 7.0;
    // softplus(k) - 1 = c  <=>  k = log(expm1(1 + c)).
    const double k = std::log(std::expm1(1 + c));
    const Eigen::Vector2d perp(-w(1), w(0));
    const Eigen::Vector2d u = (k / w.squaredNorm()) * w + 0.5 * normal(rng) * perp.normalized();
    layers.emplace_back(u.cast<S>(), w.cast<S>(), S(0.5 * normal(rng)));
  }
  return layers;
}

/// sample_and_log_prob against log_prob: tolerance on |a - b| / max(1, |b|). The two run
/// different directions (forward log-dets at z; inverse and its log-dets at x = f(z)), so they
/// differ by rounding (a few dozen operations, 64 eps) amplified by the conditioning of the
/// chain, which for these parameters (|s| < 2, 1 + c h' >= 0.1 per planar layer) stays below
/// ~1e3: 64e3 eps, i.e. 1.4e-11 in double and 7.6e-3 in float.
template <class S>
double log_prob_tolerance() {
  return 64e3 * std::numeric_limits<S>::epsilon();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The density integrates to one.

// Simpson's error is O(h^4) for smooth integrands: on the n = 1024 grid it is far below 1e-3 in
// double, and the n = 512 grid shows it converging (the two results are both printed). The tail
// outside the box is at most e^{-R^2/2} = e^{-24.5} ~ 2e-11 for R = 7.
//
// In float, log_prob carries a relative error of a few float ulps times |log p| (up to ~30 on
// the grid), so each node's density is off by ~1e-5 relative; the weighted sum of those errors
// is ~1e-5 of the integral whatever their correlation, and the nodes themselves are rounded to
// float (a shift of ~1e-7 relative). The double bound 1e-3 therefore holds in float with a
// margin of ~100, and is kept.
TEMPLATE_TEST_CASE("a model's density integrates to one over the plane", "[model][quadrature]",
                   float, double) {
  using S = TestType;
  constexpr double radius = 7.0;
  const double tail = std::exp(-radius * radius / 2);
  const auto check = [&](const auto& model, const char* name) {
    const Box box = mass_box(model, radius);
    const double coarse = integrate(model, box, 512);
    const double fine = integrate(model, box, 1024);
    std::printf(
        "quadrature <%s> %-16s box [%.2f, %.2f] x [%.2f, %.2f]: n=512 %.3e, n=1024 %.3e"
        " (integral - 1), tail <= %.1e\n",
        props::scalar_name<S>(), name, box.x0, box.x1, box.y0, box.y1, coarse - 1, fine - 1, tail);
    INFO(name << "<" << props::scalar_name<S>() << ">: box [" << box.x0 << ", " << box.x1 << "] x ["
              << box.y0 << ", " << box.y1 << "], mass outside <= " << tail);
    const double err = std::abs(fine - 1), err_coarse = std::abs(coarse - 1);
    CAPTURE(fine, coarse, err, err_coarse);
    CHECK(err + tail < 1e-3);
    // And what this grid actually achieves: Simpson's error on the n = 512 grid is ~1e-9 in
    // double and falls as h^4, so 1e-9 bounds the n = 1024 grid; in float the rounding of
    // log_prob (above) bounds it by 1e-5.
    CHECK(err < (std::is_same_v<S, float> ? 1e-5 : 1e-9));
    // Simpson on the finer grid is not worse than on the coarser one by more than the tail
    // and float's rounding (a sign that the grid resolves the density).
    CHECK(err <= err_coarse + (std::is_same_v<S, float> ? 1e-5 : 1e-9));
  };
  check(standard_model<S>(), "standard base");
  check(diagonal_model<S>(), "diagonal base");
}

TEST_CASE("the quadrature detects a density that does not integrate to one",
          "[model][quadrature]") {
  // Teeth: the same quadrature on a flow whose log-det is dropped (a wrong density) is far from
  // one. Dropping the log-det of the chain gives p_Z(f^{-1}(x)), which integrates to E|det J_f|.
  const auto model = diagonal_model<double>();
  struct NoLogDet {
    const decltype(model)& m;
    using Scalar [[maybe_unused]] = double;  // read by integrate() through Model::Scalar
    nflow::RowVector<double> log_prob(const Mat<double>& x) const {
      return m.base().log_prob(m.flow().inverse(x));
    }
  } wrong{model};
  const Box box = mass_box(model, 7.0);
  const Index n = 512;
  const std::vector<double> p = density_on_grid(wrong, box, n, n);
  const auto wx = simpson_weights(n, (box.x1 - box.x0) / double(n));
  const auto wy = simpson_weights(n, (box.y1 - box.y0) / double(n));
  double sum = 0;
  for (Index j = 0; j <= n; ++j)
    for (Index i = 0; i <= n; ++i)
      sum += wx[i] * wy[j] * p[j * (n + 1) + i];
  CAPTURE(sum);
  CHECK(std::abs(sum - 1) > 1e-2);
}

// ---------------------------------------------------------------------------------------------
// Samples follow the density.

// N = 100,000 samples, 20 x 20 bins over the box holding the image of the disc |eps| <= 2.5
// (at least 1 - e^{-3.125} = 95.6% of the mass) plus one outside cell, bins expected below 5
// pooled into it. Bin probabilities by Simpson with 16 intervals per bin side; their error is
// estimated against 32 intervals (Simpson's O(h^4) error makes the finer one ~16x better), and
// the bias that error adds to Pearson's statistic, N sum_b delta_b^2 / p_b, must stay below 1,
// against a gap of ~95 between the degrees of freedom and the critical value. The critical
// value is the chi-square quantile at false-alarm probability 1e-4 for the pooled degrees of
// freedom (Wilson-Hilferty); the four such tests (two bases, two scalars) have a joint
// false-alarm probability below 4e-4 for a random seed, and the seeds are fixed. The same
// samples against a model with the base mean shifted by 0.08 must exceed the critical value,
// which shows the test has power at this N.
TEMPLATE_TEST_CASE("samples follow the model's density (chi-square)", "[model][sampling]", float,
                   double) {
  using S = TestType;
  constexpr Index n_samples = 100000, nb = 20, m = 16;
  const auto run = [&](const auto& model, const auto& shifted, const char* name,
                       std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    const Mat<S> x = model.sample(n_samples, rng);
    REQUIRE(x.allFinite());

    // No sample outside the box that holds all but e^{-24.5} of the mass: with 1e5 samples
    // the chance of one is below 3e-6.
    const Box big = mass_box(model, 7.0);
    Index outside_big = 0;
    for (Index j = 0; j < x.cols(); ++j)
      outside_big += big.contains(double(x(0, j)), double(x(1, j))) ? 0 : 1;
    CHECK(outside_big == 0);

    const Box box = mass_box(model, 2.5);
    const std::vector<double> prob = bin_probabilities(model, box, nb, m);
    const std::vector<double> prob_fine = bin_probabilities(model, box, nb, 2 * m);
    double bin_err = 0, bias = 0;
    for (std::size_t b = 0; b < prob.size(); ++b) {
      const double d = prob[b] - prob_fine[b];
      bin_err = std::max(bin_err, std::abs(d));
      if (prob_fine[b] > 0) bias += double(n_samples) * d * d / prob_fine[b];
    }
    const ChiSquare fit = chi_square(x, box, nb, prob);
    const ChiSquare wrong = chi_square(x, box, nb, bin_probabilities(shifted, box, nb, m));
    std::printf(
        "chi-square <%s> %-14s N=%ld: statistic %.1f on %d dof (critical %.1f at "
        "p=1e-4); shifted model %.1f; bin probabilities m=16 vs 32: max change %.1e, "
        "statistic bias %.1e\n",
        props::scalar_name<S>(), name, long(n_samples), fit.statistic, fit.cells - 1, fit.critical,
        wrong.statistic, bin_err, bias);
    INFO(name << "<" << props::scalar_name<S>() << ">: " << fit.cells << " cells");
    CAPTURE(fit.statistic, fit.critical, wrong.statistic, bin_err, bias);
    CHECK(fit.cells > 100);
    CHECK(bias < 1);
    CHECK(fit.statistic < fit.critical);
    CHECK(wrong.statistic > wrong.critical);
  };

  nflow::Vector<S> shift(2);
  shift << S(0.08), S(0);
  const nflow::DiagonalNormal<S> diag = diagonal_base<S>();
  run(standard_model<S>(),
      nflow::TransformedDistribution(mixed_flow<S>(),
                                     nflow::DiagonalNormal<S>(shift, nflow::Vector<S>::Zero(2))),
      "standard base", 101);
  run(diagonal_model<S>(),
      nflow::TransformedDistribution(
          mixed_flow<S>(), nflow::DiagonalNormal<S>(diag.mean() + shift, diag.log_scale())),
      "diagonal base", 102);
}

TEMPLATE_TEST_CASE("sample_and_log_prob's log_prob is log_prob at its samples", "[model][sampling]",
                   float, double) {
  using S = TestType;
  const double tol = log_prob_tolerance<S>();
  const auto run = [&](const auto& model, const char* name) {
    std::mt19937_64 rng(5), rng_again(5);
    const auto [x, lp] = model.sample_and_log_prob(2000, rng);
    const Mat<S> x_only = model.sample(2000, rng_again);
    const Row<S> lp_x = model.log_prob(x);
    REQUIRE(x.allFinite());
    REQUIRE(lp.allFinite());
    double worst = 0;
    for (Index j = 0; j < x.cols(); ++j) {
      const double err = props::scalar_err(lp(j), lp_x(j));
      worst = std::max(worst, err);
      INFO(name << "<" << props::scalar_name<S>() << ">: sample " << j << " at "
                << props::show(x.col(j)));
      INFO("sample_and_log_prob " << lp(j) << ", log_prob " << lp_x(j));
      CAPTURE(err, tol);
      CHECK(err <= tol);
      // The same noise gives the same points through sample().
      const double err_x = props::rel_err(x_only.col(j), x.col(j));
      CAPTURE(err_x);
      CHECK(err_x <= 4 * std::numeric_limits<S>::epsilon());
    }
    std::printf("sample_and_log_prob vs log_prob <%s> %s: worst |a-b|/max(1,|b|) %.2e\n",
                props::scalar_name<S>(), name, worst);
  };
  run(standard_model<S>(), "mixed chain, standard base");
  run(diagonal_model<S>(), "mixed chain, diagonal base");

  // Eight strongly folding planar layers.
  nflow::DynamicChain<nflow::Planar<S>> stack(2);
  for (auto& p : planar_stack<S>(21))
    stack.push_back(p);
  run(nflow::TransformedDistribution(stack), "8 planar layers");
}

TEMPLATE_TEST_CASE("sample and sample_and_log_prob never call an inverse", "[model][sampling]",
                   float, double) {
  using S = TestType;
  using P = Counted<nflow::Planar<S>>;
  auto counts = std::make_shared<CallCounts>();
  nflow::DynamicChain<P> stack(2);
  for (auto& p : planar_stack<S>(22))
    stack.push_back(P(p, counts));
  const nflow::TransformedDistribution model(stack, diagonal_base<S>());

  std::mt19937_64 rng(9);
  const auto [x, lp] = model.sample_and_log_prob(500, rng);
  const Mat<S> x2 = model.sample(500, rng);
  INFO("calls after sample_and_log_prob and sample: forward " << counts->forward << ", inverse "
                                                              << counts->inverse);
  CHECK(counts->inverse == 0);
  CHECK(counts->forward == 16);  // 8 layers, 2 calls
  REQUIRE(lp.allFinite());
  REQUIRE(x2.allFinite());

  // Teeth: log_prob does run the inverses (one per layer).
  const Row<S> lp_x = model.log_prob(x);
  CHECK(counts->inverse == 8);

  // With the planar inverse made useless (a budget of one root-finding iteration, so most
  // columns come back NaN from log_prob), sample_and_log_prob is unaffected: it gives the same
  // values, bit for bit, as with the full budget.
  nflow::DynamicChain<nflow::Planar<S>> crippled(2), full(2);
  for (auto p : planar_stack<S>(22)) {
    full.push_back(p);
    p.set_max_iterations(1);
    crippled.push_back(p);
  }
  const nflow::TransformedDistribution m_crippled(crippled, diagonal_base<S>());
  const nflow::TransformedDistribution m_full(full, diagonal_base<S>());
  std::mt19937_64 r1(10), r2(10);
  const auto a = m_crippled.sample_and_log_prob(500, r1);
  const auto b = m_full.sample_and_log_prob(500, r2);
  CHECK(props::bitwise_equal(a.value, b.value));
  CHECK(props::bitwise_equal(a.log_prob, b.log_prob));
  const Row<S> lp_crippled = m_crippled.log_prob(a.value);
  const Index nan_columns = lp_crippled.array().isNaN().count();
  CAPTURE(nan_columns);
  CHECK(nan_columns > 250);
}

// ---------------------------------------------------------------------------------------------
// Composition.

namespace {

/// Applies the layers one after the other in list order (forward) and in reverse (inverse),
/// summing their log-dets at the intermediate points, and compares with the chain's own calls
/// and with the model's log_prob built from the same pieces. The chain runs the same per-layer
/// arithmetic, so the differences should be rounding of the sum at most: log-dets to
/// 4 eps sum_i |ld_i| (k - 1 additions, k <= 6), values to 4 eps max(1, ||x||).
template <class C, class... Bs>
void check_sum_of_layers(const C& chain, const std::string& name, const Bs&... layers) {
  using S = typename C::Scalar;
  using Result = nflow::ValueAndLogDet<S>;
  const double eps = std::numeric_limits<S>::epsilon();
  const Mat<S> z = props::random_points<S>(chain.dim(), 12, 77);

  // Forward, first layer first.
  Mat<S> v = z;
  Row<S> sum = Row<S>::Zero(z.cols()), abs_sum = Row<S>::Zero(z.cols());
  const auto fwd_step = [&](const auto& b) {
    const Result r = b.forward_and_log_det(v);
    v = r.value;
    sum += r.log_det;
    abs_sum += r.log_det.cwiseAbs();
  };
  (fwd_step(layers), ...);
  const Result fwd = chain.forward_and_log_det(z);

  // Inverse, last layer first, from the chain's forward image.
  const std::vector<std::function<Result(const Mat<S>&)>> inverses{
      [&layers](const Mat<S>& m) { return Result(layers.inverse_and_log_det(m)); }...};
  Mat<S> w = fwd.value;
  Row<S> inv_sum = Row<S>::Zero(z.cols()), inv_abs = Row<S>::Zero(z.cols());
  for (auto it = inverses.rbegin(); it != inverses.rend(); ++it) {
    const Result r = (*it)(w);
    w = r.value;
    inv_sum += r.log_det;
    inv_abs += r.log_det.cwiseAbs();
  }
  const Result inv = chain.inverse_and_log_det(fwd.value);

  // The model's log_prob is the base's at the chain's preimage plus the inverse log-dets.
  const nflow::TransformedDistribution model(chain);
  const nflow::StandardNormal<S> base(chain.dim());
  const Row<S> lp = model.log_prob(fwd.value);
  const Row<S> lp_sum = base.log_prob(w) + inv_sum;

  for (Index j = 0; j < z.cols(); ++j) {
    INFO(name << "<" << props::scalar_name<S>() << ">, z = " << props::show(z.col(j)));
    const double ld_err = std::abs(double(fwd.log_det(j)) - double(sum(j)));
    const double ld_tol = 4 * eps * double(abs_sum(j));
    const double x_err = props::rel_err(fwd.value.col(j), v.col(j));
    INFO("forward: chain log-det " << fwd.log_det(j) << ", sum of layers " << sum(j));
    CAPTURE(ld_err, ld_tol, x_err);
    CHECK(ld_err <= ld_tol);
    CHECK(x_err <= 4 * eps);

    const double ild_err = std::abs(double(inv.log_det(j)) - double(inv_sum(j)));
    const double ild_tol = 4 * eps * double(inv_abs(j));
    const double z_err = props::rel_err(inv.value.col(j), w.col(j));
    INFO("inverse: chain log-det " << inv.log_det(j) << ", sum of layers " << inv_sum(j));
    CAPTURE(ild_err, ild_tol, z_err);
    CHECK(ild_err <= ild_tol);
    CHECK(z_err <= 4 * eps);

    // log_prob adds two terms of which the base's is up to |log p_Z| in size.
    const double lp_err = std::abs(double(lp(j)) - double(lp_sum(j)));
    const double lp_tol = 4 * eps * (double(inv_abs(j)) + std::abs(double(lp_sum(j))) + 1);
    INFO("log_prob " << lp(j) << ", from the layers " << lp_sum(j));
    CAPTURE(lp_err, lp_tol);
    CHECK(lp_err <= lp_tol);
  }

  // Teeth: the sum is not trivially zero for these layers.
  CHECK(sum.cwiseAbs().maxCoeff() > 1e-2);
}

}  // namespace

TEMPLATE_TEST_CASE("a chain's log-det is the sum of its layers' at the intermediate points",
                   "[model][composition]", float, double) {
  using S = TestType;
  const auto chain = mixed_flow<S>();
  const auto& c0 = chain.template get<0>();
  const auto& p1 = chain.template get<1>();
  const auto& q2 = chain.template get<2>();
  const auto& q3 = chain.template get<3>();
  const auto& c4 = chain.template get<4>();
  check_sum_of_layers(chain, "Chain<5 mixed>", c0, p1, q2, q3, c4);

  // The same layers at run time, type-erased.
  using Any = nflow::AnyBijector<S>;
  nflow::DynamicChain<Any> dyn(2);
  dyn.push_back(Any(c0));
  dyn.push_back(Any(p1));
  dyn.push_back(Any(q2));
  dyn.push_back(Any(q3));
  dyn.push_back(Any(c4));
  check_sum_of_layers(dyn, "DynamicChain<AnyBijector, 5>", c0, p1, q2, q3, c4);

  // One kind of layer, at run time.
  const auto planars = planar_stack<S>(31);
  nflow::DynamicChain<nflow::Planar<S>> stack(2);
  for (const auto& p : planars)
    stack.push_back(p);
  check_sum_of_layers(stack, "DynamicChain<Planar, 8>", planars[0], planars[1], planars[2],
                      planars[3], planars[4], planars[5], planars[6], planars[7]);

  // Nested: a chain holding a run-time chain and an inverted compile-time chain.
  const nflow::Inverse<decltype(chain)> inv_chain(chain);
  const nflow::Chain nested(stack, inv_chain, c4);
  check_sum_of_layers(nested, "Chain<DynamicChain, Inverse<Chain>, AffineCoupling>", stack,
                      inv_chain, c4);
}
