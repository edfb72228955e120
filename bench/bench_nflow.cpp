// nflow benchmark: throughput of a full training step, of log_prob and of sample, peak resident
// memory and achieved GFLOP/s, for three models, each in float and double, with 1 or 2 threads.
// bench/reference_torch.py measures the same models in plain PyTorch the same way; the driver
// scripts/bench.sh runs both and prints the comparison.
//
//   bench_nflow --config a|b|c|gemm --scalar float|double --threads N [--export DIR]
//               [--min-time SECONDS] [--repeats R] [--eval-batch N] [--data DIR]
//               [--ops LIST]
//
// Configurations (batch 256 for training, --eval-batch columns for log_prob and sample):
//   a  two moons RealNVP: 8 AffineCoupling, Mask::alternating(2, i % 2), conditioner MLP
//      1 -> 64 -> 64 -> 2, ReLU, s = tanh-soft-clamped with bound 1, standard normal base,
//      data examples/data/moons_train.csv; maximum-likelihood step.
//   b  8x8 digits RealNVP: 8 AffineCoupling, Mask::half(64, i % 2), conditioner MLP
//      32 -> 256 -> 256 -> 64, otherwise as a; pixels dequantised (pixel + u) / 17, u ~ U[0, 1),
//      then standardised per pixel; maximum-likelihood step.
//   c  32 Planar layers in 2-D on a standard normal base; reverse-KL step on the energy U1 of
//      Rezende & Mohamed (2015); log_prob uses the numerical inverse.
//   gemm  only the matrix-multiply peak (own process, so that its buffers do not enter the
//      peak memory of a model's process).
//
// Timing: each measured call is warmed up (at least 3 calls and min-time / 2 seconds), then run
// in R repeats of k calls each, k chosen so one repeat takes about min-time; the median, minimum
// and maximum of the per-call times over the repeats are reported. Output: one JSON object per
// line on stdout (machine-readable); a human-readable summary goes to stderr.
//
// Heap allocations are counted by interposing malloc (forwarded to glibc's __libc_malloc) and
// reported per call, a direct measure of the "no allocations in hot loops" principle.
#include <sys/resource.h>

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nflow/nflow.hpp>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "args.hpp"

// ---------------------------------------------------------------------------------------------
// Counting heap allocations. Eigen allocates through std::malloc and libstdc++'s operator new
// calls malloc, so every heap allocation of the program passes here.

namespace {
std::atomic<long long> g_malloc_calls{0};
}  // namespace

extern "C" void* __libc_malloc(std::size_t size);
extern "C" void* malloc(std::size_t size) {
  g_malloc_calls.fetch_add(1, std::memory_order_relaxed);
  return __libc_malloc(size);
}

namespace {

using nflow::Index;
using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------------
// Command line.

struct Options {
  std::string config = "a";
  std::string scalar = "float";
  int threads = 1;
  double min_time = 0.2;  // seconds per repeat
  int repeats = 7;
  Index eval_batch = 16384;
  Index train_batch = 256;
  std::string ops = "train,log_prob,sample";  // which measurements to run
  std::string export_dir;                     // empty: no export
  std::string data = NFLOW_BENCH_DATA_DIR;
};

const char* const usage =
    "usage: bench_nflow --config a|b|c|gemm --scalar float|double --threads N\n"
    "                   [--export DIR] [--min-time S] [--repeats R] [--eval-batch N]\n"
    "                   [--data DIR] [--ops train,log_prob,sample]\n"
    "  a: two-moons RealNVP, b: 8x8 digits RealNVP, c: 32 planar layers on U1 (reverse KL),\n"
    "  gemm: only the matrix-multiply peak. --export writes parameters, gradients and\n"
    "  log_prob on test data for the weight-equivalence check of bench/reference_torch.py.\n"
    "  --ops runs only the listed measurements (for profiling one of them); --ops export\n"
    "  with --export only writes the export, in a process of its own.\n";

Options parse(int argc, char** argv) {
  Options o;
  examples::for_each_flag(argc, argv, usage, [&](const std::string& a, const std::string& v) {
    if (a == "--config")
      o.config = v;
    else if (a == "--scalar")
      o.scalar = v;
    else if (a == "--threads")
      o.threads = static_cast<int>(examples::parse_positive(a, v));
    else if (a == "--min-time")
      o.min_time = std::stod(v);
    else if (a == "--repeats")
      o.repeats = static_cast<int>(examples::parse_positive(a, v));
    else if (a == "--eval-batch")
      o.eval_batch = static_cast<Index>(examples::parse_positive(a, v));
    else if (a == "--export")
      o.export_dir = v;
    else if (a == "--data")
      o.data = v;
    else if (a == "--ops")
      o.ops = v;
    else
      throw std::invalid_argument("unknown option " + a + " (see --help)");
  });
  if (o.config != "a" && o.config != "b" && o.config != "c" && o.config != "gemm")
    throw std::invalid_argument("--config: a, b, c or gemm");
  if (o.scalar != "float" && o.scalar != "double")
    throw std::invalid_argument("--scalar: float or double");
  if (o.threads < 1 || o.repeats < 1 || o.eval_batch < 1 || !(o.min_time > 0))
    throw std::invalid_argument("--threads, --repeats, --eval-batch, --min-time: positive");
  return o;
}

// ---------------------------------------------------------------------------------------------
// Measurement.

// Whether `op` is in the comma-separated list --ops.
bool wanted(const Options& o, const std::string& op) {
  return ("," + o.ops + ",").find("," + op + ",") != std::string::npos;
}

long peak_rss_kb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss;
}

struct Timing {
  double median = 0, min = 0, max = 0;  // seconds per call
  long calls_per_repeat = 0;
  int repeats = 0;
  double mallocs_per_call = 0;
};

// Warm-up, then `repeats` repeats of k calls; per-call seconds. `f` must do the whole work.
template <class F>
Timing measure(F&& f, const Options& o) {
  // Warm-up: at least 3 calls and min_time / 2 seconds; it also estimates the call time.
  long warm = 0;
  const auto w0 = Clock::now();
  double elapsed = 0;
  while (warm < 3 || elapsed < o.min_time / 2) {
    f();
    ++warm;
    elapsed = std::chrono::duration<double>(Clock::now() - w0).count();
  }
  const double per_call = elapsed / static_cast<double>(warm);
  Timing t;
  t.calls_per_repeat = std::max(1L, static_cast<long>(std::ceil(o.min_time / per_call)));
  t.repeats = o.repeats;
  std::vector<double> times;
  long long mallocs = 0;
  for (int r = 0; r < o.repeats; ++r) {
    const long long m0 = g_malloc_calls.load();
    const auto t0 = Clock::now();
    for (long k = 0; k < t.calls_per_repeat; ++k)
      f();
    const auto t1 = Clock::now();
    mallocs += g_malloc_calls.load() - m0;
    times.push_back(std::chrono::duration<double>(t1 - t0).count() /
                    static_cast<double>(t.calls_per_repeat));
  }
  std::sort(times.begin(), times.end());
  const std::size_t n = times.size();
  t.median = n % 2 ? times[n / 2] : 0.5 * (times[n / 2 - 1] + times[n / 2]);
  t.min = times.front();
  t.max = times.back();
  t.mallocs_per_call =
      static_cast<double>(mallocs) / static_cast<double>(t.calls_per_repeat * o.repeats);
  return t;
}

// One JSON object per line, built field by field.
class JsonLine {
 public:
  JsonLine& str(const char* key, const std::string& v) {
    sep();
    m_os << '"' << key << "\":\"" << v << '"';
    return *this;
  }
  JsonLine& num(const char* key, double v) {
    sep();
    if (std::isfinite(v)) {
      m_os.precision(6);
      m_os << '"' << key << "\":" << v;
    } else {
      m_os << '"' << key << "\":null";
    }
    return *this;
  }
  void print() {
    std::printf("{%s}\n", m_os.str().c_str());
    std::fflush(stdout);
  }

 private:
  void sep() {
    if (m_first)
      m_first = false;
    else
      m_os << ',';
  }
  std::ostringstream m_os;
  bool m_first = true;
};

const char* variant() {
#ifdef EIGEN_USE_BLAS
  return "blas";
#else
  return "eigen";
#endif
}

JsonLine header(const Options& o, const char* op) {
  JsonLine j;
  j.str("impl", "nflow")
      .str("variant", variant())
      .str("config", o.config)
      .str("scalar", o.scalar)
      .num("threads", o.threads)
      .num("eigen_threads", Eigen::nbThreads())
      .str("op", op);
  return j;
}

// Prints one measurement: samples per second = batch / median seconds per call; GFLOP/s from
// the analytic floating-point operations per sample (0 when not meaningful).
void report(const Options& o, const char* op, Index batch, const Timing& t,
            double flops_per_sample) {
  const double sps = static_cast<double>(batch) / t.median;
  header(o, op)
      .num("batch", static_cast<double>(batch))
      .num("median_s", t.median)
      .num("min_s", t.min)
      .num("max_s", t.max)
      .num("samples_per_s", sps)
      .num("samples_per_s_best", static_cast<double>(batch) / t.min)
      .num("repeats", t.repeats)
      .num("calls_per_repeat", static_cast<double>(t.calls_per_repeat))
      .num("mallocs_per_call", t.mallocs_per_call)
      .num("flops_per_sample", flops_per_sample)
      .num("gflops", flops_per_sample * sps * 1e-9)
      .print();
  std::fprintf(stderr,
               "  %-9s %12.0f samples/s (median of %d x %ld calls; %.3g ms/call; %.1f "
               "mallocs/call)\n",
               op, sps, t.repeats, t.calls_per_repeat, t.median * 1e3, t.mallocs_per_call);
}

// ---------------------------------------------------------------------------------------------
// Floating-point operations, counted analytically.
//
// A dense layer in -> out costs 2 in out per sample for its forward product W a. A training
// step also computes, per layer, the input gradient W^T g (2 in out) and the weight gradient
// g a^T (2 in out): 3 x 2 in out per layer in total. So for K couplings with conditioner widths
// n_0, ..., n_L:
//   flops/sample (training step) = 3 K sum_l 2 n_l n_{l+1},
//   flops/sample (log_prob, sample) = K sum_l 2 n_l n_{l+1}.
// Element-wise work (bias, activation, clamp, exp, Adam) is not counted.
// (a): 3 * 8 * 2 (1*64 + 64*64 + 64*2) = 205,824;  (b): 3 * 8 * 2 (32*256 + 256*256 + 256*64)
// = 4,325,376 per sample.
// Planar in D dimensions: forward w^T z (2D) and u_hat h (2D) = 4D; backward u_hat^T g (2D),
// g h^T (2D), z g_t^T (2D), w g_t (2D) = 8D; training 12 D K = 768 for K = 32, D = 2 (a
// nominal figure: planar layers are bound by tanh/log and memory traffic, not by products).
double mlp_flops(const std::vector<Index>& widths) {
  double f = 0;
  for (std::size_t l = 0; l + 1 < widths.size(); ++l)
    f += 2.0 * static_cast<double>(widths[l] * widths[l + 1]);
  return f;
}

// ---------------------------------------------------------------------------------------------
// Data.

template <class S>
using Mat = nflow::Matrix<S>;

// Digits: the 64 pixel rows, dequantised x = (pixel + u) / 17 in double.
Eigen::MatrixXd dequantised_digits(const std::string& path, std::uint64_t seed) {
  const Eigen::MatrixXd all = nflow::load_csv<double>(path);
  if (all.rows() != 65) throw std::runtime_error(path + ": expected 65 fields per line");
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  Eigen::MatrixXd x = all.topRows(64);
  for (Index j = 0; j < x.cols(); ++j)
    for (Index i = 0; i < 64; ++i)
      x(i, j) = (x(i, j) + u(rng)) / 17.0;
  return x;
}

// Train and test digits, standardised with the training split's per-pixel mean and std.
template <class S>
std::pair<Mat<S>, Mat<S>> digits_data(const std::string& dir) {
  const Eigen::MatrixXd train = dequantised_digits(dir + "/digits_train.csv", 1);
  const Eigen::MatrixXd test = dequantised_digits(dir + "/digits_test.csv", 2);
  const Eigen::VectorXd mean = train.rowwise().mean();
  const Eigen::VectorXd sd =
      ((train.colwise() - mean).array().square().rowwise().mean()).sqrt().matrix();
  auto standardise = [&](const Eigen::MatrixXd& x) -> Mat<S> {
    return ((x.colwise() - mean).array().colwise() / sd.array()).matrix().template cast<S>();
  };
  return {standardise(train), standardise(test)};
}

// n columns cycling through the columns of x.
template <class S>
Mat<S> tile_columns(const Mat<S>& x, Index n) {
  Mat<S> out(x.rows(), n);
  for (Index j = 0; j < n; ++j)
    out.col(j) = x.col(j % x.cols());
  return out;
}

// ---------------------------------------------------------------------------------------------
// The U1 energy (Rezende & Mohamed 2015, Table 1; as in examples/energy.cpp):
//   U1(z) = ((|z| - 2) / 0.4)^2 / 2 - log(exp(-((z1 - 2) / 0.6)^2 / 2) + exp(-((z1 + 2) / 0.6)^2
//   / 2)),
// target log p~ = -U1 with gradient -dU1/dz, vectorised over the batch in the model's Scalar.
template <class S>
nflow::TargetEvaluation<S> u1_target(const Mat<S>& x) {
  using A = Eigen::Array<S, 1, Eigen::Dynamic>;
  const A z1 = x.row(0).array(), z2 = x.row(1).array();
  const A r = (z1.square() + z2.square()).sqrt().max(std::numeric_limits<S>::min());
  const A ring = (r - S(2)) / S(0.16);  // d/dr of ((r - 2) / 0.4)^2 / 2
  const A a = S(-0.5) * ((z1 - S(2)) / S(0.6)).square();
  const A b = S(-0.5) * ((z1 + S(2)) / S(0.6)).square();
  const A m = a.max(b);
  const A ea = (a - m).exp(), eb = (b - m).exp();
  const A pa = ea / (ea + eb);  // weight of the mode at z1 = 2
  const A lse = m + (ea + eb).log();
  nflow::TargetEvaluation<S> t{nflow::RowVector<S>(x.cols()), Mat<S>(2, x.cols())};
  t.log_prob = (lse - S(0.5) * ((r - S(2)) / S(0.4)).square()).matrix();
  t.grad.row(0) =
      (-(ring * z1 / r + (pa * (z1 - S(2)) + (S(1) - pa) * (z1 + S(2))) / S(0.36))).matrix();
  t.grad.row(1) = (-(ring * z2 / r)).matrix();
  return t;
}

// ---------------------------------------------------------------------------------------------
// Models.

template <class S>
using RealNvp = nflow::TransformedDistribution<nflow::DynamicChain<nflow::AffineCoupling<S>>>;
template <class S>
using PlanarFlow = nflow::TransformedDistribution<nflow::DynamicChain<nflow::Planar<S>>>;

constexpr int kCouplings = 8;
constexpr int kPlanarLayers = 32;
// Training steps taken before an export that measures nothing (--ops export), so that the
// exported parameters are away from their initialisation (the couplings' zero output layers).
constexpr int kExportSteps = 300;

// 8 couplings over alternating masks (alternating coordinates in 2-D, halves in 64-D).
template <class S>
RealNvp<S> make_realnvp(Index dim, Index hidden, bool halves, std::uint64_t seed) {
  const nflow::CouplingOptions options{
      {hidden, hidden}, nflow::Activation::relu, nflow::SoftClamp::tanh, 1.0};
  std::mt19937_64 rng(seed);
  nflow::DynamicChain<nflow::AffineCoupling<S>> chain(dim);
  for (int i = 0; i < kCouplings; ++i) {
    chain.push_back(nflow::AffineCoupling<S>(
        halves ? nflow::Mask::half(dim, i % 2) : nflow::Mask::alternating(dim, i % 2), options,
        rng));
  }
  return RealNvp<S>(std::move(chain));
}

template <class S>
PlanarFlow<S> make_planar(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  nflow::DynamicChain<nflow::Planar<S>> chain(2);
  for (int i = 0; i < kPlanarLayers; ++i)
    chain.push_back(nflow::Planar<S>(2, rng, 0.1));
  return PlanarFlow<S>(std::move(chain));
}

// A model seen through its gradients: for_each_parameter hands out each gradient where the
// model hands out the value, so that nflow::save_parameters writes the gradients in its format.
template <class Model>
struct GradientView {
  using Scalar = typename Model::Scalar;
  Model& model;
  template <class F>
  void for_each_parameter(F&& f) {
    model.for_each_parameter([&](const std::string& name, Mat<Scalar>& value, Mat<Scalar>& grad) {
      f(name, grad, value);
    });
  }
};

void write_number(const std::string& path, double v) {
  std::ofstream out(path);
  out.precision(17);
  out << v << '\n';
}

std::string export_path(const Options& o, const std::string& what, const char* ext) {
  return o.export_dir + "/" + what + "_" + o.config + "_" + o.scalar + ext;
}

// The export for the same-function check: the parameters, the points x with log_prob(x), and
// the loss that `loss` computes (it fills the model's gradients) with those gradients.
template <class Model, class Loss>
void export_check(const Options& o, Model& model, const Mat<typename Model::Scalar>& x,
                  Loss&& loss) {
  nflow::save_parameters(model, export_path(o, "params", ".txt"));
  nflow::save_csv(export_path(o, "check_x", ".csv"), x);
  nflow::save_csv(export_path(o, "check_logp", ".csv"), model.log_prob(x));
  model.zero_grad();
  write_number(export_path(o, "check_loss", ".txt"), static_cast<double>(loss()));
  GradientView<Model> gradients{model};
  nflow::save_parameters(gradients, export_path(o, "check_grad", ".txt"));
  model.zero_grad();
}

// The training-step measurement when --ops asks for it; otherwise, before an export, the
// fixed number of steps that takes the parameters away from their initialisation.
template <class Step>
void measure_training(const Options& o, Step& train_step, Index batch, double flops_per_sample) {
  if (wanted(o, "train")) {
    report(o, "train", batch, measure(train_step, o), flops_per_sample);
  } else if (!o.export_dir.empty()) {
    for (int k = 0; k < kExportSteps; ++k)
      train_step();
  }
}

// ---------------------------------------------------------------------------------------------
// The runs.

// The log_prob (on `points`) and sample measurements of a model, as --ops asks; returns a sum
// of results that the caller keeps, so that no call can be optimised away.
template <class Model>
double measure_evaluation(const Options& o, const Model& model,
                          const Mat<typename Model::Scalar>& points, std::mt19937_64& rng,
                          double flops_per_sample) {
  double sink = 0;
  if (wanted(o, "log_prob")) {
    const Timing t = measure([&] { sink += static_cast<double>(model.log_prob(points).sum()); }, o);
    report(o, "log_prob", points.cols(), t, flops_per_sample);
  }
  if (wanted(o, "sample")) {
    const Timing t =
        measure([&] { sink += static_cast<double>(model.sample(o.eval_batch, rng)(0, 0)); }, o);
    report(o, "sample", o.eval_batch, t, flops_per_sample);
  }
  return sink;
}

// Maximum likelihood (configurations a and b): train step, log_prob, sample, and the export.
template <class S>
void run_realnvp(const Options& o) {
  const bool digits = o.config == "b";
  Mat<S> train, test;
  if (digits) {
    std::tie(train, test) = digits_data<S>(o.data);
  } else {
    train = nflow::load_csv<S>(o.data + "/moons_train.csv");
    test = nflow::load_csv<S>(o.data + "/moons_test.csv");
  }
  const Index dim = train.rows(), hidden = digits ? 256 : 64;
  auto model = make_realnvp<S>(dim, hidden, digits, 1);
  const Index half = dim / 2;
  const std::vector<Index> widths{dim - half, hidden, hidden, 2 * half};
  const double f_fwd = kCouplings * mlp_flops(widths);
  std::fprintf(stderr, "config %s (%s, %d thread(s), %s): %ld parameters, data %ldx%ld\n",
               o.config.c_str(), o.scalar.c_str(), o.threads, variant(),
               static_cast<long>(nflow::parameter_count(model)), static_cast<long>(train.rows()),
               static_cast<long>(train.cols()));

  // One training step exactly as fit_maximum_likelihood takes it: zero the gradients, mean
  // NLL with its gradient through the inverse (mean_nll_backward), one Adam step. Minibatches
  // are consecutive blocks of the data (a view: no gather), cycling.
  nflow::Adam<S> adam{nflow::AdamOptions{}};
  nflow::TrainingCache<RealNvp<S>> cache;
  const Index batch = o.train_batch, batches = train.cols() / batch;
  Index step = 0;
  double sink = 0;
  const auto train_step = [&] {
    const Index j = (step++ % batches) * batch;
    model.zero_grad();
    sink += static_cast<double>(nflow::mean_nll_backward(model, train.middleCols(j, batch), cache));
    if (adam.step(model) != nflow::StepStatus::applied)
      throw std::runtime_error("non-finite gradient in the training benchmark");
  };
  measure_training(o, train_step, batch, 3 * f_fwd);

  // log_prob of a large batch (training columns, tiled when the data are fewer).
  const Mat<S> big = tile_columns(train, o.eval_batch);
  std::mt19937_64 rng(3);
  sink += measure_evaluation(o, model, big, rng, f_fwd);

  if (!o.export_dir.empty()) {
    // The trained parameters, log_prob of the test data, and the loss and gradient of the mean
    // NLL over the whole test set, for the PyTorch model to reproduce.
    nflow::TrainingCache<RealNvp<S>> c2;
    export_check(o, model, test, [&] { return nflow::mean_nll_backward(model, test, c2); });
  }
  if (sink == 12345.678) std::fprintf(stderr, "(sink)\n");
}

// Reverse KL (configuration c).
template <class S>
void run_planar(const Options& o) {
  auto model = make_planar<S>(1);
  std::fprintf(stderr, "config c (%s, %d thread(s), %s): %ld parameters\n", o.scalar.c_str(),
               o.threads, variant(), static_cast<long>(nflow::parameter_count(model)));
  const double f_fwd = 4.0 * 2 * kPlanarLayers, f_train = 12.0 * 2 * kPlanarLayers;

  // One step exactly as fit_reverse_kl takes it (beta = 1): fresh noise, zero the gradients,
  // reverse_kl_backward on the U1 target, one Adam step.
  nflow::Adam<S> adam{nflow::AdamOptions{}};
  nflow::TrainingCache<PlanarFlow<S>> cache;
  std::mt19937_64 rng(5);
  double sink = 0;
  const auto train_step = [&] {
    const Mat<S> eps = nflow::detail::standard_normal_noise<S>("bench", 2, o.train_batch, rng);
    model.zero_grad();
    sink +=
        static_cast<double>(nflow::reverse_kl_backward(model, eps, u1_target<S>, S(1), cache).loss);
    if (adam.step(model) != nflow::StepStatus::applied)
      throw std::runtime_error("non-finite gradient in the training benchmark");
  };
  measure_training(o, train_step, o.train_batch, f_train);

  // log_prob by the numerical inverse, on samples of the model.
  const Mat<S> big = model.sample(o.eval_batch, rng);
  sink += measure_evaluation(o, model, big, rng, f_fwd);

  if (!o.export_dir.empty()) {
    std::mt19937_64 check_rng(11);
    const Mat<S> x = model.sample(4096, check_rng);
    const Mat<S> eps = nflow::detail::standard_normal_noise<S>("bench", 2, 4096, check_rng);
    nflow::save_csv(export_path(o, "check_eps", ".csv"), eps);
    nflow::TrainingCache<PlanarFlow<S>> c2;
    export_check(o, model, x, [&] {
      return nflow::reverse_kl_backward(model, eps, u1_target<S>, S(1), c2).loss;
    });
  }
  if (sink == 12345.678) std::fprintf(stderr, "(sink)\n");
}

// The machine's practical peak: C = A B for n x n matrices, 2 n^3 operations, best of repeats.
template <class S>
void run_gemm(const Options& o) {
  for (Index n : {256, 512, 1024}) {
    Mat<S> a = Mat<S>::Random(n, n), b = Mat<S>::Random(n, n), c(n, n);
    double best = std::numeric_limits<double>::infinity();
    const int reps = n >= 1024 ? 5 : 20;
    for (int r = 0; r < reps + 2; ++r) {
      const auto t0 = Clock::now();
      c.noalias() = a * b;
      const double s = std::chrono::duration<double>(Clock::now() - t0).count();
      if (r >= 2) best = std::min(best, s);  // the first two are warm-up
    }
    const double gflops = 2.0 * std::pow(static_cast<double>(n), 3) / best * 1e-9;
    header(o, "gemm")
        .num("n", static_cast<double>(n))
        .num("best_s", best)
        .num("gflops", gflops)
        .num("check", static_cast<double>(c(0, 0)))
        .print();
    std::fprintf(stderr, "  gemm %4ld: %.1f GFLOP/s (best of %d)\n", static_cast<long>(n), gflops,
                 reps);
  }
}

template <class S>
void run(const Options& o) {
  if (o.config == "gemm")
    run_gemm<S>(o);
  else if (o.config == "c")
    run_planar<S>(o);
  else
    run_realnvp<S>(o);
}

}  // namespace

int main(int argc, char** argv) try {
  const long baseline_kb = peak_rss_kb();
  const Options o = parse(argc, argv);
  omp_set_num_threads(o.threads);
  Eigen::setNbThreads(o.threads);
  if (!o.export_dir.empty()) std::filesystem::create_directories(o.export_dir);
  const auto t0 = Clock::now();
  if (o.scalar == "float")
    run<float>(o);
  else
    run<double>(o);
  // The process's peak memory, unless it only exported (the export evaluates the whole test
  // set at once, which is not part of any measurement).
  if (o.ops != "export")
    header(o, "process")
        .num("peak_rss_kb", static_cast<double>(peak_rss_kb()))
        .num("baseline_rss_kb", static_cast<double>(baseline_kb))
        .num("seconds", std::chrono::duration<double>(Clock::now() - t0).count())
        .print();
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_nflow: %s\n", e.what());
  return 1;
}
