// The Flow concept: what every bijector and every composition of bijectors offers.
#pragma once

#include <concepts>

#include "nflow/bijector_base.hpp"
#include "nflow/detail/types.hpp"

namespace nflow {

/**
 * \brief A bijector: an invertible map of R^D with a tractable log|det J|.
 *
 * **Conventions.**
 * - `forward` is the generative map, latent z to data x; `inverse` maps data to latent.
 * - A batch is a `Matrix<Scalar>` of D rows with **one sample per column**; a single point
 *   is a D x 1 matrix. Log-determinants come back as a `RowVector<Scalar>`, one entry per
 *   column.
 * - Every call returns log|det J| of the map it actually applied: `forward_and_log_det(z)`
 *   returns log|det df/dz|, and `inverse_and_log_det(x)` returns log|det df^{-1}/dx|, so
 *   `inverse_and_log_det(forward(z)).log_det == -forward_and_log_det(z).log_det`.
 * - A batch with the wrong number of rows throws `std::invalid_argument`. A non-finite entry
 *   in one column gives a non-finite result in that column only.
 *
 * **Requirements on a type `B`.**
 * - `B::Scalar` is `float` or `double` (any floating-point type).
 * - `b.dim()` returns D, the dimension of both spaces.
 * - `b.forward(z)` and `b.inverse(x)` return the mapped batch.
 * - `b.forward_and_log_det(z)` and `b.inverse_and_log_det(x)` return a struct with members
 *   `value` (the mapped batch) and `log_det` (one log-determinant per column), in that order,
 *   so that structured bindings work.
 * - `b.forward_log_det_jacobian(z)` and `b.inverse_log_det_jacobian(x)` return the
 *   log-determinants alone.
 *
 * Deriving from `BijectorBase<B, Scalar>` supplies the last four from the two
 * `*_and_log_det` calls. A complete user-defined bijector (it is compiled by the tests):
 *
 * \code
 * // x = exp(a) * z + c, coordinate-wise, with fixed a and c.
 * template <class Scalar>
 * class FixedAffine : public nflow::BijectorBase<FixedAffine<Scalar>, Scalar> {
 *  public:
 *   using Base = nflow::BijectorBase<FixedAffine<Scalar>, Scalar>;
 *   using typename Base::ConstRef;
 *   using typename Base::Result;
 *
 *   FixedAffine(nflow::Vector<Scalar> log_scale, nflow::Vector<Scalar> shift)
 *       : m_log_scale(std::move(log_scale)), m_shift(std::move(shift)) {}
 *
 *   nflow::Index dim() const { return m_shift.size(); }
 *
 *   Result forward_and_log_det(const ConstRef& z) const {
 *     nflow::detail::check_rows("FixedAffine::forward", dim(), z);
 *     Result r;
 *     r.value = (z.array().colwise() * m_log_scale.array().exp()).colwise() +
 *               m_shift.array();
 *     r.log_det.setConstant(z.cols(), m_log_scale.sum());
 *     return r;
 *   }
 *
 *   Result inverse_and_log_det(const ConstRef& x) const {
 *     nflow::detail::check_rows("FixedAffine::inverse", dim(), x);
 *     Result r;
 *     r.value = (x.array().colwise() - m_shift.array()).colwise() *
 *               (-m_log_scale.array()).exp();
 *     r.log_det.setConstant(x.cols(), -m_log_scale.sum());
 *     return r;
 *   }
 *
 *  private:
 *   nflow::Vector<Scalar> m_log_scale, m_shift;
 * };
 * static_assert(nflow::Flow<FixedAffine<double>>);
 * \endcode
 */
template <class B>
concept Flow = std::floating_point<typename B::Scalar> &&
    requires(const B& b, const Matrix<typename B::Scalar>& m) {
  { b.dim() } -> std::convertible_to<Index>;
  { b.forward(m) } -> std::convertible_to<Matrix<typename B::Scalar>>;
  { b.inverse(m) } -> std::convertible_to<Matrix<typename B::Scalar>>;
  { b.forward_and_log_det(m).value } -> std::convertible_to<Matrix<typename B::Scalar>>;
  { b.forward_and_log_det(m).log_det } -> std::convertible_to<RowVector<typename B::Scalar>>;
  { b.inverse_and_log_det(m).value } -> std::convertible_to<Matrix<typename B::Scalar>>;
  { b.inverse_and_log_det(m).log_det } -> std::convertible_to<RowVector<typename B::Scalar>>;
  { b.forward_log_det_jacobian(m) } -> std::convertible_to<RowVector<typename B::Scalar>>;
  { b.inverse_log_det_jacobian(m) } -> std::convertible_to<RowVector<typename B::Scalar>>;
};

}  // namespace nflow
