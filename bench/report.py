#!/usr/bin/python3
"""Turns the JSON lines of bench_nflow and reference_torch.py into the Markdown tables that
scripts/bench.sh prints and writes to build/bench/results.md.

  report.py RESULTS.jsonl [--out results.md]
"""

import argparse
import json
import sys

CONFIGS = {"a": "a moons RealNVP", "b": "b digits RealNVP", "c": "c planar U1"}
OPS = ("train", "log_prob", "sample")


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                rows.append(json.loads(line))
    return rows


def fmt_rate(v):
    if v is None:
        return "—"
    if v >= 1e6:
        return "%.2fM" % (v / 1e6)
    if v >= 1e3:
        return "%.1fk" % (v / 1e3)
    return "%.0f" % v


def ratio(a, b, digits=2):
    if a is None or b is None or b == 0:
        return "—"
    return ("%%.%df" % digits) % (a / b)


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("results")
    p.add_argument("--out", default="")
    args = p.parse_args()
    rows = load(args.results)

    meas, proc, gemm, checks, meta = {}, {}, {}, [], {}
    for r in rows:
        impl = r.get("impl")
        if impl == "meta":
            meta.update(r)
            continue
        if impl == "check":
            checks.append(r)
            continue
        who = "torch" if impl == "torch" else "nflow-" + r.get("variant", "eigen")
        key = (who, r["config"], r["scalar"], int(r["threads"]))
        if r["op"] in OPS:
            meas[key + (r["op"],)] = r
        elif r["op"] == "process":
            proc[key] = r
        elif r["op"] == "gemm":
            g = gemm.setdefault((who, r["scalar"], int(r["threads"])), {})
            g[int(r["n"])] = r["gflops"]

    def sps(who, c, s, t, op):
        r = meas.get((who, c, s, t, op))
        return r["samples_per_s"] if r else None

    def peak(who, s, t):
        g = gemm.get((who, s, t))
        return max(g.values()) if g else None

    cells = sorted({(k[1], k[2], k[3]) for k in meas}, key=lambda k: (k[0], k[1] != "float", k[2]))
    eig, tor, bla = "nflow-eigen", "torch", "nflow-blas"
    out = []
    out.append("# nflow vs PyTorch benchmark\n")
    if meta:
        out.append("Machine: %s, %s logical CPUs; load average at start %s, at end %s. %s. "
                   "OpenBLAS core for torch / nflow-BLAS: %s. GLIBC_TUNABLES=%s. %s.\n"
                   % (meta.get("cpu", "?"), meta.get("nproc", "?"), meta.get("load_start", "?"),
                      meta.get("load_end", "?"), meta.get("torch", "?"),
                      meta.get("openblas_coretype", "?"), meta.get("glibc_tunables", "?"),
                      meta.get("date", "")))
    out.append("Medians over repeats (warm-up, then 7 repeats of calls lasting >= 0.2 s each "
               "unless changed). Batch 256 for train (forward, backward, Adam), 16384 for "
               "log_prob and sample. ratio = nflow / PyTorch (> 1: nflow faster; for memory "
               "< 1: nflow smaller).\n")

    out.append("## Throughput, samples/s\n")
    hdr = ["config", "scalar", "thr"]
    for op in OPS:
        hdr += [op + " nflow", op + " torch", "ratio"]
    body = []
    for c, s, t in cells:
        row = [CONFIGS[c], s, t]
        for op in OPS:
            a, b = sps(eig, c, s, t, op), sps(tor, c, s, t, op)
            row += [fmt_rate(a), fmt_rate(b), ratio(a, b)]
        body.append(row)
    out.append(table(hdr, body) + "\n")

    out.append("## Memory and arithmetic\n")
    out.append("Peak RSS = getrusage ru_maxrss of the configuration's own process; 'above start' "
               "subtracts the RSS at start (after `import torch` for PyTorch). flops/sample: "
               "3 x sum over dense layers of 2 in out per training sample (forward product, "
               "input gradient, weight gradient; planar: 12 D K, nominal). GEMM peak = best "
               "C = A B over n = 256, 512, 1024 in the same scalar and thread count, in the same "
               "run (nflow: Eigen; PyTorch: torch.mm).\n")
    hdr = ["config", "scalar", "thr", "RSS nflow MB", "RSS torch MB", "ratio",
           "above start nflow/torch MB", "flops/sample", "train GFLOP/s nflow",
           "GEMM peak nflow", "fraction", "train GFLOP/s torch", "GEMM peak torch", "fraction",
           "nflow mallocs/step"]
    body = []
    for c, s, t in cells:
        pe, pt = proc.get((eig, c, s, t)), proc.get((tor, c, s, t))
        me, mt = meas.get((eig, c, s, t, "train")), meas.get((tor, c, s, t, "train"))
        re_ = pe["peak_rss_kb"] / 1024 if pe else None
        rt = pt["peak_rss_kb"] / 1024 if pt else None
        de = (pe["peak_rss_kb"] - pe["baseline_rss_kb"]) / 1024 if pe else None
        dt = (pt["peak_rss_kb"] - pt["baseline_rss_kb"]) / 1024 if pt else None
        ge, gt = (me or {}).get("gflops"), (mt or {}).get("gflops")
        ke, kt = peak(eig, s, t), peak(tor, s, t)
        body.append([CONFIGS[c], s, t,
                     "%.1f" % re_ if re_ else "—", "%.1f" % rt if rt else "—", ratio(re_, rt),
                     "%.1f / %.1f" % (de or 0, dt or 0),
                     "%.0f" % me["flops_per_sample"] if me else "—",
                     "%.2f" % ge if ge is not None else "—",
                     "%.1f" % ke if ke else "—", ratio(ge, ke, 3),
                     "%.2f" % gt if gt is not None else "—",
                     "%.1f" % kt if kt else "—", ratio(gt, kt, 3),
                     "%.0f" % me["mallocs_per_call"] if me else "—"])
    out.append(table(hdr, body) + "\n")

    out.append("## Scaling: 2 threads / 1 thread (samples/s ratio)\n")
    hdr = ["config", "scalar"] + ["nflow " + op for op in OPS] + ["torch " + op for op in OPS] + \
        ["GEMM nflow", "GEMM torch"]
    body = []
    for c, s in sorted({(k[0], k[1]) for k in cells}, key=lambda k: (k[0], k[1] != "float")):
        row = [CONFIGS[c], s]
        for who in (eig, tor):
            row += [ratio(sps(who, c, s, 2, op), sps(who, c, s, 1, op)) for op in OPS]
        row += [ratio(peak(eig, s, 2), peak(eig, s, 1)), ratio(peak(tor, s, 2), peak(tor, s, 1))]
        body.append(row)
    out.append(table(hdr, body) + "\n")

    if any(k[0] == bla for k in meas):
        out.append("## Eigen's own kernels vs EIGEN_USE_BLAS (OpenBLAS, OpenMP build)\n")
        hdr = ["config", "scalar", "thr"]
        for op in OPS:
            hdr += [op + " eigen", op + " blas", "blas/eigen", "blas/torch"]
        hdr += ["GEMM peak eigen", "GEMM peak blas"]
        body = []
        for c, s, t in cells:
            row = [CONFIGS[c], s, t]
            for op in OPS:
                a, b, q = sps(eig, c, s, t, op), sps(bla, c, s, t, op), sps(tor, c, s, t, op)
                row += [fmt_rate(a), fmt_rate(b), ratio(b, a), ratio(b, q)]
            ke, kb = peak(eig, s, t), peak(bla, s, t)
            row += ["%.1f" % ke if ke else "—", "%.1f" % kb if kb else "—"]
            body.append(row)
        out.append(table(hdr, body) + "\n")

    out.append("## Same function: nflow parameters loaded into the PyTorch models\n")
    out.append("log_prob of the test inputs (a: moons_test.csv, b: digits_test.csv dequantised "
               "and standardised by nflow's side, c: 4096 samples of the model, through the "
               "numerical inverse), and the loss and parameter gradient of the training "
               "objective (a, b: mean NLL of those inputs; c: reverse KL on 4096 exported noise "
               "columns). rel = |diff| / max(1, |log p|); grad = max |diff| / max |grad|.\n")
    hdr = ["config", "scalar", "points", "parameters", "max abs diff log p", "max rel diff",
           "mean |log p|", "loss nflow", "loss torch", "grad max diff (rel)"]
    body = [[CONFIGS[r["config"]], r["scalar"], r["points"], r["parameters"],
             "%.2e" % r["logp_max_abs_diff"], "%.2e" % r["logp_max_rel_diff"],
             "%.3f" % r["logp_mean_abs"], "%.7g" % r["loss_nflow"], "%.7g" % r["loss_torch"],
             "%.2e (%.1e)" % (r["grad_max_abs_diff"], r["grad_rel_diff"])] for r in checks]
    out.append(table(hdr, body) + "\n")

    text = "\n".join(out)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
