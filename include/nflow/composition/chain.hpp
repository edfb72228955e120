// Composition of a list of bijectors fixed at compile time.
#pragma once

#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "nflow/detail/inplace.hpp"
#include "nflow/detail/trainable.hpp"
#include "nflow/flow.hpp"

namespace nflow {

/**
 * \brief Chain<B1, ..., Bk>: x = Bk(...B2(B1(z))). The list order is the forward order; the
 * inverse runs the list backwards; log-determinants add.
 *
 * All elements share one Scalar and one dimension (checked at construction). Trainable when
 * every element is.
 */
template <class... Bs>
class Chain {
  static_assert(sizeof...(Bs) > 0, "nflow::Chain: give at least one bijector.");
  static_assert((Flow<Bs> && ...),
                "nflow::Chain: every element must satisfy nflow::Flow (dim, forward, inverse, "
                "*_and_log_det, *_log_det_jacobian); see nflow/flow.hpp for an example.");

 public:
  using Scalar = typename std::tuple_element_t<0, std::tuple<Bs...>>::Scalar;
  static_assert((std::is_same_v<Scalar, typename Bs::Scalar> && ...),
                "nflow::Chain: all elements must use the same Scalar (all float or all double).");
  using Matrix = nflow::Matrix<Scalar>;
  using RowVector = nflow::RowVector<Scalar>;
  using ConstRef = ConstMatrixRef<Scalar>;
  using Result = ValueAndLogDet<Scalar>;
  static constexpr std::size_t size = sizeof...(Bs);

  struct Cache {
    bool inverse = false;
    std::tuple<CacheOf<Bs>...> layers;
  };

  explicit Chain(Bs... layers) : m_layers(std::move(layers)...) {
    const Index d = std::get<0>(m_layers).dim();
    std::size_t i = 0;
    std::apply(
        [&](const auto&... b) {
          ((b.dim() == d
                ? void(++i)
                : detail::fail("Chain", "dim() of element " + std::to_string(i), d, b.dim())),
           ...);
        },
        m_layers);
  }

  Index dim() const { return std::get<0>(m_layers).dim(); }

  template <std::size_t I>
  const auto& get() const {
    return std::get<I>(m_layers);
  }
  template <std::size_t I>
  auto& get() {
    return std::get<I>(m_layers);
  }

  Result forward_and_log_det(const ConstRef& z) const {
    Result r{Matrix(z), RowVector::Zero(z.cols())};
    forward_inplace(r.value, &r.log_det);
    return r;
  }

  Result inverse_and_log_det(const ConstRef& x) const {
    Result r{Matrix(x), RowVector::Zero(x.cols())};
    inverse_inplace(r.value, &r.log_det);
    return r;
  }

  Matrix forward(const ConstRef& z) const {
    Matrix v = z;
    forward_inplace(v, nullptr);
    return v;
  }

  Matrix inverse(const ConstRef& x) const {
    Matrix v = x;
    inverse_inplace(v, nullptr);
    return v;
  }

  RowVector forward_log_det_jacobian(const ConstRef& z) const {
    return forward_and_log_det(z).log_det;
  }
  RowVector inverse_log_det_jacobian(const ConstRef& x) const {
    return inverse_and_log_det(x).log_det;
  }

  /// v <- f(v), element after element on the same buffer, adding log|det| to *log_det unless
  /// it is null (see nflow::InPlaceFlow).
  void forward_inplace(Matrix& v, RowVector* log_det) const {
    detail::check_rows("Chain::forward", dim(), v);
    std::apply([&](const auto&... b) { (detail::forward_inplace(b, v, log_det), ...); }, m_layers);
  }

  /// v <- f^{-1}(v), the elements in reverse order.
  void inverse_inplace(Matrix& v, RowVector* log_det) const {
    detail::check_rows("Chain::inverse", dim(), v);
    reverse_each([&](const auto& b) { detail::inverse_inplace(b, v, log_det); });
  }

  Result forward_and_log_det(const ConstRef& z, Cache& cache) const
      requires(TrainableFlow<Bs>&&...) {
    Result r{Matrix(z), RowVector::Zero(z.cols())};
    forward_inplace(r.value, r.log_det, cache);
    return r;
  }

  Result inverse_and_log_det(const ConstRef& x, Cache& cache) const
      requires(TrainableFlow<Bs>&&...) {
    Result r{Matrix(x), RowVector::Zero(x.cols())};
    inverse_inplace(r.value, r.log_det, cache);
    return r;
  }

  /// v <- f(v), log_det += log|det|, recording in `cache` what backward needs.
  void forward_inplace(Matrix& v, RowVector& log_det, Cache& cache) const
      requires(TrainableFlow<Bs>&&...) {
    detail::check_rows("Chain::forward", dim(), v);
    cache.inverse = false;
    each_with_cache(
        cache, [&](const auto& b, auto& c) { detail::train_inplace(b, false, v, log_det, c); });
  }

  /// v <- f^{-1}(v), log_det += log|det|, recording in `cache` what backward needs.
  void inverse_inplace(Matrix& v, RowVector& log_det, Cache& cache) const
      requires(TrainableFlow<Bs>&&...) {
    detail::check_rows("Chain::inverse", dim(), v);
    cache.inverse = true;
    reverse_each_with_cache(
        cache, [&](const auto& b, auto& c) { detail::train_inplace(b, true, v, log_det, c); });
  }

  /// Backpropagates through the elements in the reverse of the order they ran; the log-det is
  /// a sum, so every element receives the same dL/dlogdet.
  Matrix backward(const Cache& cache, const Matrix& grad_value,
                  const RowVector& grad_log_det) requires(TrainableFlow<Bs>&&...) {
    Matrix g = grad_value;
    backward_inplace(cache, g, grad_log_det);
    return g;
  }

  /// g <- dL/d(input) from g = dL/d(value), through every element on the same buffer.
  void backward_inplace(const Cache& cache, Matrix& g,
                        const RowVector& grad_log_det) requires(TrainableFlow<Bs>&&...) {
    auto step = [&](auto& b, const auto& c) { detail::backward_inplace(b, c, g, grad_log_det); };
    if (cache.inverse) {
      visit<false>(*this, cache, step);
    } else {
      visit<true>(*this, cache, step);
    }
  }

  template <class F>
  void for_each_parameter(F&& f, const std::string& prefix = "") requires(TrainableFlow<Bs>&&...) {
    std::size_t i = 0;
    std::apply(
        [&](auto&... b) { (b.for_each_parameter(f, prefix + std::to_string(i++) + "."), ...); },
        m_layers);
  }

  /// for_each_parameter's traversal without the names: f(value, grad).
  template <class F>
  void visit_parameters(F&& f) requires(TrainableFlow<Bs>&&...) {
    std::apply([&](auto&... b) { (detail::visit_parameters(b, f), ...); }, m_layers);
  }

  void zero_grad() requires(TrainableFlow<Bs>&&...) {
    std::apply([](auto&... b) { (b.zero_grad(), ...); }, m_layers);
  }

 private:
  template <class F>
  void reverse_each(F&& f) const {
    reverse_impl(f, std::make_index_sequence<size>{});
  }
  template <class F, std::size_t... I>
  void reverse_impl(F& f, std::index_sequence<I...>) const {
    (f(std::get<size - 1 - I>(m_layers)), ...);
  }

  template <class C, class F>
  void each_with_cache(C& cache, F&& f) const {
    visit<false>(*this, cache, f);
  }
  template <class C, class F>
  void reverse_each_with_cache(C& cache, F&& f) const {
    visit<true>(*this, cache, f);
  }

  // Calls f(layer, layer's cache) for every element, in list order or in reverse.
  template <bool Reverse, class Self, class C, class F>
  static void visit(Self& self, C& cache, F& f) {
    visit_impl<Reverse>(self, cache, f, std::make_index_sequence<size>{});
  }
  template <bool Reverse, class Self, class C, class F, std::size_t... I>
  static void visit_impl(Self& self, C& cache, F& f, std::index_sequence<I...>) {
    (f(std::get < Reverse ? size - 1 - I : I > (self.m_layers),
       std::get < Reverse ? size - 1 - I : I > (cache.layers)),
     ...);
  }

  std::tuple<Bs...> m_layers;
};

template <class... Bs>
Chain(Bs...) -> Chain<Bs...>;

}  // namespace nflow
