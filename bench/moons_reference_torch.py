#!/usr/bin/python3
"""Plain-PyTorch twin of `two_moons --reference`, for comparing test NLLs seed by seed.

It trains the same model on the same files with the same budget as the reference configuration
of examples/two_moons.cpp and prints the test NLL of each seed, then their mean, standard
deviation and standard error, so that nflow's figures can be set against an independent
implementation's.

Run with Debian's interpreter (/usr/bin/python3 has python3-torch and python3-numpy):

  bench/moons_reference_torch.py [--seeds 0-9] [--steps 3000] [--keep-last] [--double]
                                 [--threads 1] [--json OUT]

  --seeds A-B | A,B,C   seeds to run (default 0-9); each seed sets torch.manual_seed (initial
                        weights) and the generator of the minibatch order
  --keep-last           also train on each epoch's final partial batch (as a DataLoader with
                        drop_last=False does); by default it is dropped, as nflow does
  --double              train in float64 instead of float32
  --json OUT            also write the per-seed results as JSON

  bench/moons_reference_torch.py --evaluate PARAMS

  --evaluate PARAMS     instead of training, load a parameter file written by
                        `two_moons --reference --save PARAMS` into this model and print its test
                        NLL, which must equal the one two_moons printed (same function, same
                        parameter layout)

The model, mirroring nflow (include/nflow/bijectors/affine_coupling.hpp, train/fit.hpp):
  * 2-D data, standard normal base; forward is latent -> data, log_prob runs the inverse, and
    coupling 0 is applied first in the forward direction (so last in log_prob).
  * 8 affine couplings; coupling i passes coordinate i % 2 through and conditions on it
    (nflow::Mask::alternating(2, i % 2 == 1)), transforming the other coordinate:
    x_B = z_B exp(s) + t with s = tanh(r), where (r, t) = MLP(z_A).
  * MLP 1 -> 64 -> 64 -> 2 with ReLU; hidden layers keep nn.Linear's default initialisation,
    the output layer is zero (every coupling starts as the identity).
  * Adam(lr 1e-3, betas (0.9, 0.999), eps 1e-8), constant rate, batch 256, 3,000 steps,
    minibatches drawn without replacement from a fresh permutation of the 20,000 training rows
    each epoch; the final parameters are evaluated on the 5,000 test rows.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "examples", "data")
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class Coupling(nn.Module):
    """RealNVP coupling on 2-D points: coordinate `cond` passes through, the other is affine."""

    def __init__(self, cond, hidden=64):
        super().__init__()
        self.cond, self.trans = cond, 1 - cond
        self.net = nn.Sequential(
            nn.Linear(1, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 2))
        nn.init.zeros_(self.net[4].weight)
        nn.init.zeros_(self.net[4].bias)

    def inverse(self, x):
        """z = f^{-1}(x) and log|det dz/dx| per row."""
        xa = x[:, self.cond:self.cond + 1]
        xb = x[:, self.trans:self.trans + 1]
        out = self.net(xa)
        s, t = torch.tanh(out[:, 0:1]), out[:, 1:2]
        zb = (xb - t) * torch.exp(-s)
        z = torch.cat([xa, zb], dim=1) if self.cond == 0 else torch.cat([zb, xa], dim=1)
        return z, -s[:, 0]


class Flow(nn.Module):
    def __init__(self, n_couplings=8):
        super().__init__()
        self.layers = nn.ModuleList(Coupling(i % 2) for i in range(n_couplings))

    def log_prob(self, x):
        log_det = torch.zeros(x.shape[0], dtype=x.dtype)
        for layer in reversed(self.layers):  # the inverse runs the last coupling first
            x, ld = layer.inverse(x)
            log_det = log_det + ld
        return -0.5 * (x * x).sum(dim=1) - 2 * HALF_LOG_2PI + log_det


def load(name, dtype):
    return torch.from_numpy(np.loadtxt(os.path.join(DATA, name), delimiter=",")).to(dtype)


def run_seed(seed, train, test, steps, batch, lr, keep_last):
    torch.manual_seed(seed)
    model = Flow().to(train.dtype)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
    gen = torch.Generator().manual_seed(seed)
    n = train.shape[0]
    order, cursor = None, n
    for _ in range(steps):
        # Next minibatch from this epoch's permutation; a new permutation when it runs out.
        remaining = n - cursor
        if remaining == 0 or (remaining < batch and not keep_last):
            order, cursor = torch.randperm(n, generator=gen), 0
        idx = order[cursor:cursor + batch]
        cursor += idx.shape[0]
        loss = -model.log_prob(train[idx]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        test_nll = -model.log_prob(test).double().mean().item()
        train_nll = -model.log_prob(train).double().mean().item()
    return test_nll, train_nll


def load_nflow_parameters(model, path):
    """Reads a file of nflow::save_parameters (name rows cols, then the values column-major)."""
    with open(path) as f:
        lines = [line for line in f.read().split("\n") if line.strip()]
    if not lines[0].startswith("nflow-parameters"):
        raise ValueError(f"{path}: not an nflow parameter file")
    values = {}
    for k in range(2, len(lines), 2):
        name, rows, cols = lines[k].split()
        flat = np.array(lines[k + 1].split(), dtype=np.float64)
        values[name] = torch.from_numpy(flat.reshape(int(cols), int(rows)).T.copy())
    with torch.no_grad():
        for i, layer in enumerate(model.layers):
            for j, linear in enumerate(layer.net[0::2]):  # the three nn.Linear of the MLP
                prefix = f"flow.{i}.conditioner."
                linear.weight.copy_(values[f"{prefix}weight{j}"])
                linear.bias.copy_(values[f"{prefix}bias{j}"].reshape(-1))


def parse_seeds(text):
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",")]


def summary(values):
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0
    return m, sd, sd / math.sqrt(len(values))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0-9")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--keep-last", action="store_true")
    ap.add_argument("--double", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    ap.add_argument("--evaluate", metavar="PARAMS")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    dtype = torch.float64 if args.double else torch.float32
    train, test = load("moons_train.csv", dtype), load("moons_test.csv", dtype)
    if args.evaluate:
        model = Flow().to(dtype)
        load_nflow_parameters(model, args.evaluate)
        with torch.no_grad():
            print(f"test NLL {-model.log_prob(test).double().mean().item():.4f} nats")
        return 0
    results = []
    for seed in parse_seeds(args.seeds):
        start = time.perf_counter()
        test_nll, train_nll = run_seed(seed, train, test, args.steps, args.batch, args.lr,
                                       args.keep_last)
        secs = time.perf_counter() - start
        results.append({"seed": seed, "test_nll": test_nll, "train_nll": train_nll, "s": secs})
        print(f"seed {seed:3d}  test NLL {test_nll:.4f}  train NLL {train_nll:.4f}  {secs:.1f} s",
              flush=True)
    m, sd, se = summary([r["test_nll"] for r in results])
    print(f"test NLL over {len(results)} seeds: mean {m:.4f}, sd {sd:.4f}, standard error {se:.4f}"
          f", min {min(r['test_nll'] for r in results):.4f}"
          f", max {max(r['test_nll'] for r in results):.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
