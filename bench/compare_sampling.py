#!/usr/bin/env python3
"""Sampling throughput: diffurl's DDIM sampler (with log-probabilities) against a diffusers DDIM loop on the
same UNet config, batch, steps, guidance, device and threads.

    python bench/compare_sampling.py --config bench/configs/small16.json --batch 4 --steps 20 --threads 2

torch side: UNet2DConditionModel.from_config with random weights (matrix weights N(0, 1/fan_in), norm weights
1 + 0.1 N, biases 0.1 N, as diffurl's bench), DDIMScheduler with the SD-1.x schedule, and the loop of
diffusers' StableDiffusionPipeline: the UNet on [uncond; cond] (guidance != 1), ε̂ = ε_u + w (ε_c − ε_u),
scheduler.step(..., eta) under torch.no_grad(). diffurl side: `diffurl bench sample` (which also computes each
step's log-probability). Both: median of --iters runs after one warm-up run of 2 steps; prints trajectories/s
and the ratio diffurl/torch (> 1: diffurl faster). Versions: written with torch 1.13 (Debian, CPU) and
diffusers 0.24.0; on CPU torch runs with OPENBLAS_NUM_THREADS=1 (see bench/compare_torch.py for why).
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import time

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--config", required=True)
ap.add_argument("--batch", type=int, default=4)
ap.add_argument("--res", type=int, default=0)
ap.add_argument("--steps", type=int, default=20)
ap.add_argument("--guidance", type=float, default=5.0)
ap.add_argument("--eta", type=float, default=1.0)
ap.add_argument("--context", type=int, default=77)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--device", default="cpu")
ap.add_argument("--iters", type=int, default=3)
ap.add_argument("--diffurl", default="build/diffurl")
args = ap.parse_args()
if not args.device.startswith("cuda"):
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = str(args.threads)

import torch  # noqa: E402
from diffusers import DDIMScheduler, UNet2DConditionModel  # noqa: E402

torch.set_num_threads(args.threads)
dev = torch.device(args.device)
unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(args.config)).to(dev).eval()
gen = torch.Generator().manual_seed(0)
with torch.no_grad():
    for name, p in unet.named_parameters():
        noise = torch.randn(p.shape, generator=gen)
        value = noise / (p[0].numel() ** 0.5) if p.dim() >= 2 else (1 + 0.1 * noise if name.endswith(".weight") else 0.1 * noise)
        p.copy_(value.to(dev))
sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                      set_alpha_to_one=False, steps_offset=1)
res = args.res or unet.config.sample_size
B, C, D = args.batch, unet.config.in_channels, unet.config.cross_attention_dim
x_T = torch.randn(B, C, res, res, generator=gen).to(dev)
ctx = torch.randn(B, args.context, D, generator=gen).to(dev)
uncond = torch.randn(1, args.context, D, generator=gen).to(dev).expand(B, -1, -1)
embeds = torch.cat([uncond, ctx]) if args.guidance != 1 else ctx


def run(steps):
    sched.set_timesteps(steps)
    x = x_T.clone()
    g = torch.Generator(device=dev).manual_seed(1)
    with torch.no_grad():
        for t in sched.timesteps:
            inp = torch.cat([x, x]) if args.guidance != 1 else x
            out = unet(inp, t, encoder_hidden_states=embeds).sample
            if args.guidance != 1:
                u, c = out.chunk(2)
                out = u + args.guidance * (c - u)
            x = sched.step(out, t, x, eta=args.eta, generator=g).prev_sample
    if dev.type == "cuda":
        torch.cuda.synchronize()


run(2)
times = []
for _ in range(args.iters):
    t0 = time.perf_counter()
    run(args.steps)
    times.append(time.perf_counter() - t0)
torch_s = statistics.median(times)

cmd = [args.diffurl, "bench", "sample", "--config", args.config, "--batch", str(B), "--res", str(res), "--steps",
       str(args.steps), "--guidance", str(args.guidance), "--eta", str(args.eta), "--context", str(args.context),
       "--iters", str(args.iters), "--device", args.device]
env = dict(os.environ)
env.pop("OPENBLAS_NUM_THREADS", None)
out = subprocess.run(cmd, capture_output=True, text=True, env=env)
if out.returncode != 0:
    sys.exit(f"diffurl failed ({out.returncode}):\n{out.stderr}")
m = re.search(r"([0-9.]+) s per run", out.stdout)
diffurl_s = float(m.group(1))
print(f"config {args.config}, B={B}, {res}x{res}, {args.steps} steps, guidance {args.guidance}, eta {args.eta}, "
      f"{args.device}, {args.threads} threads; torch {torch.__version__}")
print(f"  diffusers loop : {torch_s:.3f} s per run ({B / torch_s:.3f} trajectories/s)")
print(f"  diffurl sample : {diffurl_s:.3f} s per run ({B / diffurl_s:.3f} trajectories/s, with log-probs)")
print(f"  ratio diffurl/torch throughput: {torch_s / diffurl_s:.2f}")
