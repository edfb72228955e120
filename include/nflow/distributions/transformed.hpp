// A density model: a base distribution pushed through a bijector.
#pragma once

#include <string>
#include <utility>

#include "nflow/detail/inplace.hpp"
#include "nflow/detail/parallel.hpp"
#include "nflow/distributions/standard_normal.hpp"
#include "nflow/flow.hpp"

namespace nflow {

/**
 * \brief p_X for x = f(z), z ~ base:
 *   log p_X(x) = log p_Z(f^{-1}(x)) + log|det df^{-1}/dx|.
 *
 * log_prob runs the flow's inverse; sample and sample_and_log_prob run only its forward
 * (so they work for chains of planar layers without any root finding):
 *   log p_X(f(z)) = log p_Z(z) - log|det df/dz|.
 * All three run the flow on blocks of columns (see set_block_size), on several threads when
 * the program is compiled with OpenMP.
 */
template <class B, class BaseDist = StandardNormal<typename B::Scalar>>
class TransformedDistribution {
  static_assert(Flow<B>,
                "nflow::TransformedDistribution<B, Base>: B must satisfy nflow::Flow; see "
                "nflow/flow.hpp.");
  static_assert(std::is_same_v<typename B::Scalar, typename BaseDist::Scalar>,
                "nflow::TransformedDistribution: the flow and the base must use the same Scalar.");

 public:
  using Scalar = typename B::Scalar;
  using Matrix = nflow::Matrix<Scalar>;
  using RowVector = nflow::RowVector<Scalar>;
  using ConstRef = ConstMatrixRef<Scalar>;
  using FlowType = B;
  using BaseType = BaseDist;

  TransformedDistribution(B flow, BaseDist base)
      : m_flow(std::move(flow)), m_base(std::move(base)) {
    if (m_base.dim() != m_flow.dim()) {
      detail::fail("TransformedDistribution", "base dim (must match the flow's)", m_flow.dim(),
                   m_base.dim());
    }
  }

  /// With a standard normal base of the flow's dimension.
  explicit TransformedDistribution(B flow) requires std::is_same_v<BaseDist, StandardNormal<Scalar>>
      : TransformedDistribution(flow, BaseDist(flow.dim())) {}

  Index dim() const { return m_flow.dim(); }
  const B& flow() const { return m_flow; }
  B& flow() { return m_flow; }
  const BaseDist& base() const { return m_base; }
  BaseDist& base() { return m_base; }

  /// log p_X(x) for each column of x.
  RowVector log_prob(const ConstRef& x) const {
    detail::check_rows("TransformedDistribution::log_prob", dim(), x);
    RowVector out(x.cols());
    detail::for_each_block(x.cols(), m_block, [&](Index j, Index n) {
      Matrix z = x.middleCols(j, n);
      RowVector log_det = RowVector::Zero(n);
      detail::inverse_inplace(m_flow, z, &log_det);
      out.segment(j, n) = m_base.log_prob(z) + log_det;
    });
    return out;
  }

  /// n samples x = f(z), z ~ base.
  template <class Rng>
  Matrix sample(Index n, Rng& rng) const {
    detail::check_positive("TransformedDistribution::sample", "n (number of samples)", n);
    Matrix v = m_base.sample(n, rng);
    detail::for_each_block(n, m_block, [&](Index j, Index m) {
      Matrix block = v.middleCols(j, m);
      detail::forward_inplace(m_flow, block, nullptr);
      v.middleCols(j, m) = block;
    });
    return v;
  }

  /// n samples with their log-density, by the forward direction only.
  template <class Rng>
  ValueAndLogProb<Scalar> sample_and_log_prob(Index n, Rng& rng) const {
    detail::check_positive("TransformedDistribution::sample_and_log_prob", "n (number of samples)",
                           n);
    ValueAndLogProb<Scalar> r = m_base.sample_and_log_prob(n, rng);
    detail::for_each_block(n, m_block, [&](Index j, Index m) {
      Matrix block = r.value.middleCols(j, m);
      RowVector log_det = RowVector::Zero(m);
      detail::forward_inplace(m_flow, block, &log_det);
      r.value.middleCols(j, m) = block;
      r.log_prob.segment(j, m) -= log_det;
    });
    return r;
  }

  /// Columns per block in log_prob, sample and sample_and_log_prob: the flow runs on one block
  /// at a time, so that a block's intermediate results stay in the processor's cache from layer
  /// to layer, and memory use stays bounded for large batches. When the program is compiled
  /// with OpenMP, the blocks are shared among Eigen::nbThreads() threads.
  Index block_size() const { return m_block; }
  void set_block_size(Index columns) {
    detail::check_positive("TransformedDistribution::set_block_size", "columns", columns);
    m_block = columns;
  }

  /// Visits every trainable parameter, flow first ("flow.") then base ("base."), in the one
  /// fixed order that optimisers and serialisation share: f(name, value, grad).
  template <class F>
  void for_each_parameter(F&& f) {
    m_flow.for_each_parameter(f, "flow.");
    m_base.for_each_parameter(f, "base.");
  }

  /// for_each_parameter's traversal without the names: f(value, grad).
  template <class F>
  void visit_parameters(F&& f) {
    detail::visit_parameters(m_flow, f);
    detail::visit_parameters(m_base, f);
  }

  void zero_grad() {
    m_flow.zero_grad();
    m_base.zero_grad();
  }

 private:
  B m_flow;
  BaseDist m_base;
  Index m_block = 512;
};

}  // namespace nflow
