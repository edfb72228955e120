// The two training objectives and their exact gradients, by backpropagation through the
// bijectors' vector-Jacobian products.
#pragma once

#include <algorithm>
#include <exception>
#include <type_traits>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

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

namespace detail {

/// The buffers one thread's share of a training step works in.
template <class Model>
struct StepBuffers {
  typename Model::FlowType::Cache flow;
  Matrix<typename Model::Scalar> value;       ///< the batch, transformed in place
  Matrix<typename Model::Scalar> grad;        ///< its gradient, backpropagated in place
  RowVector<typename Model::Scalar> log_det;  ///< log|det| of the flow per column
};

/// A copy of the model for another thread, with its own buffers.
template <class Model>
struct Replica {
  Model model;
  StepBuffers<Model> buffers;
};

}  // namespace detail

/**
 * \brief Reusable buffers of a training step (kept between steps to avoid reallocation).
 *
 * When the program is compiled with OpenMP and Eigen::nbThreads() > 1, mean_nll_backward and
 * reverse_kl_backward split a batch of at least 2 * kMinColumnsPerThread columns among the
 * threads: each thread runs its columns through its own copy of the model (kept here, its
 * parameters refreshed from the model at every step by the thread that uses it) and the
 * copies' gradients are added to the model's, every thread summing a share of the entries. The
 * split depends only on the batch size and the thread count, so results are reproducible for a
 * given thread count (they differ from one thread's by rounding).
 */
template <class Model>
struct TrainingCache : detail::StepBuffers<Model> {
  static constexpr Index kMinColumnsPerThread = 32;
  std::vector<detail::Replica<Model>> replicas;
  /// (value, grad) pointers of the model and then of each replica, rebuilt at every step.
  std::vector<Matrix<typename Model::Scalar>*> parameters;
};

namespace detail {

/// How many threads a training step on `cols` columns uses (1 without OpenMP).
template <class Model>
int training_threads([[maybe_unused]] Index cols) {
#ifdef _OPENMP
  if constexpr (std::is_copy_constructible_v<Model>) {
    if (omp_in_parallel()) return 1;
    const Index by_size = cols / TrainingCache<Model>::kMinColumnsPerThread;
    return static_cast<int>(std::max<Index>(1, std::min<Index>(Eigen::nbThreads(), by_size)));
  }
#endif
  return 1;
}

/// Runs part(model, buffers, first_column, column_count, index) on `threads` parts of [0, cols):
/// the first on the model itself, the others on replicas whose parameters are first set to the
/// model's and whose gradients are then added to the model's. Returns the sum of the parts'
/// results.
template <class Model, class Part>
double run_parts(Model& model, TrainingCache<Model>& cache, Index cols, int threads, Part&& part) {
  if (threads <= 1) return part(model, static_cast<StepBuffers<Model>&>(cache), Index(0), cols, 0);
#ifdef _OPENMP
  if constexpr (std::is_copy_constructible_v<Model>) {
    using Scalar = typename Model::Scalar;
    // Replicas are made once (their gradients zero); after every step their gradients are zero
    // again, having been added to the model's.
    while (static_cast<int>(cache.replicas.size()) < threads - 1) {
      cache.replicas.push_back(Replica<Model>{model, {}});
      cache.replicas.back().model.zero_grad();
    }
    // (value, grad) pointers: the model's, then each replica's, in traversal order.
    cache.parameters.clear();
    const auto collect = [&](Model& m) {
      visit_parameters(m, [&](Matrix<Scalar>& p, Matrix<Scalar>& g) {
        cache.parameters.push_back(&p);
        cache.parameters.push_back(&g);
      });
    };
    collect(model);
    const std::size_t per_model = cache.parameters.size();
    for (int t = 0; t + 1 < threads; ++t)
      collect(cache.replicas[t].model);
    Matrix<Scalar>* const* const params = cache.parameters.data();

    std::vector<double> partial(threads, 0.0);
    std::exception_ptr error;
#pragma omp parallel num_threads(threads)
    {
      const int t = omp_get_thread_num();
      const Index first = cols * t / threads, last = cols * (t + 1) / threads;
      try {
        if (t == 0) {
          partial[t] = part(model, static_cast<StepBuffers<Model>&>(cache), first, last - first, t);
        } else {
          // This thread's replica takes the model's parameters, then its share of the columns.
          Matrix<Scalar>* const* mine = params + per_model * t;
          for (std::size_t k = 0; k < per_model; k += 2)
            *mine[k] = *params[k];
          Replica<Model>& r = cache.replicas[t - 1];
          partial[t] = part(r.model, r.buffers, first, last - first, t);
        }
      } catch (...) {
#pragma omp critical(nflow_run_parts)
        if (!error) error = std::current_exception();
      }

      // Every thread adds its range of every gradient's entries over the replicas into the
      // model's, zeroing the replicas' as it goes.
#pragma omp barrier
      for (std::size_t k = 1; k < per_model; k += 2) {
        Matrix<Scalar>& g = *params[k];
        const Index begin = g.size() * t / threads, end = g.size() * (t + 1) / threads;
        if (end == begin) continue;
        auto sum = g.reshaped().segment(begin, end - begin);
        for (int r = 1; r < threads; ++r) {
          auto part_r = params[per_model * r + k]->reshaped().segment(begin, end - begin);
          sum += part_r;
          part_r.setZero();
        }
      }
    }
    if (error) std::rethrow_exception(error);
    double total = 0;
    for (double v : partial)
      total += v;
    return total;
  }
#endif
  return part(model, static_cast<StepBuffers<Model>&>(cache), Index(0), cols, 0);
}

}  // namespace detail

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

  const auto part = [&](Model& m, detail::StepBuffers<Model>& buf, Index first, Index count, int) {
    // z = f^{-1}(x);  log p(x) = log p_Z(z) + log|det|.
    Matrix<Scalar>& z = buf.value;
    z = x.middleCols(first, count);
    buf.log_det.setZero(count);
    detail::train_inplace(m.flow(), true, z, buf.log_det, buf.flow);
    const Scalar sum_log_prob = m.base().log_prob(z).sum() + buf.log_det.sum();

    // dL/dlog p = -1/N per column; dL/dz through the base, then through the flow.
    const RowVector<Scalar> g_log_prob = RowVector<Scalar>::Constant(count, -inv_n);
    buf.grad = m.base().log_prob_backward(z, g_log_prob);
    detail::backward_inplace(m.flow(), buf.flow, buf.grad, g_log_prob);
    return static_cast<double>(sum_log_prob);
  };
  const int threads = detail::training_threads<Model>(x.cols());
  return Scalar(-detail::run_parts(model, cache, x.cols(), threads, part)) * inv_n;
}

/**
 * \brief Reverse-KL objective on one batch of standard-normal noise `eps`:
 *   x = f(mu + sigma eps),  log q(x) = log p_Z(z) - log|det df/dz|,
 *   loss = mean(log q(x) - beta log p~(x)),
 * with its reparameterisation gradient added to the parameters' buffers. `target(x)` returns
 * a TargetEvaluation<Scalar>; beta in (0, 1] is the annealing weight of the target. With
 * several threads (see TrainingCache) the target is called concurrently on parts of the batch.
 */
template <class Model, class Target>
ReverseKlBatch<typename Model::Scalar> reverse_kl_backward(
    Model& model, const ConstMatrixRef<typename Model::Scalar>& eps, Target&& target,
    typename Model::Scalar beta, TrainingCache<Model>& cache) {
  using Scalar = typename Model::Scalar;
  static_assert(TrainableFlow<typename Model::FlowType>,
                "nflow::reverse_kl_backward: the model's flow must satisfy nflow::TrainableFlow.");
  detail::check_rows("reverse_kl_backward", model.dim(), eps);
  const Index n = eps.cols();
  const Scalar inv_n = Scalar(1) / Scalar(n);

  // Each part returns its sum of log p~ and leaves its sum of log q in sum_log_q.
  const int threads = detail::training_threads<Model>(n);
  std::vector<double> sum_log_q(std::max(threads, 1), 0.0);
  const auto part = [&](Model& m, detail::StepBuffers<Model>& buf, Index first, Index count,
                        int index) {
    const auto e = eps.middleCols(first, count);
    // z = base(eps), x = f(z), log q(x) = log p_Z(z) - log|det df/dz|.
    auto [z, log_pz] = m.base().transform_noise(e);
    Matrix<Scalar>& x = buf.value;
    x = std::move(z);
    buf.log_det.setZero(count);
    detail::train_inplace(m.flow(), false, x, buf.log_det, buf.flow);
    const TargetEvaluation<Scalar> t = target(x);
    detail::check_rows("reverse_kl_backward: target gradient", m.dim(), t.grad);
    if (t.log_prob.cols() != count || t.grad.cols() != count) {
      detail::fail("reverse_kl_backward", "target evaluation columns", count, t.grad.cols());
    }

    // dL/dx = -beta/N grad log p~,  dL/dlog|det| = -1/N,  dL/dlog p_Z = 1/N.
    buf.grad = (-beta * inv_n) * t.grad;
    detail::backward_inplace(m.flow(), buf.flow, buf.grad,
                             RowVector<Scalar>::Constant(count, -inv_n));
    m.base().noise_backward(e, buf.grad, RowVector<Scalar>::Constant(count, inv_n));
    sum_log_q[index] = static_cast<double>((log_pz - buf.log_det).sum());
    return static_cast<double>(t.log_prob.sum());
  };
  const double sum_log_p = detail::run_parts(model, cache, n, threads, part);
  double total_log_q = 0;
  for (double v : sum_log_q)
    total_log_q += v;
  const double mean_log_p = sum_log_p / static_cast<double>(n);
  const double mean_log_q = total_log_q / static_cast<double>(n);
  return {Scalar(mean_log_q - static_cast<double>(beta) * mean_log_p),
          Scalar(mean_log_p - mean_log_q)};
}

}  // namespace nflow
