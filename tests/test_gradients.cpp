// Every vector-Jacobian product against central finite differences, in double, at random
// parameters and inputs: relative error <= 1e-6 on input and parameter gradients.
#include <catch2/catch.hpp>
#include <nflow/nflow.hpp>

#include "gradient_check.hpp"

using gradcheck::Mat;
using gradcheck::Row;

namespace {

const nflow::Activation all_activations[] = {nflow::Activation::relu, nflow::Activation::leaky_relu,
                                             nflow::Activation::tanh, nflow::Activation::elu,
                                             nflow::Activation::silu};

// A coupling with small hidden layers and every parameter random (output layer included).
nflow::AffineCoupling<double> random_coupling(nflow::Index dim, nflow::SoftClamp clamp,
                                              nflow::Activation act, std::mt19937_64& rng) {
  nflow::CouplingOptions o;
  o.hidden = {7, 5};
  o.activation = act;
  o.clamp = clamp;
  o.clamp_bound = 1.5;
  nflow::AffineCoupling<double> c(nflow::Mask::alternating(dim), o, rng);
  gradcheck::randomise_parameters(c, rng, 0.7);
  return c;
}

template <class B>
void check_both_directions(B& b, std::mt19937_64& rng, nflow::Index n = 5) {
  const Mat z = gradcheck::random_matrix(b.dim(), n, rng, 1.5);
  gradcheck::check_bijector_vjp(b, z, false, rng);
  const Mat x = b.forward(z);
  gradcheck::check_bijector_vjp(b, x, true, rng);
}

}  // namespace

TEST_CASE("Mlp backward matches finite differences for every activation", "[gradients]") {
  std::mt19937_64 rng(11);
  for (auto act : all_activations) {
    INFO("activation " << nflow::to_string(act));
    nflow::Mlp<double> net({3, 6, 4, 2}, act, false, rng);
    Mat x = gradcheck::random_matrix(3, 4, rng);
    nflow::Mlp<double>::Cache cache;
    const Mat y = net.forward(x, cache);
    CHECK((y - net(x)).norm() == 0.0);
    const Mat gy = gradcheck::random_matrix(2, 4, rng);
    net.zero_grad();
    const Mat gx = net.backward(cache, gy);
    auto loss = [&]() { return (gy.array() * net(x).array()).sum(); };
    CHECK(gradcheck::relative_error(gx, gradcheck::numerical_gradient(x, loss)) <= 1e-6);
    std::vector<Mat> grads;
    net.for_each_parameter([&](const std::string&, Mat&, Mat& g) { grads.push_back(g); });
    std::size_t k = 0;
    net.for_each_parameter([&](const std::string& name, Mat& p, Mat&) {
      INFO("parameter " << name);
      CHECK(gradcheck::relative_error(grads[k++], gradcheck::numerical_gradient(p, loss)) <= 1e-6);
    });
  }
}

TEST_CASE("AffineCoupling VJPs in both directions, every clamp and activation", "[gradients]") {
  std::mt19937_64 rng(12);
  for (auto clamp : {nflow::SoftClamp::tanh, nflow::SoftClamp::atan, nflow::SoftClamp::none}) {
    for (auto act : all_activations) {
      INFO("clamp " << static_cast<int>(clamp) << ", activation " << nflow::to_string(act));
      auto c = random_coupling(5, clamp, act, rng);
      check_both_directions(c, rng);
    }
  }
}

TEST_CASE("Planar VJPs: analytic forward and implicit-function inverse", "[gradients]") {
  std::mt19937_64 rng(13);
  for (int trial = 0; trial < 4; ++trial) {
    nflow::Planar<double> p(3, rng, 1.0);
    gradcheck::randomise_parameters(p, rng, 1.2);
    INFO("trial " << trial << " u_hat " << p.u_hat().transpose() << " b " << p.b());
    check_both_directions(p, rng);
  }

  // Near the edge of invertibility: w^T u very negative, so w^T u_hat is close to -1.
  nflow::Vector<double> u(2), w(2);
  u << -3.0, -2.0;
  w << 1.0, 0.5;
  nflow::Planar<double> edge(u, w, 0.3);
  check_both_directions(edge, rng);
}

TEST_CASE("Permutation and Inverse<B> VJPs", "[gradients]") {
  std::mt19937_64 rng(14);
  auto perm = nflow::Permutation<double>::random(5, 3);
  check_both_directions(perm, rng);

  nflow::Inverse inv_coupling(
      random_coupling(4, nflow::SoftClamp::tanh, nflow::Activation::tanh, rng));
  check_both_directions(inv_coupling, rng);

  nflow::Planar<double> p(3, rng, 1.0);
  gradcheck::randomise_parameters(p, rng, 1.0);
  nflow::Inverse inv_planar(p);
  check_both_directions(inv_planar, rng);
}

TEST_CASE("Chain and DynamicChain<AnyBijector> VJPs", "[gradients]") {
  std::mt19937_64 rng(15);
  auto coupling = random_coupling(3, nflow::SoftClamp::tanh, nflow::Activation::silu, rng);
  nflow::Planar<double> planar(3, rng, 1.0);
  gradcheck::randomise_parameters(planar, rng, 0.8);
  auto perm = nflow::Permutation<double>::reverse(3);

  nflow::Chain chain(coupling, perm, planar, nflow::Inverse(planar));
  check_both_directions(chain, rng);

  nflow::DynamicChain<nflow::AnyBijector<double>> dynamic(3);
  dynamic.push_back(planar);
  dynamic.push_back(coupling);
  dynamic.push_back(perm);
  dynamic.push_back(nflow::Inverse(coupling));
  check_both_directions(dynamic, rng);
}

TEST_CASE("DiagonalNormal gradients of log_prob and of reparameterised samples", "[gradients]") {
  std::mt19937_64 rng(16);
  nflow::DiagonalNormal<double> base(gradcheck::random_matrix(3, 1, rng).col(0),
                                     gradcheck::random_matrix(3, 1, rng, 0.5).col(0));
  Mat z = gradcheck::random_matrix(3, 6, rng, 2.0);
  const Row gl = gradcheck::random_matrix(1, 6, rng);

  // d/dz and d/dtheta of sum(gl .* log_prob(z)).
  base.zero_grad();
  const Mat gz = base.log_prob_backward(z, gl);
  std::vector<Mat> grads;
  base.for_each_parameter([&](const std::string&, Mat&, Mat& g) { grads.push_back(g); });
  auto loss = [&]() { return (gl.array() * base.log_prob(z).array()).sum(); };
  CHECK(gradcheck::relative_error(gz, gradcheck::numerical_gradient(z, loss)) <= 1e-6);
  std::size_t k = 0;
  base.for_each_parameter([&](const std::string& name, Mat& p, Mat&) {
    INFO("log_prob, parameter " << name);
    CHECK(gradcheck::relative_error(grads[k++], gradcheck::numerical_gradient(p, loss)) <= 1e-6);
  });

  // d/dtheta of sum(gv .* z(eps)) + sum(gl .* log_prob) for z = mean + sigma eps.
  const Mat eps = gradcheck::random_matrix(3, 6, rng, 2.0);
  const Mat gv = gradcheck::random_matrix(3, 6, rng);
  base.zero_grad();
  base.noise_backward(eps, gv, gl);
  grads.clear();
  base.for_each_parameter([&](const std::string&, Mat&, Mat& g) { grads.push_back(g); });
  auto sample_loss = [&]() {
    const auto r = base.transform_noise(eps);
    return (gv.array() * r.value.array()).sum() + (gl.array() * r.log_prob.array()).sum();
  };
  k = 0;
  base.for_each_parameter([&](const std::string& name, Mat& p, Mat&) {
    INFO("transform_noise, parameter " << name);
    CHECK(gradcheck::relative_error(grads[k++], gradcheck::numerical_gradient(p, sample_loss)) <=
          1e-6);
  });
}

namespace {

// A model mixing every trainable piece: couplings, a permutation, planar layers both ways, and
// a trainable diagonal-Gaussian base.
auto mixed_model(std::mt19937_64& rng) {
  auto c1 = random_coupling(2, nflow::SoftClamp::tanh, nflow::Activation::tanh, rng);
  auto c2 = random_coupling(2, nflow::SoftClamp::atan, nflow::Activation::silu, rng);
  nflow::Planar<double> p1(2, rng, 1.0), p2(2, rng, 1.0);
  gradcheck::randomise_parameters(p1, rng, 0.8);
  gradcheck::randomise_parameters(p2, rng, 0.8);
  nflow::DiagonalNormal<double> base(2);
  gradcheck::randomise_parameters(base, rng, 0.3);
  return nflow::TransformedDistribution(
      nflow::Chain(c1, nflow::Permutation<double>::reverse(2), p1, c2, nflow::Inverse(p2)), base);
}

// Checks the gradients accumulated in `model` against central differences of `loss`.
template <class Model>
void check_model_gradient(Model& model, const std::function<double()>& loss) {
  std::vector<Mat> grads;
  model.for_each_parameter([&](const std::string&, Mat&, Mat& g) { grads.push_back(g); });
  std::size_t k = 0;
  model.for_each_parameter([&](const std::string& name, Mat& p, Mat&) {
    const Mat n = gradcheck::numerical_gradient(p, loss);
    const double e = gradcheck::relative_error(grads[k++], n);
    INFO("parameter " << name << " relative error " << e);
    CHECK(e <= 1e-6);
  });
}

}  // namespace

TEST_CASE("whole-model gradient of the mean negative log-likelihood", "[gradients]") {
  std::mt19937_64 rng(17);
  auto model = mixed_model(rng);
  const Mat x = gradcheck::random_matrix(2, 16, rng, 2.0);
  nflow::TrainingCache<decltype(model)> cache;
  model.zero_grad();
  const double nll = nflow::mean_nll_backward(model, x, cache);
  CHECK(std::abs(nll - nflow::mean_nll(model, x)) <= 1e-12 * std::max(1.0, std::abs(nll)));
  check_model_gradient(model, [&]() { return nflow::mean_nll(model, x); });
}

TEST_CASE("whole-model gradient of the reverse-KL objective", "[gradients]") {
  std::mt19937_64 rng(18);
  auto model = mixed_model(rng);
  const Mat eps = gradcheck::random_matrix(2, 16, rng, 2.0);

  // Unnormalised target: log p~(x) = -(x1 - 1)^2 / 2 - x2^4 / 4 + x1 x2 / 3.
  auto target = [](const Mat& x) {
    nflow::TargetEvaluation<double> t;
    const auto x1 = x.row(0).array(), x2 = x.row(1).array();
    t.log_prob = -0.5 * (x1 - 1).square() - 0.25 * x2.pow(4) + x1 * x2 / 3;
    t.grad.resize(2, x.cols());
    t.grad.row(0) = -(x1 - 1) + x2 / 3;
    t.grad.row(1) = -x2.pow(3) + x1 / 3;
    return t;
  };
  const double beta = 0.7;
  nflow::TrainingCache<decltype(model)> cache;
  model.zero_grad();
  const auto r = nflow::reverse_kl_backward(model, eps, target, beta, cache);

  // The loss recomputed through the public API: z = base(eps), x = f(z).
  auto loss = [&]() {
    auto [z, log_pz] = model.base().transform_noise(eps);
    auto [x, log_det] = model.flow().forward_and_log_det(z);
    return ((log_pz - log_det).array() - beta * target(x).log_prob.array()).mean();
  };
  CHECK(std::abs(r.loss - loss()) <= 1e-12 * std::max(1.0, std::abs(r.loss)));
  check_model_gradient(model, loss);
}
