// Fitting loops: maximum likelihood on data, and reverse KL to an unnormalised target.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numbers>
#include <random>
#include <string>
#include <vector>

#include "nflow/train/adam.hpp"
#include "nflow/train/objectives.hpp"

namespace nflow {

/// Learning-rate schedule over the steps of a fit.
enum class LrSchedule {
  constant,  ///< the optimiser's learning rate throughout
  cosine     ///< cosine decay from the learning rate to final_lr_fraction of it at max_steps
};

/// How a fit ended.
enum class FitStatus {
  completed,       ///< ran max_steps
  early_stopped,   ///< validation NLL stopped improving for `patience` evaluations
  non_finite_loss  ///< a loss or gradient was NaN or infinite; best parameters restored
};

inline const char* to_string(FitStatus s) {
  switch (s) {
    case FitStatus::completed:
      return "completed";
    case FitStatus::early_stopped:
      return "early_stopped";
    case FitStatus::non_finite_loss:
      return "non_finite_loss";
  }
  return "unknown";
}

/// Settings of fit_maximum_likelihood.
struct FitOptions {
  Index batch_size = 256;
  Index max_steps = 3000;
  Index eval_every = 100;    ///< steps between evaluations and progress reports
  Index patience = 0;        ///< evaluations without improvement before stopping; 0: never
  bool restore_best = true;  ///< end with the parameters of the best evaluation
  AdamOptions adam;
  LrSchedule schedule = LrSchedule::constant;
  double final_lr_fraction = 0.0;
  std::uint64_t seed = 0;   ///< minibatch order; the same seed gives the same fit
  Index eval_chunk = 8192;  ///< columns per log_prob call when evaluating
  /// In [0, 1). If > 0, an exponential moving average of the parameters is kept alongside
  /// them, a <- d a + (1 - d) theta after every step, starting from the initial parameters; it
  /// is the average that is evaluated on the validation data, kept as the best and left in the
  /// model at the end (the optimiser itself walks the raw parameters). d = 1 - 1/k averages
  /// over roughly the last k steps.
  double average_decay = 0.0;
};

/// What the progress callback receives at each evaluation.
struct FitProgress {
  Index step;
  Index epoch;
  double train_nll;           ///< mean over the batches since the last report
  double validation_nll;      ///< NaN without validation data
  double samples_per_second;  ///< training throughput since the last report
  double learning_rate;
};

struct FitReport {
  FitStatus status = FitStatus::completed;
  Index steps = 0;
  Index best_step = 0;
  double best_nll = std::numeric_limits<double>::infinity();  ///< validation (or train) NLL
  std::string message;
};

namespace detail {

inline void check_fit_options(const char* where, Index batch, Index steps, Index every) {
  check_positive(where, "options.batch_size", batch);
  check_positive(where, "options.max_steps", steps);
  check_positive(where, "options.eval_every", every);
}

// a <- d a + (1 - d) theta for every parameter theta of the model, in traversal order.
template <class Model>
void update_average(Model& model, std::vector<Matrix<typename Model::Scalar>>& average,
                    typename Model::Scalar decay) {
  using M = Matrix<typename Model::Scalar>;
  const auto keep = decay, take = 1 - decay;
  std::size_t k = 0;
  visit_parameters(model, [&](M& p, M&) {
    M& a = average[k++];
    a.array() = keep * a.array() + take * p.array();
  });
}

// Exchanges the model's parameters with `other` (same traversal and shapes), without copying.
template <class Model>
void swap_parameters(Model& model, std::vector<Matrix<typename Model::Scalar>>& other) {
  using M = Matrix<typename Model::Scalar>;
  std::size_t k = 0;
  visit_parameters(model, [&](M& p, M&) { p.swap(other[k++]); });
}

inline double scheduled_lr(const AdamOptions& adam, LrSchedule schedule, double final_fraction,
                           Index step, Index max_steps) {
  if (schedule == LrSchedule::constant) return adam.learning_rate;
  const double progress = static_cast<double>(step) / static_cast<double>(max_steps);
  const double cosine = 0.5 * (1 + std::cos(std::numbers::pi * progress));
  return adam.learning_rate * (final_fraction + (1 - final_fraction) * cosine);
}

// Deterministic Fisher-Yates shuffle (std::shuffle differs between standard libraries).
inline void shuffle(std::vector<Index>& v, std::mt19937_64& rng) {
  for (Index i = static_cast<Index>(v.size()) - 1; i > 0; --i) {
    std::swap(v[i], v[static_cast<Index>(rng() % static_cast<std::uint64_t>(i + 1))]);
  }
}

template <class Derived>
void check_finite_columns(const char* where, const Eigen::MatrixBase<Derived>& x) {
  for (Index j = 0; j < x.cols(); ++j) {
    if (!x.col(j).allFinite()) {
      fail(where, "data column " + std::to_string(j), "finite values", "NaN or infinity");
    }
  }
}

}  // namespace detail

/// Copies of every parameter of a model, in traversal order.
template <class Model>
std::vector<Matrix<typename Model::Scalar>> snapshot_parameters(Model& model) {
  using M = Matrix<typename Model::Scalar>;
  std::vector<M> out;
  model.for_each_parameter([&](const std::string&, M& p, M&) { out.push_back(p); });
  return out;
}

/// Restores parameters saved by snapshot_parameters.
template <class Model>
void restore_parameters(Model& model, const std::vector<Matrix<typename Model::Scalar>>& saved) {
  using M = Matrix<typename Model::Scalar>;
  std::size_t k = 0;
  model.for_each_parameter([&](const std::string&, M& p, M&) { p = saved.at(k++); });
}

/// Number of scalar parameters of a model.
template <class Model>
Index parameter_count(Model& model) {
  using M = Matrix<typename Model::Scalar>;
  Index n = 0;
  model.for_each_parameter([&](const std::string&, M& p, M&) { n += p.size(); });
  return n;
}

/// Mean of -log p(x) over the columns of x, evaluated in chunks.
template <class Model>
double mean_nll(const Model& model, const ConstMatrixRef<typename Model::Scalar>& x,
                Index chunk = 8192) {
  detail::check_rows("mean_nll", model.dim(), x);
  double total = 0;
  for (Index j = 0; j < x.cols(); j += chunk) {
    const Index n = std::min(chunk, x.cols() - j);
    total -= static_cast<double>(model.log_prob(x.middleCols(j, n)).sum());
  }
  return total / static_cast<double>(x.cols());
}

/**
 * \brief Fits a model to the columns of `train` by maximum likelihood with Adam.
 *
 * Minibatches of `batch_size` columns are drawn without replacement, reshuffled each epoch.
 * Every `eval_every` steps the mean NLL on `validation` (if it has columns; else the running
 * train NLL) is computed, `progress` is called, and the best parameters are kept; with
 * `patience` > 0 the fit stops after that many evaluations without improvement. A non-finite
 * loss or gradient stops the fit with FitStatus::non_finite_loss and restores the best
 * parameters. Data must be finite (std::invalid_argument names the first bad column).
 *
 * With `average_decay` > 0 the evaluations, the best parameters and the parameters left in
 * the model are those of the moving average of the parameters (see FitOptions); without
 * validation data the running train NLL, which is measured on the raw parameters, still
 * decides which evaluation is best.
 */
template <class Model>
FitReport fit_maximum_likelihood(Model& model, const Matrix<typename Model::Scalar>& train,
                                 const Matrix<typename Model::Scalar>& validation,
                                 const FitOptions& options,
                                 const std::function<void(const FitProgress&)>& progress = {}) {
  using Scalar = typename Model::Scalar;
  const char* where = "fit_maximum_likelihood";
  detail::check_fit_options(where, options.batch_size, options.max_steps, options.eval_every);
  detail::check_rows(where, model.dim(), train);
  detail::check_positive(where, "train.cols() (number of samples)", train.cols());
  detail::check_finite_columns(where, train);
  const bool has_validation = validation.size() > 0;
  if (has_validation) {
    detail::check_rows(where, model.dim(), validation);
    detail::check_finite_columns(where, validation);
  }
  if (!(options.average_decay >= 0 && options.average_decay < 1)) {
    detail::fail(where, "options.average_decay", "in [0, 1)", options.average_decay);
  }
  const bool averaging = options.average_decay > 0;

  Adam<Scalar> adam(options.adam);
  std::mt19937_64 rng(options.seed);
  std::vector<Index> order(train.cols());
  for (Index j = 0; j < train.cols(); ++j)
    order[j] = j;
  const Index batch = std::min(options.batch_size, train.cols());
  Matrix<Scalar> x(model.dim(), batch);
  TrainingCache<Model> cache;

  FitReport report;
  auto best = snapshot_parameters(model);
  std::vector<Matrix<Scalar>> average;  // the moving average, when averaging
  if (averaging) average = best;
  Index epoch = 0, cursor = train.cols(), since_best = 0, reported = 0;
  double running = 0;
  auto clock = std::chrono::steady_clock::now();

  for (Index step = 1; step <= options.max_steps; ++step) {
    // Next minibatch; reshuffle at the start of each epoch.
    if (cursor + batch > train.cols()) {
      detail::shuffle(order, rng);
      cursor = 0;
      ++epoch;
    }
    for (Index j = 0; j < batch; ++j)
      x.col(j) = train.col(order[cursor + j]);
    cursor += batch;

    // Loss, gradient and Adam step at the scheduled learning rate.
    const double lr = detail::scheduled_lr(options.adam, options.schedule,
                                           options.final_lr_fraction, step - 1, options.max_steps);
    adam.set_learning_rate(lr);
    model.zero_grad();
    const double loss = static_cast<double>(mean_nll_backward(model, x, cache));
    if (!std::isfinite(loss) || adam.step(model) != StepStatus::applied) {
      restore_parameters(model, best);
      report.status = FitStatus::non_finite_loss;
      report.steps = step;
      report.message = "non-finite " + std::string(std::isfinite(loss) ? "gradient" : "loss") +
                       " at step " + std::to_string(step) + "; restored the parameters of step " +
                       std::to_string(report.best_step);
      return report;
    }
    if (averaging) detail::update_average(model, average, Scalar(options.average_decay));
    running += loss;
    report.steps = step;

    // Evaluation, progress, best parameters and early stopping.
    if (step % options.eval_every != 0 && step != options.max_steps) continue;
    const auto now = std::chrono::steady_clock::now();
    const double seconds = std::chrono::duration<double>(now - clock).count();
    FitProgress p{step,
                  epoch,
                  running / static_cast<double>(step - reported),
                  std::numeric_limits<double>::quiet_NaN(),
                  static_cast<double>((step - reported) * batch) / std::max(seconds, 1e-12),
                  lr};
    // The average, if kept, takes the model's place while it is evaluated and saved.
    if (averaging) detail::swap_parameters(model, average);
    if (has_validation) p.validation_nll = mean_nll(model, validation, options.eval_chunk);
    const double metric = has_validation ? p.validation_nll : p.train_nll;
    if (metric < report.best_nll) {
      report.best_nll = metric;
      report.best_step = step;
      best = snapshot_parameters(model);
      since_best = 0;
    } else {
      ++since_best;
    }
    if (averaging) detail::swap_parameters(model, average);
    if (progress) progress(p);
    running = 0;
    reported = step;
    clock = std::chrono::steady_clock::now();
    if (options.patience > 0 && since_best >= options.patience) {
      report.status = FitStatus::early_stopped;
      break;
    }
  }
  if (options.restore_best) {
    restore_parameters(model, best);
  } else if (averaging) {
    detail::swap_parameters(model, average);
  }
  return report;
}

/// Settings of fit_reverse_kl.
struct ReverseKlOptions {
  Index batch_size = 256;
  Index max_steps = 10000;
  Index report_every = 500;  ///< steps between progress reports
  AdamOptions adam;
  LrSchedule schedule = LrSchedule::constant;
  double final_lr_fraction = 0.0;
  Index anneal_steps = 0;     ///< beta rises linearly from initial_beta to 1 over these steps
  double initial_beta = 1.0;  ///< in (0, 1]
  std::uint64_t seed = 0;
};

struct ReverseKlProgress {
  Index step;
  double beta;
  double elbo;  ///< mean of the batch ELBO estimates since the last report
  double samples_per_second;
};

struct ReverseKlReport {
  FitStatus status = FitStatus::completed;
  Index steps = 0;
  std::string message;
};

/**
 * \brief Fits a model to an unnormalised target by minimising KL(q || p) with Adam and the
 * reparameterisation trick.
 *
 * `target(x)` receives a D x N batch and returns TargetEvaluation<Scalar>{log p~(x),
 * d log p~/dx}. With anneal_steps > 0 the target enters as p~^beta, beta rising linearly to 1
 * (Rezende & Mohamed 2015, Sec. 6.1). A non-finite loss or gradient stops the fit with
 * FitStatus::non_finite_loss and leaves the parameters of the last good step.
 */
template <class Model, class Target>
ReverseKlReport fit_reverse_kl(Model& model, Target&& target, const ReverseKlOptions& options,
                               const std::function<void(const ReverseKlProgress&)>& progress = {}) {
  using Scalar = typename Model::Scalar;
  const char* where = "fit_reverse_kl";
  detail::check_fit_options(where, options.batch_size, options.max_steps, options.report_every);
  if (!(options.initial_beta > 0 && options.initial_beta <= 1)) {
    detail::fail(where, "options.initial_beta", "in (0, 1]", options.initial_beta);
  }

  Adam<Scalar> adam(options.adam);
  std::mt19937_64 rng(options.seed);
  TrainingCache<Model> cache;
  ReverseKlReport report;
  Index reported = 0;
  double running = 0;
  auto clock = std::chrono::steady_clock::now();

  for (Index step = 1; step <= options.max_steps; ++step) {
    // beta_t = min(1, beta_0 + (1 - beta_0) t / T_anneal).
    double beta = 1.0;
    if (options.anneal_steps > 0) {
      beta = std::min(1.0, options.initial_beta + (1 - options.initial_beta) *
                                                      static_cast<double>(step - 1) /
                                                      static_cast<double>(options.anneal_steps));
    }
    adam.set_learning_rate(detail::scheduled_lr(
        options.adam, options.schedule, options.final_lr_fraction, step - 1, options.max_steps));

    // One reparameterised batch, its gradient, and the Adam step.
    const Matrix<Scalar> eps = detail::standard_normal_noise<Scalar>("fit_reverse_kl", model.dim(),
                                                                     options.batch_size, rng);
    model.zero_grad();
    const auto r = reverse_kl_backward(model, eps, target, Scalar(beta), cache);
    if (!std::isfinite(static_cast<double>(r.loss)) || adam.step(model) != StepStatus::applied) {
      report.status = FitStatus::non_finite_loss;
      report.steps = step;
      report.message = "non-finite loss or gradient at step " + std::to_string(step) +
                       "; parameters left at step " + std::to_string(step - 1);
      return report;
    }
    running += static_cast<double>(r.elbo);
    report.steps = step;

    if (step % options.report_every != 0 && step != options.max_steps) continue;
    const auto now = std::chrono::steady_clock::now();
    const double seconds = std::chrono::duration<double>(now - clock).count();
    const auto count = static_cast<double>(step - reported);
    if (progress) {
      progress({step, beta, running / count,
                count * static_cast<double>(options.batch_size) / std::max(seconds, 1e-12)});
    }
    running = 0;
    reported = step;
    clock = std::chrono::steady_clock::now();
  }
  return report;
}

/// A Monte Carlo estimate with its standard error.
struct Estimate {
  double mean;
  double standard_error;
};

/// ELBO = E_q[log p~(x) - log q(x)] from n samples of the model, with its standard error.
template <class Model, class Target, class Rng>
Estimate estimate_elbo(const Model& model, Target&& target, Index n, Rng& rng, Index chunk = 8192) {
  detail::check_positive("estimate_elbo", "n (number of samples)", n);
  double sum = 0, sum_sq = 0;
  for (Index done = 0; done < n; done += chunk) {
    const Index m = std::min(chunk, n - done);
    auto [x, log_q] = model.sample_and_log_prob(m, rng);
    const auto t = target(x);
    for (Index j = 0; j < m; ++j) {
      const double v = static_cast<double>(t.log_prob(j)) - static_cast<double>(log_q(j));
      sum += v;
      sum_sq += v * v;
    }
  }
  const double mean = sum / static_cast<double>(n);
  const double var = std::max(0.0, sum_sq / static_cast<double>(n) - mean * mean);
  return {mean, std::sqrt(var / static_cast<double>(n))};
}

}  // namespace nflow
