// Compile-time detection of the training interface of a bijector.
#pragma once

#include <string>

#include "nflow/detail/types.hpp"

namespace nflow {

/**
 * \brief A bijector that can be trained: it runs either direction while keeping in a
 * `B::Cache` what its backward pass needs, then returns the gradient with respect to its input
 * and accumulates the gradients of its parameters.
 *
 * - `b.forward_and_log_det(z, cache)` / `b.inverse_and_log_det(x, cache)`: as without the
 *   cache, and record the call.
 * - `b.backward(cache, dL_dvalue, dL_dlogdet)`: dL/d(input) of the recorded call; parameter
 *   gradients are added to the bijector's gradient buffers.
 * - `b.for_each_parameter(f, prefix)`: calls `f(name, value, grad)` for every parameter, each
 *   a `Matrix<Scalar>&`, in a fixed order (the order that optimisers and serialisation use).
 * - `b.zero_grad()`: clears the gradient buffers.
 */
template <class B>
concept TrainableFlow = requires(B& b, const B& cb, typename B::Cache& cache,
                                 const Matrix<typename B::Scalar>& m,
                                 const RowVector<typename B::Scalar>& r) {
  typename B::Cache;
  cb.forward_and_log_det(m, cache);
  cb.inverse_and_log_det(m, cache);
  { b.backward(cache, m, r) } -> std::convertible_to<Matrix<typename B::Scalar>>;
  b.for_each_parameter(
      [](const std::string&, Matrix<typename B::Scalar>&, Matrix<typename B::Scalar>&) {});
  b.zero_grad();
};

namespace detail {

struct NoCache {};

template <class B>
struct CacheOf {
  using type = NoCache;
};

template <class B>
requires requires {
  typename B::Cache;
}
struct CacheOf<B> {
  using type = typename B::Cache;
};

}  // namespace detail

/// B::Cache for a trainable bijector, an empty struct otherwise.
template <class B>
using CacheOf = typename detail::CacheOf<B>::type;

}  // namespace nflow
