// The derived API of a bijector, written once. A bijector implements the minimum API
//   dim(), forward_and_log_det(z), inverse_and_log_det(x)
// and inherits forward, inverse and the two log-det-Jacobian calls from BijectorBase.
#pragma once

#include "nflow/detail/types.hpp"

namespace nflow {

/// CRTP base that derives the full nflow::Flow interface from the minimum API of `Derived`.
/// A derived class may still define any of these itself (for example a cheaper `forward` that
/// skips the log-determinant); its definition hides the one here.
template <class Derived, class ScalarT>
class BijectorBase {
 public:
  using Scalar = ScalarT;
  using Matrix = nflow::Matrix<Scalar>;
  using RowVector = nflow::RowVector<Scalar>;
  using ConstRef = ConstMatrixRef<Scalar>;
  using Result = ValueAndLogDet<Scalar>;

  /// x = f(z), the generative direction.
  Matrix forward(const ConstRef& z) const { return derived().forward_and_log_det(z).value; }

  /// z = f^{-1}(x), the normalising direction.
  Matrix inverse(const ConstRef& x) const { return derived().inverse_and_log_det(x).value; }

  /// log|det df/dz| at each column of z.
  RowVector forward_log_det_jacobian(const ConstRef& z) const {
    return derived().forward_and_log_det(z).log_det;
  }

  /// log|det df^{-1}/dx| at each column of x.
  RowVector inverse_log_det_jacobian(const ConstRef& x) const {
    return derived().inverse_and_log_det(x).log_det;
  }

 protected:
  BijectorBase() = default;

 private:
  const Derived& derived() const { return static_cast<const Derived&>(*this); }
};

}  // namespace nflow
