// A fully connected network, used as the conditioner of coupling layers. Whole-batch: each
// dense layer is one matrix product over the batch (one sample per column).
#pragma once

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "nflow/detail/types.hpp"

namespace nflow {

/// Element-wise non-linearity between the hidden layers of an Mlp.
enum class Activation { relu, leaky_relu, tanh, elu, silu };

inline const char* to_string(Activation a) {
  switch (a) {
    case Activation::relu:
      return "relu";
    case Activation::leaky_relu:
      return "leaky_relu";
    case Activation::tanh:
      return "tanh";
    case Activation::elu:
      return "elu";
    case Activation::silu:
      return "silu";
  }
  return "unknown";
}

/**
 * \brief Multi-layer perceptron  y = W_L a(... a(W_1 x + b_1) ...) + b_L.
 *
 * Hidden layers are initialised as PyTorch's `nn.Linear` does (weights and biases uniform in
 * ±1/sqrt(fan_in)); the output layer is zero when `zero_output` is set, so that a coupling
 * built on it starts as the identity.
 */
template <class ScalarT>
class Mlp {
 public:
  using Scalar = ScalarT;
  using Matrix = nflow::Matrix<Scalar>;
  using ConstRef = ConstMatrixRef<Scalar>;

  /// What the backward pass needs: each hidden layer's output (and, for silu, its
  /// pre-activation). Buffers are kept between calls, so a reused cache does not allocate.
  struct Cache {
    std::vector<Matrix> hidden;  // a_l = act(W_l a_{l-1} + b_l) for the hidden layers
    std::vector<Matrix> pre;     // W_l a_{l-1} + b_l, kept only for silu
    Matrix input;                // x, kept by forward(x, cache)
    Matrix output;               // y
  };

  Mlp() = default;

  /// \param sizes  layer widths, input first and output last (at least two entries, all > 0).
  template <class Rng>
  Mlp(const std::vector<Index>& sizes, Activation activation, bool zero_output, Rng& rng)
      : m_activation(activation) {
    if (sizes.size() < 2) fail("sizes", "at least 2 layer widths (input, output)", sizes.size());
    for (Index s : sizes)
      detail::check_positive("Mlp", "every layer width", s);
    for (std::size_t l = 0; l + 1 < sizes.size(); ++l) {
      const Index in = sizes[l], out = sizes[l + 1];
      Matrix w(out, in), b(out, 1);
      const bool last = l + 2 == sizes.size();
      if (last && zero_output) {
        w.setZero();
        b.setZero();
      } else {
        // U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as torch.nn.Linear.
        const double bound = 1.0 / std::sqrt(static_cast<double>(in));
        std::uniform_real_distribution<double> u(-bound, bound);
        for (Index i = 0; i < w.size(); ++i)
          w.data()[i] = Scalar(u(rng));
        for (Index i = 0; i < b.size(); ++i)
          b.data()[i] = Scalar(u(rng));
      }
      m_weights.push_back(std::move(w));
      m_biases.push_back(std::move(b));
    }
    zero_grad();
  }

  Index input_dim() const { return m_weights.front().cols(); }
  Index output_dim() const { return m_weights.back().rows(); }
  Index num_layers() const { return static_cast<Index>(m_weights.size()); }
  Activation activation() const { return m_activation; }

  /// y = mlp(x) for a batch x (input_dim x N).
  Matrix operator()(const ConstRef& x) const {
    // Two buffers, used in turn: one matrix product and one fused bias-activation pass a layer.
    Matrix a, b;
    for (Index l = 0; l < num_layers(); ++l) {
      Matrix& out = l % 2 == 0 ? a : b;
      if (l == 0) {
        product(0, x, out);
      } else {
        product(l, l % 2 == 0 ? b : a, out);
      }
      if (l + 1 < num_layers()) {
        bias_activate(l, out, nullptr);
      } else {
        out.colwise() += m_biases[l].col(0);
      }
    }
    return std::move(num_layers() % 2 == 1 ? a : b);
  }

  /// y = mlp(x), keeping in `cache` what backward() needs.
  Matrix forward(const ConstRef& x, Cache& cache) const {
    cache.input = x;
    return forward_train(cache.input, cache);
  }

  /// Given dL/dy, accumulates dL/dW, dL/db and returns dL/dx.
  Matrix backward(const Cache& cache, Matrix grad) {
    const Matrix& g0 = backward_params(cache, cache.input, grad);
    Matrix grad_x(input_dim(), g0.cols());
    grad_x.noalias() = m_weights[0].transpose() * g0;
    return grad_x;
  }

  /// y = mlp(x) into cache.output, keeping the hidden layers in `cache`. Unlike forward(x,
  /// cache) it does not copy x: the caller keeps x unchanged until backward_params.
  const Matrix& forward_train(const ConstRef& x, Cache& cache) const {
    const Index n_hidden = num_layers() - 1;
    cache.hidden.resize(n_hidden);
    if (m_activation == Activation::silu) cache.pre.resize(n_hidden);
    for (Index l = 0; l < num_layers(); ++l) {
      Matrix& out = l < n_hidden ? cache.hidden[l] : cache.output;
      // a = W h (+ b, activation): one product, then one fused pass.
      if (l == 0) {
        product(0, x, out);
      } else {
        product(l, cache.hidden[l - 1], out);
      }
      if (l < n_hidden) {
        bias_activate(l, out, m_activation == Activation::silu ? &cache.pre[l] : nullptr);
      } else {
        out.colwise() += m_biases[l].col(0);
      }
    }
    return cache.output;
  }

  /// Backward pass of forward_train(x, cache): given dL/dy in `grad` (overwritten),
  /// accumulates dL/dW and dL/db and returns dL/d(W_0 x + b_0), the gradient of the first
  /// layer's output. dL/dx is then W_0^T times it (see add_input_gradient).
  const Matrix& backward_params(const Cache& cache, const ConstRef& x, Matrix& grad) {
    Matrix* g = &grad;
    for (Index l = num_layers() - 1; l >= 0; --l) {
      // dL/dW_l += dL/da_l h_{l-1}^T,  dL/db_l += sum over the batch of dL/da_l.
      if (l == 0) {
        add_weight_gradient(0, *g, x);
      } else {
        add_weight_gradient(l, *g, cache.hidden[l - 1]);
      }
      m_grad_biases[l].col(0) += g->rowwise().sum();
      if (l == 0) break;

      // dL/da_{l-1} = (W_l^T dL/da_l) * act'(a_{l-1}).
      Matrix& next = m_scratch[l % 2];
      transposed_product(l, *g, next);
      multiply_derivative(l - 1, cache, next);
      g = &next;
    }
    return *g;
  }

  /// dst += W_0^T g0: the input gradient from the result of backward_params.
  template <class Dst>
  void add_input_gradient(const Matrix& g0, Dst&& dst) const {
    dst.noalias() += m_weights[0].transpose() * g0;
  }

  /// Visits every parameter with its gradient: f(name, value, grad).
  template <class F>
  void for_each_parameter(F&& f, const std::string& prefix = "") {
    for (Index l = 0; l < num_layers(); ++l) {
      f(prefix + "weight" + std::to_string(l), m_weights[l], m_grad_weights[l]);
      f(prefix + "bias" + std::to_string(l), m_biases[l], m_grad_biases[l]);
    }
  }

  /// Visits every parameter with its gradient, in for_each_parameter's order: f(value, grad).
  template <class F>
  void visit_parameters(F&& f) {
    for (Index l = 0; l < num_layers(); ++l) {
      f(m_weights[l], m_grad_weights[l]);
      f(m_biases[l], m_grad_biases[l]);
    }
  }

  void zero_grad() {
    m_grad_weights.resize(m_weights.size());
    m_grad_biases.resize(m_biases.size());
    for (std::size_t l = 0; l < m_weights.size(); ++l) {
      m_grad_weights[l].setZero(m_weights[l].rows(), m_weights[l].cols());
      m_grad_biases[l].setZero(m_biases[l].rows(), 1);
    }
  }

  const Matrix& weight(Index l) const { return m_weights[l]; }
  const Matrix& bias(Index l) const { return m_biases[l]; }
  Matrix& weight(Index l) { return m_weights[l]; }
  Matrix& bias(Index l) { return m_biases[l]; }

 private:
  template <class Got>
  [[noreturn]] static void fail(const char* param, const char* expected, const Got& got) {
    detail::fail("Mlp", param, expected, got);
  }

  // Layers with at most this many inputs or outputs (the conditioner of a 2-D coupling has one
  // input and two outputs) skip the general matrix product, whose packing of the operands
  // costs more than the arithmetic at such shapes.
  static constexpr Index kNarrow = 4;

  // out = W_l in.
  template <class In>
  void product(Index l, const In& in, Matrix& out) const {
    const Matrix& w = m_weights[l];
    const Index n = in.cols();
    if (w.cols() <= kNarrow) {
      // Few inputs: out_j = sum_k W_k in_kj, a handful of vectorised column updates.
      out.resize(w.rows(), n);
      for (Index j = 0; j < n; ++j) {
        out.col(j).noalias() = w.col(0) * in(0, j);
        for (Index k = 1; k < w.cols(); ++k)
          out.col(j).noalias() += w.col(k) * in(k, j);
      }
    } else if (w.rows() <= kNarrow) {
      // Few outputs: one matrix-vector product per output row.
      out.resize(w.rows(), n);
      for (Index r = 0; r < w.rows(); ++r)
        out.row(r).noalias() = w.row(r) * in;
    } else {
      out.noalias() = w * in;
    }
  }

  // dL/dW_l += g in^T.
  template <class In>
  void add_weight_gradient(Index l, const Matrix& g, const In& in) {
    Matrix& gw = m_grad_weights[l];
    if (gw.rows() <= kNarrow) {
      for (Index r = 0; r < gw.rows(); ++r)
        gw.row(r).noalias() += g.row(r) * in.transpose();
    } else if (gw.cols() <= kNarrow) {
      for (Index k = 0; k < gw.cols(); ++k)
        gw.col(k).noalias() += g * in.row(k).transpose();
    } else {
      gw.noalias() += g * in.transpose();
    }
  }

  // out = W_l^T g.
  void transposed_product(Index l, const Matrix& g, Matrix& out) {
    const Matrix& w = m_weights[l];
    if (w.rows() <= kNarrow) {
      // Few outputs of layer l: out_j = sum_r (W^T)_r g_rj with W^T stored contiguously.
      m_transposed = w.transpose();
      out.resize(w.cols(), g.cols());
      for (Index j = 0; j < g.cols(); ++j) {
        out.col(j).noalias() = m_transposed.col(0) * g(0, j);
        for (Index r = 1; r < w.rows(); ++r)
          out.col(j).noalias() += m_transposed.col(r) * g(r, j);
      }
    } else {
      out.noalias() = w.transpose() * g;
    }
  }

  // a <- act(a + b_l), in one pass; keeps a + b_l in *pre when pre is not null.
  void bias_activate(Index l, Matrix& a, Matrix* pre) const {
    const auto b = m_biases[l].col(0).array();
    auto x = a.array();
    switch (m_activation) {
      case Activation::relu:
        x = (x.colwise() + b).max(Scalar(0));
        break;
      case Activation::leaky_relu:
        x.colwise() += b;
        x = (x > Scalar(0)).select(x, Scalar(0.01) * x);
        break;
      case Activation::tanh:
        x = (x.colwise() + b).tanh();
        break;
      case Activation::elu:
        x.colwise() += b;
        x = (x > Scalar(0)).select(x, x.exp() - Scalar(1));
        break;
      case Activation::silu:
        x.colwise() += b;
        if (pre) *pre = a;
        x = x / (Scalar(1) + (-x).exp());
        break;
    }
  }

  // g <- g * act'(.) of hidden layer l, from its output h (and pre-activation, for silu).
  void multiply_derivative(Index l, const Cache& cache, Matrix& g) const {
    const auto h = cache.hidden[l].array();
    auto x = g.array();
    switch (m_activation) {
      case Activation::relu:
        x = (h > Scalar(0)).select(x, Scalar(0));
        break;
      case Activation::leaky_relu:
        x = (h > Scalar(0)).select(x, Scalar(0.01) * x);
        break;
      case Activation::tanh:
        x *= Scalar(1) - h.square();
        break;
      case Activation::elu:
        x = (h > Scalar(0)).select(x, x * (h + Scalar(1)));
        break;
      case Activation::silu: {
        const auto p = cache.pre[l].array();
        const auto sig = Scalar(1) / (Scalar(1) + (-p).exp());
        x *= sig * (Scalar(1) + p * (Scalar(1) - sig));
        break;
      }
    }
  }

  Activation m_activation = Activation::relu;
  std::vector<Matrix> m_weights, m_biases;
  std::vector<Matrix> m_grad_weights, m_grad_biases;
  Matrix m_scratch[2];  // backward_params' gradients of the hidden layers, used in turn
  Matrix m_transposed;  // W^T of a narrow layer, for transposed_product
};

}  // namespace nflow
