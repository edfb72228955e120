// Numerically careful scalar functions shared by the bijectors.
#pragma once

#include <cmath>
#include <limits>

namespace nflow::detail {

/// log(1 + e^a) without overflow for large a or loss of precision for very negative a.
template <class Scalar>
Scalar softplus(Scalar a) {
  return a > Scalar(0) ? a + std::log1p(std::exp(-a)) : std::log1p(std::exp(a));
}

/// 1 / (1 + e^-a), without overflow.
template <class Scalar>
Scalar sigmoid(Scalar a) {
  if (a >= Scalar(0)) return Scalar(1) / (Scalar(1) + std::exp(-a));
  const Scalar e = std::exp(a);
  return e / (Scalar(1) + e);
}

/// sech^2(a) = 1 - tanh^2(a), accurate also where tanh(a) rounds to +-1.
template <class Scalar>
Scalar sech2(Scalar a) {
  const Scalar e = std::exp(Scalar(-2) * std::abs(a));
  return Scalar(4) * e / ((Scalar(1) + e) * (Scalar(1) + e));
}

/// One unit in the last place of |x|.
template <class Scalar>
Scalar ulp(Scalar x) {
  const Scalar ax = std::abs(x);
  return std::nextafter(ax, std::numeric_limits<Scalar>::infinity()) - ax;
}

}  // namespace nflow::detail
