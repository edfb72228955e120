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

  /// What the backward pass needs: each layer's input and pre-activation.
  struct Cache {
    std::vector<Matrix> inputs;
    std::vector<Matrix> pre;
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
    Matrix h = x;
    for (Index l = 0; l < num_layers(); ++l) {
      Matrix a = affine(l, h);
      if (l + 1 < num_layers()) activate(a);
      h = std::move(a);
    }
    return h;
  }

  /// y = mlp(x), keeping in `cache` what backward() needs.
  Matrix forward(const ConstRef& x, Cache& cache) const {
    cache.inputs.resize(num_layers());
    cache.pre.resize(num_layers());
    cache.inputs[0] = x;
    for (Index l = 0; l < num_layers(); ++l) {
      cache.pre[l] = affine(l, cache.inputs[l]);
      if (l + 1 == num_layers()) break;
      cache.inputs[l + 1] = cache.pre[l];
      activate(cache.inputs[l + 1]);
    }
    return cache.pre.back();
  }

  /// Given dL/dy, accumulates dL/dW, dL/db and returns dL/dx.
  Matrix backward(const Cache& cache, Matrix grad) {
    for (Index l = num_layers() - 1; l >= 0; --l) {
      // dL/da = dL/dh * a'(pre) for hidden layers.
      if (l + 1 < num_layers()) {
        grad.array() *= derivative(cache.pre[l], cache.inputs[l + 1]).array();
      }
      // dL/dW += dL/da x^T,  dL/db += sum over the batch of dL/da.
      m_grad_weights[l].noalias() += grad * cache.inputs[l].transpose();
      m_grad_biases[l] += grad.rowwise().sum();
      // dL/dx = W^T dL/da.
      Matrix next = m_weights[l].transpose() * grad;
      grad = std::move(next);
    }
    return grad;
  }

  /// Visits every parameter with its gradient: f(name, value, grad).
  template <class F>
  void for_each_parameter(F&& f, const std::string& prefix = "") {
    for (Index l = 0; l < num_layers(); ++l) {
      f(prefix + "weight" + std::to_string(l), m_weights[l], m_grad_weights[l]);
      f(prefix + "bias" + std::to_string(l), m_biases[l], m_grad_biases[l]);
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

  // a = W h + b over the whole batch.
  Matrix affine(Index l, const Matrix& h) const {
    Matrix a(m_weights[l].rows(), h.cols());
    a.noalias() = m_weights[l] * h;
    a.colwise() += m_biases[l].col(0);
    return a;
  }

  void activate(Matrix& a) const {
    auto x = a.array();
    switch (m_activation) {
      case Activation::relu:
        x = x.max(Scalar(0));
        break;
      case Activation::leaky_relu:
        x = (x > Scalar(0)).select(x, Scalar(0.01) * x);
        break;
      case Activation::tanh:
        x = x.tanh();
        break;
      case Activation::elu:
        x = (x > Scalar(0)).select(x, x.exp() - Scalar(1));
        break;
      case Activation::silu:
        x = x / (Scalar(1) + (-x).exp());
        break;
    }
  }

  // a'(pre), given pre-activation and activation output.
  Matrix derivative(const Matrix& pre, const Matrix& out) const {
    auto p = pre.array();
    switch (m_activation) {
      case Activation::relu:
        return (p > Scalar(0)).template cast<Scalar>().matrix();
      case Activation::leaky_relu:
        return (p > Scalar(0)).select(Scalar(1), Scalar(0.01) + Scalar(0) * p).matrix();
      case Activation::tanh:
        return (Scalar(1) - out.array().square()).matrix();
      case Activation::elu:
        return (p > Scalar(0)).select(Scalar(1), out.array() + Scalar(1)).matrix();
      case Activation::silu: {
        auto sig = Scalar(1) / (Scalar(1) + (-p).exp());
        return (sig * (Scalar(1) + p * (Scalar(1) - sig))).matrix();
      }
    }
    return Matrix();
  }

  Activation m_activation = Activation::relu;
  std::vector<Matrix> m_weights, m_biases;
  std::vector<Matrix> m_grad_weights, m_grad_biases;
};

}  // namespace nflow
