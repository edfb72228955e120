// The Gaussian bases: standard normal, and diagonal normal with trainable mean and log-scale.
#pragma once

#include <cmath>
#include <numbers>
#include <random>
#include <string>

#include "nflow/detail/types.hpp"

namespace nflow {

namespace detail {

// -0.5 log(2 pi), per coordinate.
template <class Scalar>
constexpr Scalar log_norm_const() {
  return Scalar(-0.91893853320467274178032973640561764);
}

/// dim x n standard-normal draws; `where` names the caller in the error for n <= 0.
template <class Scalar, class Rng>
Matrix<Scalar> standard_normal_noise(std::string_view where, Index dim, Index n, Rng& rng) {
  check_positive(where, "n (number of samples)", n);
  std::normal_distribution<Scalar> normal;
  Matrix<Scalar> eps(dim, n);
  for (Index i = 0; i < eps.size(); ++i)
    eps.data()[i] = normal(rng);
  return eps;
}

}  // namespace detail

/// N(0, I) on R^D:  log p(z) = -||z||^2 / 2 - (D/2) log(2 pi).
template <class ScalarT>
class StandardNormal {
 public:
  using Scalar = ScalarT;
  using Matrix = nflow::Matrix<Scalar>;
  using RowVector = nflow::RowVector<Scalar>;
  using ConstRef = ConstMatrixRef<Scalar>;

  explicit StandardNormal(Index dim) : m_dim(dim) {
    detail::check_positive("StandardNormal", "dim", dim);
  }

  Index dim() const { return m_dim; }

  RowVector log_prob(const ConstRef& z) const {
    detail::check_rows("StandardNormal::log_prob", m_dim, z);
    return (Scalar(-0.5) * z.colwise().squaredNorm()).array() +
           Scalar(m_dim) * detail::log_norm_const<Scalar>();
  }

  template <class Rng>
  Matrix sample(Index n, Rng& rng) const {
    return detail::standard_normal_noise<Scalar>("StandardNormal::sample", m_dim, n, rng);
  }

  template <class Rng>
  ValueAndLogProb<Scalar> sample_and_log_prob(Index n, Rng& rng) const {
    ValueAndLogProb<Scalar> r{sample(n, rng), RowVector()};
    r.log_prob = log_prob(r.value);
    return r;
  }

  /// Reparameterised sample from given standard-normal noise (here the noise itself).
  ValueAndLogProb<Scalar> transform_noise(const ConstRef& eps) const {
    return ValueAndLogProb<Scalar>{Matrix(eps), log_prob(eps)};
  }

  /// dL/dz of L(log_prob(z)), given dL/dlog_prob.
  Matrix log_prob_backward(const ConstRef& z, const RowVector& grad_log_prob) {
    return -(z.array().rowwise() * grad_log_prob.array()).matrix();
  }

  /// No parameters; gradients of transform_noise have nowhere to go.
  void noise_backward(const ConstRef&, const Matrix&, const RowVector&) {}

  template <class F>
  void for_each_parameter(F&&, const std::string& = "") {}
  void zero_grad() {}

 private:
  Index m_dim;
};

/// N(mean, diag(exp(2 log_scale))):
///   log p(z) = sum_i [ -((z_i - mean_i) / sigma_i)^2 / 2 - log sigma_i ] - (D/2) log(2 pi).
template <class ScalarT>
class DiagonalNormal {
 public:
  using Scalar = ScalarT;
  using Matrix = nflow::Matrix<Scalar>;
  using RowVector = nflow::RowVector<Scalar>;
  using ConstRef = ConstMatrixRef<Scalar>;

  /// Standard normal to start: mean 0, log-scale 0.
  explicit DiagonalNormal(Index dim) {
    detail::check_positive("DiagonalNormal", "dim", dim);
    m_mean.setZero(dim, 1);
    m_log_scale.setZero(dim, 1);
    zero_grad();
  }

  DiagonalNormal(const Vector<Scalar>& mean, const Vector<Scalar>& log_scale)
      : DiagonalNormal(mean.size()) {
    if (log_scale.size() != mean.size()) {
      detail::fail("DiagonalNormal", "log_scale size (must match mean)", mean.size(),
                   log_scale.size());
    }
    m_mean = mean;
    m_log_scale = log_scale;
  }

  Index dim() const { return m_mean.rows(); }
  Vector<Scalar> mean() const { return m_mean.col(0); }
  Vector<Scalar> log_scale() const { return m_log_scale.col(0); }

  RowVector log_prob(const ConstRef& z) const {
    detail::check_rows("DiagonalNormal::log_prob", dim(), z);
    const Matrix eps = standardise(z);
    return (Scalar(-0.5) * eps.colwise().squaredNorm()).array() - m_log_scale.sum() +
           Scalar(dim()) * detail::log_norm_const<Scalar>();
  }

  template <class Rng>
  Matrix sample(Index n, Rng& rng) const {
    return transform_noise(
               detail::standard_normal_noise<Scalar>("DiagonalNormal::sample", dim(), n, rng))
        .value;
  }

  template <class Rng>
  ValueAndLogProb<Scalar> sample_and_log_prob(Index n, Rng& rng) const {
    return transform_noise(
        detail::standard_normal_noise<Scalar>("DiagonalNormal::sample", dim(), n, rng));
  }

  /// z = mean + sigma * eps, with log p(z), for standard-normal noise eps.
  ValueAndLogProb<Scalar> transform_noise(const ConstRef& eps) const {
    detail::check_rows("DiagonalNormal::transform_noise", dim(), eps);
    ValueAndLogProb<Scalar> r;
    r.value = ((eps.array().colwise() * m_log_scale.col(0).array().exp()).colwise() +
               m_mean.col(0).array())
                  .matrix();
    r.log_prob = (Scalar(-0.5) * eps.colwise().squaredNorm()).array() - m_log_scale.sum() +
                 Scalar(dim()) * detail::log_norm_const<Scalar>();
    return r;
  }

  /// Given dL/dlog_prob at z, accumulates dL/dmean, dL/dlog_scale and returns dL/dz.
  Matrix log_prob_backward(const ConstRef& z, const RowVector& grad_log_prob) {
    // With e = (z - mean) / sigma:  dlogp/dz = -e / sigma,  dlogp/dmean = e / sigma,
    // dlogp/dlog_scale = e^2 - 1.
    const Matrix eps = standardise(z);
    const Matrix ge = (eps.array().rowwise() * grad_log_prob.array()).matrix();
    const auto inv_sigma = (-m_log_scale.col(0).array()).exp();
    m_grad_mean.col(0) += (ge.rowwise().sum().array() * inv_sigma).matrix();
    m_grad_log_scale.col(0) += (ge.array() * eps.array()).rowwise().sum().matrix() -
                               Vector<Scalar>::Constant(dim(), grad_log_prob.sum());
    return -(ge.array().colwise() * inv_sigma).matrix();
  }

  /// Given dL/dz and dL/dlog_prob of transform_noise(eps), accumulates the parameter gradients.
  void noise_backward(const ConstRef& eps, const Matrix& grad_value,
                      const RowVector& grad_log_prob) {
    // z = mean + sigma eps;  log p = const - sum log sigma.
    const auto sigma = m_log_scale.col(0).array().exp();
    m_grad_mean.col(0) += grad_value.rowwise().sum();
    m_grad_log_scale.col(0) +=
        ((grad_value.array() * eps.array()).rowwise().sum() * sigma).matrix() -
        Vector<Scalar>::Constant(dim(), grad_log_prob.sum());
  }

  template <class F>
  void for_each_parameter(F&& f, const std::string& prefix = "") {
    f(prefix + "mean", m_mean, m_grad_mean);
    f(prefix + "log_scale", m_log_scale, m_grad_log_scale);
  }

  /// for_each_parameter's traversal without the names: f(value, grad).
  template <class F>
  void visit_parameters(F&& f) {
    f(m_mean, m_grad_mean);
    f(m_log_scale, m_grad_log_scale);
  }

  void zero_grad() {
    m_grad_mean.setZero(m_mean.rows(), 1);
    m_grad_log_scale.setZero(m_log_scale.rows(), 1);
  }

 private:
  Matrix standardise(const ConstRef& z) const {
    return ((z.array().colwise() - m_mean.col(0).array()).colwise() *
            (-m_log_scale.col(0).array()).exp())
        .matrix();
  }

  Matrix m_mean, m_log_scale;
  Matrix m_grad_mean, m_grad_log_scale;
};

}  // namespace nflow
