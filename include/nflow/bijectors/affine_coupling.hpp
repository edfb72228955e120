// Affine coupling layer (RealNVP).
//
// L. Dinh, J. Sohl-Dickstein, S. Bengio, "Density estimation using Real NVP", ICLR 2017,
// arXiv:1605.08803.
//
// With a binary mask splitting the coordinates into a conditioning part A and a transformed
// part B, the forward (generative) map is   [DinhEtAl17, Eq. 4-5]
//   x_A = z_A,
//   x_B = z_B * exp(s(z_A)) + t(z_A),
// and log|det df/dz| = sum_j s_j(z_A)  [DinhEtAl17, Eq. 6]. The inverse is analytic:
//   z_B = (x_B - t(x_A)) * exp(-s(x_A)).
#pragma once

#include <cmath>
#include <numbers>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "nflow/bijector_base.hpp"
#include "nflow/detail/inplace.hpp"
#include "nflow/flow.hpp"
#include "nflow/nn/mlp.hpp"

namespace nflow {

/// Which coordinates a coupling leaves unchanged: `true` marks a coordinate that passes through
/// and conditions the network; `false` marks one that is scaled and shifted.
class Mask {
 public:
  Mask() = default;
  explicit Mask(std::vector<bool> pass_through) : m_bits(std::move(pass_through)) {}
  Mask(std::initializer_list<bool> bits) : m_bits(bits) {}

  /// Coordinates 0, 2, 4, ... pass through (or 1, 3, 5, ... when `odd` is set).
  static Mask alternating(Index dim, bool odd = false) {
    detail::check_positive("Mask::alternating", "dim", dim);
    std::vector<bool> bits(dim);
    for (Index i = 0; i < dim; ++i)
      bits[i] = (i % 2 == 0) != odd;
    return Mask(std::move(bits));
  }

  /// The first floor(dim/2) coordinates pass through (or the rest, when `second` is set).
  static Mask half(Index dim, bool second = false) {
    detail::check_positive("Mask::half", "dim", dim);
    std::vector<bool> bits(dim);
    for (Index i = 0; i < dim; ++i)
      bits[i] = (i < dim / 2) != second;
    return Mask(std::move(bits));
  }

  /// The complementary mask.
  Mask flipped() const {
    std::vector<bool> bits(m_bits.size());
    for (std::size_t i = 0; i < bits.size(); ++i)
      bits[i] = !m_bits[i];
    return Mask(std::move(bits));
  }

  Index dim() const { return static_cast<Index>(m_bits.size()); }
  bool operator[](Index i) const { return m_bits[i]; }
  const std::vector<bool>& bits() const { return m_bits; }

 private:
  std::vector<bool> m_bits;
};

/// How the conditioner's raw log-scale r becomes the log-scale s actually applied.
enum class SoftClamp {
  tanh,  ///< s = c tanh(r / c): smooth, |s| < c.
  atan,  ///< s = (2c / pi) atan(r / c): smooth, |s| < c, heavier tails than tanh.
  none   ///< s = r: unbounded exp(s); can overflow in training (use with care).
};

/// Architecture of an AffineCoupling's conditioner and scale function.
struct CouplingOptions {
  std::vector<Index> hidden{64, 64};         ///< hidden layer widths of the conditioner MLP
  Activation activation = Activation::relu;  ///< non-linearity between hidden layers
  SoftClamp clamp = SoftClamp::tanh;         ///< form of the log-scale bound
  double clamp_bound = 2.0;                  ///< the bound c (ignored by SoftClamp::none)
};

/**
 * \brief RealNVP affine coupling  x_B = z_B * exp(s(z_A)) + t(z_A),  x_A = z_A.
 *
 * The conditioner is an Mlp from the |A| pass-through coordinates to 2|B| outputs: rows
 * [0, |B|) are the raw log-scale r, rows [|B|, 2|B|) the shift t, for the transformed
 * coordinates in increasing order.
 *
 * Departure from the paper: the log-scale is soft-clamped, s = c tanh(r/c) by default
 * (CouplingOptions::clamp), so that exp(s) stays within [e^-c, e^c] and cannot overflow.
 * The output layer of the conditioner starts at zero, so a new coupling is the identity.
 */
template <class ScalarT>
class AffineCoupling : public BijectorBase<AffineCoupling<ScalarT>, ScalarT> {
 public:
  using Scalar = ScalarT;
  using Base = BijectorBase<AffineCoupling<Scalar>, Scalar>;
  using typename Base::ConstRef;
  using typename Base::Matrix;
  using typename Base::Result;
  using typename Base::RowVector;

  /// What backward() needs from a forward_and_log_det / inverse_and_log_det call. The buffers
  /// are kept between calls, so a reused cache does not allocate.
  struct Cache {
    bool inverse = false;
    typename Mlp<Scalar>::Cache net;
    Matrix cond;       // x_A, the conditioner's input
    Matrix log_scale;  // s = clamp(r)
    Matrix scale;      // exp(s) forward, exp(-s) inverse
    Matrix latent_b;   // z_B: the transformed part on the latent side
  };

  /// Builds a coupling with conditioner weights drawn from `rng` (output layer zero).
  template <class Rng>
  requires std::uniform_random_bit_generator<std::remove_cvref_t<Rng>> AffineCoupling(
      Mask mask, const CouplingOptions& options, Rng&& rng)
      : m_mask(std::move(mask)), m_options(options) {
    validate();
    for (Index i = 0; i < m_mask.dim(); ++i)
      (m_mask[i] ? m_cond : m_trans).push_back(i);
    m_cond_first = contiguous_start(m_cond);
    m_trans_first = contiguous_start(m_trans);
    std::vector<Index> sizes{static_cast<Index>(m_cond.size())};
    sizes.insert(sizes.end(), options.hidden.begin(), options.hidden.end());
    sizes.push_back(2 * static_cast<Index>(m_trans.size()));
    m_net = Mlp<Scalar>(sizes, options.activation, true, rng);
  }

  /// Same, with a std::mt19937_64 seeded by `seed`.
  AffineCoupling(Mask mask, const CouplingOptions& options = {}, std::uint64_t seed = 0)
      : AffineCoupling(std::move(mask), options, std::mt19937_64(seed)) {}

  Index dim() const { return m_mask.dim(); }
  const Mask& mask() const { return m_mask; }
  const CouplingOptions& options() const { return m_options; }
  const Mlp<Scalar>& conditioner() const { return m_net; }
  Mlp<Scalar>& conditioner() { return m_net; }

  Result forward_and_log_det(const ConstRef& z) const {
    detail::check_rows("AffineCoupling::forward", dim(), z);
    Result r{Matrix(z), RowVector::Zero(z.cols())};
    forward_inplace(r.value, &r.log_det);
    return r;
  }

  Result inverse_and_log_det(const ConstRef& x) const {
    detail::check_rows("AffineCoupling::inverse", dim(), x);
    Result r{Matrix(x), RowVector::Zero(x.cols())};
    inverse_inplace(r.value, &r.log_det);
    return r;
  }

  /// x = f(z), recording in `cache` what backward() needs.
  Result forward_and_log_det(const ConstRef& z, Cache& cache) const {
    detail::check_rows("AffineCoupling::forward", dim(), z);
    Result r{Matrix(z), RowVector::Zero(z.cols())};
    forward_inplace(r.value, r.log_det, cache);
    return r;
  }

  /// z = f^{-1}(x), recording in `cache` what backward() needs.
  Result inverse_and_log_det(const ConstRef& x, Cache& cache) const {
    detail::check_rows("AffineCoupling::inverse", dim(), x);
    Result r{Matrix(x), RowVector::Zero(x.cols())};
    inverse_inplace(r.value, r.log_det, cache);
    return r;
  }

  /// Vector-Jacobian product of the call recorded in `cache`: given dL/d(value) and
  /// dL/d(log_det), accumulates the conditioner's parameter gradients and returns dL/d(input).
  Matrix backward(const Cache& cache, const Matrix& grad_value, const RowVector& grad_log_det) {
    Matrix g = grad_value;
    backward_inplace(cache, g, grad_log_det);
    return g;
  }

  /// v <- f(v), adding log|det| to *log_det unless it is null (see nflow::InPlaceFlow).
  void forward_inplace(Matrix& v, RowVector* log_det) const {
    detail::check_rows("AffineCoupling::forward", dim(), v);
    // (r, t) = NN(z_A);  s = clamp(r);  x_B = z_B * exp(s) + t;  log|det| = sum_j s_j.
    const Matrix params = m_net(gather_conditioning(v));
    Matrix s = params.topRows(num_transformed());
    clamp_inplace(s);
    on_transformed(v, [&](auto&& vb) {
      vb = (vb.array() * s.array().exp() + params.bottomRows(num_transformed()).array()).matrix();
    });
    if (log_det) *log_det += s.colwise().sum();
  }

  /// v <- f^{-1}(v), adding log|det| to *log_det unless it is null.
  void inverse_inplace(Matrix& v, RowVector* log_det) const {
    detail::check_rows("AffineCoupling::inverse", dim(), v);
    // (r, t) = NN(x_A);  s = clamp(r);  z_B = (x_B - t) * exp(-s);  log|det| = -sum_j s_j.
    const Matrix params = m_net(gather_conditioning(v));
    Matrix s = params.topRows(num_transformed());
    clamp_inplace(s);
    on_transformed(v, [&](auto&& vb) {
      vb = ((vb.array() - params.bottomRows(num_transformed()).array()) * (-s.array()).exp())
               .matrix();
    });
    if (log_det) *log_det -= s.colwise().sum();
  }

  /// v <- f(v), log_det += log|det|, recording in `cache` what backward_inplace needs.
  void forward_inplace(Matrix& v, RowVector& log_det, Cache& cache) const {
    detail::check_rows("AffineCoupling::forward", dim(), v);
    cache.inverse = false;
    const Matrix& params = condition(v, cache);

    // exp(s);  z_B kept;  x_B = z_B * exp(s) + t;  log|det| = sum_j s_j   [DinhEtAl17, Eq. 6]
    cache.scale = cache.log_scale.array().exp();
    on_transformed(v, [&](auto&& vb) {
      cache.latent_b = vb;
      vb = (cache.latent_b.array() * cache.scale.array() +
            params.bottomRows(num_transformed()).array())
               .matrix();
    });
    log_det += cache.log_scale.colwise().sum();
  }

  /// v <- f^{-1}(v), log_det += log|det|, recording in `cache` what backward_inplace needs.
  void inverse_inplace(Matrix& v, RowVector& log_det, Cache& cache) const {
    detail::check_rows("AffineCoupling::inverse", dim(), v);
    cache.inverse = true;
    const Matrix& params = condition(v, cache);

    // exp(-s);  z_B = (x_B - t) * exp(-s);  log|det| = -sum_j s_j.
    cache.scale = (-cache.log_scale.array()).exp();
    on_transformed(v, [&](auto&& vb) {
      cache.latent_b =
          ((vb.array() - params.bottomRows(num_transformed()).array()) * cache.scale.array())
              .matrix();
      vb = cache.latent_b;
    });
    log_det -= cache.log_scale.colwise().sum();
  }

  /// In-place backward of the call recorded in `cache`: g = dL/d(value) on entry, dL/d(input)
  /// on exit; the conditioner's parameter gradients are accumulated.
  void backward_inplace(const Cache& cache, Matrix& g, const RowVector& grad_log_det) {
    const Index nb = num_transformed();
    m_grad_params.resize(2 * nb, g.cols());
    auto g_raw = m_grad_params.topRows(nb).array();
    auto g_shift = m_grad_params.bottomRows(nb).array();
    const auto scale = cache.scale.array();
    const auto zb = cache.latent_b.array();
    on_transformed(g, [&](auto&& gb) {
      if (!cache.inverse) {
        // x_B = z_B e^s + t:  dL/dt = g,  dL/ds = g z_B e^s + dL/dlogdet,  dL/dz_B = g e^s.
        g_shift = gb.array();
        g_raw = (gb.array() * zb * scale).rowwise() + grad_log_det.array();
        gb = (gb.array() * scale).matrix();
      } else {
        // z_B = (x_B - t) e^-s:  dL/ds = -g z_B - dL/dlogdet,  dL/dx_B = g e^-s,
        // dL/dt = -g e^-s.
        g_raw = (-gb.array() * zb).rowwise() - grad_log_det.array();
        gb = (gb.array() * scale).matrix();
        g_shift = -gb.array();
      }
    });

    // dL/dr = dL/ds * clamp'(r); through the conditioner; dL/dx_A += W_0^T dL/d(layer 0).
    multiply_clamp_derivative(g_raw, cache.log_scale.array());
    const Matrix& g0 = m_net.backward_params(cache.net, cache.cond, m_grad_params);
    if (m_cond_first >= 0) {
      m_net.add_input_gradient(g0, g.middleRows(m_cond_first, num_conditioning()));
    } else {
      m_grad_cond.setZero(num_conditioning(), g.cols());
      m_net.add_input_gradient(g0, m_grad_cond);
      g(m_cond, Eigen::all) += m_grad_cond;
    }
  }

  template <class F>
  void for_each_parameter(F&& f, const std::string& prefix = "") {
    m_net.for_each_parameter(f, prefix + "conditioner.");
  }

  template <class F>
  void visit_parameters(F&& f) {
    m_net.visit_parameters(f);
  }

  void zero_grad() { m_net.zero_grad(); }

 private:
  void validate() const {
    const char* where = "AffineCoupling";
    if (m_mask.dim() < 2) detail::fail(where, "mask size (the dimension)", ">= 2", m_mask.dim());
    Index pass = 0;
    for (Index i = 0; i < m_mask.dim(); ++i)
      pass += m_mask[i] ? 1 : 0;
    if (pass == 0 || pass == m_mask.dim()) {
      detail::fail(where, "mask pass-through count", "between 1 and dim - 1", pass);
    }
    for (Index h : m_options.hidden)
      detail::check_positive(where, "options.hidden width", h);
    if (m_options.clamp != SoftClamp::none && !(m_options.clamp_bound > 0.0)) {
      detail::fail(where, "options.clamp_bound", "> 0", m_options.clamp_bound);
    }
  }

  Index num_conditioning() const { return static_cast<Index>(m_cond.size()); }
  Index num_transformed() const { return static_cast<Index>(m_trans.size()); }

  // The first index when `idx` is a run of consecutive indices, -1 otherwise.
  static Index contiguous_start(const std::vector<Index>& idx) {
    for (std::size_t k = 1; k < idx.size(); ++k)
      if (idx[k] != idx[k - 1] + 1) return -1;
    return idx.empty() ? -1 : idx.front();
  }

  // Calls f on the transformed rows of v: a plain block when they are consecutive, an indexed
  // view otherwise (both are read and written through the same expression interface).
  template <class F>
  void on_transformed(Matrix& v, F&& f) const {
    if (m_trans_first >= 0) {
      f(v.middleRows(m_trans_first, num_transformed()));
    } else {
      f(v(m_trans, Eigen::all));
    }
  }

  // x_A, the conditioner's input, as a contiguous matrix.
  Matrix gather_conditioning(const Matrix& v) const {
    if (m_cond_first >= 0) return v.middleRows(m_cond_first, num_conditioning());
    return v(m_cond, Eigen::all);
  }

  // x_A into cache.cond, then (r, t) = NN(x_A) and s = clamp(r) into cache.log_scale.
  const Matrix& condition(const Matrix& v, Cache& cache) const {
    if (m_cond_first >= 0) {
      cache.cond = v.middleRows(m_cond_first, num_conditioning());
    } else {
      cache.cond = v(m_cond, Eigen::all);
    }
    const Matrix& params = m_net.forward_train(cache.cond, cache.net);
    cache.log_scale = params.topRows(num_transformed());
    clamp_inplace(cache.log_scale);
    return params;
  }

  void clamp_inplace(Matrix& r) const {
    const Scalar c = Scalar(m_options.clamp_bound);
    auto a = r.array();
    switch (m_options.clamp) {
      case SoftClamp::tanh:
        a = c * (a * (Scalar(1) / c)).tanh();
        break;
      case SoftClamp::atan:
        a = Scalar(2 / std::numbers::pi) * c * (a / c).atan();
        break;
      case SoftClamp::none:
        break;
    }
  }

  // g <- g * ds/dr, with ds/dr written in terms of s = clamp(r).
  template <class G, class S>
  void multiply_clamp_derivative(G& g, const S& s) const {
    const Scalar c = Scalar(m_options.clamp_bound);
    switch (m_options.clamp) {
      case SoftClamp::tanh:
        // s = c tanh(r/c):  ds/dr = 1 - (s/c)^2.
        g *= Scalar(1) - (s * (Scalar(1) / c)).square();
        break;
      case SoftClamp::atan: {
        // s = (2c/pi) atan(r/c):  ds/dr = (2/pi) / (1 + (r/c)^2) = (2/pi) cos^2(pi s / 2c).
        const Scalar k = Scalar(std::numbers::pi / 2) / c;
        g *= Scalar(2 / std::numbers::pi) * (k * s).cos().square();
        break;
      }
      case SoftClamp::none:
        break;
    }
  }

  Mask m_mask;
  CouplingOptions m_options;
  std::vector<Index> m_cond, m_trans;
  Index m_cond_first = -1, m_trans_first = -1;  // first index of a consecutive run, else -1
  Mlp<Scalar> m_net;
  Matrix m_grad_params;  // backward scratch: dL/d(r, t)
  Matrix m_grad_cond;    // backward scratch: dL/dx_A, for masks whose A is not consecutive
};

static_assert(Flow<AffineCoupling<float>> && Flow<AffineCoupling<double>>);

}  // namespace nflow
