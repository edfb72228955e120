// Planar's numerical inverse at the hard points of its parameters and inputs: w^T u_hat within
// 1e-12 of -1 (the fold), tiny and zero w, |b| = 1e6, and inputs of magnitude 1e6. At each the
// root finding must stop within its iteration budget and either converge (the round trip then
// being as accurate as the conditioning of the map allows) or report non-convergence through
// Planar::solve_inverse's per-column status. The iteration counts are printed in a table at the
// end of the run.
#include <Eigen/Geometry>
#include <cfloat>

#include "property_helpers.hpp"

using nflow::Index;
using nflow::Planar;
using nflow::RootStatus;
using props::Mat;

namespace {

using L = long double;
using VecL = Eigen::Matrix<L, Eigen::Dynamic, 1>;

// ---------------------------------------------------------------------------------------------
// The iteration-count table, printed after the run.

struct IterationRow {
  int columns = 0, converged = 0, not_converged = 0, max_iterations = 0, budget = 0;
  long total_iterations = 0;
  double worst_ratio = 0;  // largest round-trip error / tolerance over the converged columns
};

std::map<std::pair<std::string, std::string>, IterationRow>& table() {
  static std::map<std::pair<std::string, std::string>, IterationRow> t;
  return t;
}

struct IterationTable : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  void testRunEnded(const Catch::TestRunStats&) override {
    if (table().empty()) return;
    std::printf(
        "\nPlanar inverse at hard points: root-finder iterations per column (budget = "
        "max_iterations),\nconverged / not converged columns, and the worst round-trip "
        "error / tolerance among the converged.\n");
    std::printf("%-44s %-6s %5s %6s %5s %6s %6s %9s\n", "hard point", "scalar", "cols", "budget",
                "max", "mean", "conv", "err/tol");
    for (const auto& [key, r] : table()) {
      std::printf("%-44s %-6s %5d %6d %5d %6.2f %3d/%-3d %9.2e\n", key.first.c_str(),
                  key.second.c_str(), r.columns, r.budget, r.max_iterations,
                  r.columns ? double(r.total_iterations) / r.columns : 0.0, r.converged,
                  r.not_converged, r.worst_ratio);
    }
    std::fflush(stdout);
  }
};

}  // namespace

CATCH_REGISTER_LISTENER(IterationTable)

namespace {

template <class S>
VecL to_long(const nflow::Vector<S>& v) {
  return v.template cast<L>();
}

// sech^2 in long double, accurate where tanh rounds to +-1.
L sech2_l(L t) {
  const L e = std::exp(L(-2) * std::abs(t));
  return L(4) * e / ((L(1) + e) * (L(1) + e));
}

// log(1 + e^k) in long double.
L softplus_l(L k) {
  return k > 0 ? k + std::log1p(std::exp(-k)) : std::log1p(std::exp(k));
}

/// 1 + c for c = w^T u_hat as the design defines it, m(k) = -1 + softplus(k) with k = w^T u,
/// in long double from the stored u and w. (This is the intended value, also where ||w||^2
/// underflows in S, so that a tolerance built on it does not adapt to what the library does.)
template <class S>
L one_plus_c(const Planar<S>& p) {
  return softplus_l(to_long(p.w()).dot(to_long(p.u())));
}

/// max(1, ||J||) max(1, ||J^{-1}||) of J = I + h'(t) u_hat w^T at z, an upper bound on how much
/// the map and its inverse amplify a perturbation at z: ||J|| <= 1 + h' ||u_hat|| ||w|| and, by
/// Sherman-Morrison, ||J^{-1}|| <= 1 + h' ||u_hat|| ||w|| / |1 + c h'|, with
/// 1 + c h' = tanh^2 + (1 + c) sech^2 evaluated without cancellation.
template <class S>
L amplification(const Planar<S>& p, const VecL& z) {
  const VecL uh = to_long(p.u_hat()), w = to_long(p.w());
  const L t = w.dot(z) + L(p.b());
  const L hp = sech2_l(t), th = std::tanh(t);
  const L det = th * th + one_plus_c(p) * hp;
  const L a = hp * uh.norm() * w.norm();
  return std::max(L(1), L(1) + a) * std::max(L(1), L(1) + a / std::abs(det));
}

/// The scale of the rounding in x = z + u_hat tanh(w^T z + b) and in the inverse's
/// z = x - u_hat tanh(alpha + b): the magnitudes of the terms that are added.
template <class S>
L rounding_scale(const Planar<S>& p, const VecL& z, const VecL& x) {
  const L t = to_long(p.w()).dot(z) + L(p.b());
  return L(1) + z.norm() + x.norm() + to_long(p.u_hat()).norm() * std::abs(std::tanh(t));
}

/// A hard point: parameters, the latent points whose images are inverted, and its name.
template <class S>
struct HardPoint {
  std::string name;
  Planar<S> planar;
  Mat<S> z;
};

constexpr Index kDim = 3;

/// A unit vector and two unit vectors orthogonal to it and to each other, in R^3.
Eigen::Matrix3d frame() {
  Eigen::Matrix3d q;
  q.col(0) = Eigen::Vector3d(1.0, -2.0, 0.5).normalized();
  q.col(1) = q.col(0).unitOrthogonal();
  q.col(2) = q.col(0).cross(q.col(1));
  return q;
}

/// Points for a planar layer with direction w_dir (unit) and offset b: columns with
/// w^T z + b = 0 exactly in real arithmetic (on the fold's hyperplane), at +-1e-6, +-1e-3, +-1
/// of it, and random ones, all scaled by `magnitude` along the hyperplane.
template <class S>
Mat<S> points(const Eigen::Vector3d& w, double b, double magnitude, std::uint64_t seed) {
  const Eigen::Matrix3d q = frame();
  const double wn = w.stableNorm();
  const Eigen::Vector3d w_dir = wn > 0 ? Eigen::Vector3d(w / wn) : Eigen::Vector3d(q.col(0));
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  const double offsets[] = {0.0, 1e-6, -1e-6, 1e-3, -1e-3, 1.0, -1.0};
  Mat<S> z(kDim, 16);
  for (Index j = 0; j < z.cols(); ++j) {
    // Along the hyperplane: two orthogonal directions, magnitude-scaled.
    const Eigen::Vector3d along =
        magnitude * (normal(rng) * q.col(1) + normal(rng) * q.col(2)).eval();
    Eigen::Vector3d v;
    if (j < 7 && wn > 0) {
      // w^T v + b = offsets[j]: v = along + ((offsets[j] - b) / ||w||) w_dir.
      v = along + ((offsets[j] - b) / wn) * w_dir;
    } else {
      v = magnitude * Eigen::Vector3d(normal(rng), normal(rng), normal(rng));
    }
    z.col(j) = v.cast<S>();
  }
  return z;
}

/// u with w^T u = k exactly in real arithmetic, plus a component orthogonal to w.
Eigen::Vector3d u_with_dot(const Eigen::Vector3d& w, double k, double orth) {
  // stableNorm: ||w|| may be 1e-300, whose square underflows.
  const double wn = w.stableNorm();
  const Eigen::Vector3d w_dir = w / wn;
  return (k / wn) * w_dir + orth * w_dir.unitOrthogonal();
}

template <class S>
Planar<S> planar(const Eigen::Vector3d& u, const Eigen::Vector3d& w, double b) {
  return Planar<S>(u.cast<S>(), w.cast<S>(), S(b));
}

/// ||w|| = 1e-300 in double, 1e-30 in float: ||w||^2 underflows to zero in both.
template <class S>
constexpr double tiny_w() {
  return std::is_same_v<S, double> ? 1e-300 : 1e-30;
}

/// k = w^T u with softplus(k) = 1e-12, i.e. m(k) = w^T u_hat = -1 + 1e-12.
inline double k_fold() {
  return std::log(std::expm1(1e-12));
}

template <class S>
std::vector<HardPoint<S>> hard_points() {
  const Eigen::Vector3d w1 = 1.3 * frame().col(0);  // ||w|| = 1.3
  const Eigen::Vector3d w_tiny = tiny_w<S>() * frame().col(0);
  std::vector<HardPoint<S>> h;

  // The fold: w^T u_hat = -1 + 1e-12, so 1 + c h'(t) = 1e-12 at t = w^T z + b = 0.
  const Eigen::Vector3d u_fold = u_with_dot(w1, k_fold(), 0.8);
  h.push_back(
      {"fold w^T u_hat = -1 + 1e-12", planar<S>(u_fold, w1, 0.3), points<S>(w1, 0.3, 1, 1)});
  h.push_back(
      {"fold, inputs of magnitude 1e6", planar<S>(u_fold, w1, 0.3), points<S>(w1, 0.3, 1e6, 2)});
  h.push_back({"fold, |b| = 1e6", planar<S>(u_fold, w1, 1e6), points<S>(w1, 1e6, 1, 3)});

  // Tiny w: ||w||^2 underflows, so u_hat = u; u of order 1 (w^T u ~ ||w||).
  const Eigen::Vector3d u1(0.7, -0.4, 1.1);
  h.push_back(
      {"tiny w, u O(1), b = 0.3", planar<S>(u1, w_tiny, 0.3), points<S>(w_tiny, 0.3, 1, 4)});
  h.push_back({"tiny w, u O(1), b = 0", planar<S>(u1, w_tiny, 0.0), points<S>(w_tiny, 0.0, 1, 5)});

  // w exactly zero (allowed: the map is then the translation z + u tanh(b)).
  h.push_back({"w = 0", planar<S>(u1, Eigen::Vector3d::Zero(), 0.3),
               points<S>(Eigen::Vector3d::Zero(), 0.3, 1, 6)});

  // |b| = 1e6: tanh saturates at +-1 and sech^2 underflows; u, w of order 1.
  const Eigen::Vector3d u2 = u_with_dot(w1, 0.9, -0.6);
  h.push_back({"b = +1e6", planar<S>(u2, w1, 1e6), points<S>(w1, 1e6, 1, 7)});
  h.push_back({"b = -1e6", planar<S>(u2, w1, -1e6), points<S>(w1, -1e6, 1, 8)});

  // Inputs of magnitude 1e6, some on the hyperplane w^T z + b = 0 where h' = 1.
  h.push_back({"inputs of magnitude 1e6", planar<S>(u2, w1, 0.3), points<S>(w1, 0.3, 1e6, 9)});
  const Eigen::Vector3d u3 = u_with_dot(w1, -3.0, 0.5);  // w^T u_hat = softplus(-3) - 1 = -0.95
  h.push_back({"inputs of magnitude 1e6, w^T u_hat = -0.95", planar<S>(u3, w1, -0.2),
               points<S>(w1, -0.2, 1e6, 10)});
  return h;
}

/// Round-trip tolerance factor. x = f(z) costs about D + 3 roundings of size eps * scale, the
/// inverse is solved to a backward error of a few ulps (the solver's stopping rule is 2 eps of
/// the root's scale) and z = x - u_hat tanh(alpha + b) costs two more; each of these
/// perturbations reaches z through at most ||J^{-1}|| <= amplification. 32 covers their sum in
/// D = 3 with a margin of about two.
constexpr double kRoundTripFactor = 32;

/// Inverts the images of hp.z with the given iteration budget and checks, per column: the
/// reported iteration count is within the budget; a finite input is never reported non-finite;
/// a column reported not converged is NaN from inverse() (reported, not silently returned); a
/// converged column round-trips to within kRoundTripFactor eps * amplification * scale, with
/// the amplification the larger of those at z and at the computed z'.
template <class S>
void check_hard_point(const HardPoint<S>& hp, int budget) {
  Planar<S> p = hp.planar;
  p.set_max_iterations(budget);
  const std::string scalar = props::scalar_name<S>();
  INFO(hp.name << " <" << scalar << ">, budget " << budget << ": u = " << props::show(p.u())
               << ", w = " << props::show(p.w()) << ", b = " << p.b()
               << ", u_hat = " << props::show(p.u_hat()));
  const Mat<S> x = p.forward(hp.z);
  REQUIRE(x.allFinite());
  const auto sol = p.solve_inverse(x);
  const Mat<S> inv = p.inverse(x);
  REQUIRE(sol.iterations.size() == std::size_t(x.cols()));
  REQUIRE(sol.status.size() == std::size_t(x.cols()));

  const bool default_budget = budget == Planar<S>(1).max_iterations();
  IterationRow& row = table()[{
      hp.name + (default_budget ? std::string() : " (budget " + std::to_string(budget) + ")"),
      scalar}];
  row.budget = budget;
  const double eps = std::numeric_limits<S>::epsilon();
  bool any_not_converged = false;
  for (Index j = 0; j < x.cols(); ++j) {
    const int it = sol.iterations[j];
    const RootStatus st = sol.status[j];
    INFO("column " << j << ": z = " << props::show(hp.z.col(j)) << ", x = " << props::show(x.col(j))
                   << ", z' = " << props::show(sol.value.col(j)));
    CAPTURE(it, int(st));
    CHECK(it >= 0);
    CHECK(it <= budget);
    CHECK(st != RootStatus::non_finite);
    row.columns += 1;
    row.total_iterations += it;
    row.max_iterations = std::max(row.max_iterations, it);
    if (st == RootStatus::not_converged) {
      any_not_converged = true;
      row.not_converged += 1;
      CHECK(it == budget);
      CHECK(inv.col(j).array().isNaN().all());
      continue;
    }
    row.converged += 1;
    CHECK(props::bitwise_equal(Mat<S>(inv.col(j)), Mat<S>(sol.value.col(j))));
    CHECK(std::isfinite(sol.log_det(j)));
    const VecL z = hp.z.col(j).template cast<L>(), zb = sol.value.col(j).template cast<L>();
    const VecL xl = x.col(j).template cast<L>();
    const double err = double((zb - z).norm());
    const double amp = double(std::max(amplification(p, z), amplification(p, zb)));
    const double scale = double(rounding_scale(p, z, xl));
    const double tol = kRoundTripFactor * eps * amp * scale;
    row.worst_ratio = std::max(row.worst_ratio, err / tol);
    CAPTURE(err, amp, scale, tol);
    CHECK(err <= tol);
  }
  CHECK((sol.info == Eigen::NoConvergence) == any_not_converged);
}

}  // namespace

TEMPLATE_TEST_CASE("Planar inverse at hard points stays within budget and converges or reports",
                   "[planar][hard]", float, double) {
  using S = TestType;
  for (const HardPoint<S>& hp : hard_points<S>()) {
    // The constructed parameters are what they claim to be.
    if (hp.name.rfind("fold", 0) == 0) {
      // 1 + w^T u_hat as the library defines it, softplus(k) ~ e^k for k = w^T u, in long
      // double from the stored u, w: 1e-12 to a relative error of the error in k, which
      // rounding u and w to S bounds by eps_S ||u|| ||w|| (and log(expm1(1e-12)) in double
      // adds an ulp of |k| ~ 28).
      const double eps = std::numeric_limits<S>::epsilon();
      const double uw = double(to_long(hp.planar.u()).norm() * to_long(hp.planar.w()).norm());
      const L opc = one_plus_c(hp.planar);
      const double opc_err = std::abs(double(opc) / 1e-12 - 1), opc_tol = 2 * eps * uw + 1e-14;
      INFO(hp.name << ": 1 + w^T u_hat = " << double(opc));
      CAPTURE(opc_err, opc_tol);
      CHECK(opc_err <= opc_tol);
      // And the stored u_hat = u + beta w realises w^T u_hat = -1 + 1e-12 to within its
      // rounding: the along-w parts of u and beta w nearly cancel, each of size ~||u||, so the
      // error is ~eps_S ||w|| ||u|| per term (4x for margin, in D = 3), plus the rounding of
      // c = -1 + 1e-12 itself. About 5e-14 in double; float cannot resolve 1e-12 from -1.
      const L wu = to_long(hp.planar.w()).dot(to_long(hp.planar.u_hat()));
      const double tol = 8 * eps * uw + 2 * eps;
      const double err = std::abs(double(wu - (L(-1) + L(1e-12))));
      CAPTURE(double(wu + 1), err, tol);
      CHECK(err <= tol);
    }
    check_hard_point(hp, hp.planar.max_iterations());
  }
}

TEMPLATE_TEST_CASE("Planar inverse reports non-convergence when the budget is too small",
                   "[planar][hard]", float, double) {
  using S = TestType;
  // At the fold, 1 + c h' = 1e-12 makes the root nearly a triple root, where Newton converges
  // only linearly: two iterations cannot reach a few ulps, so some column must be reported.
  for (const HardPoint<S>& hp : hard_points<S>()) {
    if (hp.name != "fold w^T u_hat = -1 + 1e-12") continue;
    check_hard_point(hp, 2);
    Planar<S> p = hp.planar;
    p.set_max_iterations(2);
    const auto sol = p.solve_inverse(p.forward(hp.z));
    int not_converged = 0;
    for (RootStatus st : sol.status)
      not_converged += st == RootStatus::not_converged ? 1 : 0;
    CAPTURE(not_converged);
    CHECK(not_converged > 0);
    CHECK(sol.info == Eigen::NoConvergence);
  }
}

TEMPLATE_TEST_CASE("Planar keeps w^T u_hat >= -1 when ||w||^2 underflows", "[planar][hard]", float,
                   double) {
  using S = TestType;
  // ||w|| = 1e-300 (double) / 1e-30 (float), so ||w||^2 underflows to zero, and u scaled up so
  // that w^T u = -10 (||u|| = 10 / ||w||, representable in both). The design guarantees
  // w^T u_hat >= -1 for every value of the parameters, hence an invertible map with a finite
  // log|det|.
  const Eigen::Vector3d w = tiny_w<S>() * frame().col(0);
  const Eigen::Vector3d u = u_with_dot(w, -10.0, 0.0);
  const Planar<S> p = planar<S>(u, w, 0.0);
  const L wu = to_long(p.w()).dot(to_long(p.u()));
  const L wuh = to_long(p.w()).dot(to_long(p.u_hat()));
  INFO("w^T u = " << double(wu) << ", w^T u_hat = " << double(wuh)
                  << ", u_hat = " << props::show(p.u_hat()));
  REQUIRE(std::abs(double(wu) + 10) < 1e-3);
  CHECK(double(wuh) >= -1 - 1e-3);

  // The forward log-det at z = 0 is log|1 + w^T u_hat h'(b)|: finite for any invertible layer.
  const Mat<S> z = points<S>(w, 0.0, 1, 11);
  const auto [x, ld] = p.forward_and_log_det(z);
  INFO("forward log-dets " << props::show(ld));
  CHECK(ld.allFinite());

  // And the inverse round-trips, or reports that it did not, with the tolerance of the other
  // hard points: the amplification of the intended map (1 + c = softplus(-10) ~ 4.5e-5, so up
  // to ~1e6 here) times the rounding scale. At these inputs w^T z ~ 1e-300 |z|, where tanh is
  // linear, so the map is linear and its amplification at z holds along the whole segment to
  // the computed z' (which is why z' is not consulted here, unlike the fold's hard points).
  const auto sol = p.solve_inverse(x);
  const double eps = std::numeric_limits<S>::epsilon();
  for (Index j = 0; j < z.cols(); ++j) {
    const VecL zl = z.col(j).template cast<L>(), zb = sol.value.col(j).template cast<L>();
    const double err = double((zb - zl).norm());
    const double amp = double(amplification(p, zl));
    const double tol =
        kRoundTripFactor * eps * amp * double(rounding_scale(p, zl, x.col(j).template cast<L>()));
    INFO("column " << j << ": z = " << props::show(z.col(j))
                   << ", z' = " << props::show(sol.value.col(j)));
    CAPTURE(err, tol, int(sol.status[j]), sol.iterations[j]);
    CHECK(sol.iterations[j] <= p.max_iterations());
    if (sol.status[j] == RootStatus::converged) CHECK(err <= tol);
  }
}
