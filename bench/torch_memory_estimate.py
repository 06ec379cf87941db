#!/usr/bin/env python3
"""Estimate, without a GPU, torch.cuda.max_memory_allocated() of one diffusers UNet training step.

    python bench/torch_memory_estimate.py --config bench/configs/sd15.json --batch 8 --res 64 --mode pure-bf16
    python bench/torch_memory_estimate.py --config bench/configs/sd15.json --batch 8 --res 64 --mode autocast-bf16
    python bench/torch_memory_estimate.py --config bench/configs/sd15.json --batch 8 --res 64 --mode fp32

What it models: the step of bench/compare_torch.py's time_torch() on a CUDA GPU with torch 2.x: model.train(),
model.zero_grad(set_to_none=True), out = model(sample, t, encoder_hidden_states=ctx).sample,
out.backward(grad_out): parameter gradients only, no optimizer. Modes:
  pure-bf16      model.to(torch.bfloat16), bf16 inputs (compare_torch.py --dtype bf16).
  autocast-bf16  fp32 model and inputs, forward inside torch.autocast("cuda", dtype=torch.bfloat16), fp32 grads.
  fp32           fp32 model and inputs (compare_torch.py --dtype fp32, no TF32 effect on memory).

How: the UNet (UNet2DConditionModel.from_config, diffusers' AttnProcessor2_0) is built on the `meta` device (no
storage, no arithmetic: every shape, dtype, view and autograd node is real, so sd15 at batch 8 runs in seconds
on a CPU), and one forward + backward is run with
  * a TorchDispatchMode that sees every aten op's outputs (forward and backward) and keeps a ledger of live
    storages (each rounded up to 512 bytes, as the CUDA caching allocator does), freed when the storage dies:
    its maximum is the estimated peak; the live set at the peak is broken down by kind;
  * torch.autograd.graph.saved_tensors_hooks recording every tensor autograd saves, deduplicated by storage
    (a storage saved by several nodes, or through several views, counts once, at its full size): the
    "saved activations" figure; the graph is walked after the forward to attribute each storage to the
    grad_fn type that saves it (the top-10 table; a storage saved by several nodes is attributed to the first
    one met walking the graph from the output);
  * F.scaled_dot_product_attention replaced by an autograd.Function that saves exactly what CUDA's fused kernels
    save: q, k, v, out and the fp32 logsumexp ([B, heads, Lq] for flash attention, used for bf16;
    [B, heads, ceil(Lq/32)*32] for memory-efficient attention, used for fp32), never the attention matrix; its
    output has the kernels' layout ([B, Lq, heads, d] memory seen as [B, heads, Lq, d]), so the reshape after it
    is a view as on the GPU; its backward allocates dq/dk/dv in that layout plus the kernels' fp32 scratch
    (flash: dq_accum [B, ceil128(Lq), heads, ceil32(d)] and softmax_d [B, heads, ceil128(Lq)]);
  * autocast-bf16: CUDA autocast cannot run without CUDA, and CPU autocast has a different op policy (it keeps
    group_norm / layer_norm in bf16), so a TorchFunctionMode applies CUDA autocast's policy (the op lists of
    ATen/autocast_mode.h, torch 2.15) to the functions the model calls: conv/linear/matmul/SDPA in bf16, norms,
    exp, upsampling etc. in fp32; casts of fp32 leaf tensors that require grad (the weights) to bf16 are cached
    for the autocast region, as autocast's cached_cast does, so each weight is cast once. The bf16 copies live
    past the region while the graph saves them (conv and linear save their weight), i.e. until backward.
    --check-autocast runs the same emulation with CPU autocast's lists on real CPU tensors next to the real
    torch.autocast("cpu") and compares the two (a test of the emulation machinery, not of the CUDA lists).

Not counted (GPU-side allocations no CPU run can see): cuDNN convolution workspaces (with
torch.backends.cudnn.benchmark = True, as compare_torch.py sets, the first call of each conv shape tries
algorithms with their workspaces, which can raise the peak during warm-up), the cuBLAS workspace (a few MiB per
handle), the CUDA context (never in max_memory_allocated), and allocator block reuse that hands out a cached
block larger than asked (allocated bytes count the block). Op-internal scratch buffers of other kernels
(group_norm backward's per-channel sums etc.) are small and not modelled.

--device cpu runs the same thing with real storage and arithmetic (slow: use a small batch / resolution); it is
there to check that the meta run counts the same bytes.

Results (sd15.json, batch 8, 64x64 latents, context 77; torch 2.15.0, diffusers 0.42.1, meta device):
  mode            params   grads(all)  autocast casts  saved activations  simulated peak (phase)
  pure-bf16       1.60 GiB 1.60 GiB    -               6.98 GiB           8.70 GiB (start of backward)
  autocast-bf16   3.20 GiB 3.20 GiB    1.56 GiB        9.28 GiB           14.20 GiB (end of forward)
  fp32            3.20 GiB 3.20 GiB    -               13.94 GiB          17.38 GiB (start of backward)
With zero_grad(set_to_none=True) the gradients are allocated while backward frees the activations, so the peak
is well below params + all grads + saved activations (10.18 / 17.25 / 20.35 GiB).
Checks: at sd15 batch 1, 16x16, --device cpu (real tensors) gives the same saved bytes and the same peak as meta
in all three modes; --check-autocast (CPU lists, same shape) matches torch.autocast("cpu") exactly in saved
bytes, peak, gradients and live-after-forward.

Versions used (CPU-only machine, Python 3.11.7), installed with:
    python3 -m venv /tmp/venv-t2
    /tmp/venv-t2/bin/pip install torch==2.15.0 diffusers==0.42.1 safetensors==0.8.0 numpy==2.4.6
(the PyPI torch wheel, 2.15.0+cu132; the pip resolver then brought huggingface-hub 2.4.0). Any torch >= 2.1 with
a diffusers that supports it should do: the script uses only public APIs plus torch.utils._python_dispatch.
"""
import argparse
import collections
import gc
import json
import math
import sys
import weakref


def parse_args():
    ap = argparse.ArgumentParser(
        description="Estimate on the CPU (meta device: shapes only, no arithmetic) what "
                    "torch.cuda.max_memory_allocated() would be for one training step (forward + backward, "
                    "parameter gradients only) of diffusers' UNet2DConditionModel on a CUDA GPU with torch 2.x "
                    "and AttnProcessor2_0 (flash / memory-efficient SDPA). It counts: parameters, gradients, "
                    "autocast's cached bf16 weight copies, the activations autograd saves (deduplicated by "
                    "storage, SDPA counted as the fused GPU kernels save it), inputs, and the transient tensors "
                    "of every op, by replaying the step on meta tensors with a ledger of live storages; the "
                    "peak of that ledger is the estimate. Not counted: cuDNN/cuBLAS workspaces. See the "
                    "module docstring for details.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="diffusers UNet config.json (e.g. bench/configs/sd15.json)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--res", type=int, default=0, help="latent height = width (0: the config's sample_size)")
    ap.add_argument("--context", type=int, default=77, help="context length L (its width is cross_attention_dim)")
    ap.add_argument("--mode", default="pure-bf16", choices=["pure-bf16", "autocast-bf16", "fp32"])
    ap.add_argument("--device", default="meta", choices=["meta", "cpu"],
                    help="meta: shapes only (default, instant); cpu: real tensors, to check the meta count")
    ap.add_argument("--no-upsample-fp32", action="store_true",
                    help="autocast: keep F.interpolate in the input dtype (torch versions whose CUDA autocast "
                         "fp32 list lacks upsample_nearest2d); default: fp32, as torch 2.15's list has it")
    ap.add_argument("--check-autocast", action="store_true",
                    help="(with --device cpu) compare the autocast emulation, given CPU autocast's op lists, "
                         "against the real torch.autocast('cpu') and exit")
    ap.add_argument("--top", type=int, default=10, help="rows in the saved-tensor producer table")
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    return ap.parse_args()


ARGS = parse_args()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.overrides import TorchFunctionMode  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
import diffusers  # noqa: E402
from diffusers import UNet2DConditionModel  # noqa: E402
from diffusers.models.attention_processor import AttnProcessor2_0  # noqa: E402

BF16 = torch.bfloat16
ALLOC_ROUND = 512  # CUDA caching allocator: every block is a multiple of 512 bytes


def rnd(n):
    return ((n + ALLOC_ROUND - 1) // ALLOC_ROUND) * ALLOC_ROUND if n > 0 else 0


def fmt(n):
    return "%10.1f MiB" % (n / 2**20)


# --- the live-storage ledger ----------------------------------------------------------------------------------
class Ledger(TorchDispatchMode):
    """Every storage an aten op creates, alive until the storage dies; the running sum and its maximum."""

    def __init__(self):
        super().__init__()
        self.live = {}      # StorageImpl address -> (uid, bytes)
        self.by_uid = {}    # uid -> bytes (live only)
        self.next_uid = 0
        self.cur = 0
        self.peak = 0
        self.peak_uids = None
        self.peak_where = None
        self.phase = "setup"
        self.op_count = 0

    def track(self, t):
        if not isinstance(t, torch.Tensor):
            return None
        st = t.untyped_storage()
        key = st._cdata
        if key in self.live:
            return self.live[key][0]
        nb = rnd(st.nbytes())
        uid = self.next_uid
        self.next_uid += 1
        self.live[key] = (uid, nb)
        self.by_uid[uid] = nb
        self.cur += nb
        weakref.finalize(st, self._free, key, uid)
        return uid

    def uid_of(self, t):
        e = self.live.get(t.untyped_storage()._cdata)
        return None if e is None else e[0]

    def _free(self, key, uid):
        e = self.live.get(key)
        if e is not None and e[0] == uid:
            del self.live[key]
            self.cur -= self.by_uid.pop(uid)

    def note(self, where):
        if self.cur > self.peak:
            self.peak = self.cur
            self.peak_uids = dict(self.by_uid)
            self.peak_where = (self.phase, where)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.op_count += 1
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            self.track(t)
        self.note(str(func))
        return out


# --- SDPA as CUDA's fused kernels do it -------------------------------------------------------------------------
SDPA_CALLS = [0]
_ORIG_SDPA = F.scaled_dot_product_attention


def no_emulation():
    """Leave the autocast emulation (a TorchFunctionMode) for real-arithmetic helper computations."""
    import contextlib
    if AUTOCAST[0] is None or not torch.overrides._is_torch_function_mode_enabled():
        return contextlib.nullcontext()
    return torch.overrides._pop_mode_temporarily()


def ceil_to(x, m):
    return (x + m - 1) // m * m


class FusedSDPA(torch.autograd.Function):
    """Flash (bf16/fp16) or memory-efficient (fp32) attention: saves q, k, v, out, logsumexp."""

    @staticmethod
    def forward(ctx, q, k, v, scale):
        B, H, Lq, D = q.shape
        Dv = v.shape[-1]
        flash = q.dtype in (torch.bfloat16, torch.float16)
        if q.device.type == "meta":
            out = torch.empty((B, Lq, H, Dv), dtype=q.dtype, device=q.device).transpose(1, 2)
        else:  # real numbers on CPU, in the same layout (outside the autocast emulation)
            with no_emulation():
                ref = _ORIG_SDPA(q.float(), k.float(), v.float(), scale=scale).to(q.dtype)
            out = torch.empty((B, Lq, H, Dv), dtype=q.dtype, device=q.device).transpose(1, 2)
            out.copy_(ref)
            del ref
        lq_lse = Lq if flash else ceil_to(Lq, 32)
        lse = torch.empty((B, H, lq_lse), dtype=torch.float32, device=q.device)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.flash = flash
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        B, H, Lq, D = q.shape
        Lk = k.shape[2]
        dev = q.device
        dq = torch.empty((B, Lq, H, D), dtype=q.dtype, device=dev).transpose(1, 2)
        dk = torch.empty((B, Lk, H, D), dtype=k.dtype, device=dev).transpose(1, 2)
        dv = torch.empty((B, Lk, H, v.shape[-1]), dtype=v.dtype, device=dev).transpose(1, 2)
        if ctx.flash:  # flash-attention 2 mha_bwd scratch
            softmax_d = torch.empty((B, H, ceil_to(Lq, 128)), dtype=torch.float32, device=dev)
            dq_accum = torch.empty((B, ceil_to(Lq, 128), H, ceil_to(D, 32)), dtype=torch.float32, device=dev)
            scratch = (softmax_d, dq_accum)
        else:  # memory-efficient attention: delta [B, H, Lq]
            scratch = (torch.empty((B, H, Lq), dtype=torch.float32, device=dev),)
        if dev.type != "meta":
            with torch.enable_grad(), no_emulation():
                qq, kk, vv = (x.detach().float().requires_grad_() for x in (q, k, v))
                o = _ORIG_SDPA(qq, kk, vv, scale=ctx.scale)
                gq, gk, gv = torch.autograd.grad(o, (qq, kk, vv), dout.float())
            dq.copy_(gq)
            dk.copy_(gk)
            dv.copy_(gv)
        del scratch
        return dq, dk, dv, None


def fused_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    assert attn_mask is None and not is_causal and dropout_p == 0.0, "only the UNet's plain SDPA is modelled"
    SDPA_CALLS[0] += 1
    if AUTOCAST[0] is not None:  # SDPA is in CUDA autocast's lower-precision list
        query, key, value = (AUTOCAST[0].cast(x, BF16) for x in (query, key, value))
    return FusedSDPA.apply(query, key, value, scale)


# --- CUDA autocast's policy, emulated ----------------------------------------------------------------------------
# From ATen/autocast_mode.h (torch 2.15): AT_FORALL_LOWER_PRECISION_FP, AT_FORALL_FP32, AT_FORALL_FP32_SET_OPT_DTYPE,
# AT_FORALL_PROMOTE, under the names the Python-level functions have.
CUDA_LOWER = {"_convolution", "conv1d", "conv2d", "conv3d", "conv_tbc", "conv_transpose1d", "conv_transpose2d",
              "conv_transpose3d", "convolution", "prelu", "addmm", "addmv", "addr", "matmul", "__matmul__",
              "__rmatmul__", "einsum", "mm", "mv", "linalg_vecdot", "linear", "addbmm", "baddbmm", "bmm",
              "chain_matmul", "multi_dot", "linalg_multi_dot", "lstm_cell", "gru_cell", "rnn_tanh_cell",
              "rnn_relu_cell", "scaled_dot_product_attention"}
CUDA_FP32 = {"acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p", "reciprocal",
             "rsqrt", "sinh", "tan", "pow", "__pow__", "__rpow__", "float_power", "softplus", "layer_norm",
             "native_layer_norm", "rms_norm", "group_norm", "frobenius_norm", "nuclear_norm",
             "cosine_similarity", "poisson_nll_loss", "cosine_embedding_loss", "nll_loss", "nll_loss2d",
             "hinge_embedding_loss", "kl_div", "l1_loss", "smooth_l1_loss", "huber_loss", "mse_loss",
             "margin_ranking_loss", "multilabel_margin_loss", "soft_margin_loss", "triplet_margin_loss",
             "multi_margin_loss", "binary_cross_entropy_with_logits", "dist", "pdist", "cdist", "renorm",
             "logsumexp", "interpolate", "upsample", "upsample_nearest", "upsample_bilinear"}
CUDA_SET_OPT = {"prod", "softmax", "log_softmax", "cumprod", "cumsum", "vector_norm", "matrix_norm", "sum"}
CUDA_PROMOTE = {"addcdiv", "addcmul", "atan2", "bilinear", "cross", "dot", "vdot", "grid_sampler", "index_put",
                "tensordot", "scatter_add"}
# CPU autocast's lists (aten/src/ATen/autocast_mode.cpp, torch 2.x), for --check-autocast only: the ops of this
# model that it makes bf16; nothing this model calls is in its fp32 list; cat/stack are promoted.
CPU_LOWER = {"conv1d", "conv2d", "conv3d", "bmm", "mm", "linalg_vecdot", "baddbmm", "addmm", "addbmm", "linear",
             "_convolution", "matmul", "__matmul__", "conv_tbc", "conv_transpose1d", "conv_transpose2d",
             "conv_transpose3d", "prelu", "scaled_dot_product_attention"}
CPU_PROMOTE = {"stack", "cat", "index_copy"}

AUTOCAST = [None]


class AutocastEmulation(TorchFunctionMode):
    """torch.autocast(<cuda>, bfloat16) applied at the level of the functions the model calls."""

    def __init__(self, lower, fp32, set_opt, promote, ledger=None):
        super().__init__()
        self.lower, self.fp32, self.set_opt, self.promote = lower, fp32, set_opt, promote
        self.cache = {}  # id(leaf) -> (leaf, bf16 copy)
        self.cast_uids = set()
        self.cast_bytes = 0
        self.ledger = ledger
        self.counts = collections.Counter()

    def __enter__(self):
        AUTOCAST[0] = self
        return super().__enter__()

    def __exit__(self, *exc):
        AUTOCAST[0] = None
        self.cache.clear()  # autocast clears its cast cache on leaving the outermost region
        return super().__exit__(*exc)

    @staticmethod
    def eligible(x):
        return isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != torch.float64

    def cast(self, x, to):
        if not self.eligible(x) or x.dtype == to:
            return x
        if to == BF16 and x.dtype == torch.float32 and x.requires_grad and x.is_leaf and not x._is_view():
            hit = self.cache.get(id(x))
            if hit is not None and hit[0] is x:
                return hit[1]
            y = x.to(to)
            self.cache[id(x)] = (x, y)
            if self.ledger is not None:
                uid = self.ledger.track(y)
                self.cast_uids.add(uid)
                self.cast_bytes += self.ledger.by_uid[uid]
            return y
        return x.to(to)

    def cast_all(self, obj, to):
        if isinstance(obj, torch.Tensor):
            return self.cast(obj, to)
        if isinstance(obj, (list, tuple)) and any(isinstance(o, torch.Tensor) for o in obj):
            return type(obj)(self.cast_all(o, to) for o in obj)
        return obj

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", "")
        if name in self.lower:
            to = BF16
        elif name in self.fp32:
            to = torch.float32
        elif name in self.promote:
            dts = [a.dtype for a in list(args) + list(kwargs.values()) if self.eligible(a)]
            to = torch.float32 if torch.float32 in dts else BF16
        elif name in self.set_opt:
            first = args[0] if args else None
            if self.eligible(first) and kwargs.get("dtype") is None:
                kwargs["dtype"] = torch.float32
            self.counts[name] += 1
            return func(*args, **kwargs)
        else:
            return func(*args, **kwargs)
        self.counts[name] += 1
        args = tuple(self.cast_all(a, to) for a in args)
        kwargs = {k: self.cast_all(v, to) for k, v in kwargs.items()}
        return func(*args, **kwargs)


# --- building and running -------------------------------------------------------------------------------------
def build_model(config, device, dtype):
    if device == "meta":
        with torch.device("meta"):
            model = UNet2DConditionModel.from_config(config)
    else:
        model = UNet2DConditionModel.from_config(config)
        with torch.no_grad():
            for name, p in model.named_parameters():  # never zero (diffusers zero-inits conv_out, proj_out)
                if p.dim() >= 2:
                    p.normal_(0.0, 1.0 / math.sqrt(p[0].numel()))
                elif name.endswith(".weight"):
                    p.normal_(1.0, 0.1)
                else:
                    p.normal_(0.0, 0.1)
    model.set_attn_processor(AttnProcessor2_0())
    return model.to(dtype=dtype).train()


def walk_graph(root):
    """(grad_fn name, saved tensors) for every node reachable from root."""
    seen, stack, order = set(), [root], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        tensors = []
        if hasattr(node, "saved_tensors") and not type(node).__name__.endswith("Backward0"):
            try:
                tensors.extend(node.saved_tensors)  # custom autograd.Function
            except RuntimeError:
                pass
        for attr in dir(node):
            if attr.startswith("_saved_"):
                try:
                    v = getattr(node, attr)
                except Exception:
                    continue
                if isinstance(v, torch.Tensor):
                    tensors.append(v)
                elif isinstance(v, (list, tuple)):
                    tensors.extend(x for x in v if isinstance(x, torch.Tensor))
        order.append((node.name(), tensors))
        for nxt, _ in node.next_functions:
            stack.append(nxt)
    return order


def run_step(config, mode, device, batch, res, context, emulation_lists=None, real_cpu_autocast=False):
    dtype = BF16 if mode == "pure-bf16" else torch.float32
    torch.manual_seed(0)
    model = build_model(config, device, dtype)
    nparams = sum(p.numel() for p in model.parameters())
    B, L = batch, context
    cin, cout, dctx = model.config.in_channels, model.config.out_channels, model.config.cross_attention_dim
    ledger = Ledger()
    params = list(model.parameters())
    param_uids = {ledger.track(p) for p in params}
    for b in model.buffers():
        ledger.track(b)
    param_bytes = sum(ledger.by_uid[u] for u in param_uids)
    sample = torch.randn((B, cin, res, res), device=device, dtype=dtype)
    ctx = torch.randn((B, L, dctx), device=device, dtype=dtype)
    grad_out = torch.randn((B, cout, res, res), device=device, dtype=dtype)
    t = torch.tensor([(999 + 379 * b) % 1000 for b in range(B)], device=device)
    input_uids = {ledger.track(x) for x in (sample, ctx, grad_out, t)}
    input_bytes = sum(ledger.by_uid[u] for u in input_uids)
    ledger.note("start")

    saved = {}  # uid -> bytes
    saved_unknown = [0]

    def pack(x):
        uid = ledger.uid_of(x)
        if uid is None:  # not made by an op seen by the ledger (cannot happen on meta; guard)
            uid = ledger.track(x)
            saved_unknown[0] += 1
        saved[uid] = ledger.by_uid.get(uid, rnd(x.untyped_storage().nbytes()))
        return x.detach()

    def unpack(x):
        return x

    F.scaled_dot_product_attention = fused_sdpa
    SDPA_CALLS[0] = 0
    emu = None
    try:
        model.zero_grad(set_to_none=True)
        with ledger:
            ledger.phase = "forward"
            with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
                if mode == "autocast-bf16" and real_cpu_autocast:
                    with torch.autocast("cpu", dtype=BF16):
                        out = model(sample, t, encoder_hidden_states=ctx).sample
                elif mode == "autocast-bf16":
                    emu = AutocastEmulation(*emulation_lists, ledger=ledger)
                    with emu:
                        out = model(sample, t, encoder_hidden_states=ctx).sample
                    # out is bf16; backward with grad_out in out's dtype
                else:
                    out = model(sample, t, encoder_hidden_states=ctx).sample
            if out.dtype != grad_out.dtype:
                grad_out = grad_out.to(out.dtype)
                input_uids.add(ledger.track(grad_out))
            after_forward = ledger.cur
            # attribution of saved storages to grad_fn types (walk before backward; drop every reference after)
            owner = {}
            for name, tensors in walk_graph(out.grad_fn):
                for x in tensors:
                    uid = ledger.uid_of(x)
                    if uid is not None and uid not in owner:
                        owner[uid] = name
                del tensors
            gc.collect()
            ledger.phase = "backward"
            out.backward(grad_out)
            ledger.phase = "after"
        grad_uids = {ledger.uid_of(p.grad) for p in params if p.grad is not None}
        grad_bytes = sum(ledger.by_uid.get(u, 0) for u in grad_uids)
    finally:
        F.scaled_dot_product_attention = _ORIG_SDPA

    cast_uids = emu.cast_uids if emu is not None else set()
    if real_cpu_autocast:  # the casts autocast made of the weights: bf16 storages saved, not otherwise explained
        cast_uids = set()
    kinds = collections.OrderedDict()
    kinds["parameters"] = sum(v for u, v in saved.items() if u in param_uids)
    kinds["inputs"] = sum(v for u, v in saved.items() if u in input_uids)
    kinds["autocast weight casts"] = sum(v for u, v in saved.items() if u in cast_uids)
    act = {u: v for u, v in saved.items() if u not in param_uids and u not in input_uids and u not in cast_uids}
    by_owner = collections.Counter()
    count_owner = collections.Counter()
    for u, v in act.items():
        by_owner[owner.get(u, "?")] += v
        count_owner[owner.get(u, "?")] += 1

    # the live set at the peak, by kind
    pk = ledger.peak_uids
    at_peak = collections.OrderedDict()
    at_peak["parameters"] = sum(v for u, v in pk.items() if u in param_uids)
    at_peak["inputs (sample, ctx, grad_out, t)"] = sum(v for u, v in pk.items() if u in input_uids)
    at_peak["gradients (so far)"] = sum(v for u, v in pk.items() if u in grad_uids)
    at_peak["autocast weight casts"] = sum(v for u, v in pk.items() if u in cast_uids)
    at_peak["saved activations (still alive)"] = sum(v for u, v in pk.items() if u in act)
    rest = sum(pk.values()) - sum(at_peak.values())
    at_peak["other (grads in flight, op temporaries)"] = rest
    # CUDA caching allocator slack: a block from the large pool (requests > 1 MiB) is split only when more than
    # 1 MiB would remain, so a request can be charged up to 1 MiB more than its size; fresh segments for
    # requests >= 10 MiB are 2 MiB multiples. Upper bound: 1 MiB per live large block; "fresh": the 2 MiB rule.
    large = [v for v in pk.values() if v > 2**20]
    slack_max = len(large) * 2**20
    slack_fresh = 0
    for v in large:
        seg = ceil_to(v, 2 * 2**20) if v >= 10 * 2**20 else None
        if seg is not None and seg - v <= 2**20:
            slack_fresh += seg - v

    return {
        "mode": mode, "device": device, "batch": B, "res": res, "context": L, "params": nparams,
        "param_bytes": param_bytes, "grad_bytes": grad_bytes, "input_bytes": input_bytes,
        "autocast_cast_bytes": sum(v for u, v in saved.items() if u in cast_uids) if emu else 0,
        "autocast_cached_weights": len(cast_uids), "autocast_cache_all_bytes": emu.cast_bytes if emu else 0,
        "saved_total_bytes": sum(saved.values()), "saved_by_kind": dict(kinds),
        "saved_activation_bytes": sum(act.values()), "saved_storages": len(act),
        "saved_by_grad_fn": by_owner.most_common(), "saved_count_by_grad_fn": dict(count_owner),
        "live_after_forward": after_forward,
        "peak_bytes": ledger.peak, "peak_phase": ledger.peak_where[0], "peak_after_op": ledger.peak_where[1],
        "peak_breakdown": dict(at_peak), "peak_large_blocks": len(large), "slack_max_bytes": slack_max,
        "slack_fresh_bytes": slack_fresh, "sdpa_calls": SDPA_CALLS[0], "ops": ledger.op_count,
        "saved_not_from_ops": saved_unknown[0],
        "autocast_ops": dict(emu.counts) if emu is not None else {},
        "dtype_out": str(out.dtype),
    }


def report(r, top):
    print("diffusers %s, torch %s; %s, device %s; batch %d, %dx%d latents, context %d; %.2fM parameters"
          % (diffusers.__version__, torch.__version__, r["mode"], r["device"], r["batch"], r["res"], r["res"],
             r["context"], r["params"] / 1e6))
    print("attention: AttnProcessor2_0 -> fused SDPA model (%d calls); %d aten ops; output %s"
          % (r["sdpa_calls"], r["ops"], r["dtype_out"]))
    if r["autocast_ops"]:
        print("autocast emulation, calls cast by policy: " +
              ", ".join("%s %d" % kv for kv in sorted(r["autocast_ops"].items())))
    print()
    print("Components")
    print("  parameters                       %s" % fmt(r["param_bytes"]))
    print("  gradients (all, after backward)  %s" % fmt(r["grad_bytes"]))
    print("  inputs (sample, ctx, grad_out, t)%s" % fmt(r["input_bytes"]))
    print("  autocast weight cache (bf16)     %s   (saved by the graph, alive into backward; all %d cached "
          "casts, biases too: %s, alive during the forward)"
          % (fmt(r["autocast_cast_bytes"]), r["autocast_cached_weights"],
             fmt(r["autocast_cache_all_bytes"]).strip()))
    print("  saved activations                %s   (%d storages; autograd also saves the parameters: %s, "
          "inputs: %s, counted above)" % (fmt(r["saved_activation_bytes"]), r["saved_storages"],
                                          fmt(r["saved_by_kind"]["parameters"]).strip(),
                                          fmt(r["saved_by_kind"]["inputs"]).strip()))
    print()
    print("Saved activations by the grad_fn that saves them (top %d)" % top)
    for name, b in r["saved_by_grad_fn"][:top]:
        print("  %-36s %s  (%d storages)" % (name, fmt(b), r["saved_count_by_grad_fn"][name]))
    rest = sum(b for _, b in r["saved_by_grad_fn"][top:])
    if rest:
        print("  %-36s %s" % ("(the rest)", fmt(rest)))
    print()
    simple = r["param_bytes"] + r["grad_bytes"] + r["input_bytes"] + r["autocast_cast_bytes"] + \
        r["saved_activation_bytes"]
    print("Simple sum: parameters + all gradients + inputs + autocast casts + saved activations = %s"
          % fmt(simple).strip())
    print("Live at the end of the forward (before backward):                            %s"
          % fmt(r["live_after_forward"]).strip())
    print()
    print("Simulated peak (ledger of live storages, 512 B blocks): %s = %.2f GiB  [%s, after %s]"
          % (fmt(r["peak_bytes"]).strip(), r["peak_bytes"] / 2**30, r["peak_phase"], r["peak_after_op"]))
    for k, v in r["peak_breakdown"].items():
        print("  %-42s %s" % (k, fmt(v)))
    print("Allocator slack not in the figure: %s if every block was fresh (2 MiB segment rounding of "
          "requests >= 10 MiB), at most %s (1 MiB for each of the %d blocks > 1 MiB live at the peak)"
          % (fmt(r["slack_fresh_bytes"]).strip(), fmt(r["slack_max_bytes"]).strip(), r["peak_large_blocks"]))
    print()
    print("ESTIMATE torch.cuda.max_memory_allocated() = %.2f GiB (%.0f MiB), plus cuDNN/cuBLAS workspaces"
          % (r["peak_bytes"] / 2**30, r["peak_bytes"] / 2**20))


def check_autocast(config):
    """Emulation with CPU autocast's lists vs the real torch.autocast('cpu'), real tensors."""
    B, res = ARGS.batch, ARGS.res
    emu = run_step(config, "autocast-bf16", "cpu", B, res, ARGS.context,
                   emulation_lists=(CPU_LOWER, set(), set(), CPU_PROMOTE))
    real = run_step(config, "autocast-bf16", "cpu", B, res, ARGS.context, real_cpu_autocast=True)
    print("check: CPU autocast lists, emulated vs torch.autocast('cpu'), batch %d res %d" % (B, res))
    for key in ("saved_total_bytes", "peak_bytes", "grad_bytes", "live_after_forward"):
        print("  %-20s emulated %s   real %s" % (key, fmt(emu[key]), fmt(real[key])))
    print("  (per grad_fn below, the real run counts autocast's weight casts as activations: it cannot tell them apart)")
    e, r_ = dict(emu["saved_by_grad_fn"]), dict(real["saved_by_grad_fn"])
    for k in sorted(set(e) | set(r_)):
        if e.get(k, 0) != r_.get(k, 0):
            print("  differs: %-30s emulated %s real %s" % (k, fmt(e.get(k, 0)), fmt(r_.get(k, 0))))
    return emu, real


def main():
    with open(ARGS.config) as f:
        config = json.load(f)
    res = ARGS.res or config.get("sample_size", 64)
    ARGS.res = res
    if ARGS.check_autocast:
        emu, real = check_autocast(config)
        if ARGS.json:
            with open(ARGS.json, "w") as f:
                json.dump({"emulated": emu, "real": real}, f, indent=1)
        return
    fp32_list = set(CUDA_FP32)
    if ARGS.no_upsample_fp32:
        fp32_list -= {"interpolate", "upsample", "upsample_nearest", "upsample_bilinear"}
    r = run_step(config, ARGS.mode, ARGS.device, ARGS.batch, res, ARGS.context,
                 emulation_lists=(CUDA_LOWER, fp32_list, CUDA_SET_OPT, CUDA_PROMOTE))
    report(r, ARGS.top)
    if ARGS.json:
        with open(ARGS.json, "w") as f:
            json.dump(r, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
