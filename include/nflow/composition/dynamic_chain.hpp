// Composition of a list of bijectors whose length is chosen at run time.
#pragma once

#include <string>
#include <utility>
#include <vector>

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
    detail::check_rows("DynamicChain::forward", m_dim, z);
    Result r{Matrix(z), RowVector::Zero(z.cols())};
    for (const B& b : m_layers)
      accumulate(r, b.forward_and_log_det(r.value));
    return r;
  }

  Result inverse_and_log_det(const ConstRef& x) const {
    detail::check_rows("DynamicChain::inverse", m_dim, x);
    Result r{Matrix(x), RowVector::Zero(x.cols())};
    for (auto b = m_layers.rbegin(); b != m_layers.rend(); ++b) {
      accumulate(r, b->inverse_and_log_det(r.value));
    }
    return r;
  }

  Matrix forward(const ConstRef& z) const {
    detail::check_rows("DynamicChain::forward", m_dim, z);
    Matrix v = z;
    for (const B& b : m_layers)
      v = b.forward(v);
    return v;
  }

  Matrix inverse(const ConstRef& x) const {
    detail::check_rows("DynamicChain::inverse", m_dim, x);
    Matrix v = x;
    for (auto b = m_layers.rbegin(); b != m_layers.rend(); ++b)
      v = b->inverse(v);
    return v;
  }

  RowVector forward_log_det_jacobian(const ConstRef& z) const {
    return forward_and_log_det(z).log_det;
  }
  RowVector inverse_log_det_jacobian(const ConstRef& x) const {
    return inverse_and_log_det(x).log_det;
  }

  Result forward_and_log_det(const ConstRef& z, Cache& cache) const requires TrainableFlow<B> {
    detail::check_rows("DynamicChain::forward", m_dim, z);
    cache.inverse = false;
    cache.layers.resize(m_layers.size());
    Result r{Matrix(z), RowVector::Zero(z.cols())};
    for (std::size_t i = 0; i < m_layers.size(); ++i) {
      accumulate(r, m_layers[i].forward_and_log_det(r.value, cache.layers[i]));
    }
    return r;
  }

  Result inverse_and_log_det(const ConstRef& x, Cache& cache) const requires TrainableFlow<B> {
    detail::check_rows("DynamicChain::inverse", m_dim, x);
    cache.inverse = true;
    cache.layers.resize(m_layers.size());
    Result r{Matrix(x), RowVector::Zero(x.cols())};
    for (std::size_t i = m_layers.size(); i-- > 0;) {
      accumulate(r, m_layers[i].inverse_and_log_det(r.value, cache.layers[i]));
    }
    return r;
  }

  /// Backpropagates through the layers in the reverse of the order they ran.
  Matrix backward(const Cache& cache, const Matrix& grad_value,
                  const RowVector& grad_log_det) requires TrainableFlow<B> {
    Matrix g = grad_value;
    const std::size_t n = m_layers.size();
    for (std::size_t k = 0; k < n; ++k) {
      const std::size_t i = cache.inverse ? k : n - 1 - k;
      g = m_layers[i].backward(cache.layers[i], g, grad_log_det);
    }
    return g;
  }

  template <class F>
  void for_each_parameter(F&& f, const std::string& prefix = "") requires TrainableFlow<B> {
    for (std::size_t i = 0; i < m_layers.size(); ++i) {
      m_layers[i].for_each_parameter(f, prefix + std::to_string(i) + ".");
    }
  }

  void zero_grad() requires TrainableFlow<B> {
    for (B& b : m_layers)
      b.zero_grad();
  }

 private:
  static void accumulate(Result& r, Result&& step) {
    r.value = std::move(step.value);
    r.log_det += step.log_det;
  }

  Index m_dim = 0;
  std::vector<B> m_layers;
};

}  // namespace nflow
