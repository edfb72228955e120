// The optional in-place interface of a bijector, and the helpers that use it when a bijector
// offers it and fall back to the value-returning interface when it does not.
#pragma once

#include <string>
#include <utility>

#include "nflow/detail/trainable.hpp"
#include "nflow/detail/types.hpp"

namespace nflow {

/**
 * \brief A bijector that can also transform a batch in place, so that compositions and
 * training loops run without allocating or copying batches:
 *
 * - `cb.forward_inplace(v, log_det)` / `cb.inverse_inplace(v, log_det)`: v <- f(v) (or
 *   f^{-1}(v)) for a `Matrix<Scalar>& v`; when `log_det` (a `RowVector<Scalar>*`) is not null,
 *   adds the map's log|det J| to it. A null `log_det` lets the bijector skip that work.
 *
 * Every nflow bijector offers it; user-defined bijectors need not (compositions then call
 * their value-returning interface instead).
 */
template <class B>
concept InPlaceFlow = requires(const B& cb, Matrix<typename B::Scalar>& v,
                               RowVector<typename B::Scalar>* log_det) {
  cb.forward_inplace(v, log_det);
  cb.inverse_inplace(v, log_det);
};

/**
 * \brief The in-place form of TrainableFlow, used by the training objectives:
 *
 * - `cb.forward_inplace(v, log_det, cache)` / `cb.inverse_inplace(v, log_det, cache)`: as
 *   above with a `RowVector<Scalar>& log_det` always accumulated, recording in `cache` what
 *   the backward pass needs. The cache keeps its buffers between calls.
 * - `b.backward_inplace(cache, g, grad_log_det)`: on entry `g` holds dL/d(value); on exit
 *   dL/d(input). Parameter gradients are added to the bijector's buffers, as by backward().
 */
template <class B>
concept InPlaceTrainableFlow = TrainableFlow<B> &&
    requires(B& b, const B& cb, typename B::Cache& cache, const typename B::Cache& ccache,
             Matrix<typename B::Scalar>& v, RowVector<typename B::Scalar>& log_det,
             const RowVector<typename B::Scalar>& grad_log_det) {
  cb.forward_inplace(v, log_det, cache);
  cb.inverse_inplace(v, log_det, cache);
  b.backward_inplace(ccache, v, grad_log_det);
};

namespace detail {

/// v <- b(v), adding log|det| to *log_det when it is not null.
template <class B>
void forward_inplace(const B& b, Matrix<typename B::Scalar>& v,
                     RowVector<typename B::Scalar>* log_det) {
  if constexpr (InPlaceFlow<B>) {
    b.forward_inplace(v, log_det);
  } else if (log_det) {
    auto r = b.forward_and_log_det(v);
    v = std::move(r.value);
    *log_det += r.log_det;
  } else {
    Matrix<typename B::Scalar> x = b.forward(v);
    v = std::move(x);
  }
}

/// v <- b^{-1}(v), adding log|det| to *log_det when it is not null.
template <class B>
void inverse_inplace(const B& b, Matrix<typename B::Scalar>& v,
                     RowVector<typename B::Scalar>* log_det) {
  if constexpr (InPlaceFlow<B>) {
    b.inverse_inplace(v, log_det);
  } else if (log_det) {
    auto r = b.inverse_and_log_det(v);
    v = std::move(r.value);
    *log_det += r.log_det;
  } else {
    Matrix<typename B::Scalar> z = b.inverse(v);
    v = std::move(z);
  }
}

/// v <- b(v) (or b^{-1}(v) when `inverse`), log_det += log|det|, recording into `cache`.
template <class B>
void train_inplace(const B& b, bool inverse, Matrix<typename B::Scalar>& v,
                   RowVector<typename B::Scalar>& log_det, typename B::Cache& cache) {
  if constexpr (InPlaceTrainableFlow<B>) {
    inverse ? b.inverse_inplace(v, log_det, cache) : b.forward_inplace(v, log_det, cache);
  } else {
    auto r = inverse ? b.inverse_and_log_det(v, cache) : b.forward_and_log_det(v, cache);
    v = std::move(r.value);
    log_det += r.log_det;
  }
}

/// g <- dL/d(input), from g = dL/d(value) of the call recorded in `cache`.
template <class B>
void backward_inplace(B& b, const typename B::Cache& cache, Matrix<typename B::Scalar>& g,
                      const RowVector<typename B::Scalar>& grad_log_det) {
  if constexpr (InPlaceTrainableFlow<B>) {
    b.backward_inplace(cache, g, grad_log_det);
  } else {
    Matrix<typename B::Scalar> gi = b.backward(cache, g, grad_log_det);
    g = std::move(gi);
  }
}

/// Calls f(value, grad) for every parameter of `t`, in the order of t.for_each_parameter, but
/// without building the parameter names when `t` offers visit_parameters(f).
template <class T, class F>
void visit_parameters(T& t, F&& f) {
  if constexpr (requires { t.visit_parameters(f); }) {
    t.visit_parameters(f);
  } else {
    t.for_each_parameter([&](const std::string&, auto& p, auto& g) { f(p, g); });
  }
}

}  // namespace detail
}  // namespace nflow
