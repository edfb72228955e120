// Composition of a list of bijectors whose length is chosen at run time.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "nflow/detail/inplace.hpp"
#include "nflow/detail/trainable.hpp"
#include "nflow/flow.hpp"

namespace nflow {

/**
 * \brief DynamicChain<B>: x = b_{k-1}(...b_1(b_0(z))) for a std::vector of bijectors of one
 * type B, in list order; the inverse runs the list backwards; log-determinants add.
 *
 * For layers of one kind ("8 coupling layers") B is that bijector; to mix kinds at run time,
 * use AnyBijector<Scalar> as B. An empty chain is the identity of its dimension.
 */
template <class B>
class DynamicChain {
  static_assert(Flow<B>,
                "nflow::DynamicChain<B>: B must satisfy nflow::Flow; to mix bijector types at "
                "run time use nflow::DynamicChain<nflow::AnyBijector<Scalar>>.");

 public:
  using Scalar = typename B::Scalar;
  using Matrix = nflow::Matrix<Scalar>;
  using RowVector = nflow::RowVector<Scalar>;
  using ConstRef = ConstMatrixRef<Scalar>;
  using Result = ValueAndLogDet<Scalar>;

  struct Cache {
    bool inverse = false;
    std::vector<CacheOf<B>> layers;
  };

  /// An empty chain (the identity) of dimension `dim`; add layers with push_back.
  explicit DynamicChain(Index dim) : m_dim(dim) {
    detail::check_positive("DynamicChain", "dim", dim);
  }

  /// A chain of the given layers; all must share one dimension.
  explicit DynamicChain(std::vector<B> layers) {
    if (layers.empty()) {
      detail::fail("DynamicChain", "layers.size() (use DynamicChain(dim) for an empty chain)",
                   ">= 1", 0);
    }
    m_dim = layers.front().dim();
    for (auto& b : layers)
      push_back(std::move(b));
  }

  void push_back(B b) {
    if (b.dim() != m_dim) {
      detail::fail("DynamicChain::push_back", "dim() of layer " + std::to_string(size()), m_dim,
                   b.dim());
    }
    m_layers.push_back(std::move(b));
  }

  Index dim() const { return m_dim; }
  Index size() const { return static_cast<Index>(m_layers.size()); }
  const B& operator[](Index i) const { return m_layers[i]; }
  B& operator[](Index i) { return m_layers[i]; }
  auto begin() const { return m_layers.begin(); }
  auto end() const { return m_layers.end(); }

  Result forward_and_log_det(const ConstRef& z) const {
    Result r{Matrix(z), RowVector::Zero(z.cols())};
    forward_inplace(r.value, &r.log_det);
    return r;
  }

  Result inverse_and_log_det(const ConstRef& x) const {
    Result r{Matrix(x), RowVector::Zero(x.cols())};
    inverse_inplace(r.value, &r.log_det);
    return r;
  }

  Matrix forward(const ConstRef& z) const {
    Matrix v = z;
    forward_inplace(v, nullptr);
    return v;
  }

  Matrix inverse(const ConstRef& x) const {
    Matrix v = x;
    inverse_inplace(v, nullptr);
    return v;
  }

  RowVector forward_log_det_jacobian(const ConstRef& z) const {
    return forward_and_log_det(z).log_det;
  }
  RowVector inverse_log_det_jacobian(const ConstRef& x) const {
    return inverse_and_log_det(x).log_det;
  }

  /// v <- f(v), one layer after the other on the same buffer, adding log|det| to *log_det
  /// unless it is null (see nflow::InPlaceFlow).
  void forward_inplace(Matrix& v, RowVector* log_det) const {
    detail::check_rows("DynamicChain::forward", m_dim, v);
    for (const B& b : m_layers)
      detail::forward_inplace(b, v, log_det);
  }

  /// v <- f^{-1}(v), the layers in reverse order.
  void inverse_inplace(Matrix& v, RowVector* log_det) const {
    detail::check_rows("DynamicChain::inverse", m_dim, v);
    for (auto b = m_layers.rbegin(); b != m_layers.rend(); ++b)
      detail::inverse_inplace(*b, v, log_det);
  }

  Result forward_and_log_det(const ConstRef& z, Cache& cache) const requires TrainableFlow<B> {
    Result r{Matrix(z), RowVector::Zero(z.cols())};
    forward_inplace(r.value, r.log_det, cache);
    return r;
  }

  Result inverse_and_log_det(const ConstRef& x, Cache& cache) const requires TrainableFlow<B> {
    Result r{Matrix(x), RowVector::Zero(x.cols())};
    inverse_inplace(r.value, r.log_det, cache);
    return r;
  }

  /// v <- f(v), log_det += log|det|, recording in `cache` what backward needs.
  void forward_inplace(Matrix& v, RowVector& log_det,
                       Cache& cache) const requires TrainableFlow<B> {
    detail::check_rows("DynamicChain::forward", m_dim, v);
    cache.inverse = false;
    cache.layers.resize(m_layers.size());
    for (std::size_t i = 0; i < m_layers.size(); ++i)
      detail::train_inplace(m_layers[i], false, v, log_det, cache.layers[i]);
  }

  /// v <- f^{-1}(v), log_det += log|det|, recording in `cache` what backward needs.
  void inverse_inplace(Matrix& v, RowVector& log_det,
                       Cache& cache) const requires TrainableFlow<B> {
    detail::check_rows("DynamicChain::inverse", m_dim, v);
    cache.inverse = true;
    cache.layers.resize(m_layers.size());
    for (std::size_t i = m_layers.size(); i-- > 0;)
      detail::train_inplace(m_layers[i], true, v, log_det, cache.layers[i]);
  }

  /// Backpropagates through the layers in the reverse of the order they ran.
  Matrix backward(const Cache& cache, const Matrix& grad_value,
                  const RowVector& grad_log_det) requires TrainableFlow<B> {
    Matrix g = grad_value;
    backward_inplace(cache, g, grad_log_det);
    return g;
  }

  /// g <- dL/d(input) from g = dL/d(value), through every layer on the same buffer.
  void backward_inplace(const Cache& cache, Matrix& g,
                        const RowVector& grad_log_det) requires TrainableFlow<B> {
    const std::size_t n = m_layers.size();
    for (std::size_t k = 0; k < n; ++k) {
      const std::size_t i = cache.inverse ? k : n - 1 - k;
      detail::backward_inplace(m_layers[i], cache.layers[i], g, grad_log_det);
    }
  }

  template <class F>
  void for_each_parameter(F&& f, const std::string& prefix = "") requires TrainableFlow<B> {
    for (std::size_t i = 0; i < m_layers.size(); ++i) {
      m_layers[i].for_each_parameter(f, prefix + std::to_string(i) + ".");
    }
  }

  /// for_each_parameter's traversal without the names: f(value, grad).
  template <class F>
  void visit_parameters(F&& f) requires TrainableFlow<B> {
    for (B& b : m_layers)
      detail::visit_parameters(b, f);
  }

  void zero_grad() requires TrainableFlow<B> {
    for (B& b : m_layers)
      b.zero_grad();
  }

 private:
  Index m_dim = 0;
  std::vector<B> m_layers;
};

}  // namespace nflow
