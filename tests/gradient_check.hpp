// Central-difference checks of vector-Jacobian products: the analytic gradient of a random
// linear functional of a map's outputs against numerical differentiation, for the map's input
// and for every parameter.
#pragma once

#include <catch2/catch.hpp>
#include <functional>
#include <nflow/nflow.hpp>
#include <random>
#include <string>
#include <vector>

namespace gradcheck {

using Mat = nflow::Matrix<double>;
using Row = nflow::RowVector<double>;

/// Entries uniform in [-1, 1] from a seeded generator.
inline Mat random_matrix(nflow::Index rows, nflow::Index cols, std::mt19937_64& rng,
                         double scale = 1.0) {
  std::uniform_real_distribution<double> u(-scale, scale);
  Mat m(rows, cols);
  for (nflow::Index i = 0; i < m.size(); ++i)
    m.data()[i] = u(rng);
  return m;
}

/// ||a - n|| / max(||n||, floor): the norm-wise relative error of an analytic gradient a
/// against a numerical one n.
inline double relative_error(const Mat& a, const Mat& n, double floor = 1e-8) {
  return (a - n).norm() / std::max(n.norm(), floor);
}

/// Central difference of a scalar function with respect to every entry of `m` (in place;
/// restored afterwards). Step h * max(1, |m_ij|).
inline Mat numerical_gradient(Mat& m, const std::function<double()>& f, double h = 1e-5) {
  Mat g(m.rows(), m.cols());
  for (nflow::Index i = 0; i < m.size(); ++i) {
    const double keep = m.data()[i];
    const double step = h * std::max(1.0, std::abs(keep));
    m.data()[i] = keep + step;
    const double up = f();
    m.data()[i] = keep - step;
    const double down = f();
    m.data()[i] = keep;
    g.data()[i] = (up - down) / (2 * step);
  }
  return g;
}

/// Randomises every parameter of a trainable object (entries uniform in [-scale, scale]).
template <class T>
void randomise_parameters(T& t, std::mt19937_64& rng, double scale = 0.5) {
  t.for_each_parameter(
      [&](const std::string&, Mat& p, Mat&) { p = random_matrix(p.rows(), p.cols(), rng, scale); });
}

/**
 * Checks B's backward() in one direction: L = sum(gv .* value) + sum(gld .* log_det) at
 * `input`, differentiated analytically and by central differences with respect to the input
 * and to every parameter. Requires relative error <= tol for each.
 */
template <class B>
void check_bijector_vjp(B& b, Mat input, bool inverse, std::mt19937_64& rng, double tol = 1e-6) {
  auto run = [&](const Mat& x, typename B::Cache& c) {
    return inverse ? b.inverse_and_log_det(x, c) : b.forward_and_log_det(x, c);
  };

  // Analytic: one recorded call, one backward pass.
  typename B::Cache cache;
  const auto out = run(input, cache);
  const Mat gv = random_matrix(out.value.rows(), out.value.cols(), rng);
  const Row gld = random_matrix(1, out.log_det.cols(), rng);
  b.zero_grad();
  const Mat g_input = b.backward(cache, gv, gld);
  std::vector<Mat> g_params;
  b.for_each_parameter([&](const std::string&, Mat&, Mat& g) { g_params.push_back(g); });

  // Numerical: the same functional, re-evaluated.
  auto loss = [&]() {
    typename B::Cache c;
    const auto r = run(input, c);
    return (gv.array() * r.value.array()).sum() + (gld.array() * r.log_det.array()).sum();
  };
  const Mat n_input = numerical_gradient(input, loss);
  const double e_input = relative_error(g_input, n_input);
  INFO("direction: " << (inverse ? "inverse" : "forward"));
  INFO("input gradient analytic:\n" << g_input << "\nnumerical:\n" << n_input);
  CHECK(e_input <= tol);

  std::size_t k = 0;
  b.for_each_parameter([&](const std::string& name, Mat& p, Mat&) {
    const Mat n = numerical_gradient(p, loss);
    const double e = relative_error(g_params[k], n);
    INFO("parameter " << name << " relative error " << e);
    CHECK(e <= tol);
    ++k;
  });
}

}  // namespace gradcheck
