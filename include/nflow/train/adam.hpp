// Adam optimiser over every parameter of a model, through the model's parameter traversal.
//
// D. P. Kingma, J. Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015,
// arXiv:1412.6980 (Algorithm 1). Decoupled weight decay as in I. Loshchilov, F. Hutter,
// "Decoupled Weight Decay Regularization", ICLR 2019, arXiv:1711.05101.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "nflow/detail/inplace.hpp"
#include "nflow/detail/types.hpp"

namespace nflow {

/// Settings of Adam. Defaults are the paper's, with no decay and no clipping.
struct AdamOptions {
  double learning_rate = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double epsilon = 1e-8;
  double weight_decay = 0.0;  ///< decoupled (AdamW): theta -= lr * decay * theta
  double clip_norm = 0.0;     ///< if > 0, rescale the global gradient norm to at most this
};

/// Outcome of one optimiser step.
enum class StepStatus {
  applied,         ///< parameters updated
  non_finite_grad  ///< a gradient was NaN or infinite: nothing was changed
};

/**
 * \brief Adam with optional decoupled weight decay and global gradient-norm clipping.
 *
 * step(model) visits the parameters in the order of `model.for_each_parameter(f)` (through
 * `visit_parameters` where the model offers it, which skips building the names); moment
 * buffers are matched to parameters by position in that traversal, which must not change
 * between steps.
 * A step whose gradients are not all finite changes nothing and returns
 * StepStatus::non_finite_grad, so NaN never spreads into the parameters.
 */
template <class Scalar>
class Adam {
 public:
  explicit Adam(const AdamOptions& options = {}) : m_options(options) {
    const char* w = "Adam";
    if (!(options.learning_rate > 0))
      detail::fail(w, "learning_rate", "> 0", options.learning_rate);
    if (!(options.beta1 >= 0 && options.beta1 < 1))
      detail::fail(w, "beta1", "in [0, 1)", options.beta1);
    if (!(options.beta2 >= 0 && options.beta2 < 1))
      detail::fail(w, "beta2", "in [0, 1)", options.beta2);
    if (!(options.epsilon > 0)) detail::fail(w, "epsilon", "> 0", options.epsilon);
    if (!(options.weight_decay >= 0)) detail::fail(w, "weight_decay", ">= 0", options.weight_decay);
    if (!(options.clip_norm >= 0)) detail::fail(w, "clip_norm", ">= 0", options.clip_norm);
  }

  const AdamOptions& options() const { return m_options; }
  void set_learning_rate(double lr) { m_options.learning_rate = lr; }
  long long steps() const { return m_t; }

  /// Global L2 norm of the gradient of the last step (before clipping).
  double last_grad_norm() const { return m_last_norm; }

  template <class Model>
  StepStatus step(Model& model) {
    // Global gradient norm, for the finiteness check and for clipping.
    double sq = 0;
    detail::visit_parameters(model, [&](Matrix<Scalar>&, Matrix<Scalar>& g) {
      sq += static_cast<double>(g.squaredNorm());
    });
    m_last_norm = std::sqrt(sq);
    if (!std::isfinite(m_last_norm)) return StepStatus::non_finite_grad;
    const double clip = m_options.clip_norm;
    const Scalar scale = Scalar(clip > 0 && m_last_norm > clip ? clip / m_last_norm : 1.0);

    // Bias-corrected step size  lr * sqrt(1 - beta2^t) / (1 - beta1^t)   [KingmaBa15, Alg. 1]
    ++m_t;
    const double b1 = m_options.beta1, b2 = m_options.beta2;
    const Scalar lr_t = Scalar(m_options.learning_rate * std::sqrt(1 - std::pow(b2, m_t)) /
                               (1 - std::pow(b1, m_t)));
    const Scalar eps_t = Scalar(m_options.epsilon * std::sqrt(1 - std::pow(b2, m_t)));
    const Scalar keep = Scalar(1 - m_options.learning_rate * m_options.weight_decay);
    const Scalar c1 = Scalar(b1), c2 = Scalar(b2);
    const Scalar d1 = Scalar(1 - b1), d2 = Scalar(1 - b2);
    // 1e6 times the smallest normal number, and the gradient size whose contributions to the
    // moments stay above it: see below.
    const Scalar floor = Scalar(1e6) * std::numeric_limits<Scalar>::min();
    const Scalar tiny = std::sqrt(floor / std::min(d1, d2));

    std::size_t k = 0;
    detail::visit_parameters(model, [&](Matrix<Scalar>& p, Matrix<Scalar>& g) {
      if (k == m_m.size()) {
        m_m.push_back(Matrix<Scalar>::Zero(p.rows(), p.cols()));
        m_v.push_back(Matrix<Scalar>::Zero(p.rows(), p.cols()));
      }
      Matrix<Scalar>& m = m_m[k];
      Matrix<Scalar>& v = m_v[k];
      NFLOW_ASSERT(m.rows() == p.rows() && m.cols() == p.cols());
      ++k;

      // m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  p = keep p - lr_t m / (sqrt(v) + eps_t)
      // with keep = 1 - lr decay (decoupled weight decay) and g the clipped gradient. Gradient
      // entries below `tiny` and moments below `floor` are set to zero, so that no arithmetic
      // here meets subnormal numbers, which cost about a hundred cycles each on x86 and made
      // this loop a sixth of a small model's training step. What is dropped moves a parameter
      // by at most lr (1 - b1) tiny / eps_t per step: 3e-11 lr/1e-3 in float by default.
      // The statements run on segments of 256 entries, so that each segment stays in the
      // first-level cache from the first statement to the last.
      // Large parameters are shared among Eigen::nbThreads() threads when OpenMP is enabled.
      constexpr Index kSegment = 256;
      const auto update = [&](Index i) {
        const Index len = std::min(kSegment, p.size() - i);
        using Segment = Eigen::Map<Eigen::Array<Scalar, Eigen::Dynamic, 1>>;
        Segment ps(p.data() + i, len), ms(m.data() + i, len), vs(v.data() + i, len);
        const auto gs = scale * Segment(g.data() + i, len);
        const auto gf = (gs.abs() < tiny).select(Scalar(0), gs);
        ms = c1 * ms + d1 * gf;
        ms = (ms.abs() < floor).select(Scalar(0), ms);
        vs = c2 * vs + d2 * gf.square();
        vs = (vs < floor).select(Scalar(0), vs);
        if (keep != Scalar(1)) ps *= keep;
        ps -= lr_t * ms / (vs.sqrt() + eps_t);
      };
#ifdef _OPENMP
      // Only large parameters are worth a parallel region (entering one costs microseconds).
      if (p.size() >= 64 * kSegment && Eigen::nbThreads() > 1 && !omp_in_parallel()) {
#pragma omp parallel for schedule(static) num_threads(Eigen::nbThreads())
        for (Index i = 0; i < p.size(); i += kSegment)
          update(i);
        return;
      }
#endif
      for (Index i = 0; i < p.size(); i += kSegment)
        update(i);
    });
    return StepStatus::applied;
  }

 private:
  AdamOptions m_options;
  std::vector<Matrix<Scalar>> m_m, m_v;
  long long m_t = 0;
  double m_last_norm = 0;
};

}  // namespace nflow
