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

  /// What backward() needs from a forward_and_log_det / inverse_and_log_det call.
  struct Cache {
    bool inverse = false;
    typename Mlp<Scalar>::Cache net;
    Matrix raw_scale;  // r, the conditioner's raw log-scale
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
    Cache cache;
    return forward_and_log_det(z, cache);
  }

  Result inverse_and_log_det(const ConstRef& x) const {
    Cache cache;
    return inverse_and_log_det(x, cache);
  }

  /// x = f(z), recording in `cache` what backward() needs.
  Result forward_and_log_det(const ConstRef& z, Cache& cache) const {
    detail::check_rows("AffineCoupling::forward", dim(), z);
    cache.inverse = false;

    // (r, t) = NN(z_A);  s = clamp(r).
    const Matrix params = m_net.forward(z(m_cond, Eigen::all), cache.net);
    const Index nb = static_cast<Index>(m_trans.size());
    cache.raw_scale = params.topRows(nb);
    Matrix s = clamp(cache.raw_scale);

    // x_B = z_B * exp(s) + t;  log|det| = sum_j s_j.
    Result r{Matrix(z), s.colwise().sum()};
    cache.scale = s.array().exp();
    cache.latent_b = z(m_trans, Eigen::all);
    r.value(m_trans, Eigen::all) =
        (cache.latent_b.array() * cache.scale.array() + params.bottomRows(nb).array()).matrix();
    return r;
  }

  /// z = f^{-1}(x), recording in `cache` what backward() needs.
  Result inverse_and_log_det(const ConstRef& x, Cache& cache) const {
    detail::check_rows("AffineCoupling::inverse", dim(), x);
    cache.inverse = true;

    // (r, t) = NN(x_A);  s = clamp(r).
    const Matrix params = m_net.forward(x(m_cond, Eigen::all), cache.net);
    const Index nb = static_cast<Index>(m_trans.size());
    cache.raw_scale = params.topRows(nb);
    Matrix s = clamp(cache.raw_scale);

    // z_B = (x_B - t) * exp(-s);  log|det| = -sum_j s_j.
    Result r{Matrix(x), -s.colwise().sum()};
    cache.scale = (-s.array()).exp();
    cache.latent_b =
        ((x(m_trans, Eigen::all).array() - params.bottomRows(nb).array()) * cache.scale.array())
            .matrix();
    r.value(m_trans, Eigen::all) = cache.latent_b;
    return r;
  }

  /// Vector-Jacobian product of the call recorded in `cache`: given dL/d(value) and
  /// dL/d(log_det), accumulates the conditioner's parameter gradients and returns dL/d(input).
  Matrix backward(const Cache& cache, const Matrix& grad_value, const RowVector& grad_log_det) {
    const Index nb = static_cast<Index>(m_trans.size());
    const Matrix gb = grad_value(m_trans, Eigen::all);
    Matrix grad_params(2 * nb, grad_value.cols());
    Matrix grad_input = grad_value;
    auto g_raw = grad_params.topRows(nb);
    auto g_shift = grad_params.bottomRows(nb);
    if (!cache.inverse) {
      // x_B = z_B e^s + t:  dL/dz_B = g e^s,  dL/dt = g,  dL/ds = g z_B e^s + dL/dlogdet.
      grad_input(m_trans, Eigen::all) = (gb.array() * cache.scale.array()).matrix();
      g_shift = gb;
      g_raw = ((gb.array() * cache.latent_b.array() * cache.scale.array()).rowwise() +
               grad_log_det.array())
                  .matrix();
    } else {
      // z_B = (x_B - t) e^-s:  dL/dx_B = g e^-s,  dL/dt = -g e^-s,  dL/ds = -g z_B - dL/dlogdet.
      grad_input(m_trans, Eigen::all) = (gb.array() * cache.scale.array()).matrix();
      g_shift = -grad_input(m_trans, Eigen::all);
      g_raw = ((-gb.array() * cache.latent_b.array()).rowwise() - grad_log_det.array()).matrix();
    }

    // dL/dr = dL/ds * clamp'(r); then through the conditioner to the pass-through part.
    g_raw.array() *= clamp_derivative(cache.raw_scale).array();
    const Matrix g_cond = m_net.backward(cache.net, grad_params);
    grad_input(m_cond, Eigen::all) += g_cond;
    return grad_input;
  }

  template <class F>
  void for_each_parameter(F&& f, const std::string& prefix = "") {
    m_net.for_each_parameter(f, prefix + "conditioner.");
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

  // s = clamp(r).
  Matrix clamp(const Matrix& r) const {
    const Scalar c = Scalar(m_options.clamp_bound);
    switch (m_options.clamp) {
      case SoftClamp::tanh:
        return (c * (r.array() / c).tanh()).matrix();
      case SoftClamp::atan:
        return (Scalar(2 / std::numbers::pi) * c * (r.array() / c).atan()).matrix();
      case SoftClamp::none:
        return r;
    }
    return r;
  }

  // ds/dr.
  Matrix clamp_derivative(const Matrix& r) const {
    const Scalar c = Scalar(m_options.clamp_bound);
    switch (m_options.clamp) {
      case SoftClamp::tanh:
        return (Scalar(1) - (r.array() / c).tanh().square()).matrix();
      case SoftClamp::atan:
        return (Scalar(2 / std::numbers::pi) / (Scalar(1) + (r.array() / c).square())).matrix();
      case SoftClamp::none:
        return Matrix::Ones(r.rows(), r.cols());
    }
    return r;
  }

  Mask m_mask;
  CouplingOptions m_options;
  std::vector<Index> m_cond, m_trans;
  Mlp<Scalar> m_net;
};

static_assert(Flow<AffineCoupling<float>> && Flow<AffineCoupling<double>>);

}  // namespace nflow
