#!/usr/bin/env python3
"""Side-by-side: diffurl's UNet against diffusers/PyTorch on the same config, device, batch and threads.

    python bench/compare_torch.py --config bench/configs/small.json --batch 2 --res 32 --threads 2
    python bench/compare_torch.py --config bench/configs/sd15.json --batch 2 --device cuda

Runs `diffurl bench unet` (a subprocess, OMP_NUM_THREADS and --threads set, --json to a temporary file), then
builds the same UNet2DConditionModel in diffusers from the same config.json (UNet2DConditionModel.from_config),
times it the same way and prints a table: diffurl ms, torch ms and the ratio torch/diffurl (> 1: diffurl is
faster) for the forward and the forward+backward, the FLOP rates, and memory.

What is timed, on both sides (median of --iters after --warmup untimed forward+backward steps; on CUDA every
measurement is synchronised):
  forward           one UNet forward of the batch. torch: under torch.no_grad() (inference, as in sampling);
                    diffurl has no separate inference mode (its forward always saves what backward needs).
  forward+backward  forward, then backward of sum(out * grad_out) with a fixed random grad_out, computing every
                    parameter gradient and no input gradient. torch: model.zero_grad(set_to_none=True) between
                    steps (untimed); diffurl accumulates into its one gradient buffer.
Weights are random on both sides (never zeros: diffusers zero-initialises conv_out and proj_out): matrix
weights N(0, 1/fan_in), norm weights 1 + 0.1 N(0, 1), biases 0.1 N(0, 1); inputs N(0, 1); timesteps distinct
per sample. FLOPs per sample are diffurl's count from the config (matrix ops: conv, linear, attention); the
script also counts the forward independently with hooks on the torch modules and prints both.

Precision: --dtype bf16 runs torch's model.to(bfloat16) (bf16 weights, activations and gradients: the lightest
setup in memory); --dtype bf16-autocast runs the fp32 model under torch.autocast(bfloat16) (fp32 master weights
and gradients, bf16 matrix ops: mixed precision, the regime of diffurl's --precision bf16). diffurl runs
--precision bf16 for both; the memory comparison is like for like only with bf16-autocast
(bench/torch_memory_estimate.py models both on a CPU).

Memory: CUDA: torch.cuda.max_memory_allocated() (tensors only) next to diffurl's exact allocation plan
(parameters + gradients + activation arena + inputs) and its cudaMemGetInfo reading. CPU: peak RSS of both
processes (diffurl: its VmHWM, in its JSON; RUSAGE_CHILDREN would not do, since a child's ru_maxrss starts from
the size of the Python process it was forked from; torch: resource.getrusage of this process, with the RSS it
had before building the model, since the interpreter and torch's libraries are a large part of it).

Versions: written against and run with torch 1.13 (CPU build, Debian python3-torch) and diffusers 0.24.0,
the oracle environment /work/venv-oracle (see tests/fixtures/make_unet_fixtures.py). On a GPU machine a
different torch / diffusers may be present; the script uses only public, long-stable APIs
(UNet2DConditionModel.from_config, model(sample, t, encoder_hidden_states=...).sample, named_modules, forward
hooks, torch.cuda memory statistics), and reports the versions and the attention processor in use.

CPU threads: torch runs its own OpenMP pool (torch.set_num_threads) and calls BLAS from the main thread. A
torch linked against the pthread build of OpenBLAS (Debian's python3-torch is: BLAS_INFO=generic, libblas.so.3
-> openblas-pthread) then has two thread pools on the same cores, and OpenMP workers spinning at their barrier
fight OpenBLAS's workers: on 2 cores this made torch 1.5-3x slower and its step times vary 5x. So on CPU the
script runs torch with OPENBLAS_NUM_THREADS=1 by default (torch's fastest and steadiest setting measured here;
irrelevant to an MKL build); --torch-openblas-threads -1 keeps the stock behaviour. diffurl uses the OpenMP
build of OpenBLAS (one pool) and gets its environment unchanged apart from OMP_NUM_THREADS.

torch 1.13 CPU caveat: diffusers' AttnProcessor computes scores with torch.baddbmm(torch.empty(...), beta=0),
and torch 1.13's CPU baddbmm can carry NaN/Inf from that uninitialised memory into the result. If the output
is not finite the script says so, replaces Attention.get_attention_scores with plain bmm + softmax (same
FLOPs) and times again (--attention-patch always|never changes this).
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="diffusers UNet config.json (e.g. bench/configs/small.json)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--res", type=int, default=0, help="height = width (0: the config's sample_size)")
    ap.add_argument("--context", type=int, default=77, help="context length L")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for both (0: torch's / OpenMP's default)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "bf16-autocast", "fp16"],
                    help="torch's precision: bf16 = model.to(bfloat16) (bf16 weights and gradients); bf16-autocast = "
                         "fp32 model under torch.autocast(bfloat16), fp32 weights and gradients (mixed precision, "
                         "diffurl's bf16 regime). diffurl runs fp32, or --precision bf16 for both bf16 modes "
                         "(fp16: diffurl stays fp32)")
    ap.add_argument("--iters", type=int, default=5, help="timed iterations (median reported)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed forward+backward iterations first")
    ap.add_argument("--diffurl", default="build/diffurl", help="the diffurl binary")
    ap.add_argument("--skip-diffurl", action="store_true", help="time torch only")
    ap.add_argument("--tf32", action="store_true",
                    help="let torch use TF32 on CUDA (off by default: diffurl's fp32 path is true fp32)")
    ap.add_argument("--attention-patch", default="auto", choices=["auto", "always", "never"],
                    help="replace diffusers' baddbmm-on-empty attention scores (see the header)")
    ap.add_argument("--torch-openblas-threads", type=int, default=1,
                    help="OPENBLAS_NUM_THREADS for torch on CPU (-1: leave the environment alone); see the header")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write both results and the ratios to this JSON file")
    return ap.parse_args()


ARGS = parse_args()
CHILD_ENV = dict(os.environ)  # diffurl's environment: as the user had it
if ARGS.threads > 0:  # before torch is imported, so that its OpenMP pool starts with this size
    os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)
    os.environ["MKL_NUM_THREADS"] = str(ARGS.threads)
if ARGS.torch_openblas_threads >= 0 and not ARGS.device.startswith("cuda"):  # read when OpenBLAS loads
    os.environ["OPENBLAS_NUM_THREADS"] = str(ARGS.torch_openblas_threads)

import torch  # noqa: E402
import diffusers  # noqa: E402
from diffusers import UNet2DConditionModel  # noqa: E402


def rss_now_bytes():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def mib(x):
    return "-" if x is None else ("%.2f GiB" % (x / 2**30) if x >= 2**30 else "%.1f MiB" % (x / 2**20))


# --- diffurl ------------------------------------------------------------------------------------------------
def run_diffurl(res):
    with tempfile.TemporaryDirectory() as tmp:
        out_json = os.path.join(tmp, "diffurl.json")
        cmd = [ARGS.diffurl, "bench", "unet", "--config", ARGS.config, "--batch", str(ARGS.batch), "--res", str(res),
               "--context", str(ARGS.context), "--device", ARGS.device, "--iters", str(ARGS.iters),
               "--warmup", str(ARGS.warmup), "--seed", str(ARGS.seed + 1), "--json", out_json]
        if ARGS.dtype in ("bf16", "bf16-autocast"):
            cmd += ["--precision", "bf16"]  # bf16 activations and working weights, fp32 master weights
        env = dict(CHILD_ENV)  # (diffurl sets OpenBLAS's threads itself, from --threads)
        if ARGS.threads > 0:
            cmd += ["--threads", str(ARGS.threads)]
            env["OMP_NUM_THREADS"] = str(ARGS.threads)
        print("$ " + ("OMP_NUM_THREADS=%d " % ARGS.threads if ARGS.threads > 0 else "") + " ".join(cmd), flush=True)
        proc = subprocess.run(cmd, env=env)
        if proc.returncode != 0 or not os.path.exists(out_json):
            sys.exit("compare_torch: diffurl bench unet failed (exit %d); see its output above" % proc.returncode)
        with open(out_json) as f:
            result = json.load(f)
    return result


# --- torch --------------------------------------------------------------------------------------------------
def randomise(model, gen):
    """Every parameter random and non-zero, as diffurl's bench does (see the header)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if p.dim() >= 2:
                value = noise / (p[0].numel() ** 0.5)  # fan_in = in_channels * kh * kw, or in_features
            elif name.endswith(".weight"):
                value = 1.0 + 0.1 * noise  # GroupNorm / LayerNorm weight
            else:
                value = 0.1 * noise
            p.copy_(value.to(p.device, p.dtype))


def attention_modules(model):
    return [m for m in model.modules() if hasattr(m, "to_q") and hasattr(m, "to_k") and hasattr(m, "to_v")]


def count_forward_flops(model, run_forward):
    """Matrix-op FLOPs of one forward from module hooks: Conv2d, Linear, and attention QK^T + PV (4 Lq Lk dim)."""
    total = [0.0]
    seen = {}
    hooks = []

    def conv_hook(mod, inp, out):
        k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
        total[0] += 2.0 * out.numel() * k

    def linear_hook(mod, inp, out):
        total[0] += 2.0 * out.numel() * mod.in_features

    def shape_hook(key):
        def hook(mod, inp, out):
            seen[key] = out.shape  # [B, L, inner_dim]
        return hook

    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv2d):
            hooks.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, torch.nn.Linear):
            hooks.append(mod.register_forward_hook(linear_hook))
    attns = attention_modules(model)
    for i, a in enumerate(attns):
        hooks.append(a.to_q.register_forward_hook(shape_hook((i, "q"))))
        hooks.append(a.to_k.register_forward_hook(shape_hook((i, "k"))))
    run_forward()
    for h in hooks:
        h.remove()
    for i in range(len(attns)):
        q, k = seen.get((i, "q")), seen.get((i, "k"))
        if q is not None and k is not None:  # (a module the forward never called adds nothing)
            total[0] += 4.0 * q[0] * q[1] * k[1] * q[2]
    return total[0]


def patch_attention(model):
    """Plain bmm + softmax in place of baddbmm on torch.empty (torch 1.13 CPU NaN issue); same math and FLOPs."""
    classes = {type(m) for m in attention_modules(model) if hasattr(m, "get_attention_scores")}
    if not classes:
        return False

    def scores(self, query, key, attention_mask=None):
        s = torch.bmm(query, key.transpose(-1, -2)) * self.scale
        if attention_mask is not None:
            s = s + attention_mask
        return s.softmax(dim=-1).to(query.dtype)

    for cls in classes:
        cls.get_attention_scores = scores
    return True


def time_torch(res):
    device = torch.device(ARGS.device)
    # bf16-autocast: fp32 weights, inputs and gradients; the forward under autocast (bf16 matrix ops, fp32 norms)
    autocast = ARGS.dtype == "bf16-autocast"
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "bf16-autocast": torch.float32,
             "fp16": torch.float16}[ARGS.dtype]
    if ARGS.threads > 0:
        torch.set_num_threads(ARGS.threads)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = ARGS.tf32
        torch.backends.cudnn.allow_tf32 = ARGS.tf32
        torch.backends.cudnn.benchmark = True  # diffurl also picks its cuDNN algorithms by measuring
    rss_before = rss_now_bytes()
    with open(ARGS.config) as f:
        config = json.load(f)
    model = UNet2DConditionModel.from_config(config)
    gen = torch.Generator().manual_seed(ARGS.seed)
    randomise(model, gen)
    model = model.to(device=device, dtype=dtype).train()
    nparams = sum(p.numel() for p in model.parameters())
    B, L = ARGS.batch, ARGS.context
    cin, cout, dctx = model.config.in_channels, model.config.out_channels, model.config.cross_attention_dim
    sample = torch.randn((B, cin, res, res), generator=gen).to(device, dtype)
    ctx = torch.randn((B, L, dctx), generator=gen).to(device, dtype)
    grad_out = torch.randn((B, cout, res, res), generator=gen).to(device, dtype)
    t = torch.tensor([(999 + 379 * b) % 1000 for b in range(B)], device=device)

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    def forward():
        if autocast:
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                return model(sample, t, encoder_hidden_states=ctx).sample.float()
        return model(sample, t, encoder_hidden_states=ctx).sample

    def step():
        model.zero_grad(set_to_none=True)
        sync()
        t0 = time.perf_counter()
        out = forward()
        out.backward(grad_out)
        sync()
        return time.perf_counter() - t0, out

    with torch.no_grad():
        flops_hooks = count_forward_flops(model, forward) / B

    patched = False
    if ARGS.attention_patch == "always":
        patched = patch_attention(model)
    finite = True
    for attempt in range(2):
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        for w in range(ARGS.warmup):
            dt, out = step()
            print("torch warm-up %d/%d: forward+backward %.1f ms" % (w + 1, ARGS.warmup, dt * 1e3), flush=True)
        fwd = []
        with torch.no_grad():
            for i in range(ARGS.iters):
                sync()
                t0 = time.perf_counter()
                out = forward()
                sync()
                fwd.append(time.perf_counter() - t0)
                print("torch forward %d/%d: %.1f ms" % (i + 1, ARGS.iters, fwd[-1] * 1e3), flush=True)
        finite = bool(torch.isfinite(out).all())
        steps = []
        for i in range(ARGS.iters):
            dt, out = step()
            steps.append(dt)
            print("torch forward+backward %d/%d: %.1f ms" % (i + 1, ARGS.iters, dt * 1e3), flush=True)
        finite = finite and bool(torch.isfinite(out).all())
        if finite or patched or ARGS.attention_patch == "never":
            break
        print("torch: the output is not finite (torch 1.13 CPU baddbmm on torch.empty?); patching "
              "get_attention_scores to plain bmm + softmax and timing again", flush=True)
        patched = patch_attention(model)
        if not patched:
            break
    grad_norm = torch.sqrt(sum((p.grad.float() ** 2).sum() for p in model.parameters() if p.grad is not None))
    processors = sorted({type(a.processor).__name__ for a in attention_modules(model) if hasattr(a, "processor")})
    return {
        "params": nparams,
        "forward_ms_per_batch": [x * 1e3 for x in fwd],
        "fwd_bwd_ms_per_batch": [x * 1e3 for x in steps],
        "forward_ms_per_sample": statistics.median(fwd) * 1e3 / B,
        "fwd_bwd_ms_per_sample": statistics.median(steps) * 1e3 / B,
        "flops_forward_hooks_per_sample": flops_hooks,
        "finite": finite,
        "grad_norm": float(grad_norm),
        "attention_patched": patched,
        "attention_processors": processors,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_before_model": rss_before,
        "cuda_max_memory_allocated": torch.cuda.max_memory_allocated(device) if cuda else None,
    }


def main():
    with open(ARGS.config) as f:
        res = ARGS.res or json.load(f).get("sample_size") or 0
    if res <= 0:
        sys.exit("compare_torch: the config has no sample_size: pass --res")
    versions = "torch %s, diffusers %s, python %s" % (torch.__version__, diffusers.__version__,
                                                     sys.version.split()[0])
    print("compare_torch: %s; %s, batch %d, %dx%d, context %d, threads %s, device %s, torch dtype %s, "
          "torch OPENBLAS_NUM_THREADS=%s" % (versions, ARGS.config, ARGS.batch, res, res, ARGS.context,
                                              ARGS.threads or "default", ARGS.device, ARGS.dtype,
                                              os.environ.get("OPENBLAS_NUM_THREADS", "(unset)")), flush=True)
    if ARGS.dtype == "fp16":
        print("warning: diffurl has no fp16 mode (it runs fp32 here); torch runs fp16: the ratio compares "
              "different precisions")
    d = None if ARGS.skip_diffurl else run_diffurl(res)
    print("\n--- torch ---", flush=True)
    tr = time_torch(res)

    B = ARGS.batch
    print("\n=== %s, batch %d, %dx%d, L=%d, device %s, threads %s ===" % (
        ARGS.config, B, res, res, ARGS.context, ARGS.device, ARGS.threads or "default"))
    print("%s; torch attention: %s%s; torch OPENBLAS_NUM_THREADS=%s" % (
        versions, ",".join(tr["attention_processors"]) or "?",
        " (patched scores: plain bmm)" if tr["attention_patched"] else "",
        os.environ.get("OPENBLAS_NUM_THREADS", "(unset)")))
    if d:
        print("diffurl: %s, params %d (torch %d)" % (d["device"], d["params"], tr["params"]))
        if d["params"] != tr["params"]:
            print("warning: the parameter counts differ: not the same model")
    ff = d["flops_forward_per_sample"] if d else tr["flops_forward_hooks_per_sample"]
    fb = d["flops_backward_per_sample"] if d else 2.0 * ff
    print("FLOPs/sample: forward %.4g GFLOP (diffurl count %s, torch hooks %.4g), forward+backward %.4g GFLOP"
          % (ff * 1e-9, "%.4g" % (d["flops_forward_per_sample"] * 1e-9) if d else "-",
             tr["flops_forward_hooks_per_sample"] * 1e-9, (ff + fb) * 1e-9))

    def spread(v):
        return "%.0f%%" % (100.0 * (max(v) - min(v)) / statistics.median(v))

    # The median is the reported figure; the minimum is shown too because noise from other processes on a
    # shared machine only ever adds time.
    rows = []
    print("\n%-18s %17s %17s %17s %14s %14s" % ("ms per sample", "diffurl med/min", "torch med/min",
                                                 "torch/diffurl", "diffurl spread", "torch spread"))
    for key, label, flops in (("forward", "forward", ff), ("fwd_bwd", "forward+backward", ff + fb)):
        t_ms = tr[key + "_ms_per_sample"]
        t_min = min(tr[key + "_ms_per_batch"]) / B
        d_ms = d[key + "_ms_per_sample"] if d else None
        d_min = min(d[key + "_ms_per_batch"]) / B if d else None
        ratio = t_ms / d_ms if d else None
        ratio_min = t_min / d_min if d else None
        rows.append({"measure": key, "diffurl_ms_per_sample": d_ms, "torch_ms_per_sample": t_ms,
                     "ratio_torch_over_diffurl": ratio, "diffurl_min_ms_per_sample": d_min,
                     "torch_min_ms_per_sample": t_min, "ratio_of_minima": ratio_min})
        print("%-18s %17s %17s %17s %14s %14s" % (
            label, "%.2f / %.2f" % (d_ms, d_min) if d else "-", "%.2f / %.2f" % (t_ms, t_min),
            "%.2f / %.2f" % (ratio, ratio_min) if d else "-",
            spread(d[key + "_ms_per_batch"]) if d else "-", spread(tr[key + "_ms_per_batch"])))
    print("%-18s %12s %12s" % ("TFLOP/s fwd", "%.4f" % (ff / d["forward_ms_per_sample"] * 1e-9) if d else "-",
                                "%.4f" % (ff / tr["forward_ms_per_sample"] * 1e-9)))
    print("%-18s %12s %12s" % ("TFLOP/s fwd+bwd",
                                "%.4f" % ((ff + fb) / d["fwd_bwd_ms_per_sample"] * 1e-9) if d else "-",
                                "%.4f" % ((ff + fb) / tr["fwd_bwd_ms_per_sample"] * 1e-9)))
    print("(torch/diffurl > 1: diffurl is faster; TFLOP/s from the medians; spread = (max - min) / median over "
          "the %d timed iterations)" % ARGS.iters)

    print("\nmemory:")
    if d:
        mem = d["memory_bytes"]
        print("  diffurl plan (exact): params %s + grads %s + activation arena %s + io %s = %s" % (
            mib(mem["params"]), mib(mem["grads"]), mib(mem["activation_arena"]), mib(mem["inputs_outputs"]),
            mib(mem["planned_total"])))
        if "device_in_use_after" in mem:
            print("  diffurl device memory in use (cudaMemGetInfo): %s before the model, %s after the run (+%s)" % (
                mib(mem["device_in_use_before"]), mib(mem["device_in_use_after"]),
                mib(mem["device_in_use_after"] - mem["device_in_use_before"])))
        print("  diffurl peak RSS: %s (VmHWM of the diffurl process)" % mib(mem["peak_rss"]))
    if tr["cuda_max_memory_allocated"] is not None:
        print("  torch torch.cuda.max_memory_allocated: %s" % mib(tr["cuda_max_memory_allocated"]))
    print("  torch peak RSS: %s (%s before building the model: interpreter + libraries)" % (
        mib(tr["peak_rss"]), mib(tr["rss_before_model"])))
    if not tr["finite"]:
        print("warning: torch's output was not finite: its timings are of NaN/Inf values")
    if d and not d.get("values_ok", True):
        print("warning: diffurl's output or gradient was not finite or was zero")

    if ARGS.json:
        with open(ARGS.json, "w") as f:
            json.dump({"versions": versions, "config": ARGS.config, "batch": B, "res": res, "context": ARGS.context,
                       "threads": ARGS.threads, "device": ARGS.device, "dtype": ARGS.dtype, "rows": rows,
                       "diffurl": d, "torch": tr}, f, indent=2)
        print("wrote %s" % ARGS.json)


if __name__ == "__main__":
    main()
