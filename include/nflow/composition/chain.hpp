// Composition of a list of bijectors fixed at compile time.
#pragma once

#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

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
    detail::check_rows("Chain::forward", dim(), z);
    Result r{Matrix(z), RowVector::Zero(z.cols())};
    std::apply([&](const auto&... b) { (accumulate(r, b.forward_and_log_det(r.value)), ...); },
               m_layers);
    return r;
  }

  Result inverse_and_log_det(const ConstRef& x) const {
    detail::check_rows("Chain::inverse", dim(), x);
    Result r{Matrix(x), RowVector::Zero(x.cols())};
    reverse_each([&](const auto& b) { accumulate(r, b.inverse_and_log_det(r.value)); });
    return r;
  }

  Matrix forward(const ConstRef& z) const {
    detail::check_rows("Chain::forward", dim(), z);
    Matrix v = z;
    std::apply([&](const auto&... b) { ((v = b.forward(v)), ...); }, m_layers);
    return v;
  }

  Matrix inverse(const ConstRef& x) const {
    detail::check_rows("Chain::inverse", dim(), x);
    Matrix v = x;
    reverse_each([&](const auto& b) { v = b.inverse(v); });
    return v;
  }

  RowVector forward_log_det_jacobian(const ConstRef& z) const {
    return forward_and_log_det(z).log_det;
  }
  RowVector inverse_log_det_jacobian(const ConstRef& x) const {
    return inverse_and_log_det(x).log_det;
  }

  Result forward_and_log_det(const ConstRef& z, Cache& cache) const
      requires(TrainableFlow<Bs>&&...) {
    detail::check_rows("Chain::forward", dim(), z);
    cache.inverse = false;
    Result r{Matrix(z), RowVector::Zero(z.cols())};
    each_with_cache(
        cache, [&](const auto& b, auto& c) { accumulate(r, b.forward_and_log_det(r.value, c)); });
    return r;
  }

  Result inverse_and_log_det(const ConstRef& x, Cache& cache) const
      requires(TrainableFlow<Bs>&&...) {
    detail::check_rows("Chain::inverse", dim(), x);
    cache.inverse = true;
    Result r{Matrix(x), RowVector::Zero(x.cols())};
    reverse_each_with_cache(
        cache, [&](const auto& b, auto& c) { accumulate(r, b.inverse_and_log_det(r.value, c)); });
    return r;
  }

  /// Backpropagates through the elements in the reverse of the order they ran; the log-det is
  /// a sum, so every element receives the same dL/dlogdet.
  Matrix backward(const Cache& cache, const Matrix& grad_value,
                  const RowVector& grad_log_det) requires(TrainableFlow<Bs>&&...) {
    Matrix g = grad_value;
    auto step = [&](auto& b, const auto& c) { g = b.backward(c, g, grad_log_det); };
    if (cache.inverse) {
      visit<false>(*this, cache, step);
    } else {
      visit<true>(*this, cache, step);
    }
    return g;
  }

  template <class F>
  void for_each_parameter(F&& f, const std::string& prefix = "") requires(TrainableFlow<Bs>&&...) {
    std::size_t i = 0;
    std::apply(
        [&](auto&... b) { (b.for_each_parameter(f, prefix + std::to_string(i++) + "."), ...); },
        m_layers);
  }

  void zero_grad() requires(TrainableFlow<Bs>&&...) {
    std::apply([](auto&... b) { (b.zero_grad(), ...); }, m_layers);
  }

 private:
  static void accumulate(Result& r, Result&& step) {
    r.value = std::move(step.value);
    r.log_det += step.log_det;
  }

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
