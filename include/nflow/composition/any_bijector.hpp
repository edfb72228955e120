// Type-erased bijector: one wrapper at the edge for choosing layer types at run time.
#pragma once

#include <any>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "nflow/bijector_base.hpp"
#include "nflow/detail/trainable.hpp"
#include "nflow/flow.hpp"

namespace nflow {

/**
 * \brief AnyBijector<Scalar> holds any nflow::Flow with that Scalar behind one virtual call
 * per batch (never per sample). Copying copies the held bijector.
 *
 * Typical use: DynamicChain<AnyBijector<float>> for a chain whose layer types are chosen at run
 * time. Training calls are forwarded when the held type satisfies TrainableFlow and throw
 * std::invalid_argument otherwise (see trainable()).
 */
template <class ScalarT>
class AnyBijector : public BijectorBase<AnyBijector<ScalarT>, ScalarT> {
 public:
  using Scalar = ScalarT;
  using Base = BijectorBase<AnyBijector<Scalar>, Scalar>;
  using typename Base::ConstRef;
  using typename Base::Matrix;
  using typename Base::Result;
  using typename Base::RowVector;
  using ParameterVisitor = std::function<void(const std::string&, Matrix&, Matrix&)>;

  /// Holds the held bijector's cache; reused across calls without reallocation.
  struct Cache {
    std::any state;
  };

  template <class B>
  requires(!std::is_same_v<std::remove_cvref_t<B>, AnyBijector>)
      AnyBijector(B b)  // NOLINT(google-explicit-constructor): implicit, as std::function.
      : m_impl(std::make_unique<Holder<B>>(std::move(b))) {
    static_assert(Flow<B>,
                  "nflow::AnyBijector: the held type must satisfy nflow::Flow; see "
                  "nflow/flow.hpp for the requirements and an example.");
    static_assert(std::is_same_v<typename B::Scalar, Scalar>,
                  "nflow::AnyBijector<Scalar>: the held bijector must use the same Scalar.");
  }

  AnyBijector(const AnyBijector& other) : m_impl(other.m_impl->clone()) {}
  AnyBijector(AnyBijector&&) noexcept = default;
  AnyBijector& operator=(const AnyBijector& other) {
    if (this != &other) m_impl = other.m_impl->clone();
    return *this;
  }
  AnyBijector& operator=(AnyBijector&&) noexcept = default;

  Index dim() const { return m_impl->dim(); }
  bool trainable() const { return m_impl->trainable(); }

  /// The held bijector if it is a B, nullptr otherwise.
  template <class B>
  B* target() {
    auto* h = dynamic_cast<Holder<B>*>(m_impl.get());
    return h ? &h->b : nullptr;
  }
  template <class B>
  const B* target() const {
    auto* h = dynamic_cast<const Holder<B>*>(m_impl.get());
    return h ? &h->b : nullptr;
  }

  Matrix forward(const ConstRef& z) const { return m_impl->forward(z); }
  Matrix inverse(const ConstRef& x) const { return m_impl->inverse(x); }
  Result forward_and_log_det(const ConstRef& z) const { return m_impl->forward_and_log_det(z); }
  Result inverse_and_log_det(const ConstRef& x) const { return m_impl->inverse_and_log_det(x); }

  Result forward_and_log_det(const ConstRef& z, Cache& cache) const {
    return m_impl->forward_train(z, cache.state, false);
  }
  Result inverse_and_log_det(const ConstRef& x, Cache& cache) const {
    return m_impl->forward_train(x, cache.state, true);
  }
  Matrix backward(const Cache& cache, const Matrix& grad_value, const RowVector& grad_log_det) {
    return m_impl->backward(cache.state, grad_value, grad_log_det);
  }
  template <class F>
  void for_each_parameter(F&& f, const std::string& prefix = "") {
    m_impl->for_each_parameter(ParameterVisitor(std::ref(f)), prefix);
  }
  void zero_grad() { m_impl->zero_grad(); }

 private:
  struct Interface {
    virtual ~Interface() = default;
    virtual std::unique_ptr<Interface> clone() const = 0;
    virtual Index dim() const = 0;
    virtual bool trainable() const = 0;
    virtual Matrix forward(const ConstRef& z) const = 0;
    virtual Matrix inverse(const ConstRef& x) const = 0;
    virtual Result forward_and_log_det(const ConstRef& z) const = 0;
    virtual Result inverse_and_log_det(const ConstRef& x) const = 0;
    virtual Result forward_train(const ConstRef& v, std::any& state, bool inverse) const = 0;
    virtual Matrix backward(const std::any& state, const Matrix& g, const RowVector& gld) = 0;
    virtual void for_each_parameter(const ParameterVisitor& f, const std::string& prefix) = 0;
    virtual void zero_grad() = 0;
  };

  template <class B>
  struct Holder final : Interface {
    explicit Holder(B bij) : b(std::move(bij)) {}
    std::unique_ptr<Interface> clone() const override { return std::make_unique<Holder>(b); }
    Index dim() const override { return b.dim(); }
    bool trainable() const override { return TrainableFlow<B>; }
    Matrix forward(const ConstRef& z) const override { return b.forward(z); }
    Matrix inverse(const ConstRef& x) const override { return b.inverse(x); }
    Result forward_and_log_det(const ConstRef& z) const override {
      return b.forward_and_log_det(z);
    }
    Result inverse_and_log_det(const ConstRef& x) const override {
      return b.inverse_and_log_det(x);
    }

    Result forward_train(const ConstRef& v, std::any& state, bool inverse) const override {
      if constexpr (TrainableFlow<B>) {
        using C = typename B::Cache;
        if (!std::any_cast<C>(&state)) state.template emplace<C>();
        C& c = *std::any_cast<C>(&state);
        return inverse ? b.inverse_and_log_det(v, c) : b.forward_and_log_det(v, c);
      } else {
        not_trainable();
      }
    }

    Matrix backward(const std::any& state, const Matrix& g, const RowVector& gld) override {
      if constexpr (TrainableFlow<B>) {
        const auto* c = std::any_cast<typename B::Cache>(&state);
        if (!c) {
          detail::fail("AnyBijector::backward", "cache",
                       "one filled by a forward or inverse "
                       "call with a cache",
                       "an empty or foreign cache");
        }
        return b.backward(*c, g, gld);
      } else {
        not_trainable();
      }
    }

    void for_each_parameter(const ParameterVisitor& f, const std::string& prefix) override {
      if constexpr (TrainableFlow<B>) b.for_each_parameter(f, prefix);
    }

    void zero_grad() override {
      if constexpr (TrainableFlow<B>) b.zero_grad();
    }

    [[noreturn]] static void not_trainable() {
      detail::fail("AnyBijector", "held bijector for training",
                   "a type satisfying nflow::TrainableFlow", "a bijector without a training API");
    }

    B b;
  };

  std::unique_ptr<Interface> m_impl;
};

static_assert(Flow<AnyBijector<float>> && Flow<AnyBijector<double>>);

}  // namespace nflow
