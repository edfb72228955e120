// Variational inference with planar flows on the four 2-D energies of Rezende & Mohamed (2015),
// "Variational Inference with Normalizing Flows", arXiv:1505.05770, Table 1 and Fig. 3.
//
// Each target is p~(z) = exp(-U(z)). U1 is normalisable as printed; U2, U3 and U4 are not (their
// mass escapes along z1), so they are multiplied here by the weak envelope
// exp(-(z1^4 + z2^4) / (2 * 8^4)), i.e. (z1^4 + z2^4) / 8192 is added to U.
//
// A flow q = DynamicChain<Planar> of length K on a trainable diagonal Gaussian is fitted by
// minimising KL(q || p) with the target annealed as p~^beta, beta rising linearly from 0.01 to 1
// over the first half of the steps, with Adam at learning rate 3e-2 decaying to 2 % of it on a
// cosine. Reverse KL is mode-seeking and a planar chain has many poor local optima (a band cut
// into pieces, a branch of U3 or U4 left out), into which a fit falls depending on its start: a
// short flow is cheap, so it is fitted three times from different starting parameters and the
// fit with the best ELBO on 10,000 samples is kept; the long flow gets more steps instead.
// The ELBO E_q[log p~ - log q] = log Z - KL(q || p) of the kept fit is then estimated on 100,000
// fresh samples; log Z comes from 2-D quadrature, so KL = log Z - ELBO is printed too. The
// program writes a picture like the paper's Fig. 3: per energy, the true density and the flow's
// density for each K.
//
// Scalar is double: 32 planar layers compose 32 tanh warps and sum 32 log-determinants, and the
// root finding of log_prob on the picture's grid is exact to a few ulps in double.
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <numbers>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "args.hpp"
#include "image.hpp"
#include "nflow/nflow.hpp"

namespace {

using Scalar = double;
using Mat = nflow::Matrix<Scalar>;
using Flow = nflow::DynamicChain<nflow::Planar<Scalar>>;
using Model = nflow::TransformedDistribution<Flow, nflow::DiagonalNormal<Scalar>>;

// ---------------------------------------------------------------------------------------------
// The energies and their gradients.

/// U(z) and its gradient dU/dz at one point.
struct EnergyValue {
  double u, g1, g2;
};

/// log(e^a + e^b) without overflow, with the weight e^a / (e^a + e^b) of the first term.
double log_sum_exp(double a, double b, double& weight_a) {
  const double m = std::max(a, b);
  const double ea = std::exp(a - m), eb = std::exp(b - m);
  weight_a = ea / (ea + eb);
  return m + std::log(ea + eb);
}

constexpr double sq(double x) {
  return x * x;
}

// w1(z) = sin(2 pi z1 / 4), with its derivative in z1.
double w1(double z1) {
  return std::sin(std::numbers::pi * z1 / 2);
}
double dw1(double z1) {
  return std::numbers::pi / 2 * std::cos(std::numbers::pi * z1 / 2);
}

// U1 = ((|z| - 2) / 0.4)^2 / 2 - log(exp(-((z1 - 2) / 0.6)^2 / 2) + exp(-((z1 + 2) / 0.6)^2 / 2)).
EnergyValue u1(double z1, double z2) {
  // Ring term; its gradient (r - 2) / 0.16 * z / r, with r kept away from 0.
  const double r = std::max(std::hypot(z1, z2), 1e-300);
  const double ring = (r - 2) / 0.16;

  // Two-mode term by log-sum-exp; d/dz1 = (p_a (z1 - 2) + p_b (z1 + 2)) / 0.36.
  double pa = 0;
  const double lse = log_sum_exp(-0.5 * sq((z1 - 2) / 0.6), -0.5 * sq((z1 + 2) / 0.6), pa);
  const double modes = (pa * (z1 - 2) + (1 - pa) * (z1 + 2)) / 0.36;
  return {0.5 * sq((r - 2) / 0.4) - lse, ring * z1 / r + modes, ring * z2 / r};
}

// U2 = ((z2 - w1) / 0.4)^2 / 2.
EnergyValue u2(double z1, double z2) {
  const double d = z2 - w1(z1);
  return {0.5 * sq(d / 0.4), -d / 0.16 * dw1(z1), d / 0.16};
}

// U = -log(exp(-(d_a / s_a)^2 / 2) + exp(-(d_b / s_b)^2 / 2)), where d_a = z2 - w1 and
// d_b = z2 - w1 + v; dv is dv/dz1. Shared by U3 (v = w2) and U4 (v = w3).
EnergyValue two_bands(double z1, double z2, double s_a, double s_b, double v, double dv) {
  const double da = z2 - w1(z1), db = da + v;
  double pa = 0;
  const double lse = log_sum_exp(-0.5 * sq(da / s_a), -0.5 * sq(db / s_b), pa);

  // dU/dz = p_a d_a / s_a^2 * d(d_a)/dz + p_b d_b / s_b^2 * d(d_b)/dz.
  const double ga = pa * da / sq(s_a), gb = (1 - pa) * db / sq(s_b);
  const double dw = dw1(z1);
  return {-lse, ga * -dw + gb * (dv - dw), ga + gb};
}

// U3 with w2 = 3 exp(-((z1 - 1) / 0.6)^2 / 2).
EnergyValue u3(double z1, double z2) {
  const double w2 = 3 * std::exp(-0.5 * sq((z1 - 1) / 0.6));
  return two_bands(z1, z2, 0.35, 0.35, w2, -w2 * (z1 - 1) / 0.36);
}

// U4 with w3 = 3 sigmoid((z1 - 1) / 0.3).
EnergyValue u4(double z1, double z2) {
  const double s = 1 / (1 + std::exp(-(z1 - 1) / 0.3));
  return two_bands(z1, z2, 0.4, 0.35, 3 * s, 3 * s * (1 - s) / 0.3);
}

/// The energy with the given number (1-4); U2-U4 include the envelope (z1^4 + z2^4) / 8192.
EnergyValue energy(int id, double z1, double z2) {
  if (id == 1) return u1(z1, z2);
  EnergyValue e = id == 2 ? u2(z1, z2) : id == 3 ? u3(z1, z2) : u4(z1, z2);
  constexpr double c = 2 * 8.0 * 8.0 * 8.0 * 8.0;
  e.u += (sq(sq(z1)) + sq(sq(z2))) / c;
  e.g1 += 4 * z1 * sq(z1) / c;
  e.g2 += 4 * z2 * sq(z2) / c;
  return e;
}

/// The target of energy `id` for nflow: log p~ = -U and its gradient -dU/dz, per column.
auto make_target(int id) {
  return [id](const Mat& x) {
    nflow::TargetEvaluation<Scalar> t{nflow::RowVector<Scalar>(x.cols()), Mat(2, x.cols())};
    for (nflow::Index j = 0; j < x.cols(); ++j) {
      const EnergyValue e = energy(id, double(x(0, j)), double(x(1, j)));
      t.log_prob(j) = Scalar(-e.u);
      t.grad(0, j) = Scalar(-e.g1);
      t.grad(1, j) = Scalar(-e.g2);
    }
    return t;
  };
}

/// Largest relative error of the analytic gradients against central differences, over random
/// points in [-4, 4]^2 and all four energies.
double gradient_check_error(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> uniform(-4, 4);
  const double h = 1e-6;
  double worst = 0;
  for (int id = 1; id <= 4; ++id) {
    for (int i = 0; i < 200; ++i) {
      const double z1 = uniform(rng), z2 = uniform(rng);
      const EnergyValue e = energy(id, z1, z2);

      // (U(z + h e_k) - U(z - h e_k)) / 2h for k = 1, 2.
      const double n1 = (energy(id, z1 + h, z2).u - energy(id, z1 - h, z2).u) / (2 * h);
      const double n2 = (energy(id, z1, z2 + h).u - energy(id, z1, z2 - h).u) / (2 * h);
      const double scale = 1 + std::abs(e.g1) + std::abs(e.g2);
      worst = std::max({worst, std::abs(n1 - e.g1) / scale, std::abs(n2 - e.g2) / scale});
    }
  }
  return worst;
}

/// log Z = log of the integral of exp(-U) over the plane, by the midpoint rule with spacing h on
/// [-24, 24] x [-12, 12] (exp(-U) is below e^-40 outside, and the narrowest feature has width
/// 0.35, so the rule's error is far below the Monte Carlo error of the ELBO).
double log_partition(int id, double h = 0.02) {
  const int n1 = static_cast<int>(std::lround(48 / h)), n2 = static_cast<int>(std::lround(24 / h));

  // log sum exp(-U) with a running maximum, then log Z = that + log(h^2).
  double m = -std::numeric_limits<double>::infinity(), s = 0;
  for (int i = 0; i < n1; ++i) {
    const double z1 = -24 + (i + 0.5) * h;
    for (int k = 0; k < n2; ++k) {
      const double v = -energy(id, z1, -12 + (k + 0.5) * h).u;
      if (v > m) {
        s = s * std::exp(m - v) + 1;
        m = v;
      } else {
        s += std::exp(v - m);
      }
    }
  }
  return m + std::log(s) + 2 * std::log(h);
}

// ---------------------------------------------------------------------------------------------
// Command line.

struct Options {
  std::optional<long> steps;    // overrides the per-length default
  std::optional<int> restarts;  // likewise
  std::uint64_t seed = 1;
  std::string out = "energy.png";
  std::vector<int> energies{1, 2, 3, 4};
  std::vector<int> lengths{2, 8, 32};
};

const char* const usage =
    "usage: energy [--steps N] [--restarts R] [--seed S] [--out PATH] [--energies LIST]\n"
    "              [--lengths LIST]\n"
    "  --steps N         training steps of every fit (default: 4000, 16000, 32000 for K <= 2,\n"
    "                    <= 8, larger)\n"
    "  --restarts R      fits from different starting parameters per energy and K, of which the\n"
    "                    one with the best ELBO is kept (default: 3 for K <= 8, else 1)\n"
    "  --seed S          seed of the initial parameters and the noise (1)\n"
    "  --out PATH        where to write the picture (energy.png)\n"
    "  --energies LIST   which of U1-U4, e.g. 1,3 (all)\n"
    "  --lengths LIST    flow lengths K, e.g. 2,8,32 (the default)\n";

Options parse_options(int argc, char** argv) {
  Options o;
  examples::for_each_flag(argc, argv, usage, [&](const std::string& a, const std::string& v) {
    if (a == "--steps")
      o.steps = static_cast<long>(examples::parse_positive(a, v));
    else if (a == "--restarts")
      o.restarts = static_cast<int>(examples::parse_positive(a, v));
    else if (a == "--seed")
      o.seed = examples::parse_count(a, v);
    else if (a == "--out")
      o.out = v;
    else if (a == "--energies")
      o.energies = examples::parse_list(a, v);
    else if (a == "--lengths")
      o.lengths = examples::parse_list(a, v);
    else
      throw std::invalid_argument("unknown option " + a + " (see --help)");
  });
  for (int id : o.energies)
    if (id < 1 || id > 4) throw std::invalid_argument("--energies: numbers 1 to 4");
  for (int k : o.lengths)
    if (k < 1) throw std::invalid_argument("--lengths: positive numbers");
  return o;
}

// ---------------------------------------------------------------------------------------------
// Fitting.

/// Steps of a fit of length K: deep planar chains learn slowly and get more.
long default_steps(int k) {
  return k <= 2 ? 4000 : k <= 8 ? 16000 : 32000;
}

/// Fits per energy and length K, of which the best is kept: short chains are cheap to refit.
int default_restarts(int k) {
  return k <= 8 ? 3 : 1;
}

/// A chain of K planar layers with small random parameters on a standard diagonal Gaussian.
Model make_model(int k, std::mt19937_64& rng) {
  Flow flow(2);
  for (int i = 0; i < k; ++i)
    flow.push_back(nflow::Planar<Scalar>(2, rng, 0.1));
  return Model(std::move(flow), nflow::DiagonalNormal<Scalar>(2));
}

struct FitResult {
  int energy, length;
  long steps;
  int restarts;
  nflow::Estimate elbo;
  double seconds;
  std::optional<Model> model;
};

/// Seed of one fit, so that subsets of the runs reproduce the same numbers.
std::uint64_t fit_seed(std::uint64_t seed, int id, int k) {
  return seed * 1000003u + static_cast<std::uint64_t>(id) * 1009u + static_cast<std::uint64_t>(k);
}

/// Fits energy `id` with K planar layers, printing progress, from `restarts` different starting
/// points; keeps the fit with the best ELBO on 10,000 samples and estimates its ELBO on 100,000
/// fresh ones.
FitResult fit(int id, int k, const Options& o) {
  std::mt19937_64 rng(fit_seed(o.seed, id, k));
  const long steps = o.steps.value_or(default_steps(k));
  const int restarts = o.restarts.value_or(default_restarts(k));
  FitResult r{id, k, steps, restarts, {}, 0, {}};

  // Adam with cosine decay; beta_t = min(1, 0.01 + t / T) with T = half the steps.
  nflow::ReverseKlOptions opt;
  opt.batch_size = 256;
  opt.max_steps = r.steps;
  opt.report_every = std::max<long>(1, r.steps / 4);
  opt.adam.learning_rate = 3e-2;
  opt.schedule = nflow::LrSchedule::cosine;
  opt.final_lr_fraction = 0.02;
  opt.initial_beta = 0.01;
  opt.anneal_steps = std::max<long>(1, r.steps / 2);

  const auto start = std::chrono::steady_clock::now();
  double best = -std::numeric_limits<double>::infinity();
  for (int run = 1; run <= r.restarts; ++run) {
    Model model = make_model(k, rng);
    opt.seed = rng();
    const auto report =
        nflow::fit_reverse_kl(model, make_target(id), opt, [&](const nflow::ReverseKlProgress& p) {
          std::printf(
              "  U%d K=%-2d run %d step %6ld  beta %.2f  batch ELBO %8.3f  %6.0fk samples/s\n", id,
              k, run, static_cast<long>(p.step), p.beta, p.elbo, p.samples_per_second / 1e3);
        });
    if (report.status != nflow::FitStatus::completed) std::printf("  %s\n", report.message.c_str());

    // With one run there is nothing to choose; otherwise keep the best on 10,000 samples.
    if (r.restarts == 1) {
      r.model.emplace(std::move(model));
      break;
    }
    const double check = nflow::estimate_elbo(model, make_target(id), 10000, rng).mean;
    std::printf("  U%d K=%-2d run %d: ELBO %.4f on 10,000 samples%s\n", id, k, run, check,
                check > best ? ", best so far" : "");
    if (check > best) {
      best = check;
      r.model.emplace(std::move(model));
    }
  }

  // ELBO of the kept fit on 100,000 fresh samples.
  r.elbo = nflow::estimate_elbo(*r.model, make_target(id), 100000, rng);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

// ---------------------------------------------------------------------------------------------
// The picture.

constexpr int kPixels = 160;  // panel width and height; the grid covers [-4, 4]^2
constexpr double kHalf = 4.0;

/// Grid points at pixel centres, row 0 at the top (z2 = +4), as a 2 x P matrix.
Mat pixel_grid() {
  Mat g(2, kPixels * kPixels);
  const double step = 2 * kHalf / kPixels;
  for (int y = 0; y < kPixels; ++y) {
    for (int x = 0; x < kPixels; ++x) {
      g(0, y * kPixels + x) = -kHalf + (x + 0.5) * step;
      g(1, y * kPixels + x) = kHalf - (y + 0.5) * step;
    }
  }
  return g;
}

/// A panel title such as "K=8"; formatted with snprintf (GCC 12 warns falsely on string +).
std::string label(const char* format, int value) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, format, value);
  return buffer;
}

/// Values per grid point reshaped to the image's rows and columns.
Eigen::MatrixXd to_image(const Eigen::RowVectorXd& v) {
  Eigen::MatrixXd img(kPixels, kPixels);
  for (int y = 0; y < kPixels; ++y)
    for (int x = 0; x < kPixels; ++x)
      img(y, x) = v(y * kPixels + x);
  return img;
}

/// One row of the figure: exp(-U)/Z, then exp(log q) of each fit of this energy, all on one
/// colour scale (0 to the true density's maximum on the grid; higher values saturate).
examples::Image figure_row(int id, double log_z, const std::vector<FitResult>& fits) {
  const Mat grid = pixel_grid();
  Eigen::RowVectorXd truth(grid.cols());
  for (nflow::Index j = 0; j < grid.cols(); ++j)
    truth(j) = std::exp(-energy(id, double(grid(0, j)), double(grid(1, j))).u - log_z);
  const double hi = truth.maxCoeff();

  // True density first, then the flows' densities by the numerical inverse.
  std::vector<examples::Image> panels{examples::heatmap(to_image(truth), 0, hi)};
  std::vector<std::string> titles{label("U%d true", id)};
  for (const FitResult& f : fits) {
    if (f.energy != id) continue;
    const Eigen::RowVectorXd q = f.model->log_prob(grid).cast<double>().array().exp();
    const auto failed = (!q.array().isFinite()).count();
    if (failed > 0)
      std::printf("U%d K=%d: %ld grid points not inverted\n", id, f.length, long(failed));
    panels.push_back(examples::heatmap(to_image(q), 0, hi));
    titles.push_back(label("K=%d", f.length));
  }
  return examples::panel_row(panels, titles);
}

// ---------------------------------------------------------------------------------------------
// Report.

void print_table(const std::vector<FitResult>& fits, const std::vector<double>& log_z) {
  std::printf("\n%-6s %4s %7s %4s %9s   %-18s %-16s %7s\n", "energy", "K", "steps", "runs", "log Z",
              "ELBO +- s.e.", "KL = log Z - ELBO", "time");
  for (const FitResult& f : fits) {
    const double lz = log_z[f.energy];
    std::printf("U%-5d %4d %7ld %4d %9.4f   %8.4f +- %.4f   %8.4f +- %.4f %6.1fs\n", f.energy,
                f.length, f.steps, f.restarts, lz, f.elbo.mean, f.elbo.standard_error,
                lz - f.elbo.mean, f.elbo.standard_error, f.seconds);
  }
}

}  // namespace

int main(int argc, char** argv) try {
  const Options o = parse_options(argc, argv);
  std::printf("Planar flows on the energies U1-U4 of Rezende & Mohamed (2015), reverse KL.\n");
  std::printf(
      "U2-U4 are multiplied by the envelope exp(-(z1^4 + z2^4) / (2 * 8^4)), without\n"
      "which they are not normalisable. Scalar: double. Seed %llu.\n",
      static_cast<unsigned long long>(o.seed));

  // Analytic gradients against central differences.
  std::printf("gradient check: max relative error vs central differences %.1e\n",
              gradient_check_error(o.seed));

  // log Z of each energy by quadrature.
  std::vector<double> log_z(5, 0.0);
  for (int id : o.energies) {
    log_z[id] = log_partition(id);
    std::printf("U%d: log Z = %.5f (quadrature, spacing 0.02)\n", id, log_z[id]);
  }

  // All fits, in energy-major order.
  const auto start = std::chrono::steady_clock::now();
  std::vector<FitResult> fits;
  for (int id : o.energies) {
    for (int k : o.lengths) {
      fits.push_back(fit(id, k, o));
      const FitResult& f = fits.back();
      std::printf("U%d K=%d: ELBO %.4f +- %.4f, KL %.4f (%.1fs)\n", id, k, f.elbo.mean,
                  f.elbo.standard_error, log_z[id] - f.elbo.mean, f.seconds);
    }
  }
  const double train_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  print_table(fits, log_z);
  std::printf("ELBO is against the unnormalised target: ELBO = log Z - KL(q || p).\n");
  std::printf("total fitting time %.1fs\n", train_s);

  // The figure: one row per energy.
  std::vector<examples::Image> rows;
  for (int id : o.energies)
    rows.push_back(figure_row(id, log_z[id], fits));
  examples::stack_rows(rows).save_png(o.out);
  std::printf("wrote %s\n", o.out.c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "energy: %s\n", e.what());
  return 1;
}
