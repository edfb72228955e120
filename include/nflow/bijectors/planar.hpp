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
#include <type_traits>
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

 private:
  // Quantities derived from (u, w) once per call. The reparameterisation is computed with the
  // unit vector w / ||w|| so that it stays exact when ||w||^2 underflows:
  //   u_hat = u + gamma w / ||w||,  gamma = (m(k) - k) / ||w||.
  struct Reparam {
    Vector<Scalar> u_hat;
    Vector<Scalar> w_unit;  // w / ||w|| (zero when w = 0)
    Scalar c = 0;           // w^T u_hat
    Scalar one_plus_c = 1;  // 1 + c, accurate near c = -1
    Scalar k = 0;           // w^T u
    Scalar gamma = 0;       // u_hat = u + gamma w_unit
    Scalar w_norm = 0;      // ||w||
    bool w_zero = true;
  };

 public:
  /// What backward() needs from a call; the buffers are kept between calls, so a reused cache
  /// does not allocate.
  struct Cache {
    bool inverse = false;
    Matrix latent;  // z
    RowVector pre;  // t = w^T z + b
    RowVector h;    // tanh(t)
    RowVector hp;   // sech^2(t)
    RowVector q;    // 1 + c h'(t) = tanh^2(t) + (1 + c) sech^2(t)
    Reparam p;      // the parameters the call used
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
    detail::check_rows("Planar::forward", dim(), z);
    Result r{Matrix(z), RowVector::Zero(z.cols())};
    forward_inplace(r.value, &r.log_det);
    return r;
  }

  Result inverse_and_log_det(const ConstRef& x) const {
    Cache cache;
    return inverse_and_log_det(x, cache);
  }

  Result forward_and_log_det(const ConstRef& z, Cache& cache) const {
    detail::check_rows("Planar::forward", dim(), z);
    Result r{Matrix(z), RowVector::Zero(z.cols())};
    forward_inplace(r.value, r.log_det, cache);
    return r;
  }

  Result inverse_and_log_det(const ConstRef& x, Cache& cache) const {
    detail::check_rows("Planar::inverse", dim(), x);
    Result r{Matrix(x), RowVector::Zero(x.cols())};
    inverse_inplace(r.value, r.log_det, cache);
    return r;
  }

  /// v <- f(v), adding log|det| to *log_det unless it is null (see nflow::InPlaceFlow).
  void forward_inplace(Matrix& v, RowVector* log_det) const {
    detail::check_rows("Planar::forward", dim(), v);
    // t = w^T z + b;  x = z + u_hat tanh(t);  log|det| = log(1 + c h'(t))   [Eq. 10-12]
    Cache c;
    reparam(c.p);
    pre_activation(v, c.pre);
    if (log_det) {
      activation(c);
      log_det->array() += c.q.array().log();
    } else {
      c.h = c.pre.array().tanh();
    }
    add_outer(v, c.p.u_hat, c.h, Scalar(1));
  }

  /// v <- f^{-1}(v), adding log|det| to *log_det unless it is null. A column whose root finding
  /// does not converge becomes NaN.
  void inverse_inplace(Matrix& v, RowVector* log_det) const {
    Cache c;
    RowVector ld = RowVector::Zero(v.cols());
    inverse_inplace(v, ld, c);
    if (log_det) *log_det += ld;
  }

  /// v <- f(v), log_det += log|det|, recording in `cache` what backward_inplace needs.
  void forward_inplace(Matrix& v, RowVector& log_det, Cache& cache) const {
    detail::check_rows("Planar::forward", dim(), v);
    cache.inverse = false;
    reparam(cache.p);
    cache.latent = v;
    pre_activation(v, cache.pre);
    activation(cache);
    log_det.array() += cache.q.array().log();
    add_outer(v, cache.p.u_hat, cache.h, Scalar(1));
  }

  /// v <- f^{-1}(v), log_det += log|det|, recording in `cache` what backward_inplace needs. A
  /// column whose root finding does not converge becomes NaN.
  void inverse_inplace(Matrix& v, RowVector& log_det, Cache& cache) const {
    detail::check_rows("Planar::inverse", dim(), v);
    cache.inverse = true;
    reparam(cache.p);
    solve_pre_activation(v, cache.p, cache.pre, nullptr, nullptr);
    activation(cache);
    // z = x - u_hat tanh(t);  log|det df^{-1}/dx| = -log|det df/dz| at z.
    add_outer(v, cache.p.u_hat, cache.h, Scalar(-1));
    log_det.array() -= cache.q.array().log();
    cache.latent = v;
  }

  /// z = f^{-1}(x) and log|det df^{-1}/dx|, with the root finder's status per column. Unlike
  /// inverse(), a column that did not converge keeps the last iterate (its status says so).
  InverseSolution solve_inverse(const ConstRef& x) const {
    detail::check_rows("Planar::inverse", dim(), x);
    Cache c;
    reparam(c.p);
    InverseSolution s;
    s.iterations.assign(x.cols(), 0);
    s.status.assign(x.cols(), RootStatus::converged);
    s.value = x;
    solve_pre_activation(s.value, c.p, c.pre, s.iterations.data(), s.status.data());
    for (RootStatus st : s.status)
      if (st == RootStatus::not_converged) s.info = Eigen::NoConvergence;
    activation(c);
    add_outer(s.value, c.p.u_hat, c.h, Scalar(-1));
    s.log_det = -c.q.array().log();
    return s;
  }

  /// Vector-Jacobian product of the call recorded in `cache`.
  Matrix backward(const Cache& cache, const Matrix& grad_value, const RowVector& grad_log_det) {
    Matrix g = grad_value;
    backward_inplace(cache, g, grad_log_det);
    return g;
  }

  /// In-place backward of the call recorded in `cache`: g = dL/d(value) on entry, dL/d(input)
  /// on exit; the parameter gradients are accumulated. For the inverse, which has no closed
  /// form, the implicit-function theorem gives dz/dx = J^{-1} and dz/dtheta = -J^{-1}
  /// df/dtheta, with J^{-1} applied by the Sherman-Morrison formula.
  void backward_inplace(const Cache& cache, Matrix& g, const RowVector& grad_log_det) {
    const Reparam& p = cache.p;
    if (!cache.inverse) {
      // dL/dz = dL/dx + w dL/dt.
      accumulate_forward_vjp(cache, g, grad_log_det, Scalar(1));
      add_outer(g, m_w.col(0), m_g_t, Scalar(1));
      return;
    }
    // The inverse log-det -log q(t) also depends on z:  g = dL/dz + dL/dlogdet 2c h h' / q w.
    m_g_t = grad_log_det.array() * Scalar(2) * p.c * cache.h.array() * cache.hp.array() /
            cache.q.array();
    add_outer(g, m_w.col(0), m_g_t, Scalar(1));

    // dL/dx = J^{-T} g = g - w h' (u_hat^T g) / q   (Sherman-Morrison; q = 1 + c h').
    dot_columns(g, p.u_hat, m_g_t);
    m_g_t.array() *= cache.hp.array() / cache.q.array();
    add_outer(g, m_w.col(0), m_g_t, Scalar(-1));

    // dL/dtheta = -(df/dtheta)^T dL/dx + the explicit dependence of the log-det on theta.
    accumulate_forward_vjp(cache, g, grad_log_det, Scalar(-1));
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
  // Below this dimension the per-column dot products and rank-one updates are written as plain
  // loops; above it they are Eigen matrix-vector products.
  static constexpr Index kSmallDim = 16;

  void reparam(Reparam& p) const {
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
  }

  Reparam reparam() const {
    Reparam p;
    reparam(p);
    return p;
  }

  // Calls f(std::integral_constant<Index, D>) with D = d for the dimensions 1 to 4, so that the
  // per-column loops below are unrolled there, and with D = 0 (meaning "use d") otherwise.
  template <class F>
  static void with_static_dim(Index d, F&& f) {
    switch (d) {
      case 1:
        f(std::integral_constant<Index, 1>{});
        break;
      case 2:
        f(std::integral_constant<Index, 2>{});
        break;
      case 3:
        f(std::integral_constant<Index, 3>{});
        break;
      case 4:
        f(std::integral_constant<Index, 4>{});
        break;
      default:
        f(std::integral_constant<Index, 0>{});
    }
  }

  // out_j = a^T v_j for every column j of v.
  static void dot_columns(const Matrix& v, const Eigen::Ref<const Vector<Scalar>>& a,
                          RowVector& out) {
    const Index n = v.cols();
    out.resize(n);
    if (v.rows() > kSmallDim) {
      out.noalias() = a.transpose() * v;
      return;
    }
    with_static_dim(v.rows(), [&](auto static_d) {
      const Index d = static_d() > 0 ? static_d() : v.rows();
      Scalar coef[kSmallDim];
      for (Index i = 0; i < d; ++i)
        coef[i] = a(i);
      const Scalar* col = v.data();
      Scalar* o = out.data();
      for (Index j = 0; j < n; ++j, col += d) {
        Scalar s = Scalar(0);
        for (Index i = 0; i < d; ++i)
          s += coef[i] * col[i];
        o[j] = s;
      }
    });
  }

  // v += sign a r^T: column j gains sign r_j a.
  static void add_outer(Matrix& v, const Eigen::Ref<const Vector<Scalar>>& a, const RowVector& r,
                        Scalar sign) {
    const Index n = v.cols();
    if (v.rows() > kSmallDim) {
      if (sign > Scalar(0)) {
        v.noalias() += a * r;
      } else {
        v.noalias() -= a * r;
      }
      return;
    }
    with_static_dim(v.rows(), [&](auto static_d) {
      const Index d = static_d() > 0 ? static_d() : v.rows();
      Scalar coef[kSmallDim];
      for (Index i = 0; i < d; ++i)
        coef[i] = sign * a(i);
      Scalar* col = v.data();
      const Scalar* rr = r.data();
      for (Index j = 0; j < n; ++j, col += d) {
        for (Index i = 0; i < d; ++i)
          col[i] += coef[i] * rr[j];
      }
    });
  }

  // gu = g h^T and gw = z t^T (the sums over columns of g_j h_j and z_j t_j), for D x N g, z.
  static void outer_sums(const Matrix& g, const RowVector& h, const Matrix& z, const RowVector& t,
                         Vector<Scalar>& gu, Vector<Scalar>& gw) {
    if (g.rows() > kSmallDim) {
      gu.noalias() = g * h.transpose();
      gw.noalias() = z * t.transpose();
      return;
    }
    with_static_dim(g.rows(), [&](auto static_d) {
      const Index d = static_d() > 0 ? static_d() : g.rows();
      Scalar su[kSmallDim] = {}, sw[kSmallDim] = {};
      const Scalar* gcol = g.data();
      const Scalar* zcol = z.data();
      const Scalar* hh = h.data();
      const Scalar* tt = t.data();
      for (Index j = 0; j < g.cols(); ++j, gcol += d, zcol += d) {
        for (Index i = 0; i < d; ++i) {
          su[i] += gcol[i] * hh[j];
          sw[i] += zcol[i] * tt[j];
        }
      }
      gu.resize(d);
      gw.resize(d);
      for (Index i = 0; i < d; ++i) {
        gu(i) = su[i];
        gw(i) = sw[i];
      }
    });
  }

  // t = w^T v + b per column.
  void pre_activation(const Matrix& v, RowVector& t) const {
    dot_columns(v, m_w.col(0), t);
    t.array() += b();
  }

  // From cache.pre = t: h = tanh(t), h' = sech^2(t) = 4e / (1 + e)^2 with e = exp(-2|t|) (exact
  // also where tanh rounds to +-1), and q = tanh^2 + (1 + c) sech^2, which keeps full precision
  // as c approaches -1. Whole-row array passes, vectorised by Eigen.
  static void activation(Cache& c) {
    c.h = c.pre.array().tanh();
    c.hp = (Scalar(-2) * c.pre.array().abs()).exp();
    c.hp = Scalar(4) * c.hp.array() / (Scalar(1) + c.hp.array()).square();
    c.q = c.h.array().square() + c.p.one_plus_c * c.hp.array();
  }

  // t = alpha + b per column of x, where alpha = w^T z solves alpha + c tanh(alpha + b) = w^T x.
  // A column whose root finding fails gets t = NaN (so its z and log-det are NaN) unless
  // `status` is given, which then receives the outcome (and `iterations` the count) instead.
  void solve_pre_activation(const Matrix& x, const Reparam& p, RowVector& t, int* iterations,
                            RootStatus* status) const {
    dot_columns(x, m_w.col(0), t);
    for (Index j = 0; j < x.cols(); ++j) {
      int it = 0;
      RootStatus st = RootStatus::converged;
      const Scalar alpha = solve_alpha(t(j), p, it, st);
      if (status) {
        status[j] = st;
        iterations[j] = it;
        t(j) = alpha + b();
      } else {
        t(j) = st == RootStatus::converged ? alpha + b() : std::numeric_limits<Scalar>::quiet_NaN();
      }
    }
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
      const Scalar th = std::tanh(t);
      const Scalar g = alpha + c * th - y;
      if (g == Scalar(0)) return alpha;
      (g < Scalar(0) ? lo : hi) = alpha;

      // g'(alpha) = tanh^2 + (1 + c) sech^2 > 0; Newton unless it leaves the bracket or
      // would shrink the step by less than half (then bisect).
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

  // Parameter gradients of the forward map at the cached point (z, t), for dL/dx = gx and
  // dL/dlogdet = gld, multiplied by `sign` and added to the gradient buffers. Leaves the
  // (unsigned) dL/dt = (u_hat^T gx) h' - gld 2 c h h' / q in m_g_t.
  void accumulate_forward_vjp(const Cache& cache, const Matrix& gx, const RowVector& gld,
                              Scalar sign) {
    const Reparam& p = cache.p;
    const auto h = cache.h.array();
    const auto hp = cache.hp.array();
    const auto q = cache.q.array();

    // dL/dt = (u_hat^T gx) h' + gld dq/dt / q,  dq/dt = -2 c h h'.
    dot_columns(gx, p.u_hat, m_g_t);
    m_g_t = m_g_t.array() * hp - gld.array() * Scalar(2) * p.c * h * hp / q;

    // Direct gradients: u_hat (G = gx h^T), c (through q), w (through t: z (dL/dt)^T), b.
    outer_sums(gx, cache.h, cache.latent, m_g_t, m_g_uhat, m_g_w);
    m_g_uhat *= sign;
    m_g_w *= sign;
    const Scalar g_c = sign * (gld.array() * hp / q).sum();
    m_grad_b(0, 0) += sign * m_g_t.sum();

    // Through the reparameterisation u_hat = u + gamma w / ||w||, c = m(k), k = w^T u, with
    // m'(k) = sigmoid(k) and n = w / ||w||:
    //   dL/du += (m' - 1)(n^T G) n + g_c m' w
    //   dL/dw += [gamma G + (m' - 1)(n^T G) u - 2 gamma (n^T G) n] / ||w|| + g_c m' u
    // for G = dL/du_hat (the ||w||^2 of the paper's form never appears, so nothing underflows).
    const auto u = m_u.col(0);
    const auto w = m_w.col(0);
    if (p.w_zero) {
      m_grad_u.col(0) += m_g_uhat + g_c * w;
      m_g_w += g_c * u;
    } else {
      const Scalar sig = detail::sigmoid(p.k);
      const Scalar s = p.w_unit.dot(m_g_uhat);
      m_grad_u.col(0) += m_g_uhat + ((sig - Scalar(1)) * s) * p.w_unit + (g_c * sig) * w;
      m_g_w += (p.gamma * m_g_uhat + ((sig - Scalar(1)) * s) * u -
                (Scalar(2) * p.gamma * s) * p.w_unit) /
                   p.w_norm +
               (g_c * sig) * u;
    }
    m_grad_w.col(0) += m_g_w;
  }

  Matrix m_u, m_w, m_b;
  Matrix m_grad_u, m_grad_w, m_grad_b;
  int m_max_iterations = 200;
  // Backward scratch, kept between calls.
  RowVector m_g_t;
  Vector<Scalar> m_g_uhat, m_g_w;
};

static_assert(Flow<Planar<float>> && Flow<Planar<double>>);

}  // namespace nflow
