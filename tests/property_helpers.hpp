// The bijector property suite, written once: templated checks that every bijector, every
// Inverse<B> and every chain must pass, in float and in double. Each check INFOs the point and
// the error before asserting, and records its worst error in a table printed after the run.
#pragma once

// The listener that prints the worst-error table needs Catch's reporter interfaces.
#ifndef CATCH_CONFIG_EXTERNAL_INTERFACES
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#endif
#include <catch2/catch.hpp>
#include <concepts>

#include <Eigen/LU>
#include <Eigen/SVD>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <nflow/nflow.hpp>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace props {

using nflow::Index;
template <class S>
using Mat = nflow::Matrix<S>;
template <class S>
using Row = nflow::RowVector<S>;
using MatD = nflow::Matrix<double>;

template <class S>
const char* scalar_name() {
  return std::is_same_v<S, float> ? "float" : "double";
}

/// Tolerances of the properties. Relative error of a column a against a reference b is
/// ||a - b|| / max(1, ||b||); log-determinants use |a - b| / max(1, |b|).
template <class S>
struct Tolerance;

template <>
struct Tolerance<double> {
  static constexpr double round_trip = 1e-10;
  static constexpr double log_det_sign = 1e-10;
  static constexpr double batch = 1e-12;
  // Extrapolated central differences in double are good to ~1e-9 per entry here (and report
  // their own error, which is added to the tolerance), so 1e-6 on log|det| leaves a margin.
  static constexpr double jacobian = 1e-6;
};

template <>
struct Tolerance<float> {
  static constexpr double round_trip = 1e-4;
  static constexpr double log_det_sign = 1e-4;
  static constexpr double batch = 1e-5;
  // Where a float bijector has a double twin (the same parameters in double), its float
  // log-det is compared with finite differences of the twin: only float rounding separates them.
  static constexpr double jacobian_twin = 1e-4;
  static constexpr double twin = 1e-4;
  // Otherwise the differences run in float. Rounding alone costs eps_f / h ~ 6e-8 / h per
  // entry, so steps stay >= 3e-3, where truncation (h^2 / 6) f''' ~ 1e-5 for the O(1) third
  // derivatives of these maps: log|det| is good to ~1e-3, and 1e-2 is the tolerance.
  static constexpr double jacobian = 1e-2;
};

/// A finite-difference check is sharp where its tolerance is within this factor of the base one.
inline constexpr double sharp_factor = 100;

// Parameter regimes every bijector runs in.
enum class Regime { identity, degenerate, random };

inline const char* to_string(Regime r) {
  switch (r) {
    case Regime::identity:
      return "identity";
    case Regime::degenerate:
      return "near-degenerate";
    case Regime::random:
      return "random";
  }
  return "?";
}

inline constexpr Regime all_regimes[] = {Regime::identity, Regime::degenerate, Regime::random};

/// Where a check runs: the table row it reports to, and the seed of its points.
struct Context {
  std::string bijector;
  std::string scalar;
  Regime regime = Regime::random;
  Index dim = 0;
  std::uint64_t seed = 1;

  std::string describe() const {
    std::ostringstream os;
    os << bijector << "<" << scalar << ">, dim " << dim << ", " << to_string(regime)
       << " parameters, seed " << seed;
    return os.str();
  }
};

// ---------------------------------------------------------------------------------------------
// The worst-error table.

struct WorstErrors {
  double round_trip = 0, log_det_sign = 0, jacobian = 0, batch = 0, twin = -1;
  double max_amplification = 0, max_ratio = 0;  // largest error / tolerance of any check
  int fd_points = 0, fd_sharp = 0;  // finite-difference log-det checks, and the sharp ones
};

inline std::map<std::pair<std::string, std::string>, WorstErrors>& registry() {
  static std::map<std::pair<std::string, std::string>, WorstErrors> table;
  return table;
}

// Keeps the larger error; a NaN error is kept as +inf so that it shows in the table.
inline void record(const Context& ctx, double WorstErrors::*field, double err) {
  double& slot = registry()[{ctx.bijector, ctx.scalar}].*field;
  slot = std::max(slot, std::isnan(err) ? std::numeric_limits<double>::infinity() : err);
}

inline void print_worst_table() {
  if (registry().empty()) return;
  std::printf(
      "\nWorst errors over dims, regimes and points; values ||a-b||/max(1,||b||), log-dets\n"
      "|a-b|/max(1,|b|); ld_vs_FD |a-b| over the sharp finite-difference checks only;\n"
      "max_amp the largest amplification max(1,|J|) max(1,|J^-1|) met; err/tol the largest\n"
      "ratio of any check; sharp = FD checks whose tolerance stayed within %g x the base.\n",
      sharp_factor);
  std::printf("%-29s %-6s %9s %9s %9s %9s %9s %8s %8s %7s\n", "bijector", "scalar", "roundtrip",
              "ld_sign", "ld_vs_FD", "batch", "vs_double", "max_amp", "err/tol", "sharp");
  for (const auto& [key, w] : registry()) {
    char twin[16] = "-";
    if (w.twin >= 0) std::snprintf(twin, sizeof twin, "%9.2e", w.twin);
    std::printf("%-29s %-6s %9.2e %9.2e %9.2e %9.2e %9s %8.1e %8.1e %3d/%-3d\n", key.first.c_str(),
                key.second.c_str(), w.round_trip, w.log_det_sign, w.jacobian, w.batch, twin,
                w.max_amplification, w.max_ratio, w.fd_sharp, w.fd_points);
  }
  std::fflush(stdout);
}

/// Prints the worst-error table once the whole run has ended (register it in the test file).
struct WorstErrorTable : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  void testRunEnded(const Catch::TestRunStats&) override { print_worst_table(); }
};

// ---------------------------------------------------------------------------------------------
// Points, errors and printing.

/// n columns of N(0, sigma_j^2 I), sigma_j cycling through 0.5, 1, 2, 3: small and large points.
template <class S>
Mat<S> random_points(Index dim, Index n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  const double sigma[] = {0.5, 1.0, 2.0, 3.0};
  Mat<S> p(dim, n);
  for (Index j = 0; j < n; ++j)
    for (Index i = 0; i < dim; ++i)
      p(i, j) = S(sigma[j % 4] * normal(rng));
  return p;
}

inline constexpr Index num_points = 6;

/// ||a - b|| / max(1, ||b||) for one column, in double.
template <class A, class B>
double rel_err(const Eigen::MatrixBase<A>& a, const Eigen::MatrixBase<B>& b) {
  const MatD ad = a.template cast<double>(), bd = b.template cast<double>();
  return (ad - bd).norm() / std::max(1.0, bd.norm());
}

/// |a - b| / max(1, |b|) for two log-determinants or log-densities.
inline double scalar_err(double a, double b) {
  return std::abs(a - b) / std::max(1.0, std::abs(b));
}

template <class Derived>
std::string show(const Eigen::MatrixBase<Derived>& v) {
  const Eigen::IOFormat fmt(Eigen::FullPrecision, Eigen::DontAlignCols, ", ", "; ", "", "", "[",
                            "]");
  std::ostringstream os;
  os << v.transpose().format(fmt);
  return os.str();
}

// ---------------------------------------------------------------------------------------------
// Dense Jacobians by central differences.

/// Steps of the finite differences in each scalar: the first step relative to max(1, |p_i|),
/// and how many halvings follow it.
template <class T>
struct FdSteps;
template <>
struct FdSteps<double> {
  // 1e-2 down to 3e-7: fine enough for the inverse of a planar layer near its fold, which
  // curves on a scale of 1e-5.
  static constexpr double first = 1e-2;
  static constexpr int levels = 16;
};
template <>
struct FdSteps<float> {
  // Rounding costs eps_f / h ~ 6e-8 / h per entry, so float never goes below h = 3e-3.
  static constexpr double first = 1e-1;
  static constexpr int levels = 6;
};

/// A finite-difference Jacobian with its estimated error and what follows from it.
struct JacobianInfo {
  MatD jac;
  double fd_error = 0;  // estimated ||J_fd - J||_F
  double log_abs_det = 0, sigma_min = 0, sigma_max = 0;

  /// max(1, ||J||) max(1, ||J^{-1}||): bounds both ||J^{-1}|| and cond(J) from above, so it
  /// bounds how much a map or its inverse amplifies rounding at this point.
  double amplification() const { return std::max(1.0, sigma_max) * std::max(1.0, 1.0 / sigma_min); }

  /// First-order bound on the finite-difference error of log|det J|:
  /// |tr(J^{-1} dJ)| <= ||J^{-1}||_F ||dJ||_F <= sqrt(D) / sigma_min * fd_error.
  double log_det_error() const { return std::sqrt(double(jac.rows())) / sigma_min * fd_error; }
};

/// Fills log|det J| (sum of log|U_ii| of a fully pivoted LU, so the product cannot overflow)
/// and the extreme singular values.
inline void analyse(JacobianInfo& info) {
  const Eigen::FullPivLU<MatD> lu(info.jac);
  info.log_abs_det = 0;
  for (Index i = 0; i < info.jac.rows(); ++i)
    info.log_abs_det += std::log(std::abs(lu.matrixLU()(i, i)));
  const Eigen::JacobiSVD<MatD> svd(info.jac);
  info.sigma_max = svd.singularValues()(0);
  info.sigma_min = svd.singularValues()(info.jac.rows() - 1);
}

/// One column of the Jacobian, d f / d p_i, by Ridders' extrapolation of central differences
/// (Press et al., Numerical Recipes, Sec. 5.7): the differences at steps h, h/2, h/4, ... are
/// extrapolated to h = 0 in a Neville tableau, and the entry whose neighbours agree best is kept,
/// with that disagreement as its error. `probe` maps a D x K batch in T to a D x K batch.
template <class T, class F>
std::pair<Eigen::VectorXd, double> ridders_column(F& probe, const Mat<T>& p, Index i) {
  constexpr int levels = FdSteps<T>::levels;
  const Index d = p.rows();

  // Central differences (f(p + h e_i) - f(p - h e_i)) / (step actually taken), all in one batch.
  Mat<T> probes(d, 2 * levels);
  std::vector<double> steps(levels);
  double h = FdSteps<T>::first * std::max(1.0, std::abs(double(p(i, 0))));
  for (int k = 0; k < levels; ++k, h /= 2) {
    probes.col(2 * k) = p;
    probes.col(2 * k + 1) = p;
    probes(i, 2 * k) = T(double(p(i, 0)) + h);
    probes(i, 2 * k + 1) = T(double(p(i, 0)) - h);
    steps[k] = double(probes(i, 2 * k)) - double(probes(i, 2 * k + 1));
  }
  const MatD out = probe(probes).template cast<double>();

  // Neville tableau: a[m][k] removes the h^2, ..., h^(2m) error terms of level k.
  std::vector<std::vector<Eigen::VectorXd>> a(levels, std::vector<Eigen::VectorXd>(levels));
  Eigen::VectorXd best = (out.col(0) - out.col(1)) / steps[0];
  double best_err = std::numeric_limits<double>::infinity();
  for (int k = 0; k < levels; ++k) {
    a[0][k] = (out.col(2 * k) - out.col(2 * k + 1)) / steps[k];
    double fac = 4;
    for (int m = 1; m <= k; ++m, fac *= 4) {
      a[m][k] = (fac * a[m - 1][k] - a[m - 1][k - 1]) / (fac - 1);
      const double err =
          std::max((a[m][k] - a[m - 1][k]).norm(), (a[m][k] - a[m - 1][k - 1]).norm());
      if (err <= best_err) {
        best_err = err;
        best = a[m][k];
      }
    }
  }
  return {best, best_err};
}

/// The dense Jacobian of `probe` at the column p, column by column.
template <class T, class F>
JacobianInfo fd_jacobian(F&& probe, const Mat<T>& p) {
  JacobianInfo info;
  info.jac.resize(p.rows(), p.rows());
  double err2 = 0;
  for (Index i = 0; i < p.rows(); ++i) {
    auto [col, err] = ridders_column<T>(probe, p, i);
    info.jac.col(i) = col;
    err2 += err * err;
  }
  info.fd_error = std::sqrt(err2);
  analyse(info);
  return info;
}

// ---------------------------------------------------------------------------------------------
// Double twins of float bijectors: the same parameters, evaluated in double. The tag makes the
// overloads findable from each other's templates by argument-dependent lookup.

struct TwinTag {};

inline nflow::Planar<double> to_double(TwinTag, const nflow::Planar<float>& p) {
  nflow::Planar<double> d(p.u().cast<double>(), p.w().cast<double>(), double(p.b()));
  d.set_max_iterations(p.max_iterations());
  return d;
}

inline nflow::Permutation<double> to_double(TwinTag, const nflow::Permutation<float>& p) {
  return nflow::Permutation<double>(p.indices());
}

inline nflow::AffineCoupling<double> to_double(TwinTag, const nflow::AffineCoupling<float>& c) {
  nflow::AffineCoupling<double> d(c.mask(), c.options());
  for (Index l = 0; l < c.conditioner().num_layers(); ++l) {
    d.conditioner().weight(l) = c.conditioner().weight(l).cast<double>();
    d.conditioner().bias(l) = c.conditioner().bias(l).cast<double>();
  }
  return d;
}

template <class B>
auto to_double(TwinTag t, const nflow::Inverse<B>& b)
    -> nflow::Inverse<decltype(to_double(t, b.base()))> {
  return nflow::Inverse<decltype(to_double(t, b.base()))>(to_double(t, b.base()));
}

template <class... Bs, std::size_t... I>
auto chain_to_double(TwinTag t, const nflow::Chain<Bs...>& c, std::index_sequence<I...>)
    -> nflow::Chain<decltype(to_double(t, std::declval<const Bs&>()))...> {
  return nflow::Chain<decltype(to_double(t, std::declval<const Bs&>()))...>(
      to_double(t, c.template get<I>())...);
}

template <class... Bs>
auto to_double(TwinTag t, const nflow::Chain<Bs...>& c)
    -> decltype(chain_to_double(t, c, std::index_sequence_for<Bs...>{})) {
  return chain_to_double(t, c, std::index_sequence_for<Bs...>{});
}

/// The held bijector's twin, for the held types this suite uses.
template <class... Known>
nflow::AnyBijector<double> any_to_double(TwinTag t, const nflow::AnyBijector<float>& a) {
  std::optional<nflow::AnyBijector<double>> out;
  ((a.template target<Known>() && !out
        ? void(out.emplace(to_double(t, *a.template target<Known>())))
        : void()),
   ...);
  if (!out) throw std::logic_error("props::to_double: AnyBijector holds an unknown type");
  return *out;
}

// A template on the exact type, so that other bijectors do not reach it through AnyBijector's
// converting constructor.
template <std::same_as<nflow::AnyBijector<float>> A>
nflow::AnyBijector<double> to_double(TwinTag t, const A& a) {
  using namespace nflow;
  return any_to_double<AffineCoupling<float>, Planar<float>, Permutation<float>,
                       Inverse<AffineCoupling<float>>, Inverse<Planar<float>>,
                       Inverse<Permutation<float>>>(t, a);
}

template <class B>
auto to_double(TwinTag t, const nflow::DynamicChain<B>& c)
    -> nflow::DynamicChain<decltype(to_double(t, std::declval<const B&>()))> {
  nflow::DynamicChain<decltype(to_double(t, std::declval<const B&>()))> d(c.dim());
  for (const B& b : c)
    d.push_back(to_double(t, b));
  return d;
}

/// A float bijector whose parameters can be copied into a double one.
template <class B>
concept HasDoubleTwin = std::is_same_v<typename B::Scalar, float> && requires(const B& b) {
  to_double(TwinTag{}, b);
};

template <class B>
struct TwinOf {
  using type = B;
};
template <HasDoubleTwin B>
struct TwinOf<B> {
  using type = decltype(to_double(TwinTag{}, std::declval<const B&>()));
};

/// What a bijector's log-dets are measured against: finite differences of itself in double, of
/// its double twin in float where one exists, and of itself in float otherwise.
template <nflow::Flow B>
class Reference {
 public:
  using S = typename B::Scalar;
  using Twin = typename TwinOf<B>::type;
  using T = typename Twin::Scalar;

  explicit Reference(const B& b) : m_b(b) {
    if constexpr (HasDoubleTwin<B>) m_twin.emplace(to_double(TwinTag{}, b));
  }

  /// Base tolerance of a log-det against these finite differences.
  static double jacobian_tolerance() {
    if constexpr (std::is_same_v<S, double>) return Tolerance<double>::jacobian;
    if constexpr (HasDoubleTwin<B>) return Tolerance<float>::jacobian_twin;
    return Tolerance<float>::jacobian;
  }

  JacobianInfo forward_jacobian(const Mat<S>& z) const { return jacobian(z, false); }
  JacobianInfo inverse_jacobian(const Mat<S>& x) const { return jacobian(x, true); }

 private:
  const Twin& map() const {
    if constexpr (HasDoubleTwin<B>) {
      return *m_twin;
    } else {
      return m_b;
    }
  }

  JacobianInfo jacobian(const Mat<S>& p, bool inverse) const {
    const Twin& m = map();
    auto probe = [&](const Mat<T>& q) { return Mat<T>(inverse ? m.inverse(q) : m.forward(q)); };
    return fd_jacobian<T>(probe, Mat<T>(p.template cast<T>()));
  }

  const B& m_b;
  std::optional<Twin> m_twin;
};

// ---------------------------------------------------------------------------------------------
// The properties. Each tolerance is multiplied by the amplification of the map at the point
// (1 where the map is well conditioned): near a planar fold an inverse to a few ulps of backward
// error is still far from the exact preimage, and no test of the result can ask for more.

/// inverse(forward(z)) = z and forward(inverse(x)) = x for independent z and x.
template <nflow::Flow B>
void check_round_trip(const B& b, const Reference<B>& ref, const Context& ctx) {
  using S = typename B::Scalar;
  const Mat<S> z = random_points<S>(b.dim(), num_points, ctx.seed);
  const Mat<S> x = random_points<S>(b.dim(), num_points, ctx.seed + 1);
  const Mat<S> z_back = b.inverse(b.forward(z));
  const Mat<S> x_back = b.forward(b.inverse(x));

  for (Index j = 0; j < z.cols(); ++j) {
    const double err_z = rel_err(z_back.col(j), z.col(j));
    const double err_x = rel_err(x_back.col(j), x.col(j));
    const double amp_z = ref.forward_jacobian(z.col(j)).amplification();
    const double amp_x = ref.inverse_jacobian(x.col(j)).amplification();
    record(ctx, &WorstErrors::round_trip, std::max(err_z, err_x));
    record(ctx, &WorstErrors::max_ratio,
           std::max(err_z / (Tolerance<S>::round_trip * amp_z),
                    err_x / (Tolerance<S>::round_trip * amp_x)));
    INFO(ctx.describe() << ": round trip, column " << j);
    INFO("z = " << show(z.col(j)) << "\ninverse(forward(z)) = " << show(z_back.col(j)));
    CAPTURE(err_z, amp_z);
    CHECK(err_z <= Tolerance<S>::round_trip * amp_z);
    INFO("x = " << show(x.col(j)) << "\nforward(inverse(x)) = " << show(x_back.col(j)));
    CAPTURE(err_x, amp_x);
    CHECK(err_x <= Tolerance<S>::round_trip * amp_x);
  }
}

/// inverse_and_log_det(forward(z)).log_det = -forward log-det at z; the derived calls
/// (forward, inverse, *_log_det_jacobian) agree with the two *_and_log_det calls.
template <nflow::Flow B>
void check_log_det_sign(const B& b, const Reference<B>& ref, const Context& ctx) {
  using S = typename B::Scalar;
  const Mat<S> z = random_points<S>(b.dim(), num_points, ctx.seed + 2);
  const auto [x, ld_forward] = b.forward_and_log_det(z);
  const auto [z_back, ld_inverse] = b.inverse_and_log_det(x);
  const Mat<S> x_only = b.forward(z), z_only = b.inverse(x);
  const Row<S> ldj_forward = b.forward_log_det_jacobian(z);
  const Row<S> ldj_inverse = b.inverse_log_det_jacobian(x);

  for (Index j = 0; j < z.cols(); ++j) {
    const double err = scalar_err(-double(ld_inverse(j)), double(ld_forward(j)));
    const double amp = ref.forward_jacobian(z.col(j)).amplification();
    record(ctx, &WorstErrors::log_det_sign, err);
    record(ctx, &WorstErrors::max_ratio, err / (Tolerance<S>::log_det_sign * amp));
    INFO(ctx.describe() << ": log-det sign, column " << j << ", z = " << show(z.col(j)));
    INFO("forward log-det " << ld_forward(j) << ", inverse log-det " << ld_inverse(j));
    CAPTURE(err, amp);
    CHECK(err <= Tolerance<S>::log_det_sign * amp);

    // The derived API computes the same numbers.
    CHECK(rel_err(x_only.col(j), x.col(j)) <= Tolerance<S>::batch);
    CHECK(rel_err(z_only.col(j), z_back.col(j)) <= Tolerance<S>::batch);
    CHECK(scalar_err(ldj_forward(j), ld_forward(j)) <= Tolerance<S>::batch);
    CHECK(scalar_err(ldj_inverse(j), ld_inverse(j)) <= Tolerance<S>::batch);
  }
}

/// The ill-conditioned points of a near-degenerate map widen their tolerances; across all the
/// points of one table row, at least half the finite-difference checks must stay sharp.
inline void check_mostly_sharp(const std::string& bijector, const std::string& scalar) {
  const WorstErrors& w = registry()[{bijector, scalar}];
  INFO(bijector << "<" << scalar << ">: " << w.fd_sharp << " of " << w.fd_points
                << " finite-difference log-det checks within " << sharp_factor
                << " times the base tolerance");
  CHECK(w.fd_points > 0);
  CHECK(2 * w.fd_sharp >= w.fd_points);
}

/// One log-det against log|det J_fd|. The tolerance is the base tolerance times the point's
/// amplification, plus four times the finite differences' own error bound on log|det|.
inline void check_one_jacobian(const JacobianInfo& fd, double log_det, double base_tol,
                               const Context& ctx, const std::string& where) {
  const double err = std::abs(log_det - fd.log_abs_det);
  const double tol = base_tol * fd.amplification() + 4 * fd.log_det_error();
  const bool sharp = tol <= sharp_factor * base_tol;
  if (sharp) record(ctx, &WorstErrors::jacobian, err);
  record(ctx, &WorstErrors::max_amplification, fd.amplification());
  record(ctx, &WorstErrors::max_ratio, err / tol);
  WorstErrors& w = registry()[{ctx.bijector, ctx.scalar}];
  w.fd_points += 1;
  w.fd_sharp += sharp ? 1 : 0;
  INFO(ctx.describe() << ": " << where);
  INFO("log-det " << log_det << ", log|det J_fd| " << fd.log_abs_det << ", FD error bound "
                  << fd.log_det_error() << ", amplification " << fd.amplification());
  CAPTURE(err, tol);
  CHECK(err <= tol);
}

/// Forward log-det at z and inverse log-det at x = forward(z), each against the dense
/// finite-difference Jacobian of the map that was applied.
template <nflow::Flow B>
void check_jacobian(const B& b, const Reference<B>& ref, const Context& ctx) {
  using S = typename B::Scalar;
  const Mat<S> z = random_points<S>(b.dim(), num_points, ctx.seed + 3);
  const auto [x, ld_forward] = b.forward_and_log_det(z);
  const Row<S> ld_inverse = b.inverse_log_det_jacobian(x);
  const double tol = Reference<B>::jacobian_tolerance();
  for (Index j = 0; j < z.cols(); ++j) {
    check_one_jacobian(ref.forward_jacobian(z.col(j)), ld_forward(j), tol, ctx,
                       "forward log-det vs finite differences at z = " + show(z.col(j)));
    check_one_jacobian(ref.inverse_jacobian(x.col(j)), ld_inverse(j), tol, ctx,
                       "inverse log-det vs finite differences at x = " + show(x.col(j)));
  }
}

/// A D x N batch gives, column for column, what each D x 1 column gives alone.
template <nflow::Flow B>
void check_batch(const B& b, const Context& ctx) {
  using S = typename B::Scalar;
  const Mat<S> z = random_points<S>(b.dim(), num_points, ctx.seed + 4);
  const Mat<S> x = random_points<S>(b.dim(), num_points, ctx.seed + 5);
  const auto fwd = b.forward_and_log_det(z);
  const auto inv = b.inverse_and_log_det(x);
  for (Index j = 0; j < z.cols(); ++j) {
    const auto f1 = b.forward_and_log_det(z.col(j));
    const auto i1 = b.inverse_and_log_det(x.col(j));
    const double err =
        std::max({rel_err(f1.value, fwd.value.col(j)), scalar_err(f1.log_det(0), fwd.log_det(j)),
                  rel_err(i1.value, inv.value.col(j)), scalar_err(i1.log_det(0), inv.log_det(j))});
    record(ctx, &WorstErrors::batch, err);
    record(ctx, &WorstErrors::max_ratio, err / Tolerance<S>::batch);
    INFO(ctx.describe() << ": batch vs column " << j << ", z = " << show(z.col(j))
                        << ", x = " << show(x.col(j)));
    CAPTURE(err);
    CHECK(err <= Tolerance<S>::batch);
  }
}

/// A float bijector agrees with its double twin (same parameters) on forward values and
/// log-dets, at points where the forward map is well conditioned in the sense used above.
template <nflow::Flow B>
void check_against_double(const B& b, const Reference<B>& ref, const Context& ctx) {
  if constexpr (HasDoubleTwin<B>) {
    const auto d = to_double(TwinTag{}, b);
    const Mat<float> z = random_points<float>(b.dim(), num_points, ctx.seed + 6);
    const auto [xf, ldf] = b.forward_and_log_det(z);
    const auto [xd, ldd] = d.forward_and_log_det(z.cast<double>());
    for (Index j = 0; j < z.cols(); ++j) {
      const double err = std::max(rel_err(xf.col(j), xd.col(j)), scalar_err(ldf(j), ldd(j)));
      const double amp = ref.forward_jacobian(z.col(j)).amplification();
      record(ctx, &WorstErrors::twin, err);
      record(ctx, &WorstErrors::max_ratio, err / (Tolerance<float>::twin * amp));
      INFO(ctx.describe() << ": float vs double twin at z = " << show(z.col(j)));
      INFO("log-det float " << ldf(j) << ", double " << ldd(j));
      CAPTURE(err, amp);
      CHECK(err <= Tolerance<float>::twin * amp);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Non-finite input stays in its column.

/// Stacks what a call returns into one matrix with one column per input column.
template <class S>
Mat<S> stacked(const nflow::ValueAndLogDet<S>& r) {
  Mat<S> m(r.value.rows() + 1, r.value.cols());
  m << r.value, r.log_det;
  return m;
}
template <class S>
Mat<S> stacked(const Mat<S>& m) {
  return m;
}
template <class S>
Mat<S> stacked(const Row<S>& r) {
  return r;
}

inline bool bitwise_equal(const auto& a, const auto& b) {
  using S = typename std::decay_t<decltype(a)>::Scalar;
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(S)) == 0;
}

/// call(m) against call(m with entry (row, bad) set to `poison`): every other column is bitwise
/// unchanged and column `bad` holds a non-finite value.
template <class S, class F>
void check_poisoned_call(F&& call, const Mat<S>& m, Index row, Index bad, S poison,
                         const std::string& where) {
  Mat<S> poisoned = m;
  poisoned(row, bad) = poison;
  const Mat<S> clean = stacked<S>(call(m)), dirty = stacked<S>(call(poisoned));
  INFO(where << ": entry (" << row << ", " << bad << ") set to " << poison);
  REQUIRE(clean.cols() == dirty.cols());
  for (Index j = 0; j < m.cols(); ++j) {
    if (j == bad) continue;
    INFO("column " << j << ": clean " << show(clean.col(j)) << ", with poison "
                   << show(dirty.col(j)));
    CHECK(bitwise_equal(Mat<S>(clean.col(j)), Mat<S>(dirty.col(j))));
  }
  INFO("poisoned column gives " << show(dirty.col(bad)));
  CHECK_FALSE(dirty.col(bad).allFinite());
}

/// Every parameter of a bijector or model, copied, in for_each_parameter order (empty for a
/// type without parameters).
template <class B>
std::vector<Mat<typename B::Scalar>> parameters(B b) {
  using S = typename B::Scalar;
  std::vector<Mat<S>> out;
  if constexpr (requires { b.for_each_parameter([](const std::string&, auto&, auto&) {}); }) {
    b.for_each_parameter(
        [&](const std::string&, const auto& value, auto&) { out.push_back(Mat<S>(value)); });
  }
  return out;
}

/// The non-finite values the tests put into a batch: NaN, +Inf and -Inf.
template <class S>
std::vector<S> poisons() {
  return {std::numeric_limits<S>::quiet_NaN(), std::numeric_limits<S>::infinity(),
          -std::numeric_limits<S>::infinity()};
}

/// NaN, +Inf and -Inf in one column of a batch change no other column of any call, and leave
/// the parameters as they were.
template <nflow::Flow B>
void check_non_finite(const B& b, const Context& ctx) {
  using S = typename B::Scalar;
  const auto before = parameters(b);
  const Mat<S> z = random_points<S>(b.dim(), 4, ctx.seed + 8);
  const Mat<S> x = b.forward(z);
  for (S poison : poisons<S>()) {
    for (Index row : {Index(0), b.dim() - 1}) {
      const std::string where = ctx.describe();
      check_poisoned_call<S>([&](const Mat<S>& m) { return b.forward_and_log_det(m); }, z, row, 1,
                             poison, where + ", forward_and_log_det");
      check_poisoned_call<S>([&](const Mat<S>& m) { return b.inverse_and_log_det(m); }, x, row, 2,
                             poison, where + ", inverse_and_log_det");
      check_poisoned_call<S>([&](const Mat<S>& m) { return Mat<S>(b.forward(m)); }, z, row, 1,
                             poison, where + ", forward");
      check_poisoned_call<S>([&](const Mat<S>& m) { return Mat<S>(b.inverse(m)); }, x, row, 2,
                             poison, where + ", inverse");
    }
  }

  // The parameters are bitwise what they were.
  const auto after = parameters(b);
  INFO(ctx.describe() << ": parameters after non-finite input");
  REQUIRE(after.size() == before.size());
  for (std::size_t k = 0; k < after.size(); ++k)
    CHECK(bitwise_equal(after[k], before[k]));
}

/// Every property of a single bijector.
template <nflow::Flow B>
void check_properties(const B& b, const Context& ctx) {
  const Reference<B> ref(b);
  check_round_trip(b, ref, ctx);
  check_log_det_sign(b, ref, ctx);
  check_jacobian(b, ref, ctx);
  check_batch(b, ctx);
  check_against_double(b, ref, ctx);
  check_non_finite(b, ctx);
}

// ---------------------------------------------------------------------------------------------
// Composition.

/// A chain equals its elements applied in list order (forward) and in reverse list order
/// (inverse), with the log-dets summed. In the random regime, applying the elements in the
/// opposite order must give something else, which shows that the order check has teeth.
template <class C, class... Bs>
void check_composition(const C& chain, const Context& ctx, const Bs&... elements) {
  using S = typename C::Scalar;
  using Result = nflow::ValueAndLogDet<S>;
  const Mat<S> z = random_points<S>(chain.dim(), num_points, ctx.seed + 9);

  // Forward: first element first.
  Result seq{z, Row<S>::Zero(z.cols())};
  const auto step = [&seq](const auto& b) {
    auto r = b.forward_and_log_det(seq.value);
    seq.value = std::move(r.value);
    seq.log_det += r.log_det;
  };
  (step(elements), ...);
  const auto fwd = chain.forward_and_log_det(z);

  // Inverse: last element first.
  const std::vector<std::function<Result(const Mat<S>&)>> inverses{
      [&elements](const Mat<S>& m) { return Result(elements.inverse_and_log_det(m)); }...};
  Result inv_seq{fwd.value, Row<S>::Zero(z.cols())};
  for (auto it = inverses.rbegin(); it != inverses.rend(); ++it) {
    Result r = (*it)(inv_seq.value);
    inv_seq.value = std::move(r.value);
    inv_seq.log_det += r.log_det;
  }
  const auto inv = chain.inverse_and_log_det(fwd.value);

  for (Index j = 0; j < z.cols(); ++j) {
    const double err = std::max({rel_err(fwd.value.col(j), seq.value.col(j)),
                                 scalar_err(fwd.log_det(j), seq.log_det(j)),
                                 rel_err(inv.value.col(j), inv_seq.value.col(j)),
                                 scalar_err(inv.log_det(j), inv_seq.log_det(j))});
    INFO(ctx.describe() << ": chain vs its elements in sequence, z = " << show(z.col(j)));
    INFO("chain log-det " << fwd.log_det(j) << ", sum of elements " << seq.log_det(j));
    CAPTURE(err);
    CHECK(err <= Tolerance<S>::batch);
  }

  // The reversed order differs (only meaningful when the elements do not commute).
  if (ctx.regime == Regime::random) {
    const std::vector<std::function<Mat<S>(const Mat<S>&)>> forwards{
        [&elements](const Mat<S>& m) { return Mat<S>(elements.forward(m)); }...};
    Mat<S> reversed = z;
    for (auto it = forwards.rbegin(); it != forwards.rend(); ++it)
      reversed = (*it)(reversed);
    const double diff = rel_err(reversed, fwd.value);
    INFO(ctx.describe() << ": elements applied in reverse order differ from the chain");
    CAPTURE(diff);
    CHECK(diff > 1e-3);
  }
}

// ---------------------------------------------------------------------------------------------
// The bijectors of the suite, in each regime.

/// Conditioner options: variant 0 is tanh-clamped with a tanh MLP, variant 1 atan-clamped with
/// a SiLU MLP. Both activations are smooth, so finite differences never straddle a kink.
inline nflow::CouplingOptions coupling_options(int variant) {
  nflow::CouplingOptions o;
  if (variant == 0) {
    o.hidden = {16, 16};
    o.activation = nflow::Activation::tanh;
    o.clamp = nflow::SoftClamp::tanh;
    o.clamp_bound = 2.0;
  } else {
    o.hidden = {8};
    o.activation = nflow::Activation::silu;
    o.clamp = nflow::SoftClamp::atan;
    o.clamp_bound = 1.5;
  }
  return o;
}

/// Fills the conditioner's output layer: scale rows (the first half) N(0, scale_sd^2) or, when
/// `saturate` is set, +-40 so that the soft clamp saturates; shift rows N(0, 0.5^2).
template <class S>
void set_output_layer(nflow::AffineCoupling<S>& c, bool saturate, double scale_sd,
                      std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  auto& net = c.conditioner();
  const Index last = net.num_layers() - 1, nb = net.output_dim() / 2;
  auto& w = net.weight(last);
  auto& bias = net.bias(last);
  for (Index i = 0; i < w.rows(); ++i) {
    const bool scale_row = i < nb;
    for (Index k = 0; k < w.cols(); ++k) {
      const double g = normal(rng);
      w(i, k) = S(scale_row ? (saturate ? std::copysign(40.0, g) : scale_sd * g) : 0.5 * g);
    }
    const double g = normal(rng);
    bias(i, 0) = S(scale_row ? (saturate ? std::copysign(40.0, g) : scale_sd * g) : 0.5 * g);
  }
}

/// Identity: a new coupling (zero output layer). Near-degenerate: saturated clamp. Random: a
/// seeded random output layer.
template <class S>
nflow::AffineCoupling<S> make_coupling(Index dim, Regime regime, std::uint64_t seed,
                                       int variant = 0) {
  const nflow::Mask mask =
      variant == 0 ? nflow::Mask::alternating(dim) : nflow::Mask::half(dim, true);
  nflow::AffineCoupling<S> c(mask, coupling_options(variant), seed);
  if (regime != Regime::identity) set_output_layer(c, regime == Regime::degenerate, 0.7, seed);
  return c;
}

/// Identity: Planar(dim). Near-degenerate: w^T u = -20, so w^T u_hat = softplus(-20) - 1, about
/// -1 + 2e-9. Random: Planar(dim, rng, 1) with b drawn too.
template <class S>
nflow::Planar<S> make_planar(Index dim, Regime regime, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  if (regime == Regime::identity) return nflow::Planar<S>(dim);
  std::normal_distribution<double> normal;
  if (regime == Regime::random) {
    const nflow::Planar<S> p(dim, rng, 1.0);
    return nflow::Planar<S>(p.u(), p.w(), S(0.5 * normal(rng)));
  }

  // u = (component orthogonal to w) - 20 w / ||w||^2, so that w^T u = -20.
  Eigen::VectorXd w(dim), u(dim);
  for (Index i = 0; i < dim; ++i)
    w(i) = normal(rng);
  for (Index i = 0; i < dim; ++i)
    u(i) = normal(rng);
  u -= (u.dot(w) / w.squaredNorm()) * w;
  u -= (20.0 / w.squaredNorm()) * w;
  return nflow::Planar<S>(u.cast<S>(), w.cast<S>(), S(0.3));
}

/// Identity: 0..D-1. "Near-degenerate" (a permutation has no degenerate parameters): reverse.
/// Random: Permutation::random.
template <class S>
nflow::Permutation<S> make_permutation(Index dim, Regime regime, std::uint64_t seed) {
  switch (regime) {
    case Regime::identity: {
      std::vector<Index> p(dim);
      for (Index i = 0; i < dim; ++i)
        p[i] = i;
      return nflow::Permutation<S>(std::move(p));
    }
    case Regime::degenerate:
      return nflow::Permutation<S>::reverse(dim);
    case Regime::random:
      break;
  }
  return nflow::Permutation<S>::random(dim, seed);
}

}  // namespace props
