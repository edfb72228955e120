// The inverse of a bijector: forward and inverse swapped, log-dets following.
#pragma once

#include <string>
#include <utility>

#include "nflow/detail/inplace.hpp"
#include "nflow/detail/trainable.hpp"
#include "nflow/flow.hpp"

namespace nflow {

/**
 * \brief Inverse<B> maps z to x with B's inverse and x to z with B's forward.
 *
 * Useful to turn a bijector written in the normalising direction into a generative one, or
 * to make a planar layer's analytic direction the one used by log_prob. Trainable when B is.
 */
template <class B>
class Inverse {
  static_assert(Flow<B>,
                "nflow::Inverse<B>: B must satisfy nflow::Flow (dim, forward, inverse, "
                "*_and_log_det, *_log_det_jacobian); see nflow/flow.hpp for an example.");

 public:
  using Scalar = typename B::Scalar;
  using Matrix = nflow::Matrix<Scalar>;
  using RowVector = nflow::RowVector<Scalar>;
  using ConstRef = ConstMatrixRef<Scalar>;
  using Result = ValueAndLogDet<Scalar>;
  /// B's cache records which of B's directions ran, so backward needs no swap.
  using Cache = CacheOf<B>;

  explicit Inverse(B b) : m_b(std::move(b)) {}

  Index dim() const { return m_b.dim(); }
  const B& base() const { return m_b; }
  B& base() { return m_b; }

  Matrix forward(const ConstRef& z) const { return m_b.inverse(z); }
  Matrix inverse(const ConstRef& x) const { return m_b.forward(x); }
  Result forward_and_log_det(const ConstRef& z) const { return m_b.inverse_and_log_det(z); }
  Result inverse_and_log_det(const ConstRef& x) const { return m_b.forward_and_log_det(x); }
  RowVector forward_log_det_jacobian(const ConstRef& z) const {
    return m_b.inverse_log_det_jacobian(z);
  }
  RowVector inverse_log_det_jacobian(const ConstRef& x) const {
    return m_b.forward_log_det_jacobian(x);
  }

  Result forward_and_log_det(const ConstRef& z, Cache& cache) const requires TrainableFlow<B> {
    return m_b.inverse_and_log_det(z, cache);
  }

  Result inverse_and_log_det(const ConstRef& x, Cache& cache) const requires TrainableFlow<B> {
    return m_b.forward_and_log_det(x, cache);
  }

  Matrix backward(const Cache& cache, const Matrix& grad_value,
                  const RowVector& grad_log_det) requires TrainableFlow<B> {
    return m_b.backward(cache, grad_value, grad_log_det);
  }

  /// The in-place interface (nflow::InPlaceFlow), by B's in-place calls when it has them.
  void forward_inplace(Matrix& v, RowVector* log_det) const {
    detail::inverse_inplace(m_b, v, log_det);
  }
  void inverse_inplace(Matrix& v, RowVector* log_det) const {
    detail::forward_inplace(m_b, v, log_det);
  }
  void forward_inplace(Matrix& v, RowVector& log_det,
                       Cache& cache) const requires TrainableFlow<B> {
    detail::train_inplace(m_b, true, v, log_det, cache);
  }
  void inverse_inplace(Matrix& v, RowVector& log_det,
                       Cache& cache) const requires TrainableFlow<B> {
    detail::train_inplace(m_b, false, v, log_det, cache);
  }
  void backward_inplace(const Cache& cache, Matrix& g,
                        const RowVector& grad_log_det) requires TrainableFlow<B> {
    detail::backward_inplace(m_b, cache, g, grad_log_det);
  }

  template <class F>
  void for_each_parameter(F&& f, const std::string& prefix = "") requires TrainableFlow<B> {
    m_b.for_each_parameter(std::forward<F>(f), prefix);
  }

  template <class F>
  void visit_parameters(F&& f) requires TrainableFlow<B> {
    detail::visit_parameters(m_b, f);
  }

  void zero_grad() requires TrainableFlow<B> { m_b.zero_grad(); }

 private:
  B m_b;
};

}  // namespace nflow
