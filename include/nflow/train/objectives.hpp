// The two training objectives and their exact gradients, by backpropagation through the
// bijectors' vector-Jacobian products.
#pragma once

#include <utility>

#include "nflow/detail/inplace.hpp"
#include "nflow/detail/trainable.hpp"
#include "nflow/distributions/transformed.hpp"

namespace nflow {

/// The unnormalised target of reverse-KL fitting, evaluated on a batch: log p~(x) per column
/// and its gradient d log p~ / dx (D x N).
template <class Scalar>
struct TargetEvaluation {
  RowVector<Scalar> log_prob;
  Matrix<Scalar> grad;
};

/// What a reverse-KL step measured on its batch.
template <class Scalar>
struct ReverseKlBatch {
  Scalar loss;  ///< mean of log q(x) - beta log p~(x), the quantity minimised
  Scalar elbo;  ///< mean of log p~(x) - log q(x), the evidence lower bound estimate
};

/// Reusable buffers of a training step (kept between steps to avoid reallocation).
template <class Model>
struct TrainingCache {
  typename Model::FlowType::Cache flow;
  Matrix<typename Model::Scalar> value;       ///< the batch, transformed in place
  Matrix<typename Model::Scalar> grad;        ///< its gradient, backpropagated in place
  RowVector<typename Model::Scalar> log_det;  ///< log|det| of the flow per column
};

/**
 * \brief Mean negative log-likelihood of the columns of x; adds its gradient to every
 * parameter's gradient buffer (call model.zero_grad() first to start afresh).
 *
 * Backpropagates through the flow's inverse:  -log p(x) = -log p_Z(z) - log|det dz/dx|.
 */
template <class Model>
typename Model::Scalar mean_nll_backward(Model& model,
                                         const ConstMatrixRef<typename Model::Scalar>& x,
                                         TrainingCache<Model>& cache) {
  using Scalar = typename Model::Scalar;
  static_assert(TrainableFlow<typename Model::FlowType>,
                "nflow::mean_nll_backward: the model's flow must satisfy nflow::TrainableFlow.");
  detail::check_rows("mean_nll_backward", model.dim(), x);
  const Scalar inv_n = Scalar(1) / Scalar(x.cols());

  // z = f^{-1}(x);  log p(x) = log p_Z(z) + log|det|.
  Matrix<Scalar>& z = cache.value;
  z = x;
  cache.log_det.setZero(x.cols());
  detail::train_inplace(model.flow(), true, z, cache.log_det, cache.flow);
  const Scalar sum_log_prob = model.base().log_prob(z).sum() + cache.log_det.sum();

  // dL/dlog p = -1/N per column; dL/dz through the base, then through the flow.
  const RowVector<Scalar> g_log_prob = RowVector<Scalar>::Constant(x.cols(), -inv_n);
  cache.grad = model.base().log_prob_backward(z, g_log_prob);
  detail::backward_inplace(model.flow(), cache.flow, cache.grad, g_log_prob);
  return -sum_log_prob * inv_n;
}

/**
 * \brief Reverse-KL objective on one batch of standard-normal noise `eps`:
 *   x = f(mu + sigma eps),  log q(x) = log p_Z(z) - log|det df/dz|,
 *   loss = mean(log q(x) - beta log p~(x)),
 * with its reparameterisation gradient added to the parameters' buffers. `target(x)` returns
 * a TargetEvaluation<Scalar>; beta in (0, 1] is the annealing weight of the target.
 */
template <class Model, class Target>
ReverseKlBatch<typename Model::Scalar> reverse_kl_backward(
    Model& model, const ConstMatrixRef<typename Model::Scalar>& eps, Target&& target,
    typename Model::Scalar beta, TrainingCache<Model>& cache) {
  using Scalar = typename Model::Scalar;
  static_assert(TrainableFlow<typename Model::FlowType>,
                "nflow::reverse_kl_backward: the model's flow must satisfy nflow::TrainableFlow.");
  const Index n = eps.cols();
  const Scalar inv_n = Scalar(1) / Scalar(n);

  // z = base(eps), x = f(z), log q(x) = log p_Z(z) - log|det df/dz|.
  auto [z, log_pz] = model.base().transform_noise(eps);
  Matrix<Scalar>& x = cache.value;
  x = std::move(z);
  cache.log_det.setZero(n);
  detail::train_inplace(model.flow(), false, x, cache.log_det, cache.flow);
  const TargetEvaluation<Scalar> t = target(x);
  detail::check_rows("reverse_kl_backward: target gradient", model.dim(), t.grad);
  if (t.log_prob.cols() != n || t.grad.cols() != n) {
    detail::fail("reverse_kl_backward", "target evaluation columns", n, t.grad.cols());
  }
  const RowVector<Scalar> log_q = log_pz - cache.log_det;

  // dL/dx = -beta/N grad log p~,  dL/dlog|det| = -1/N,  dL/dlog p_Z = 1/N.
  cache.grad = (-beta * inv_n) * t.grad;
  detail::backward_inplace(model.flow(), cache.flow, cache.grad,
                           RowVector<Scalar>::Constant(n, -inv_n));
  model.base().noise_backward(eps, cache.grad, RowVector<Scalar>::Constant(n, inv_n));

  return {(log_q - beta * t.log_prob).sum() * inv_n, (t.log_prob - log_q).sum() * inv_n};
}

}  // namespace nflow
