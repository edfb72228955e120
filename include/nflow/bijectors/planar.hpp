// Planar flow.
//
// D. J. Rezende, S. Mohamed, "Variational Inference with Normalizing Flows", ICML 2015,
// arXiv:1505.05770.
//
//   x = f(z) = z + u_hat h(w^T z + b),   h = tanh                [RezendeMohamed15, Eq. 10]
//   log|det df/dz| = log|1 + h'(w^T z + b) u_hat^T w|            [RezendeMohamed15, Eq. 11-12]
//   u_hat = u + (m(w^T u) - w^T u) w / ||w||^2,  m(a) = -1 + softplus(a)   [Appendix A.1]
// so that w^T u_hat = m(w^T u) > -1 and f is invertible.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "nflow/bijector_base.hpp"
#include "nflow/detail/math.hpp"
#include "nflow/flow.hpp"

namespace nflow {

/// Outcome of the one-dimensional root finding in Planar's inverse, per column.
enum class RootStatus : unsigned char {
  converged,      ///< solved to a few ulps
  not_converged,  ///< iteration budget spent; the column's result is NaN
  non_finite      ///< the input column was not finite; its result is NaN
};

/**
 * \brief Planar flow  x = z + u_hat tanh(w^T z + b), with an exact numerical inverse.
 *
 * Parameters u, w (D x 1) and b (scalar). u is reparameterised to u_hat as in the paper's
 * appendix so that w^T u_hat >= -1 for every value of the parameters.
 *
 * **Inverse.** Writing alpha = w^T z, the equation x = f(z) gives
 *   alpha + c tanh(alpha + b) = w^T x,   c = w^T u_hat = m(w^T u) > -1,
 * a scalar equation whose left side is strictly increasing in alpha, with its root in
 * [w^T x - |c|, w^T x + |c|]. It is solved per column by Newton's method kept inside that
 * bracket (a bisection step whenever Newton leaves it or stalls), to a few ulps. Then
 * z = x - u_hat tanh(alpha + b).
 *
 * Departures from the paper, and guards:
 * - log|det| is evaluated as log(tanh^2 + (1 + c) sech^2), with 1 + c = softplus(w^T u),
 *   which keeps full precision as w^T u_hat approaches -1.
 * - The reparameterisation is evaluated through w / ||w||, so it holds also where ||w||^2
 *   underflows; only for w = 0 exactly, where it is undefined, u_hat = u is used (the map is
 *   then the shift z + u tanh(b), exactly invertible).
 *
 * \warning A column whose root finding does not converge within `max_iterations` comes back
 * as NaN from inverse() and inverse_and_log_det(); solve_inverse() reports the status and the
 * iteration count of every column.
 */
template <class ScalarT>
class Planar : public BijectorBase<Planar<ScalarT>, ScalarT> {
 public:
  using Scalar = ScalarT;
  using Base = BijectorBase<Planar<Scalar>, Scalar>;
  using typename Base::ConstRef;
  using typename Base::Matrix;
  using typename Base::Result;
  using typename Base::RowVector;

  /// Inverse with per-column diagnostics.
  struct InverseSolution {
    Matrix value;
    RowVector log_det;
    std::vector<int> iterations;
    std::vector<RootStatus> status;
    /// Eigen::Success when every finite column converged, Eigen::NoConvergence otherwise.
    Eigen::ComputationInfo info = Eigen::Success;
  };

  struct Cache {
    bool inverse = false;
    Matrix latent;  // z
    RowVector pre;  // w^T z + b
  };

  /// Identity planar flow (u = w = 0, b = 0).
  explicit Planar(Index dim) {
    detail::check_positive("Planar", "dim", dim);
    m_u.setZero(dim, 1);
    m_w.setZero(dim, 1);
    m_b.setZero(1, 1);
    zero_grad();
  }

  /// Planar flow with u, w drawn from N(0, scale^2) and b = 0.
  template <class Rng>
  requires std::uniform_random_bit_generator<std::remove_cvref_t<Rng>> Planar(Index dim, Rng&& rng,
                                                                              double scale = 0.1)
      : Planar(dim) {
    std::normal_distribution<double> n(0.0, scale);
    for (Index i = 0; i < dim; ++i)
      m_u(i) = Scalar(n(rng));
    for (Index i = 0; i < dim; ++i)
      m_w(i) = Scalar(n(rng));
  }

  /// Planar flow with the given parameters.
  Planar(const Vector<Scalar>& u, const Vector<Scalar>& w, Scalar b) : Planar(u.size()) {
    if (w.size() != u.size())
      detail::fail("Planar", "size of w (must match u)", u.size(), w.size());
    m_u = u;
    m_w = w;
    m_b(0, 0) = b;
  }

  Index dim() const { return m_u.rows(); }
  Vector<Scalar> u() const { return m_u.col(0); }
  Vector<Scalar> w() const { return m_w.col(0); }
  Scalar b() const { return m_b(0, 0); }
  /// The reparameterised u_hat actually applied.
  Vector<Scalar> u_hat() const { return reparam().u_hat; }
  /// Iteration budget of the inverse's root finding, per column.
  int max_iterations() const { return m_max_iterations; }
  void set_max_iterations(int n) {
    if (n <= 0) detail::fail("Planar::set_max_iterations", "max_iterations", "> 0", n);
    m_max_iterations = n;
  }

  Result forward_and_log_det(const ConstRef& z) const {
    Cache cache;
    return forward_and_log_det(z, cache);
  }

  Result inverse_and_log_det(const ConstRef& x) const {
    Cache cache;
    return inverse_and_log_det(x, cache);
  }

  Result forward_and_log_det(const ConstRef& z, Cache& cache) const {
    detail::check_rows("Planar::forward", dim(), z);
    const Reparam p = reparam();

    // t = w^T z + b;  x = z + u_hat tanh(t)   [Eq. 10]
    cache.inverse = false;
    cache.latent = z;
    cache.pre = (m_w.transpose() * z).array() + b();
    Result r{Matrix(z), log_q(cache.pre, p)};
    r.value.noalias() += p.u_hat * cache.pre.array().tanh().matrix();
    return r;
  }

  Result inverse_and_log_det(const ConstRef& x, Cache& cache) const {
    InverseSolution s = solve_inverse(x);
    for (Index j = 0; j < x.cols(); ++j) {
      if (s.status[j] == RootStatus::not_converged) {
        s.value.col(j).setConstant(std::numeric_limits<Scalar>::quiet_NaN());
        s.log_det(j) = std::numeric_limits<Scalar>::quiet_NaN();
      }
    }
    cache.inverse = true;
    cache.latent = s.value;
    cache.pre = (m_w.transpose() * s.value).array() + b();
    return Result{std::move(s.value), std::move(s.log_det)};
  }

  /// z = f^{-1}(x) and log|det df^{-1}/dx|, with the root finder's status per column.
  InverseSolution solve_inverse(const ConstRef& x) const {
    detail::check_rows("Planar::inverse", dim(), x);
    const Reparam p = reparam();
    InverseSolution s;
    s.iterations.assign(x.cols(), 0);
    s.status.assign(x.cols(), RootStatus::converged);

    // alpha = w^T z solves  alpha + c tanh(alpha + b) = w^T x.
    const RowVector y = m_w.transpose() * x;
    RowVector t(x.cols());
    for (Index j = 0; j < x.cols(); ++j) {
      t(j) = solve_alpha(y(j), p, s.iterations[j], s.status[j]) + b();
      if (s.status[j] == RootStatus::not_converged) s.info = Eigen::NoConvergence;
    }

    // z = x - u_hat tanh(alpha + b);  log|det df^{-1}/dx| = -log|det df/dz| at z.
    s.value = x;
    s.value.noalias() -= p.u_hat * t.array().tanh().matrix();
    s.log_det = -log_q(t, p);
    return s;
  }

  /// Vector-Jacobian product of the call recorded in `cache`. For the inverse, which has no
  /// closed form, the implicit-function theorem gives dz/dx = J^{-1} and
  /// dz/dtheta = -J^{-1} df/dtheta, with J^{-1} applied by the Sherman-Morrison formula.
  Matrix backward(const Cache& cache, const Matrix& grad_value, const RowVector& grad_log_det) {
    const Reparam p = reparam();
    if (!cache.inverse) return forward_vjp(cache.latent, cache.pre, p, grad_value, grad_log_det);

    // The inverse log-det -log q(t) also depends on z:  g = dL/dz + dL/dlogdet * 2c h h' / q * w.
    const auto h = cache.pre.array().tanh();
    const RowVector hp = cache.pre.unaryExpr([](Scalar a) { return detail::sech2(a); });
    const RowVector q = (h.square() + p.one_plus_c * hp.array()).matrix();
    const RowVector g_t = (grad_log_det.array() * Scalar(2) * p.c * h * hp.array() / q.array());
    Matrix g = grad_value;
    g.noalias() += m_w * g_t;

    // dL/dx = J^{-T} g = g - w h' (u_hat^T g) / q   (Sherman-Morrison; q = 1 + c h').
    const RowVector coef = ((p.u_hat.transpose() * g).array() * hp.array() / q.array()).matrix();
    Matrix grad_x = g;
    grad_x.noalias() -= m_w * coef;

    // dL/dtheta = -(df/dtheta)^T dL/dx + explicit dependence of the log-det on theta.
    const Matrix neg_grad_x = -grad_x;
    const RowVector neg_gld = -grad_log_det;
    forward_vjp(cache.latent, cache.pre, p, neg_grad_x, neg_gld);
    return grad_x;
  }

  template <class F>
  void for_each_parameter(F&& f, const std::string& prefix = "") {
    f(prefix + "u", m_u, m_grad_u);
    f(prefix + "w", m_w, m_grad_w);
    f(prefix + "b", m_b, m_grad_b);
  }

  /// for_each_parameter's traversal without the names: f(value, grad).
  template <class F>
  void visit_parameters(F&& f) {
    f(m_u, m_grad_u);
    f(m_w, m_grad_w);
    f(m_b, m_grad_b);
  }

  void zero_grad() {
    m_grad_u.setZero(m_u.rows(), 1);
    m_grad_w.setZero(m_w.rows(), 1);
    m_grad_b.setZero(1, 1);
  }

 private:
  // Quantities derived from (u, w) once per call. The reparameterisation is computed with the
  // unit vector w / ||w|| so that it stays exact when ||w||^2 underflows:
  //   u_hat = u + gamma w / ||w||,  gamma = (m(k) - k) / ||w||.
  struct Reparam {
    Vector<Scalar> u_hat;
    Vector<Scalar> w_unit;  // w / ||w|| (zero when w = 0)
    Scalar c;               // w^T u_hat
    Scalar one_plus_c;      // 1 + c, accurate near c = -1
    Scalar k;               // w^T u
    Scalar gamma;           // u_hat = u + gamma w_unit
    Scalar w_norm;          // ||w||
    bool w_zero;
  };

  Reparam reparam() const {
    Reparam p;
    p.k = m_w.col(0).dot(m_u.col(0));
    p.w_norm = m_w.col(0).stableNorm();
    p.w_zero = !(p.w_norm > Scalar(0));
    if (p.w_zero) {
      // w = 0: w^T z = 0 for every z, so the map is the shift z + u tanh(b).
      p.gamma = Scalar(0);
      p.c = p.k;
      p.one_plus_c = Scalar(1) + p.k;
      p.w_unit.setZero(dim());
    } else {
      // m(k) = -1 + softplus(k);  u_hat = u + (m(k) - k) w / ||w||^2   [Appendix A.1]
      p.one_plus_c = detail::softplus(p.k);
      p.c = p.one_plus_c - Scalar(1);
      p.w_unit = m_w.col(0) / p.w_norm;
      p.gamma = (p.c - p.k) / p.w_norm;
    }
    p.u_hat = m_u.col(0) + p.gamma * p.w_unit;
    return p;
  }

  // log q(t) = log(tanh^2 t + (1 + c) sech^2 t) = log|1 + c h'(t)|.
  static RowVector log_q(const RowVector& t, const Reparam& p) {
    return t.unaryExpr([&](Scalar a) {
      const Scalar h = std::tanh(a);
      return std::log(h * h + p.one_plus_c * detail::sech2(a));
    });
  }

  // Safeguarded Newton for  g(alpha) = alpha + c tanh(alpha + b) - y = 0  on
  // [y - |c|, y + |c|], where g is increasing: g(lo) <= 0 <= g(hi).
  Scalar solve_alpha(Scalar y, const Reparam& p, int& iterations, RootStatus& status) const {
    const Scalar nan = std::numeric_limits<Scalar>::quiet_NaN();
    if (!std::isfinite(y)) {
      status = RootStatus::non_finite;
      return nan;
    }
    const Scalar c = p.c, bb = b(), ac = std::abs(c);
    Scalar lo = y - ac, hi = y + ac;
    if (!(hi > lo)) return y;  // |c| below the resolution of y: alpha = y to rounding.

    // Start from one fixed-point step, clamped into the bracket.
    Scalar alpha = std::clamp(y - c * std::tanh(y + bb), lo, hi);
    Scalar last_step = hi - lo;
    const Scalar eps = std::numeric_limits<Scalar>::epsilon();
    for (int it = 1; it <= m_max_iterations; ++it) {
      iterations = it;
      const Scalar t = alpha + bb;
      const Scalar g = alpha + c * std::tanh(t) - y;
      if (g == Scalar(0)) return alpha;
      (g < Scalar(0) ? lo : hi) = alpha;

      // g'(alpha) = tanh^2 + (1 + c) sech^2 > 0; Newton unless it leaves the bracket or
      // would shrink the step by less than half (then bisect).
      const Scalar th = std::tanh(t);
      const Scalar dg = th * th + p.one_plus_c * detail::sech2(t);
      Scalar next = alpha - g / dg;
      if (!(next > lo && next < hi) || std::abs(Scalar(2) * g) > std::abs(last_step * dg)) {
        next = lo + (hi - lo) / Scalar(2);
      }
      last_step = next - alpha;

      // Converged when the step or the bracket is within a few ulps of the root's scale.
      const Scalar tol = Scalar(2) * eps * std::max(std::abs(next), std::abs(y));
      if (std::abs(last_step) <= tol || hi - lo <= tol || next == lo || next == hi) return next;
      alpha = next;
    }
    status = RootStatus::not_converged;
    return alpha;
  }

  // Gradient of the forward map at (z, t = w^T z + b) for dL/dx = gx, dL/dlogdet = gld:
  // accumulates dL/du, dL/dw, dL/db and returns dL/dz.
  Matrix forward_vjp(const Matrix& z, const RowVector& t, const Reparam& p, const Matrix& gx,
                     const RowVector& gld) {
    const RowVector h = t.array().tanh();
    const RowVector hp = t.unaryExpr([](Scalar a) { return detail::sech2(a); });
    const RowVector q = (h.array().square() + p.one_plus_c * hp.array()).matrix();

    // dL/dt = (u_hat^T gx) h' + gld * dq/dt / q,  dq/dt = -2 c h h'.
    const RowVector g_t = ((p.u_hat.transpose() * gx).array() * hp.array() -
                           gld.array() * Scalar(2) * p.c * h.array() * hp.array() / q.array())
                              .matrix();

    // Direct gradients: u_hat, c (through q), w (through t), b.
    const Vector<Scalar> g_uhat = gx * h.transpose();
    const Scalar g_c = (gld.array() * hp.array() / q.array()).sum();
    Vector<Scalar> g_w = z * g_t.transpose();
    m_grad_b(0, 0) += g_t.sum();

    // Through the reparameterisation u_hat = u + gamma w / ||w||, c = m(k), k = w^T u, with
    // m'(k) = sigmoid(k) and n = w / ||w||:
    //   dL/du += (m' - 1)(n^T G) n + g_c m' w
    //   dL/dw += [gamma G + (m' - 1)(n^T G) u - 2 gamma (n^T G) n] / ||w|| + g_c m' u
    // for G = dL/du_hat (the ||w||^2 of the paper's form never appears, so nothing underflows).
    const auto u = m_u.col(0);
    const auto w = m_w.col(0);
    if (p.w_zero) {
      m_grad_u.col(0) += g_uhat + g_c * w;
      g_w += g_c * u;
    } else {
      const Scalar sig = detail::sigmoid(p.k);
      const Scalar s = p.w_unit.dot(g_uhat);
      m_grad_u.col(0) += g_uhat + ((sig - Scalar(1)) * s) * p.w_unit + (g_c * sig) * w;
      g_w +=
          (p.gamma * g_uhat + ((sig - Scalar(1)) * s) * u - (Scalar(2) * p.gamma * s) * p.w_unit) /
              p.w_norm +
          (g_c * sig) * u;
    }
    m_grad_w.col(0) += g_w;

    // dL/dz = gx + w dL/dt.
    Matrix gz = gx;
    gz.noalias() += m_w * g_t;
    return gz;
  }

  Matrix m_u, m_w, m_b;
  Matrix m_grad_u, m_grad_w, m_grad_b;
  int m_max_iterations = 200;
};

static_assert(Flow<Planar<float>> && Flow<Planar<double>>);

}  // namespace nflow
