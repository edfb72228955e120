// Two moons: fits a RealNVP flow (8 affine couplings) to the two-moons data set by maximum
// likelihood, reports the test negative log-likelihood, and draws the data, the learned density
// and samples from the model side by side in a PNG.
//
// Usage: two_moons [--steps N] [--seed S] [--out PATH] [--data DIR] [--reference] [--save PATH]
//
// The default run holds out the last 2,000 rows of the training file for validation and fits
// conditioners 1-64-64-2 with tanh, log-scale bound 2, for 36,000 steps of batch 256, the
// learning rate decaying on a cosine from 1e-3, evaluating the validation NLL every 100 steps
// and keeping the parameters of the best evaluation. On one core of a 2-core machine it takes
// about 65 s; the test NLL is 1.149 nats with seed 0 (1.155 with seed 1, 1.146 with seed 2).
// For scale, the density the data were drawn from (make_moons' arcs blurred by its Gaussian
// noise) scores 1.136 nats on the test file.
//
// --reference runs the fixed comparison configuration instead, the one
// bench/moons_reference_torch.py trains in plain PyTorch: ReLU conditioners, log-scale bound 1,
// all training rows, 3,000 steps at a constant rate, final parameters, nothing selected (about
// 5 s). Its test NLL varies from seed to seed: 1.202 nats on average over seeds 0-4 (standard
// deviation 0.014); over seeds 0-39, median 1.205 and mean 1.226 (standard error 0.010), with
// 4 of the 40 runs ending above 1.35. The PyTorch twin gives the same picture over the same
// seeds: median 1.212, mean 1.244 (standard error 0.013), 5 runs above 1.35.
#include <cstdint>
#include <cstdio>
#include <exception>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "args.hpp"
#include "image.hpp"
#include "nflow/nflow.hpp"

namespace {

// float, not double, for speed: the fit is dominated by the conditioners' matrix products.
using Scalar = float;
using Flow = nflow::DynamicChain<nflow::AffineCoupling<Scalar>>;
using Model = nflow::TransformedDistribution<Flow>;
using Matrix = nflow::Matrix<Scalar>;

constexpr int num_couplings = 8;

// Sum of the log standard deviations the data were divided by (see examples/data/README.md):
// adding it to an NLL of the standardised data gives the NLL in the original units.
constexpr double log_std_sum = -0.8422213360559274;

// The drawn region, in standardised units, and the panel size in pixels.
constexpr double plot_lo = -2.4, plot_hi = 2.4;
constexpr int panel_px = 360, hist_bins = 120;

const char* const usage =
    "usage: two_moons [--steps N] [--seed S] [--out PATH] [--data DIR] [--reference]"
    " [--save PATH]\n"
    "Fits a RealNVP (8 affine couplings) to the two-moons data by maximum likelihood, prints\n"
    "the test NLL and draws data, density and samples. The default run holds out 2000 rows\n"
    "of the training file and keeps the step of the best validation NLL (about 65 s).\n"
    "  --steps N      training steps (default: 3000 with --reference, else 36000)\n"
    "  --seed S       seed of the initial weights, the minibatch order and the samples\n"
    "  --out PATH     where to write the picture (default: two_moons.png)\n"
    "  --data DIR     directory holding moons_train.csv and moons_test.csv\n"
    "  --reference    run the fixed configuration of the PyTorch comparison instead:\n"
    "                 ReLU, log-scale bound 1, all 20,000 rows, 3000 steps at lr 1e-3\n"
    "  --save PATH    write the trained parameters with nflow::save_parameters\n";

struct Args {
  long long steps = 0;  // 0: the configuration's own length
  std::uint64_t seed = 0;
  std::string out = "two_moons.png";
  std::string data = NFLOW_EXAMPLES_DATA_DIR;
  bool reference = false;
  std::string save;
  bool help = false;
};

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];

    // Flags without a value.
    if (flag == "--reference") {
      a.reference = true;
      continue;
    }
    if (flag == "--help" || flag == "-h") {
      a.help = true;
      continue;
    }

    // Flags with a value.
    if (flag != "--steps" && flag != "--seed" && flag != "--out" && flag != "--data" &&
        flag != "--save") {
      throw std::invalid_argument("unknown flag '" + flag + "'");
    }
    if (i + 1 >= argc) throw std::invalid_argument(flag + " needs a value");
    const std::string value = argv[++i];
    if (flag == "--steps") {
      a.steps = static_cast<long long>(examples::parse_count(flag, value));
      if (a.steps == 0) throw std::invalid_argument("--steps must be at least 1");
    } else if (flag == "--seed") {
      a.seed = examples::parse_count(flag, value);
    } else if (flag == "--out") {
      a.out = value;
    } else if (flag == "--data") {
      a.data = value;
    } else {
      a.save = value;
    }
  }
  return a;
}

// What differs between the default run and the reference run.
struct Config {
  nflow::CouplingOptions coupling;
  nflow::FitOptions fit;
  nflow::Index validation_rows;
  nflow::Index print_every;  // steps between progress lines (a multiple of fit.eval_every)
};

// The fixed reference: 8 couplings, MLP 1-64-64-2 with ReLU, log-scale c tanh(r/c) with c = 1,
// Adam lr 1e-3, batch 256, 3000 steps, constant rate, final parameters, no validation.
Config reference_config() {
  Config c;
  c.coupling =
      nflow::CouplingOptions{{64, 64}, nflow::Activation::relu, nflow::SoftClamp::tanh, 1.0};
  c.fit.batch_size = 256;
  c.fit.max_steps = 3000;
  c.fit.eval_every = 500;
  c.fit.adam.learning_rate = 1e-3;
  c.fit.schedule = nflow::LrSchedule::constant;
  c.fit.restore_best = false;
  c.validation_rows = 0;
  c.print_every = 500;
  return c;
}

// The default run: the same couplings with tanh conditioners and a looser log-scale bound,
// trained longer on a cosine-decayed rate, evaluated on the validation rows every 100 steps,
// keeping the parameters of the best evaluation.
Config default_config() {
  Config c;
  c.coupling =
      nflow::CouplingOptions{{64, 64}, nflow::Activation::tanh, nflow::SoftClamp::tanh, 2.0};
  c.fit.batch_size = 256;
  c.fit.max_steps = 36000;
  c.fit.eval_every = 100;
  c.fit.adam.learning_rate = 1e-3;
  c.fit.schedule = nflow::LrSchedule::cosine;
  c.fit.final_lr_fraction = 0.0;
  c.fit.restore_best = true;
  c.validation_rows = 2000;
  c.print_every = 2000;
  return c;
}

// 8 couplings whose pass-through coordinate alternates, on a standard normal base.
Model make_model(const nflow::CouplingOptions& options, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  Flow flow(2);
  for (int i = 0; i < num_couplings; ++i) {
    flow.push_back(
        nflow::AffineCoupling<Scalar>(nflow::Mask::alternating(2, i % 2 == 1), options, rng));
  }
  return Model(std::move(flow));
}

void print_progress(const nflow::FitProgress& p) {
  std::printf("step %6lld  train NLL %7.4f  validation NLL %7.4f  lr %.2e  %8.0f samples/s\n",
              static_cast<long long>(p.step), p.train_nll, p.validation_nll, p.learning_rate,
              p.samples_per_second);
  std::fflush(stdout);
}

// Nearest-neighbour enlargement of an image by an integer factor.
examples::Image enlarge(const examples::Image& small, int factor) {
  examples::Image big(small.width() * factor, small.height() * factor);
  for (int y = 0; y < big.height(); ++y)
    for (int x = 0; x < big.width(); ++x)
      big.set(x, y, small.get(x / factor, y / factor));
  return big;
}

// A point cloud as a 2-D histogram over the plotted square, enlarged to the panel size.
examples::Image histogram_panel(const Matrix& points) {
  const Eigen::MatrixXd p = points.cast<double>();
  return enlarge(examples::histogram2d(p, plot_lo, plot_hi, plot_lo, plot_hi, hist_bins, hist_bins),
                 panel_px / hist_bins);
}

// exp(log p) at the centre of every pixel of the panel (row 0 at the top, y upwards).
examples::Image density_panel(const Model& model) {
  const double step = (plot_hi - plot_lo) / panel_px;
  Matrix grid(2, static_cast<nflow::Index>(panel_px) * panel_px);
  for (int r = 0; r < panel_px; ++r) {
    for (int c = 0; c < panel_px; ++c) {
      grid(0, r * panel_px + c) = Scalar(plot_lo + (c + 0.5) * step);
      grid(1, r * panel_px + c) = Scalar(plot_hi - (r + 0.5) * step);
    }
  }
  const nflow::RowVector<Scalar> log_p = model.log_prob(grid);
  Eigen::MatrixXd density(panel_px, panel_px);
  for (int r = 0; r < panel_px; ++r)
    for (int c = 0; c < panel_px; ++c)
      density(r, c) = std::exp(static_cast<double>(log_p(r * panel_px + c)));
  return examples::heatmap(density, 0.0, density.maxCoeff());
}

// Data, learned density and model samples side by side, with the test NLL in the caption.
examples::Image draw_figure(const Model& model, const Matrix& data, double test_nll,
                            std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const Matrix samples = model.sample(data.cols(), rng);
  const std::string n = std::to_string(data.cols());
  char caption[160];
  std::snprintf(caption, sizeof caption,
                "RealNVP, %d affine couplings: test NLL %.3f nats (%.3f in original units)",
                num_couplings, test_nll, test_nll + log_std_sum);
  return examples::panel_row(
      {histogram_panel(data), density_panel(model), histogram_panel(samples)},
      {"training data (" + n + " points)", "learned density p(x)", "model samples (" + n + ")"},
      caption);
}

int run(const Args& args) {
  const Config config = args.reference ? reference_config() : default_config();
  nflow::FitOptions fit = config.fit;
  if (args.steps > 0) fit.max_steps = args.steps;
  fit.seed = args.seed;

  // Data: the training file, split into fitting and validation rows; the test file.
  const Matrix all = nflow::load_csv<Scalar>(args.data + "/moons_train.csv");
  const Matrix test = nflow::load_csv<Scalar>(args.data + "/moons_test.csv");
  const nflow::Index n_fit = all.cols() - config.validation_rows;
  const Matrix train = all.leftCols(n_fit);
  const Matrix validation = all.rightCols(config.validation_rows);

  // The model, its weights drawn from the seed.
  Model model = make_model(config.coupling, args.seed);
  std::printf(
      "%s run, seed %llu: %d couplings, %lld parameters, %lld training rows, %lld "
      "validation rows, %lld steps of batch %lld\n",
      args.reference ? "reference" : "default", static_cast<unsigned long long>(args.seed),
      num_couplings, static_cast<long long>(nflow::parameter_count(model)),
      static_cast<long long>(train.cols()), static_cast<long long>(validation.cols()),
      static_cast<long long>(fit.max_steps), static_cast<long long>(fit.batch_size));

  // Maximum-likelihood fit with progress reports.
  const auto progress = [&](const nflow::FitProgress& p) {
    if (p.step % config.print_every == 0 || p.step == fit.max_steps) print_progress(p);
  };
  const nflow::FitReport report =
      nflow::fit_maximum_likelihood(model, train, validation, fit, progress);
  std::printf("fit %s after %lld steps", nflow::to_string(report.status),
              static_cast<long long>(report.steps));
  if (config.validation_rows > 0) {
    std::printf("; kept step %lld (validation NLL %.4f)", static_cast<long long>(report.best_step),
                report.best_nll);
  }
  std::printf("\n");
  if (!report.message.empty()) std::printf("%s\n", report.message.c_str());

  // The test file, once, at the end.
  const double test_nll = nflow::mean_nll(model, test);
  std::printf("test NLL %.4f nats (%.4f nats in original units)\n", test_nll,
              test_nll + log_std_sum);

  // Optional parameter file, then the picture.
  if (!args.save.empty()) {
    nflow::save_parameters(model, args.save);
    std::printf("parameters written to %s\n", args.save.c_str());
  }
  draw_figure(model, all, test_nll, args.seed + 1).save_png(args.out);
  std::printf("picture written to %s\n", args.out.c_str());
  return report.status == nflow::FitStatus::non_finite_loss ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Command line: a bad flag is a usage error.
  Args args;
  try {
    args = parse_args(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "two_moons: %s\n%s", e.what(), usage);
    return 2;
  }
  if (args.help) {
    std::printf("%s", usage);
    return 0;
  }

  // The run: any failure (missing data file, unwritable output) is reported, not thrown out.
  try {
    return run(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "two_moons: %s\n", e.what());
    return 1;
  }
}
