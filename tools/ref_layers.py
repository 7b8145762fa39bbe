#!/usr/bin/python3
"""Reference values for tests/test_layers.c, computed by PyTorch.

Each layer of prg.h's `layers` section is written here with torch ops in the
reference's own words (F.conv2d, F.group_norm, the legacy QKV attention of
improved-diffusion, timm's label-smoothing cross-entropy, GenerativeRL's
flow-matching reduction, ...).  Inputs come from a seeded torch generator;
the inputs, outputs and autograd gradients (for a fixed random upstream
gradient dy) are written as float literals to tests/fixtures/layers_ref.h.

Run with Debian's torch (CPU):  /usr/bin/python3 tools/ref_layers.py
With --bench [threads] it instead times the cases of tools/bench_layers.c in
PyTorch (default 2 threads, best of 5), for a side-by-side comparison.
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

torch.set_num_threads(2)


def bench(threads):
    """With 1 thread, process CPU time (steadier on a shared machine), as build/bench_layers 1."""
    import time
    torch.set_num_threads(threads)
    clock = time.process_time if threads == 1 else time.perf_counter

    def best(fn, reps=5):
        fn()
        t = 1e30
        for _ in range(reps):
            t0 = clock(); fn(); t = min(t, clock() - t0)
        return t

    print("torch %s, %d threads" % (torch.__version__, torch.get_num_threads()))
    for b, ci, h, w, co, k, s, p in [(8, 128, 32, 32, 128, 3, 1, 1), (8, 256, 16, 16, 256, 3, 1, 1),
                                      (8, 256, 8, 8, 256, 3, 1, 1), (8, 256, 4, 4, 256, 3, 1, 1),
                                      (8, 128, 32, 32, 128, 3, 2, 1), (8, 384, 32, 32, 256, 1, 1, 0),
                                      (8, 256, 16, 16, 768, 1, 1, 0)]:
        x = torch.rand(b, ci, h, w) - 0.5
        wt = (torch.rand(co, ci, k, k) - 0.5).requires_grad_(True)
        bias = (torch.rand(co) - 0.5).requires_grad_(True)
        xg = x.clone().requires_grad_(True)
        y = F.conv2d(x, wt, bias, stride=s, padding=p)
        dy = torch.rand_like(y) - 0.5
        flop = 2.0 * y.numel() * ci * k * k
        with torch.no_grad():
            tf = best(lambda: F.conv2d(x, wt, bias, stride=s, padding=p))
        yg = F.conv2d(xg, wt, bias, stride=s, padding=p)

        def bwd():
            torch.autograd.grad(yg, (xg, wt, bias), dy, retain_graph=True)
        tb = best(bwd)
        print("conv2d B=%-3d %3d->%-3d %2dx%-2d k%d s%d  fwd %8.2f ms %6.1f GFLOP/s   bwd %8.2f ms %6.1f GFLOP/s"
              % (b, ci, co, h, w, k, s, 1e3 * tf, flop / tf * 1e-9, 1e3 * tb, 2 * flop / tb * 1e-9))
    for b, c, t, heads in [(8, 256, 256, 4), (8, 256, 64, 4)]:
        qkv = (torch.rand(b, 3 * c, t) - 0.5).requires_grad_(True)
        with torch.no_grad():
            tf = best(lambda: legacy_attention(qkv, heads))
        a = legacy_attention(qkv, heads)
        da = torch.rand_like(a)
        tb = best(lambda: torch.autograd.grad(a, qkv, da, retain_graph=True))
        print("attention B=%d C=%d T=%d heads=%d      fwd %8.2f ms   bwd %8.2f ms" % (b, c, t, heads, 1e3 * tf, 1e3 * tb))
    x = (torch.rand(8, 128, 32, 32) - 0.5).requires_grad_(True)
    g = torch.rand(128).requires_grad_(True); be = torch.rand(128).requires_grad_(True)
    with torch.no_grad():
        tf = best(lambda: F.group_norm(x, 32, g, be, 1e-5))
    y = F.group_norm(x, 32, g, be, 1e-5); dy = torch.rand_like(y)
    tb = best(lambda: torch.autograd.grad(y, (x, g, be), dy, retain_graph=True))
    print("groupnorm B=8 C=128 HW=1024          fwd %8.2f ms   bwd %8.2f ms" % (1e3 * tf, 1e3 * tb))
    with torch.no_grad():
        tf = best(lambda: F.silu(x))
    y = F.silu(x)
    tb = best(lambda: torch.autograd.grad(y, x, dy, retain_graph=True))
    print("silu      n=%d                  fwd %8.2f ms   bwd %8.2f ms" % (x.numel(), 1e3 * tf, 1e3 * tb))


gen = torch.Generator().manual_seed(20261126)


def rand(*shape, lo=-1.0, hi=1.0):
    return (torch.rand(*shape, generator=gen, dtype=torch.float32) * (hi - lo) + lo)


def leaf(*shape, lo=-1.0, hi=1.0):
    return rand(*shape, lo=lo, hi=hi).requires_grad_(True)


out = []


def arr(name, t):
    vals = t.detach().reshape(-1).tolist()
    body = ",".join("%.9g" % v for v in vals)
    out.append("static const float %s[%d] = {%s};" % (name, len(vals), body))


def define(name, v):
    out.append("#define %s %d" % (name, v))


# ---- the layers, in the reference's words ---------------------------------

def legacy_attention(qkv, heads):
    """improved-diffusion QKVAttentionLegacy.forward"""
    bs, width, length = qkv.shape
    ch = width // (3 * heads)
    q, k, v = qkv.reshape(bs * heads, ch * 3, length).split(ch, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
    weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
    a = torch.einsum("bts,bcs->bct", weight, v)
    return a.reshape(bs, -1, length)


def timestep_embedding(t, dim, max_period=10000):
    """improved-diffusion / GenerativeRL timestep_embedding (cos first)"""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def label_smoothing_ce(x, target, smoothing):
    """timm.loss.LabelSmoothingCrossEntropy.forward"""
    confidence = 1.0 - smoothing
    logprobs = F.log_softmax(x, dim=-1)
    nll_loss = -logprobs.gather(dim=-1, index=target.unsqueeze(1))
    nll_loss = nll_loss.squeeze(1)
    smooth_loss = -logprobs.mean(dim=-1)
    loss = confidence * nll_loss + smoothing * smooth_loss
    return loss.mean()


def flow_matching_loss(v, target):
    """GenerativeRL flow_matching_loss_icfm, average=True: 0.5 sum over dim 1, mean over the rest"""
    return torch.mean(torch.sum(0.5 * (v - target) ** 2, dim=1))


if "--bench" in sys.argv:
    i = sys.argv.index("--bench")
    bench(int(sys.argv[i + 1]) if len(sys.argv) > i + 1 else 2)
    sys.exit(0)

# ---- conv2d ----------------------------------------------------------------
conv_cases = [  # b, ci, h, w, co, k, s, p
    (2, 3, 5, 6, 4, 3, 1, 1),
    (2, 3, 7, 6, 4, 3, 2, 1),
    (2, 5, 4, 3, 6, 1, 1, 0),
]
entries = []
for i, (b, ci, h, w, co, k, s, p) in enumerate(conv_cases):
    x = leaf(b, ci, h, w)
    wt = leaf(co, ci, k, k, lo=-0.5, hi=0.5)
    bias = leaf(co, lo=-0.5, hi=0.5)
    y = F.conv2d(x, wt, bias, stride=s, padding=p)
    dy = rand(*y.shape)
    y.backward(dy)
    pre = "ref_conv%d_" % i
    for n, t in (("x", x), ("wt", wt), ("bias", bias), ("y", y), ("dy", dy),
                 ("dx", x.grad), ("dw", wt.grad), ("db", bias.grad)):
        arr(pre + n, t)
    entries.append("{%d,%d,%d,%d,%d,%d,%d,%d,%s}" % (
        b, ci, h, w, co, k, s, p,
        ",".join(pre + n for n in ("x", "wt", "bias", "y", "dy", "dx", "dw", "db"))))
out.append("struct ref_conv_case { int b, ci, h, w, co, k, s, p;\n"
           "    const float *x, *wt, *bias, *y, *dy, *dx, *dw, *db; };")
out.append("static const struct ref_conv_case ref_conv[] = {%s};" % ",\n    ".join(entries))

# ---- linear ----------------------------------------------------------------
n, fin, fout = 3, 7, 5
define("REF_LIN_N", n); define("REF_LIN_IN", fin); define("REF_LIN_OUT", fout)
x = leaf(n, fin); wt = leaf(fout, fin, lo=-0.5, hi=0.5); bias = leaf(fout, lo=-0.5, hi=0.5)
y = F.linear(x, wt, bias); dy = rand(n, fout); y.backward(dy)
for nm, t in (("x", x), ("w", wt), ("b", bias), ("y", y), ("dy", dy), ("dx", x.grad),
              ("dw", wt.grad), ("db", bias.grad)):
    arr("ref_lin_" + nm, t)

# ---- GroupNorm -------------------------------------------------------------
b, c, hh, ww, g = 2, 8, 2, 3, 4
define("REF_GN_B", b); define("REF_GN_C", c); define("REF_GN_HW", hh * ww); define("REF_GN_G", g)
x = leaf(b, c, hh, ww, lo=-2, hi=2); gamma = leaf(c, lo=0.5, hi=1.5); beta = leaf(c, lo=-0.5, hi=0.5)
y = F.group_norm(x, g, gamma, beta, eps=1e-5); dy = rand(*y.shape); y.backward(dy)
for nm, t in (("x", x), ("gamma", gamma), ("beta", beta), ("y", y), ("dy", dy), ("dx", x.grad),
              ("dgamma", gamma.grad), ("dbeta", beta.grad)):
    arr("ref_gn_" + nm, t)

# ---- LayerNorm -------------------------------------------------------------
n, d = 3, 10
define("REF_LN_N", n); define("REF_LN_D", d)
x = leaf(n, d, lo=-2, hi=2); gamma = leaf(d, lo=0.5, hi=1.5); beta = leaf(d, lo=-0.5, hi=0.5)
y = F.layer_norm(x, (d,), gamma, beta, eps=1e-5); dy = rand(n, d); y.backward(dy)
for nm, t in (("x", x), ("gamma", gamma), ("beta", beta), ("y", y), ("dy", dy), ("dx", x.grad),
              ("dgamma", gamma.grad), ("dbeta", beta.grad)):
    arr("ref_ln_" + nm, t)

# ---- SiLU, tanh ------------------------------------------------------------
n = 50
define("REF_EW_N", n)
x0 = rand(n, lo=-5, hi=5); dy = rand(n)
arr("ref_ew_x", x0); arr("ref_ew_dy", dy)
x = x0.clone().requires_grad_(True); y = F.silu(x); y.backward(dy)
arr("ref_silu_y", y); arr("ref_silu_dx", x.grad)
x = x0.clone().requires_grad_(True); y = torch.tanh(x); y.backward(dy)
arr("ref_tanh_y", y); arr("ref_tanh_dx", x.grad)

# ---- scale-shift (ResBlock with use_scale_shift_norm) ----------------------
b, c, hw = 2, 3, 4
define("REF_SS_B", b); define("REF_SS_C", c); define("REF_SS_HW", hw)
x = leaf(b, c, 2, 2); ss = leaf(b, 2 * c)
scale, shift = torch.chunk(ss[:, :, None, None], 2, dim=1)
y = x * (1 + scale) + shift; dy = rand(*y.shape); y.backward(dy)
for nm, t in (("x", x), ("ss", ss), ("y", y), ("dy", dy), ("dx", x.grad), ("dss", ss.grad)):
    arr("ref_ss_" + nm, t)

# ---- attention -------------------------------------------------------------
b, c, t, heads = 2, 8, 6, 2
define("REF_ATT_B", b); define("REF_ATT_C", c); define("REF_ATT_T", t); define("REF_ATT_HEADS", heads)
qkv = leaf(b, 3 * c, t, lo=-1.5, hi=1.5)
a = legacy_attention(qkv, heads); da = rand(*a.shape); a.backward(da)
for nm, tt in (("qkv", qkv), ("a", a), ("da", da), ("dqkv", qkv.grad)):
    arr("ref_att_" + nm, tt)

# ---- nearest upsample x2 and average pooling --------------------------------
n, h, w, f = 3, 2, 3, 2
define("REF_UP_N", n); define("REF_UP_H", h); define("REF_UP_W", w); define("REF_POOL_F", f)
x = leaf(1, n, h, w)
y = F.interpolate(x, scale_factor=2, mode="nearest"); dy = rand(*y.shape); y.backward(dy)
arr("ref_up_x", x); arr("ref_up_y", y); arr("ref_up_dy", dy); arr("ref_up_dx", x.grad)
xp = y.detach().clone().requires_grad_(True)  # pool the upsampled planes
yp = F.avg_pool2d(xp, f); dyp = rand(*yp.shape); yp.backward(dyp)
arr("ref_pool_y", yp); arr("ref_pool_dy", dyp); arr("ref_pool_dx", xp.grad)

# ---- timestep embedding ----------------------------------------------------
tt = torch.tensor([0.0, 0.25, 0.5, 1.0, 0.0371, 7.3], dtype=torch.float32)
define("REF_EMB_B", len(tt)); define("REF_EMB_DIM", 16); define("REF_EMB_DIM_ODD", 15)
arr("ref_emb_t", tt); arr("ref_emb", timestep_embedding(tt, 16)); arr("ref_emb_odd", timestep_embedding(tt, 15))

# ---- label-smoothing cross-entropy -----------------------------------------
n, k = 4, 6
define("REF_CE_N", n); define("REF_CE_K", k)
logits = leaf(n, k, lo=-3, hi=3)
labels = torch.randint(0, k, (n,), generator=gen)
loss = label_smoothing_ce(logits, labels, 0.1); loss.backward()
arr("ref_ce_logits", logits)
out.append("static const int ref_ce_labels[%d] = {%s};" % (n, ",".join(str(int(v)) for v in labels)))
out.append("static const float ref_ce_loss = %.9g;" % loss.item())
arr("ref_ce_dlogits", logits.grad)

# ---- flow-matching loss ----------------------------------------------------
b, c, hw = 2, 3, 5
define("REF_FL_B", b); define("REF_FL_C", c); define("REF_FL_HW", hw)
v = leaf(b, c, 1, hw, lo=-2, hi=2); target = rand(b, c, 1, hw, lo=-2, hi=2)
loss = flow_matching_loss(v, target); loss.backward()
arr("ref_fl_v", v); arr("ref_fl_target", target)
out.append("static const float ref_fl_loss = %.9g;" % loss.item())
arr("ref_fl_dv", v.grad)

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "layers_ref.h")
with open(path, "w") as fh:
    fh.write("/* Generated by tools/ref_layers.py with torch %s; do not edit. */\n" % torch.__version__)
    fh.write("#ifndef LAYERS_REF_H\n#define LAYERS_REF_H\n")
    fh.write("\n".join(out))
    fh.write("\n#endif\n")
print("wrote", os.path.normpath(path), file=sys.stderr)
