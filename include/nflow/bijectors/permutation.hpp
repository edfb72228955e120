// Fixed permutation of the coordinates: x_i = z_{p(i)}, log|det| = 0. Interleaved between
// coupling layers so that every coordinate is eventually transformed.
#pragma once

#include <algorithm>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "nflow/bijector_base.hpp"
#include "nflow/flow.hpp"

namespace nflow {

/**
 * \brief Permutation  x_i = z_{p(i)}; its inverse is the inverse permutation; log|det| = 0.
 *
 * Built from a user-given list (validated to contain each of 0..D-1 exactly once), or by
 * Permutation::reverse(D) or Permutation::random(D, seed).
 */
template <class ScalarT>
class Permutation : public BijectorBase<Permutation<ScalarT>, ScalarT> {
 public:
  using Scalar = ScalarT;
  using Base = BijectorBase<Permutation<Scalar>, Scalar>;
  using typename Base::ConstRef;
  using typename Base::Matrix;
  using typename Base::Result;
  using typename Base::RowVector;

  struct Cache {
    bool inverse = false;
  };

  /// x_i = z_{indices[i]}; throws std::invalid_argument unless `indices` is a permutation.
  explicit Permutation(std::vector<Index> indices) : m_forward(std::move(indices)) {
    const Index d = static_cast<Index>(m_forward.size());
    detail::check_positive("Permutation", "indices.size() (the dimension)", d);
    m_inverse.assign(d, -1);
    for (Index i = 0; i < d; ++i) {
      const Index p = m_forward[i];
      if (p < 0 || p >= d) {
        detail::fail("Permutation", "indices[" + std::to_string(i) + "]",
                     "a value in [0, " + std::to_string(d) + ")", p);
      }
      if (m_inverse[p] != -1) {
        detail::fail("Permutation", "indices (each value exactly once)",
                     "a permutation of 0.." + std::to_string(d - 1),
                     std::to_string(p) + " repeated at positions " + std::to_string(m_inverse[p]) +
                         " and " + std::to_string(i));
      }
      m_inverse[p] = i;
    }
  }

  /// x_i = z_{D-1-i}.
  static Permutation reverse(Index dim) {
    detail::check_positive("Permutation::reverse", "dim", dim);
    std::vector<Index> p(dim);
    for (Index i = 0; i < dim; ++i)
      p[i] = dim - 1 - i;
    return Permutation(std::move(p));
  }

  /// A uniformly random permutation, the same for the same seed on every platform.
  static Permutation random(Index dim, std::uint64_t seed) {
    detail::check_positive("Permutation::random", "dim", dim);
    std::vector<Index> p(dim);
    std::iota(p.begin(), p.end(), Index(0));
    // Fisher-Yates with an explicit draw, since std::shuffle differs between libraries.
    std::mt19937_64 rng(seed);
    for (Index i = dim - 1; i > 0; --i) {
      const Index j = static_cast<Index>(rng() % static_cast<std::uint64_t>(i + 1));
      std::swap(p[i], p[j]);
    }
    return Permutation(std::move(p));
  }

  Index dim() const { return static_cast<Index>(m_forward.size()); }
  const std::vector<Index>& indices() const { return m_forward; }

  Matrix forward(const ConstRef& z) const {
    detail::check_rows("Permutation::forward", dim(), z);
    return z(m_forward, Eigen::all);
  }

  Matrix inverse(const ConstRef& x) const {
    detail::check_rows("Permutation::inverse", dim(), x);
    return x(m_inverse, Eigen::all);
  }

  Result forward_and_log_det(const ConstRef& z) const {
    return Result{forward(z), RowVector::Zero(z.cols())};
  }

  Result inverse_and_log_det(const ConstRef& x) const {
    return Result{inverse(x), RowVector::Zero(x.cols())};
  }

  Result forward_and_log_det(const ConstRef& z, Cache& cache) const {
    cache.inverse = false;
    return forward_and_log_det(z);
  }

  Result inverse_and_log_det(const ConstRef& x, Cache& cache) const {
    cache.inverse = true;
    return inverse_and_log_det(x);
  }

  /// dL/dz_{p(i)} = dL/dx_i for the forward map, and the converse for the inverse.
  Matrix backward(const Cache& cache, const Matrix& grad_value, const RowVector&) {
    return grad_value(cache.inverse ? m_forward : m_inverse, Eigen::all);
  }

  template <class F>
  void for_each_parameter(F&&, const std::string& = "") {}
  void zero_grad() {}

 private:
  std::vector<Index> m_forward, m_inverse;
};

static_assert(Flow<Permutation<float>> && Flow<Permutation<double>>);

}  // namespace nflow
