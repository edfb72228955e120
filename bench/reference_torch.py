#!/usr/bin/python3
"""Plain-PyTorch reference implementation of the three models of bench/bench_nflow.cpp.

Run with Debian's interpreter (/usr/bin/python3, which has python3-torch and python3-numpy):

  reference_torch.py bench --config a|b|c|gemm --scalar float|double --threads N
                           [--params-from DIR] [--min-time S] [--repeats R] [--eval-batch N]
  reference_torch.py check --dir DIR

`bench` times a training step (forward, backward, Adam update), log_prob on a large batch and
sample, exactly as bench_nflow does (warm-up of at least 3 calls and min-time/2 seconds, then R
repeats of k calls with k chosen so that one repeat lasts about min-time; median, min and max of
the per-call times), and prints one JSON object per line. With --params-from, the parameters
exported by `bench_nflow --export` are loaded after the training measurement, so that log_prob
and sample run on the same parameters (this matters for the planar inverse, whose Newton
iteration counts depend on them).

`check` loads the parameters nflow exported, evaluates log_prob on the same test inputs and the
loss and gradient of the training objective, and reports the largest differences.

Conventions, mirroring nflow (include/nflow/bijectors/affine_coupling.hpp, planar.hpp):
  * forward is latent -> data; log_prob runs the inverse; layer 0 is applied first forward.
  * coupling: conditioning coordinates A pass through; the MLP maps x_A to 2|B| outputs, rows
    [0, |B|) the raw log-scale r, rows [|B|, 2|B|) the shift t; s = c tanh(r / c);
    x_B = z_B exp(s) + t.  Masks: 2-D layer i conditions on coordinate i % 2 (Mask::alternating),
    64-D layer i conditions on the first half for even i and the second for odd i (Mask::half).
  * hidden layers nn.Linear default init (U(+-1/sqrt(fan_in))), output layer zero.
  * planar: x = z + u_hat tanh(w^T z + b), u_hat = u + (m(w^T u) - w^T u) w / |w|^2,
    m(a) = -1 + softplus(a); u, w ~ N(0, 0.1^2), b = 0; inverse by bracketed Newton per column.
  * Adam(lr 1e-3, betas (0.9, 0.999), eps 1e-8), batch 256, standard normal base.
"""

import argparse
import json
import math
import os
import resource
import sys
import time

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "examples", "data")
LOG_2PI = math.log(2 * math.pi)
N_COUPLINGS = 8
N_PLANAR = 32


def rss_kb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# ------------------------------------------------------------------------------------------
# Models.


class Coupling(nn.Module):
    """Affine coupling whose conditioning and transformed coordinates are contiguous blocks."""

    def __init__(self, dim, cond_first, hidden, bound):
        super().__init__()
        half = dim // 2
        # cond_first: the pass-through block is [0, half) (else [half, dim)); dim is even here.
        self.cond = slice(0, half) if cond_first else slice(half, dim)
        self.trans = slice(half, dim) if cond_first else slice(0, half)
        self.cond_first = cond_first
        self.nb = dim - half
        self.bound = bound
        self.net = nn.Sequential(
            nn.Linear(half, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 2 * self.nb))
        nn.init.zeros_(self.net[4].weight)
        nn.init.zeros_(self.net[4].bias)

    def _scale_shift(self, xa):
        out = self.net(xa)
        s = self.bound * torch.tanh(out[:, : self.nb] / self.bound)
        return s, out[:, self.nb:]

    def _join(self, a, b):
        return torch.cat([a, b], 1) if self.cond_first else torch.cat([b, a], 1)

    def forward(self, z):
        za, zb = z[:, self.cond], z[:, self.trans]
        s, t = self._scale_shift(za)
        return self._join(za, zb * torch.exp(s) + t), s.sum(1)

    def inverse(self, x):
        xa, xb = x[:, self.cond], x[:, self.trans]
        s, t = self._scale_shift(xa)
        return self._join(xa, (xb - t) * torch.exp(-s)), -s.sum(1)

    def load(self, p, prefix):
        with torch.no_grad():
            for k, layer in enumerate((self.net[0], self.net[2], self.net[4])):
                layer.weight.copy_(p[prefix + "conditioner.weight%d" % k])
                layer.bias.copy_(p[prefix + "conditioner.bias%d" % k].reshape(-1))


class Planar(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.u = nn.Parameter(0.1 * torch.randn(dim))
        self.w = nn.Parameter(0.1 * torch.randn(dim))
        self.b = nn.Parameter(torch.zeros(1))

    def _reparam(self):
        k = self.w @ self.u
        one_plus_c = F.softplus(k)  # 1 + w^T u_hat, accurate near -1
        u_hat = self.u + (one_plus_c - 1 - k) * self.w / (self.w @ self.w)
        return u_hat, one_plus_c

    @staticmethod
    def _log_q(t, one_plus_c):
        h = torch.tanh(t)
        h2 = h * h
        return torch.log(h2 + one_plus_c * (1 - h2))  # log|1 + c h'(t)|

    def forward(self, z):
        u_hat, opc = self._reparam()
        t = z @ self.w + self.b
        return z + torch.tanh(t)[:, None] * u_hat, self._log_q(t, opc)

    def inverse(self, x, max_iterations=200):
        # alpha = w^T z solves alpha + c tanh(alpha + b) = w^T x, increasing in alpha with the root
        # in [y - |c|, y + |c|]: Newton kept in the bracket (bisection when it leaves it or
        # stalls), vectorised over the columns until all have converged.
        u_hat, opc = self._reparam()
        c = opc - 1
        b = self.b
        y = x @ self.w
        eps = torch.finfo(x.dtype).eps
        lo, hi = y - c.abs(), y + c.abs()
        done = ~(hi > lo)
        alpha = torch.where(done, y, torch.minimum(torch.maximum(y - c * torch.tanh(y + b), lo), hi))
        result = alpha.clone()
        last_step = hi - lo
        for _ in range(max_iterations):
            th = torch.tanh(alpha + b)
            g = alpha + c * th - y
            neg = g < 0
            lo = torch.where(neg, alpha, lo)
            hi = torch.where(neg, hi, alpha)
            dg = th * th + opc * (1 - th * th)
            nxt = alpha - g / dg
            bisect = ~((nxt > lo) & (nxt < hi)) | ((2 * g).abs() > (last_step * dg).abs())
            nxt = torch.where(bisect, lo + (hi - lo) / 2, nxt)
            last_step = nxt - alpha
            tol = 2 * eps * torch.maximum(nxt.abs(), y.abs())
            zero = g == 0
            conv = zero | (last_step.abs() <= tol) | (hi - lo <= tol) | (nxt == lo) | (nxt == hi)
            new = conv & ~done
            result = torch.where(new, torch.where(zero, alpha, nxt), result)
            done = done | conv
            if bool(done.all()):
                break
            alpha = torch.where(done, alpha, nxt)
        result = torch.where(done, result, torch.full_like(result, float("nan")))
        t = result + b
        return x - torch.tanh(t)[:, None] * u_hat, -self._log_q(t, opc)

    def load(self, p, prefix):
        with torch.no_grad():
            self.u.copy_(p[prefix + "u"].reshape(-1))
            self.w.copy_(p[prefix + "w"].reshape(-1))
            self.b.copy_(p[prefix + "b"].reshape(-1))


class Flow(nn.Module):
    """Layers on a standard normal base; layer 0 first in the forward (generative) direction."""

    def __init__(self, layers, dim):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.dim = dim

    def base_log_prob(self, z):
        return -0.5 * (z * z).sum(1) - 0.5 * self.dim * LOG_2PI

    def forward_and_log_det(self, z):
        log_det = torch.zeros(z.shape[0], dtype=z.dtype)
        for layer in self.layers:
            z, ld = layer(z)
            log_det = log_det + ld
        return z, log_det

    def log_prob(self, x):
        log_det = torch.zeros(x.shape[0], dtype=x.dtype)
        for layer in reversed(self.layers):
            x, ld = layer.inverse(x)
            log_det = log_det + ld
        return self.base_log_prob(x) + log_det

    def sample(self, n):
        return self.forward_and_log_det(torch.randn(n, self.dim))[0]

    def load(self, p):
        for i, layer in enumerate(self.layers):
            layer.load(p, "flow.%d." % i)


def make_model(config):
    if config == "a":
        return Flow([Coupling(2, i % 2 == 0, 64, 1.0) for i in range(N_COUPLINGS)], 2)
    if config == "b":
        return Flow([Coupling(64, i % 2 == 0, 256, 1.0) for i in range(N_COUPLINGS)], 64)
    return Flow([Planar(2) for _ in range(N_PLANAR)], 2)


def read_nflow_parameters(path, dtype):
    """The text format of include/nflow/io/serialize.hpp: values column-major."""
    with open(path) as f:
        tokens = f.read().split()
    assert tokens[0] == "nflow-parameters" and tokens[1] == "1", path
    count, pos, out = int(tokens[2]), 3, {}
    for _ in range(count):
        name, rows, cols = tokens[pos], int(tokens[pos + 1]), int(tokens[pos + 2])
        pos += 3
        vals = np.array(tokens[pos:pos + rows * cols], dtype=np.float64)
        pos += rows * cols
        out[name] = torch.tensor(vals.reshape(cols, rows).T.copy(), dtype=dtype)
    return out


# ------------------------------------------------------------------------------------------
# Data and the U1 energy.


def digits(seed_train=1, seed_test=2):
    def load(name, seed):
        pix = np.loadtxt(os.path.join(DATA, name), delimiter=",")[:, :64]
        return (pix + np.random.default_rng(seed).random(pix.shape)) / 17.0

    train, test = load("digits_train.csv", seed_train), load("digits_test.csv", seed_test)
    mean, sd = train.mean(0), train.std(0)
    return (train - mean) / sd, (test - mean) / sd


def u1_log_prob(x):
    """log p~ = -U1 (Rezende & Mohamed 2015, Table 1)."""
    z1, z2 = x[:, 0], x[:, 1]
    r = (z1 * z1 + z2 * z2).clamp_min(torch.finfo(x.dtype).tiny).sqrt()
    modes = torch.logsumexp(torch.stack([-0.5 * ((z1 - 2) / 0.6) ** 2,
                                         -0.5 * ((z1 + 2) / 0.6) ** 2]), 0)
    return modes - 0.5 * ((r - 2) / 0.4) ** 2


def reverse_kl_loss(model, eps):
    x, log_det = model.forward_and_log_det(eps)
    log_q = model.base_log_prob(eps) - log_det
    return (log_q - u1_log_prob(x)).mean()


# ------------------------------------------------------------------------------------------
# Timing, as bench_nflow.cpp's measure().


def measure(f, min_time, repeats):
    warm, t0 = 0, time.perf_counter()
    elapsed = 0.0
    while warm < 3 or elapsed < min_time / 2:
        f()
        warm += 1
        elapsed = time.perf_counter() - t0
    k = max(1, math.ceil(min_time / (elapsed / warm)))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(k):
            f()
        times.append((time.perf_counter() - t0) / k)
    times.sort()
    n = len(times)
    median = times[n // 2] if n % 2 else 0.5 * (times[n // 2 - 1] + times[n // 2])
    return {"median_s": median, "min_s": times[0], "max_s": times[-1], "repeats": repeats,
            "calls_per_repeat": k}


def mlp_flops(widths):
    return sum(2.0 * a * b for a, b in zip(widths[:-1], widths[1:]))


def blas_library():
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "blas" in line and "/" in line}
        return ",".join(sorted(libs))
    except OSError:
        return ""


def bench(args):
    dtype = torch.float32 if args.scalar == "float" else torch.float64
    torch.set_default_dtype(dtype)
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(1)
    baseline = rss_kb()
    head = {"impl": "torch", "variant": "torch-" + torch.__version__, "config": args.config,
            "scalar": args.scalar, "threads": args.threads,
            "torch_threads": torch.get_num_threads()}

    def emit(op, **kw):
        print(json.dumps(dict(head, op=op, **kw)), flush=True)

    def report(op, batch, t, flops):
        sps = batch / t["median_s"]
        emit(op, batch=batch, samples_per_s=sps, samples_per_s_best=batch / t["min_s"],
             flops_per_sample=flops, gflops=flops * sps * 1e-9, **t)
        print("  %-9s %12.0f samples/s (median of %d x %d calls; %.3g ms/call)"
              % (op, sps, t["repeats"], t["calls_per_repeat"], t["median_s"] * 1e3),
              file=sys.stderr)

    t_start = time.perf_counter()
    if args.config == "gemm":
        for n in (256, 512, 1024):
            a, b, c = torch.rand(n, n), torch.rand(n, n), torch.empty(n, n)
            reps, best = (5 if n >= 1024 else 20), float("inf")
            for r in range(reps + 2):
                t0 = time.perf_counter()
                torch.mm(a, b, out=c)
                if r >= 2:
                    best = min(best, time.perf_counter() - t0)
            emit("gemm", n=n, best_s=best, gflops=2.0 * n ** 3 / best * 1e-9)
            print("  gemm %4d: %.1f GFLOP/s" % (n, 2.0 * n ** 3 / best * 1e-9), file=sys.stderr)
    else:
        model = make_model(args.config)
        nparams = sum(p.numel() for p in model.parameters())
        print("config %s (%s, %d thread(s), torch): %d parameters"
              % (args.config, args.scalar, args.threads, nparams), file=sys.stderr)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
        batch = 256
        if args.config == "c":
            f_fwd, f_train = 4.0 * 2 * N_PLANAR, 12.0 * 2 * N_PLANAR

            def step():
                opt.zero_grad(set_to_none=True)
                loss = reverse_kl_loss(model, torch.randn(batch, 2))
                loss.backward()
                opt.step()
        else:
            if args.config == "a":
                train = np.loadtxt(os.path.join(DATA, "moons_train.csv"), delimiter=",")
            else:
                train = digits()[0]
            train = torch.tensor(train, dtype=dtype).contiguous()
            dim, hidden = train.shape[1], (64 if args.config == "a" else 256)
            f_fwd = N_COUPLINGS * mlp_flops([dim // 2, hidden, hidden, 2 * (dim - dim // 2)])
            f_train = 3 * f_fwd
            n_batches, counter = train.shape[0] // batch, [0]

            def step():
                j = (counter[0] % n_batches) * batch
                counter[0] += 1
                opt.zero_grad(set_to_none=True)
                loss = -model.log_prob(train[j:j + batch]).mean()
                loss.backward()
                opt.step()

        report("train", batch, measure(step, args.min_time, args.repeats), f_train)

        # Same parameters as nflow for the evaluation measurements, when exported.
        path = os.path.join(args.params_from or "", "params_%s_%s.txt" % (args.config, args.scalar))
        loaded = bool(args.params_from) and os.path.exists(path)
        if loaded:
            model.load(read_nflow_parameters(path, dtype))
        with torch.no_grad():
            n = args.eval_batch
            if args.config == "c":
                big = model.sample(n)
            else:
                big = train[torch.arange(n) % train.shape[0]].contiguous()
            report("log_prob", n, measure(lambda: model.log_prob(big).sum(), args.min_time,
                                          args.repeats), f_fwd)
            report("sample", n, measure(lambda: model.sample(n), args.min_time, args.repeats),
                   f_fwd)
        head["nflow_parameters_for_eval"] = loaded
    emit("process", peak_rss_kb=rss_kb(), baseline_rss_kb=baseline,
         seconds=time.perf_counter() - t_start, blas=blas_library())


# ------------------------------------------------------------------------------------------
# The weight-equivalence check.


def load_csv(path, dtype):
    a = np.loadtxt(path, delimiter=",", ndmin=2)
    return torch.tensor(a, dtype=dtype)


def check(args):
    results = []
    for config in ("a", "b", "c"):
        for scalar in ("float", "double"):
            stem = "%s_%s" % (config, scalar)
            ppath = os.path.join(args.dir, "params_%s.txt" % stem)
            if not os.path.exists(ppath):
                continue
            dtype = torch.float32 if scalar == "float" else torch.float64
            torch.set_default_dtype(dtype)
            model = make_model(config)
            params = read_nflow_parameters(ppath, dtype)
            model.load(params)
            nparams = sum(p.numel() for p in model.parameters())
            assert nparams == sum(v.numel() for v in params.values()), "parameter counts differ"
            x = load_csv(os.path.join(args.dir, "check_x_%s.csv" % stem), dtype)
            ref = load_csv(os.path.join(args.dir, "check_logp_%s.csv" % stem), dtype).reshape(-1)
            with torch.no_grad():
                lp = model.log_prob(x)
            finite = torch.isfinite(lp) & torch.isfinite(ref)
            diff = (lp - ref).abs()[finite]
            rel = diff / ref.abs()[finite].clamp_min(1.0)

            # Loss and gradient of the training objective on the exported batch.
            model.zero_grad(set_to_none=True)
            if config == "c":
                eps = load_csv(os.path.join(args.dir, "check_eps_%s.csv" % stem), dtype)
                loss = reverse_kl_loss(model, eps)
            else:
                loss = -model.log_prob(x).mean()
            loss.backward()
            grads = read_nflow_parameters(os.path.join(args.dir, "check_grad_%s.txt" % stem), dtype)
            named = {}
            for i, layer in enumerate(model.layers):
                if config == "c":
                    for p in ("u", "w", "b"):
                        named["flow.%d.%s" % (i, p)] = getattr(layer, p).grad
                else:
                    for k, lin in enumerate((layer.net[0], layer.net[2], layer.net[4])):
                        named["flow.%d.conditioner.weight%d" % (i, k)] = lin.weight.grad
                        named["flow.%d.conditioner.bias%d" % (i, k)] = lin.bias.grad
            gmax = max(float(g.abs().max()) for g in grads.values())
            gdiff = max(float((named[k].reshape(g.shape) - g).abs().max())
                        for k, g in grads.items())
            with open(os.path.join(args.dir, "check_loss_%s.txt" % stem)) as f:
                nflow_loss = float(f.read())
            r = {"config": config, "scalar": scalar, "points": int(x.shape[0]),
                 "parameters": nparams, "nonfinite": int((~finite).sum()),
                 "logp_max_abs_diff": float(diff.max()),
                 "logp_max_rel_diff": float(rel.max()),
                 "logp_mean_abs": float(ref.abs().mean()),
                 "loss_nflow": nflow_loss, "loss_torch": float(loss),
                 "grad_max_abs_diff": gdiff, "grad_max_abs": gmax,
                 "grad_rel_diff": gdiff / gmax if gmax > 0 else 0.0}
            results.append(r)
            print(json.dumps(dict({"impl": "check", "op": "equivalence"}, **r)), flush=True)
    if not results:
        print("no exported parameters in %s" % args.dir, file=sys.stderr)
        return 1
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    b = sub.add_parser("bench")
    b.add_argument("--config", choices=["a", "b", "c", "gemm"], required=True)
    b.add_argument("--scalar", choices=["float", "double"], required=True)
    b.add_argument("--threads", type=int, default=1)
    b.add_argument("--min-time", type=float, default=0.2)
    b.add_argument("--repeats", type=int, default=7)
    b.add_argument("--eval-batch", type=int, default=16384)
    b.add_argument("--params-from", default="")
    c = sub.add_parser("check")
    c.add_argument("--dir", required=True)
    args = p.parse_args()
    if args.mode == "bench":
        bench(args)
        return 0
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
