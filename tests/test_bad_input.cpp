// Bad input: every constructor and call given bad sizes or settings throws
// std::invalid_argument whose message names the class and the parameter (the README's form
// "nflow::Class: what, expected E, got G"), and a non-finite entry in one column of a batch
// changes nothing outside that column and nothing in the parameters.
#include "property_helpers.hpp"

using Catch::Matchers::Contains;
using nflow::Index;
using props::Mat;
using props::Row;

namespace {

std::string str(Index i) {
  return std::to_string(i);
}

/// f() throws std::invalid_argument whose message contains "nflow::<where>" and `what`.
template <class F>
void expect_invalid(F&& f, const std::string& where, const std::string& what) {
  INFO("expecting std::invalid_argument naming \"nflow::" << where << "\" and \"" << what << "\"");
  CHECK_THROWS_AS(f(), std::invalid_argument);
  CHECK_THROWS_WITH(f(), Contains("nflow::" + where) && Contains(what));
}

/// As expect_invalid, and the message also states the expected and the actual dimension.
template <class F>
void expect_wrong_rows(F&& f, const std::string& where, Index expected, Index got) {
  INFO("expecting std::invalid_argument naming \"nflow::" << where << "\", the input rows, "
                                                          << expected << " and " << got);
  CHECK_THROWS_AS(f(), std::invalid_argument);
  CHECK_THROWS_WITH(f(), Contains("nflow::" + where) && Contains("input rows") &&
                             Contains("expected " + str(expected)) && Contains("got " + str(got)));
}

/// Every map of a bijector or chain, given batches of the wrong number of rows (0, D - 1,
/// D + 1, each with 3 columns), throws naming `where` (the class that checks the rows).
template <nflow::Flow B>
void check_wrong_rows(const B& b, const std::string& where) {
  using S = typename B::Scalar;
  const Index d = b.dim();
  for (Index rows : {Index(0), d - 1, d + 1}) {
    if (rows < 0 || rows == d) continue;
    const Mat<S> m = Mat<S>::Constant(rows, 3, S(0.5));
    INFO(where << ": dim " << d << ", batch of " << rows << " rows");
    expect_wrong_rows([&] { return b.forward(m); }, where, d, rows);
    expect_wrong_rows([&] { return b.inverse(m); }, where, d, rows);
    expect_wrong_rows([&] { return b.forward_and_log_det(m); }, where, d, rows);
    expect_wrong_rows([&] { return b.inverse_and_log_det(m); }, where, d, rows);
    expect_wrong_rows([&] { return b.forward_log_det_jacobian(m); }, where, d, rows);
    expect_wrong_rows([&] { return b.inverse_log_det_jacobian(m); }, where, d, rows);
    // The training calls, which record a cache, check too.
    if constexpr (nflow::TrainableFlow<B>) {
      typename B::Cache cache;
      expect_wrong_rows([&] { return b.forward_and_log_det(m, cache); }, where, d, rows);
      expect_wrong_rows([&] { return b.inverse_and_log_det(m, cache); }, where, d, rows);
    }
  }
}

/// log_prob of a model or base distribution, given the wrong number of rows.
template <class D>
void check_wrong_rows_log_prob(const D& dist, const std::string& where) {
  using S = typename D::Scalar;
  const Index d = dist.dim();
  for (Index rows : {Index(0), d - 1, d + 1}) {
    if (rows < 0 || rows == d) continue;
    const Mat<S> m = Mat<S>::Constant(rows, 3, S(0.5));
    INFO(where << ": dim " << d << ", batch of " << rows << " rows");
    expect_wrong_rows([&] { return dist.log_prob(m); }, where, d, rows);
  }
}

// ---------------------------------------------------------------------------------------------
// The objects under test, in 3-D (so that D - 1 = 2 is a plausible wrong dimension).

template <class S>
nflow::AffineCoupling<S> coupling(std::uint64_t seed = 3) {
  return props::make_coupling<S>(3, props::Regime::random, seed, 0);
}

template <class S>
nflow::Planar<S> planar(std::uint64_t seed = 4) {
  return props::make_planar<S>(3, props::Regime::random, seed);
}

template <class S>
nflow::Permutation<S> permutation() {
  return nflow::Permutation<S>::random(3, 5);
}

template <class S>
auto chain() {
  return nflow::Chain(coupling<S>(), permutation<S>(), planar<S>(),
                      nflow::Inverse<nflow::Planar<S>>(planar<S>(6)), coupling<S>(7));
}

template <class S>
nflow::DynamicChain<nflow::AnyBijector<S>> dynamic_chain() {
  nflow::DynamicChain<nflow::AnyBijector<S>> c(3);
  c.push_back(coupling<S>());
  c.push_back(permutation<S>());
  c.push_back(planar<S>());
  c.push_back(nflow::Inverse<nflow::Planar<S>>(planar<S>(6)));
  c.push_back(nflow::Inverse<nflow::AffineCoupling<S>>(coupling<S>(7)));
  return c;
}

template <class S>
nflow::DiagonalNormal<S> diagonal(Index d = 3) {
  nflow::Vector<S> mean = nflow::Vector<S>::LinSpaced(d, S(-0.5), S(0.7));
  nflow::Vector<S> log_scale = nflow::Vector<S>::LinSpaced(d, S(0.2), S(-0.3));
  return nflow::DiagonalNormal<S>(mean, log_scale);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Wrong input dimension.

TEMPLATE_TEST_CASE("every bijector rejects a batch of the wrong dimension, naming itself",
                   "[bad_input][rows]", float, double) {
  using S = TestType;
  check_wrong_rows(coupling<S>(), "AffineCoupling");
  check_wrong_rows(planar<S>(), "Planar");
  check_wrong_rows(permutation<S>(), "Permutation");
  // Inverse<B> runs B's maps, so B's check (which names B) fires: the message names the class
  // the user wrapped.
  check_wrong_rows(nflow::Inverse<nflow::AffineCoupling<S>>(coupling<S>()), "AffineCoupling");
  check_wrong_rows(nflow::Inverse<nflow::Planar<S>>(planar<S>()), "Planar");
  check_wrong_rows(nflow::Inverse<nflow::Permutation<S>>(permutation<S>()), "Permutation");
  // AnyBijector forwards to the held bijector, which names itself.
  check_wrong_rows(nflow::AnyBijector<S>(planar<S>()), "Planar");
  check_wrong_rows(nflow::AnyBijector<S>(coupling<S>()), "AffineCoupling");

  // Planar's inverse with diagnostics.
  const auto p = planar<S>();
  for (Index rows : {Index(0), Index(2), Index(4)}) {
    const Mat<S> m = Mat<S>::Constant(rows, 2, S(0.1));
    expect_wrong_rows([&] { return p.solve_inverse(m); }, "Planar", 3, rows);
  }
}

TEMPLATE_TEST_CASE("every chain rejects a batch of the wrong dimension, naming itself",
                   "[bad_input][rows]", float, double) {
  using S = TestType;
  check_wrong_rows(chain<S>(), "Chain");
  check_wrong_rows(dynamic_chain<S>(), "DynamicChain");
  check_wrong_rows(nflow::DynamicChain<nflow::AnyBijector<S>>(3), "DynamicChain");  // empty
  nflow::DynamicChain<nflow::Planar<S>> planars(3);
  planars.push_back(planar<S>());
  planars.push_back(planar<S>(9));
  check_wrong_rows(planars, "DynamicChain");
  check_wrong_rows(nflow::Inverse<decltype(chain<S>())>(chain<S>()), "Chain");
}

TEMPLATE_TEST_CASE("models and bases reject log_prob of the wrong dimension, naming themselves",
                   "[bad_input][rows]", float, double) {
  using S = TestType;
  check_wrong_rows_log_prob(nflow::TransformedDistribution(chain<S>()), "TransformedDistribution");
  check_wrong_rows_log_prob(nflow::TransformedDistribution(dynamic_chain<S>(), diagonal<S>()),
                            "TransformedDistribution");
  check_wrong_rows_log_prob(nflow::StandardNormal<S>(3), "StandardNormal");
  check_wrong_rows_log_prob(diagonal<S>(), "DiagonalNormal");
  const auto base = diagonal<S>();
  expect_wrong_rows([&] { return base.transform_noise(Mat<S>::Zero(2, 4)); }, "DiagonalNormal", 3,
                    2);
}

// ---------------------------------------------------------------------------------------------
// Bad construction.

TEMPLATE_TEST_CASE("AffineCoupling and Mask reject bad sizes and settings", "[bad_input][ctor]",
                   float, double) {
  using S = TestType;
  using C = nflow::AffineCoupling<S>;
  using nflow::Mask;
  expect_invalid([] { return Mask::alternating(0); }, "Mask::alternating", "dim");
  expect_invalid([] { return Mask::alternating(-2); }, "Mask::alternating", "dim");
  expect_invalid([] { return Mask::half(0); }, "Mask::half", "dim");

  // A mask of size 0 or 1 (a coupling needs one coordinate on each side).
  expect_invalid([] { return C(Mask(std::vector<bool>{})); }, "AffineCoupling", "mask size");
  expect_invalid([] { return C(Mask{true}); }, "AffineCoupling", "mask size");
  expect_invalid([] { return C(Mask{false}); }, "AffineCoupling", "mask size");
  // All pass-through or none: nothing would be transformed, or nothing conditions.
  expect_invalid([] { return C(Mask{true, true, true}); }, "AffineCoupling", "pass-through");
  expect_invalid([] { return C(Mask{false, false}); }, "AffineCoupling", "pass-through");

  // Hidden widths must be positive.
  for (std::vector<Index> hidden :
       {std::vector<Index>{-3}, std::vector<Index>{8, 0}, std::vector<Index>{16, -1, 4}}) {
    nflow::CouplingOptions o;
    o.hidden = hidden;
    INFO("hidden = " << props::show(
             Eigen::Map<const Eigen::Matrix<Index, -1, 1>>(hidden.data(), Index(hidden.size()))));
    expect_invalid([&] { return C(Mask::alternating(4), o); }, "AffineCoupling",
                   "options.hidden width");
  }

  // The clamp bound must be positive (and a number) unless there is no clamp.
  for (double bound : {0.0, -1.0, std::numeric_limits<double>::quiet_NaN()}) {
    nflow::CouplingOptions o;
    o.clamp_bound = bound;
    CAPTURE(bound);
    expect_invalid([&] { return C(Mask::alternating(2), o); }, "AffineCoupling",
                   "options.clamp_bound");
    o.clamp = nflow::SoftClamp::atan;
    expect_invalid([&] { return C(Mask::alternating(2), o); }, "AffineCoupling",
                   "options.clamp_bound");
    o.clamp = nflow::SoftClamp::none;  // documented as ignored then
    CHECK_NOTHROW(C(Mask::alternating(2), o));
  }
  CHECK_NOTHROW(C(Mask{true, false}));
}

TEMPLATE_TEST_CASE("Planar rejects bad sizes and settings", "[bad_input][ctor]", float, double) {
  using S = TestType;
  using P = nflow::Planar<S>;
  using V = nflow::Vector<S>;
  std::mt19937_64 rng(1);
  expect_invalid([] { return P(0); }, "Planar", "dim");
  expect_invalid([] { return P(-1); }, "Planar", "dim");
  expect_invalid([&] { return P(0, rng); }, "Planar", "dim");
  expect_invalid([] { return P(V(), V(), S(0)); }, "Planar", "dim");
  expect_invalid([] { return P(V::Ones(2), V::Ones(3), S(0)); }, "Planar", "size of w");
  expect_invalid([] { return P(V::Ones(3), V::Ones(2), S(0)); }, "Planar", "size of w");
  P p(2);
  expect_invalid([&] { p.set_max_iterations(0); }, "Planar::set_max_iterations", "max_iterations");
  expect_invalid([&] { p.set_max_iterations(-5); }, "Planar::set_max_iterations", "max_iterations");
  CHECK(p.max_iterations() > 0);  // unchanged by the rejected settings
}

TEMPLATE_TEST_CASE("Permutation rejects lists that are not permutations", "[bad_input][ctor]",
                   float, double) {
  using P = nflow::Permutation<TestType>;
  using V = std::vector<Index>;
  expect_invalid([] { return P(V{}); }, "Permutation", "indices.size()");
  expect_invalid([] { return P(V{0, 0, 1}); }, "Permutation", "each value exactly once");
  expect_invalid([] { return P(V{2, 1, 2}); }, "Permutation", "repeated");
  expect_invalid([] { return P(V{0, 3, 1}); }, "Permutation", "indices[1]");
  expect_invalid([] { return P(V{-1, 0}); }, "Permutation", "indices[0]");
  expect_invalid([] { return P(V{1, 2}); }, "Permutation", "indices[1]");  // length 2, value 2
  expect_invalid([] { return P::reverse(0); }, "Permutation::reverse", "dim");
  expect_invalid([] { return P::random(0, 1); }, "Permutation::random", "dim");
  expect_invalid([] { return P::random(-4, 1); }, "Permutation::random", "dim");
  CHECK_NOTHROW(P(V{2, 0, 1}));
}

TEMPLATE_TEST_CASE("chains reject empty or mismatched dimensions", "[bad_input][ctor]", float,
                   double) {
  using S = TestType;
  using Any = nflow::AnyBijector<S>;
  expect_invalid([] { return nflow::DynamicChain<Any>(0); }, "DynamicChain", "dim");
  expect_invalid([] { return nflow::DynamicChain<Any>(-3); }, "DynamicChain", "dim");
  expect_invalid(
      [] { return nflow::DynamicChain<nflow::Planar<S>>(std::vector<nflow::Planar<S>>{}); },
      "DynamicChain", "layers.size()");

  // A permutation of the wrong length, and layers of other dimensions, when push_back'ing.
  nflow::DynamicChain<Any> c(3);
  c.push_back(planar<S>());
  expect_invalid([&] { c.push_back(nflow::Permutation<S>::reverse(2)); }, "DynamicChain::push_back",
                 "dim() of layer 1");
  expect_invalid([&] { c.push_back(nflow::Planar<S>(4)); }, "DynamicChain::push_back",
                 "dim() of layer 1");
  expect_invalid([&] { c.push_back(nflow::AffineCoupling<S>(nflow::Mask::alternating(2))); },
                 "DynamicChain::push_back", "dim() of layer 1");
  CHECK(c.size() == 1);  // the rejected layers were not added
  expect_invalid(
      [] {
        return nflow::DynamicChain<nflow::Planar<S>>(
            std::vector<nflow::Planar<S>>{nflow::Planar<S>(2), nflow::Planar<S>(3)});
      },
      "DynamicChain::push_back", "dim() of layer 1");

  // The compile-time chain checks at construction.
  expect_invalid(
      [] { return nflow::Chain(nflow::Planar<S>(2), nflow::Permutation<S>::reverse(3)); }, "Chain",
      "dim() of element 1");
  expect_invalid(
      [] {
        return nflow::Chain(nflow::Planar<S>(3), nflow::Planar<S>(3),
                            nflow::AffineCoupling<S>(nflow::Mask::alternating(4)));
      },
      "Chain", "dim() of element 2");
}

TEMPLATE_TEST_CASE("bases and models reject bad sizes", "[bad_input][ctor]", float, double) {
  using S = TestType;
  using V = nflow::Vector<S>;
  expect_invalid([] { return nflow::StandardNormal<S>(0); }, "StandardNormal", "dim");
  expect_invalid([] { return nflow::StandardNormal<S>(-1); }, "StandardNormal", "dim");
  expect_invalid([] { return nflow::DiagonalNormal<S>(0); }, "DiagonalNormal", "dim");
  expect_invalid([] { return nflow::DiagonalNormal<S>(V(), V()); }, "DiagonalNormal", "dim");
  expect_invalid([] { return nflow::DiagonalNormal<S>(V::Zero(2), V::Zero(3)); }, "DiagonalNormal",
                 "log_scale size");
  expect_invalid(
      [] { return nflow::TransformedDistribution(planar<S>(), nflow::StandardNormal<S>(2)); },
      "TransformedDistribution", "base dim");
  expect_invalid([] { return nflow::TransformedDistribution(chain<S>(), diagonal<S>(4)); },
                 "TransformedDistribution", "base dim");
}

TEMPLATE_TEST_CASE("sampling a non-positive number of points is rejected, naming the class",
                   "[bad_input][sample]", float, double) {
  using S = TestType;
  std::mt19937_64 rng(1);
  const auto model = nflow::TransformedDistribution(chain<S>());
  const auto dmodel = nflow::TransformedDistribution(chain<S>(), diagonal<S>());
  const nflow::StandardNormal<S> standard(3);
  const auto diag = diagonal<S>();
  for (Index n : {Index(0), Index(-1)}) {
    CAPTURE(n);
    // The class is the model (or the base it delegates to); the parameter is n.
    const auto check = [&](auto&& f) {
      CHECK_THROWS_AS(f(), std::invalid_argument);
      CHECK_THROWS_WITH(
          f(), (Contains("nflow::TransformedDistribution") || Contains("nflow::StandardNormal") ||
                Contains("nflow::DiagonalNormal")) &&
                   Contains("n (number of samples)"));
    };
    check([&] { return model.sample(n, rng); });
    check([&] { return model.sample_and_log_prob(n, rng); });
    check([&] { return dmodel.sample(n, rng); });
    check([&] { return dmodel.sample_and_log_prob(n, rng); });
    check([&] { return standard.sample(n, rng); });
    check([&] { return diag.sample_and_log_prob(n, rng); });
  }
}

// ---------------------------------------------------------------------------------------------
// Non-finite input stays in its column.

namespace {

constexpr Index kCols = 5, kBad = 2;

/// Relative tolerance of a column evaluated in one batch against the same column evaluated in
/// a batch of another width: Eigen picks its product kernel by the batch width (matrix-vector
/// for one column, blocked matrix-matrix for several, with the columns beyond a multiple of 4
/// handled by a remainder loop), and the kernels sum in different orders, so a coupling's
/// conditioner output differs in the last bits (measured ~1e-14 in double, whether or not any
/// column is poisoned). Bit-exactness is therefore asked of batches of the same width only.
/// The property suite's batch tolerance (1e-12 double, 1e-5 float) bounds the rest.
template <class S>
constexpr double kAloneTolerance = props::Tolerance<S>::batch;

/// call(m with entry (row, kBad) set to poison) against three evaluations of the other
/// columns: bit for bit against the clean batch call(m) of the same width, and to
/// kAloneTolerance against the batch of the other columns alone (m without column kBad) and
/// against each column evaluated by itself. Column kBad must not be all finite.
template <class S, class F>
void check_isolated(F&& call, const Mat<S>& m, Index row, S poison, const std::string& where) {
  Mat<S> poisoned = m;
  poisoned(row, kBad) = poison;
  Mat<S> others(m.rows(), m.cols() - 1);
  others << m.leftCols(kBad), m.rightCols(m.cols() - kBad - 1);
  const Mat<S> dirty = props::stacked<S>(call(poisoned)), clean = props::stacked<S>(call(m));
  const Mat<S> rest = props::stacked<S>(call(others));
  INFO(where << ": entry (" << row << ", " << kBad << ") set to " << poison);
  REQUIRE(dirty.cols() == m.cols());
  for (Index j = 0; j < m.cols(); ++j) {
    if (j == kBad) continue;
    const Mat<S> alone = props::stacked<S>(call(Mat<S>(m.col(j))));
    const Mat<S> in_rest = rest.col(j < kBad ? j : j - 1);
    INFO("column " << j << ": in the poisoned batch " << props::show(dirty.col(j))
                   << ", in the clean batch " << props::show(clean.col(j))
                   << ", among the other columns alone " << props::show(in_rest) << ", by itself "
                   << props::show(alone));
    CHECK(props::bitwise_equal(Mat<S>(dirty.col(j)), Mat<S>(clean.col(j))));
    const double err_rest = props::rel_err(dirty.col(j), in_rest);
    const double err = props::rel_err(dirty.col(j), alone);
    CAPTURE(err_rest, err, kAloneTolerance<S>);
    CHECK(err_rest <= kAloneTolerance<S>);
    CHECK(err <= kAloneTolerance<S>);
  }
  INFO("the poisoned column gives " << props::show(dirty.col(kBad)));
  CHECK_FALSE(dirty.col(kBad).allFinite());
}

template <class T>
bool same_parameters(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t k = 0; k < a.size(); ++k)
    if (!props::bitwise_equal(a[k], b[k])) return false;
  return true;
}

/// All six maps of a bijector or chain, at latent points z and data points x = forward(z).
template <nflow::Flow B>
void check_non_finite(const B& b, const std::string& name) {
  using S = typename B::Scalar;
  const auto before = props::parameters(b);
  const Mat<S> z = props::random_points<S>(b.dim(), kCols, 41);
  const Mat<S> x = b.forward(z);
  REQUIRE(x.allFinite());
  for (S poison : props::poisons<S>()) {
    for (Index row : {Index(0), b.dim() - 1}) {
      check_isolated<S>([&](const Mat<S>& m) { return b.forward_and_log_det(m); }, z, row, poison,
                        name + " forward_and_log_det");
      check_isolated<S>([&](const Mat<S>& m) { return b.inverse_and_log_det(m); }, x, row, poison,
                        name + " inverse_and_log_det");
      check_isolated<S>([&](const Mat<S>& m) { return Mat<S>(b.forward(m)); }, z, row, poison,
                        name + " forward");
      check_isolated<S>([&](const Mat<S>& m) { return Mat<S>(b.inverse(m)); }, x, row, poison,
                        name + " inverse");
    }
  }
  // Log-dets alone: a poisoned column's log-det may legitimately stay finite (a permutation's
  // is 0; a saturated tanh gives a finite one), so only the other columns are checked here:
  // bit for bit against the clean batch, to kAloneTolerance against each column by itself.
  for (S poison : props::poisons<S>()) {
    Mat<S> zp = z, xp = x;
    zp(0, kBad) = poison;
    xp(0, kBad) = poison;
    const Row<S> f = b.forward_log_det_jacobian(zp), i = b.inverse_log_det_jacobian(xp);
    const Row<S> f_clean = b.forward_log_det_jacobian(z), i_clean = b.inverse_log_det_jacobian(x);
    for (Index j = 0; j < kCols; ++j) {
      if (j == kBad) continue;
      INFO(name << " *_log_det_jacobian, column " << j << ", poison " << poison);
      CHECK(f(j) == f_clean(j));
      CHECK(i(j) == i_clean(j));
      const double ef = props::scalar_err(f(j), b.forward_log_det_jacobian(Mat<S>(z.col(j)))(0));
      const double ei = props::scalar_err(i(j), b.inverse_log_det_jacobian(Mat<S>(x.col(j)))(0));
      CAPTURE(ef, ei);
      CHECK(ef <= kAloneTolerance<S>);
      CHECK(ei <= kAloneTolerance<S>);
    }
  }
  INFO(name << ": parameters after non-finite input");
  CHECK(same_parameters(props::parameters(b), before));
}

/// log_prob of a model: isolated columns, unchanged parameters.
template <class M>
void check_non_finite_log_prob(const M& model, const std::string& name) {
  using S = typename M::Scalar;
  const auto before = props::parameters(model);
  std::mt19937_64 rng(43);
  const Mat<S> x = model.sample(kCols, rng);
  REQUIRE(x.allFinite());
  for (S poison : props::poisons<S>())
    for (Index row : {Index(0), model.dim() - 1})
      check_isolated<S>([&](const Mat<S>& m) { return Row<S>(model.log_prob(m)); }, x, row, poison,
                        name + " log_prob");
  INFO(name << ": parameters after non-finite input");
  CHECK(same_parameters(props::parameters(model), before));
}

}  // namespace

TEMPLATE_TEST_CASE("a non-finite entry changes only its own column, in every bijector",
                   "[bad_input][non_finite]", float, double) {
  using S = TestType;
  check_non_finite(coupling<S>(), "AffineCoupling");
  check_non_finite(planar<S>(), "Planar");
  check_non_finite(permutation<S>(), "Permutation");
  check_non_finite(nflow::Inverse<nflow::AffineCoupling<S>>(coupling<S>()),
                   "Inverse<AffineCoupling>");
  check_non_finite(nflow::Inverse<nflow::Planar<S>>(planar<S>()), "Inverse<Planar>");
  check_non_finite(nflow::Inverse<nflow::Permutation<S>>(permutation<S>()), "Inverse<Permutation>");
}

TEMPLATE_TEST_CASE("a non-finite entry changes only its own column, in every chain and model",
                   "[bad_input][non_finite]", float, double) {
  using S = TestType;
  check_non_finite(chain<S>(), "Chain<5 mixed>");
  check_non_finite(dynamic_chain<S>(), "DynamicChain<AnyBijector, 5>");
  check_non_finite(nflow::Inverse<decltype(chain<S>())>(chain<S>()), "Inverse<Chain>");
  check_non_finite_log_prob(nflow::TransformedDistribution(chain<S>()),
                            "TransformedDistribution<Chain, StandardNormal>");
  check_non_finite_log_prob(nflow::TransformedDistribution(dynamic_chain<S>(), diagonal<S>()),
                            "TransformedDistribution<DynamicChain, DiagonalNormal>");

  // The model's own parameters (here the diagonal base's) are untouched by the poisoned call
  // also when the call goes through the model's mutable handle.
  auto model = nflow::TransformedDistribution(chain<S>(), diagonal<S>());
  const auto before = props::parameters(model);
  Mat<S> x = Mat<S>::Constant(3, 4, S(0.25));
  x(1, 2) = std::numeric_limits<S>::quiet_NaN();
  const Row<S> lp = model.log_prob(x);
  CHECK(std::isnan(lp(2)));
  CHECK(same_parameters(props::parameters(model), before));
}
