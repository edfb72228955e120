// Every bijector, its Inverse<B>, and chains mixing all three kinds (compile-time Chain and
// run-time DynamicChain<AnyBijector>) pass the property suite of property_helpers.hpp, in float
// and double, in dimensions 2 and 5, at identity, near-degenerate and random parameters.
#include "property_helpers.hpp"

using nflow::Index;
using props::Context;
using props::Regime;

using WorstErrorTable = props::WorstErrorTable;
CATCH_REGISTER_LISTENER(WorstErrorTable)

namespace {

constexpr Index dims[] = {2, 5};

std::uint64_t seed_for(Index dim, Regime regime, int variant = 0) {
  return 1000 * static_cast<std::uint64_t>(dim) + 100 * static_cast<std::uint64_t>(regime) +
         10 * static_cast<std::uint64_t>(variant) + 1;
}

template <class S>
Context context(const std::string& name, Index dim, Regime regime, std::uint64_t seed) {
  return Context{name, props::scalar_name<S>(), regime, dim, seed};
}

// coupling, permutation, planar, inverse planar, coupling: all three kinds, mixed.
template <class S>
auto mixed_chain(Index d, Regime r, std::uint64_t seed) {
  using nflow::Planar;
  return nflow::Chain(props::make_coupling<S>(d, r, seed, 0),
                      props::make_permutation<S>(d, r, seed + 1),
                      props::make_planar<S>(d, r, seed + 2),
                      nflow::Inverse<Planar<S>>(props::make_planar<S>(d, r, seed + 3)),
                      props::make_coupling<S>(d, r, seed + 4, 1));
}

}  // namespace

TEMPLATE_TEST_CASE("AffineCoupling and its Inverse have every bijector property",
                   "[properties][coupling]", float, double) {
  using S = TestType;
  for (Index d : dims) {
    for (Regime r : props::all_regimes) {
      for (int variant : {0, 1}) {
        const std::uint64_t seed = seed_for(d, r, variant);
        const auto c = props::make_coupling<S>(d, r, seed, variant);
        props::check_properties(c, context<S>("AffineCoupling", d, r, seed));
        props::check_properties(nflow::Inverse<nflow::AffineCoupling<S>>(c),
                                context<S>("Inverse<AffineCoupling>", d, r, seed));
      }
    }
  }
  props::check_mostly_sharp("AffineCoupling", props::scalar_name<S>());
  props::check_mostly_sharp("Inverse<AffineCoupling>", props::scalar_name<S>());
}

TEMPLATE_TEST_CASE("Planar and its Inverse have every bijector property", "[properties][planar]",
                   float, double) {
  using S = TestType;
  for (Index d : dims) {
    for (Regime r : props::all_regimes) {
      const std::uint64_t seed = seed_for(d, r);
      const auto p = props::make_planar<S>(d, r, seed);
      INFO("u = " << props::show(p.u()) << ", w = " << props::show(p.w()) << ", b = " << p.b());
      props::check_properties(p, context<S>("Planar", d, r, seed));
      props::check_properties(nflow::Inverse<nflow::Planar<S>>(p),
                              context<S>("Inverse<Planar>", d, r, seed));
    }
  }
  props::check_mostly_sharp("Planar", props::scalar_name<S>());
  props::check_mostly_sharp("Inverse<Planar>", props::scalar_name<S>());
}

TEMPLATE_TEST_CASE("Permutation and its Inverse have every bijector property",
                   "[properties][permutation]", float, double) {
  using S = TestType;
  for (Index d : dims) {
    for (Regime r : props::all_regimes) {
      const std::uint64_t seed = seed_for(d, r);
      const auto p = props::make_permutation<S>(d, r, seed);
      props::check_properties(p, context<S>("Permutation", d, r, seed));
      props::check_properties(nflow::Inverse<nflow::Permutation<S>>(p),
                              context<S>("Inverse<Permutation>", d, r, seed));
    }
  }
  props::check_mostly_sharp("Permutation", props::scalar_name<S>());
  props::check_mostly_sharp("Inverse<Permutation>", props::scalar_name<S>());
}

TEMPLATE_TEST_CASE("a Chain mixing all three bijectors has every property and adds log-dets",
                   "[properties][chain]", float, double) {
  using S = TestType;
  for (Index d : dims) {
    for (Regime r : props::all_regimes) {
      const std::uint64_t seed = seed_for(d, r);
      const auto chain = mixed_chain<S>(d, r, seed);
      const Context ctx = context<S>("Chain<5 mixed>", d, r, seed);
      props::check_properties(chain, ctx);
      props::check_composition(chain, ctx, chain.template get<0>(), chain.template get<1>(),
                               chain.template get<2>(), chain.template get<3>(),
                               chain.template get<4>());

      // The whole chain inverted is a bijector too.
      props::check_properties(nflow::Inverse<decltype(chain)>(chain),
                              context<S>("Inverse<Chain<5 mixed>>", d, r, seed));
    }
  }
  props::check_mostly_sharp("Chain<5 mixed>", props::scalar_name<S>());
  props::check_mostly_sharp("Inverse<Chain<5 mixed>>", props::scalar_name<S>());
}

TEMPLATE_TEST_CASE("a DynamicChain<AnyBijector> mixing all three has every property",
                   "[properties][chain]", float, double) {
  using S = TestType;
  using Any = nflow::AnyBijector<S>;
  for (Index d : dims) {
    for (Regime r : props::all_regimes) {
      const std::uint64_t seed = seed_for(d, r);
      const auto c0 = props::make_coupling<S>(d, r, seed, 0);
      const auto p1 = props::make_permutation<S>(d, r, seed + 1);
      const auto q2 = props::make_planar<S>(d, r, seed + 2);
      const nflow::Inverse<nflow::Planar<S>> q3(props::make_planar<S>(d, r, seed + 3));
      const nflow::Inverse<nflow::AffineCoupling<S>> c4(props::make_coupling<S>(d, r, seed + 4, 1));
      const nflow::Inverse<nflow::Permutation<S>> p5(props::make_permutation<S>(d, r, seed + 5));

      nflow::DynamicChain<Any> chain(d);
      for (Any layer : std::vector<Any>{c0, p1, q2, q3, c4, p5})
        chain.push_back(std::move(layer));
      const Context ctx = context<S>("DynamicChain<AnyBijector, 6>", d, r, seed);
      props::check_properties(chain, ctx);
      props::check_composition(chain, ctx, c0, p1, q2, q3, c4, p5);
    }
  }
  props::check_mostly_sharp("DynamicChain<AnyBijector, 6>", props::scalar_name<S>());
}

TEMPLATE_TEST_CASE("an empty DynamicChain is the identity", "[properties][chain]", float, double) {
  using S = TestType;
  for (Index d : dims) {
    const nflow::DynamicChain<nflow::AnyBijector<S>> chain(d);
    const props::Mat<S> z = props::random_points<S>(d, 5, 3);
    const auto [x, log_det] = chain.forward_and_log_det(z);
    CHECK(props::bitwise_equal(x, z));
    CHECK(log_det.isZero(0));
    props::check_properties(chain, context<S>("DynamicChain<AnyBijector, 0>", d, Regime::identity,
                                              seed_for(d, Regime::identity)));
  }
}
