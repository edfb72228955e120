// Shared vocabulary: the Eigen aliases, the result of a bijector call, and the error helpers
// every class uses for its construction and per-call checks.
#pragma once

#include <Eigen/Core>
#include <concepts>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

/// Assertion for internal invariants on the per-call path. Users may define NFLOW_ASSERT before
/// including nflow to route these to their own handler; by default it is Eigen's eigen_assert.
#ifndef NFLOW_ASSERT
#define NFLOW_ASSERT(cond) eigen_assert(cond)
#endif

namespace nflow {

using Index = Eigen::Index;

/// A batch of points, one sample per column (D x N).
template <class Scalar>
using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;

/// One entry per column of a batch (1 x N): log-determinants and log-densities.
template <class Scalar>
using RowVector = Eigen::Matrix<Scalar, 1, Eigen::Dynamic>;

/// A single vector of parameters (D x 1).
template <class Scalar>
using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

/// A read-only view of a batch that binds to a Matrix or to a block of whole columns
/// without copying.
template <class Scalar>
using ConstMatrixRef = Eigen::Ref<const Matrix<Scalar>>;

/// The result of a map together with the log|det J| of the map that was applied, one entry per
/// column. Structured bindings work: `auto [x, log_det] = b.forward_and_log_det(z);`.
template <class Scalar>
struct ValueAndLogDet {
  Matrix<Scalar> value;
  RowVector<Scalar> log_det;
};

/// A batch of samples with the model's log-density at each of them.
template <class Scalar>
struct ValueAndLogProb {
  Matrix<Scalar> value;
  RowVector<Scalar> log_prob;
};

namespace detail {

/// Builds the message "nflow::Class: what, expected E, got G" used by every
/// std::invalid_argument the library throws.
template <class Expected, class Got>
std::string message(std::string_view where, std::string_view what, const Expected& expected,
                    const Got& got) {
  std::ostringstream os;
  os << "nflow::" << where << ": " << what << ", expected " << expected << ", got " << got;
  return os.str();
}

template <class Expected, class Got>
[[noreturn]] void fail(std::string_view where, std::string_view what, const Expected& expected,
                       const Got& got) {
  throw std::invalid_argument(message(where, what, expected, got));
}

/// Throws unless a batch has `dim` rows: the one per-call check on every public map.
template <class Derived>
void check_rows(std::string_view where, Index dim, const Eigen::MatrixBase<Derived>& x) {
  if (x.rows() != dim) {
    fail(where, "input rows (the dimension; one sample per column)", dim, x.rows());
  }
}

/// Throws unless a size parameter is strictly positive.
inline void check_positive(std::string_view where, std::string_view parameter, Index value) {
  if (value <= 0) fail(where, std::string(parameter) + " must be positive", "> 0", value);
}

}  // namespace detail
}  // namespace nflow
