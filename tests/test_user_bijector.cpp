// The user-defined bijector shown in the Flow concept's documentation (include/nflow/flow.hpp),
// x = exp(a) * z + c coordinate-wise, written against the same interface (BijectorBase,
// ConstRef, Result, detail::check_rows): it must satisfy nflow::Flow, round-trip, give the
// documented log-dets, and compose with the library's chains, wrappers and models.
#include "property_helpers.hpp"

using Catch::Matchers::Contains;
using nflow::Index;
using props::Mat;
using props::Row;

namespace {

// x = exp(a) * z + c, coordinate-wise, with fixed a and c: the documentation's FixedAffine.
template <class Scalar>
class FixedAffine : public nflow::BijectorBase<FixedAffine<Scalar>, Scalar> {
 public:
  using Base = nflow::BijectorBase<FixedAffine<Scalar>, Scalar>;
  using typename Base::ConstRef;
  using typename Base::Result;

  FixedAffine(nflow::Vector<Scalar> log_scale, nflow::Vector<Scalar> shift)
      : m_log_scale(std::move(log_scale)), m_shift(std::move(shift)) {}

  nflow::Index dim() const { return m_shift.size(); }

  Result forward_and_log_det(const ConstRef& z) const {
    nflow::detail::check_rows("FixedAffine::forward", dim(), z);
    Result r;
    r.value = (z.array().colwise() * m_log_scale.array().exp()).colwise() + m_shift.array();
    r.log_det.setConstant(z.cols(), m_log_scale.sum());
    return r;
  }

  Result inverse_and_log_det(const ConstRef& x) const {
    nflow::detail::check_rows("FixedAffine::inverse", dim(), x);
    Result r;
    r.value = (x.array().colwise() - m_shift.array()).colwise() * (-m_log_scale.array()).exp();
    r.log_det.setConstant(x.cols(), -m_log_scale.sum());
    return r;
  }

 private:
  nflow::Vector<Scalar> m_log_scale, m_shift;
};

static_assert(nflow::Flow<FixedAffine<double>>);
static_assert(nflow::Flow<FixedAffine<float>>);
// It has neither the in-place nor the training interface; compositions fall back.
static_assert(!nflow::InPlaceFlow<FixedAffine<double>>);
static_assert(!nflow::TrainableFlow<FixedAffine<double>>);

// The concept discriminates: a type without an inverse, or with a non-floating Scalar, fails.
struct NoInverse {
  using Scalar = double;
  Index dim() const { return 1; }
  nflow::Matrix<double> forward(const nflow::Matrix<double>& z) const { return z; }
};
static_assert(!nflow::Flow<NoInverse>);
struct IntScalar : FixedAffine<double> {
  using Scalar = int;
};
static_assert(!nflow::Flow<IntScalar>);

template <class S>
FixedAffine<S> example(Index d) {
  return FixedAffine<S>(nflow::Vector<S>::LinSpaced(d, S(-0.6), S(0.9)),
                        nflow::Vector<S>::LinSpaced(d, S(1.5), S(-2.0)));
}

}  // namespace

TEMPLATE_TEST_CASE("the documented user-defined bijector is a Flow that round-trips",
                   "[user_bijector]", float, double) {
  using S = TestType;
  constexpr Index d = 3;
  const FixedAffine<S> b = example<S>(d);
  const nflow::Vector<S> a = nflow::Vector<S>::LinSpaced(d, S(-0.6), S(0.9));
  const nflow::Vector<S> c = nflow::Vector<S>::LinSpaced(d, S(1.5), S(-2.0));
  const Mat<S> z = props::random_points<S>(d, 8, 3);
  const auto [x, ld] = b.forward_and_log_det(z);
  const auto [z_back, ld_back] = b.inverse_and_log_det(x);

  // Exact tolerances: each entry is a couple of roundings of O(|x|) numbers with exp(|a|) <= 2.5.
  const double eps = std::numeric_limits<S>::epsilon();
  for (Index j = 0; j < z.cols(); ++j) {
    INFO("z = " << props::show(z.col(j)) << ", x = " << props::show(x.col(j)));
    const Mat<S> expected = (z.col(j).array() * a.array().exp() + c.array()).matrix();
    const double err_x = props::rel_err(x.col(j), expected);
    const double err_z = props::rel_err(z_back.col(j), z.col(j));
    CAPTURE(err_x, err_z);
    CHECK(err_x <= 8 * eps);
    CHECK(err_z <= 16 * eps);
    // log|det| = sum a forward, minus that inverse, in every column.
    CAPTURE(ld(j), ld_back(j), a.sum());
    CHECK(ld(j) == a.sum());
    CHECK(ld_back(j) == -a.sum());
  }
  // The calls BijectorBase derives agree with the two the example wrote.
  CHECK(props::bitwise_equal(Mat<S>(b.forward(z)), x));
  CHECK(props::bitwise_equal(Mat<S>(b.inverse(x)), z_back));
  CHECK(props::bitwise_equal(Row<S>(b.forward_log_det_jacobian(z)), ld));
  CHECK(props::bitwise_equal(Row<S>(b.inverse_log_det_jacobian(x)), ld_back));

  // Its own dimension check, in the library's message form.
  const Mat<S> wrong = Mat<S>::Zero(2, 4);
  CHECK_THROWS_AS(b.forward(wrong), std::invalid_argument);
  CHECK_THROWS_WITH(b.forward(wrong), Contains("nflow::FixedAffine::forward") &&
                                          Contains("expected 3") && Contains("got 2"));
  CHECK_THROWS_WITH(b.inverse(wrong), Contains("nflow::FixedAffine::inverse"));

  // The library's own property suite passes on it.
  props::check_properties(
      b, props::Context{"FixedAffine", props::scalar_name<S>(), props::Regime::random, d, 17});
}

TEMPLATE_TEST_CASE("the documented user-defined bijector composes with the library",
                   "[user_bijector]", float, double) {
  using S = TestType;
  constexpr Index d = 3;
  const double eps = std::numeric_limits<S>::epsilon();
  const FixedAffine<S> b = example<S>(d);
  const auto planar = props::make_planar<S>(d, props::Regime::random, 5);

  // In a Chain, an Inverse, a DynamicChain of AnyBijector: the composition's log-det is the
  // sum, and the round trip holds (tolerances as the property suite's: 1e-10 / 1e-4).
  const nflow::Chain chain(b, planar, nflow::Inverse<FixedAffine<S>>(b));
  nflow::DynamicChain<nflow::AnyBijector<S>> dyn(d);
  dyn.push_back(b);
  dyn.push_back(planar);
  dyn.push_back(nflow::Inverse<FixedAffine<S>>(b));
  const Mat<S> z = props::random_points<S>(d, 6, 8);
  const auto fc = chain.forward_and_log_det(z);
  const auto fd = dyn.forward_and_log_det(z);
  const Row<S> planar_ld = planar.forward_log_det_jacobian(b.forward(z));
  for (Index j = 0; j < z.cols(); ++j) {
    INFO("z = " << props::show(z.col(j)));
    // sum a - sum a + planar's: the affine parts cancel to rounding of |sum a| ~ 0.45.
    const double err_ld = std::abs(double(fc.log_det(j)) - double(planar_ld(j)));
    const double err_dyn = props::rel_err(fd.value.col(j), fc.value.col(j));
    CAPTURE(err_ld, err_dyn);
    CHECK(err_ld <= 8 * eps);
    CHECK(err_dyn <= 4 * eps);
  }
  props::check_properties(
      chain, props::Context{"Chain<FixedAffine, Planar, Inverse>", props::scalar_name<S>(),
                            props::Regime::random, d, 19});

  // As a model on a standard normal base it is N(c, diag(exp(2a))): log_prob must equal the
  // diagonal normal's, to rounding of |log p| (a few eps relative).
  const nflow::TransformedDistribution model(b);
  const nflow::DiagonalNormal<S> gauss(nflow::Vector<S>::LinSpaced(d, S(1.5), S(-2.0)),
                                       nflow::Vector<S>::LinSpaced(d, S(-0.6), S(0.9)));
  std::mt19937_64 rng(4);
  const auto [x, lp] = model.sample_and_log_prob(200, rng);
  const Row<S> lp_model = model.log_prob(x), lp_gauss = gauss.log_prob(x);
  for (Index j = 0; j < x.cols(); ++j) {
    const double err = props::scalar_err(lp_model(j), lp_gauss(j));
    const double err_s = props::scalar_err(lp(j), lp_gauss(j));
    INFO("x = " << props::show(x.col(j)) << ", log_prob " << lp_model(j) << ", Gaussian "
                << lp_gauss(j));
    CAPTURE(err, err_s);
    CHECK(err <= 16 * eps);
    CHECK(err_s <= 16 * eps);
  }
}
