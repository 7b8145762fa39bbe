#!/usr/bin/python3
"""PyTorch reference for the U-Net section of prg.h (docs/METHOD.md B).

The model is written here from docs/METHOD.md B.2/B.3 (improved-diffusion UNetModel
as GenerativeRL's unet_2D runs it: scale-shift ResBlocks, legacy-order
attention, conv resampling, dropout 0).  Module and attribute names are chosen
so that state_dict() gives the reference names (time_embed.0.weight, ...).

    /usr/bin/python3 tools/ref_unet.py counts          parameter count of every preset
    /usr/bin/python3 tools/ref_unet.py fixtures        writes tests/fixtures/unet_ref.h
    /usr/bin/python3 tools/ref_unet.py check-grl DIR   compares with GenerativeRL's unet_2D
                                                       (DIR holds a copy of unet_2D.py)
    /usr/bin/python3 tools/ref_unet.py bench [B] [T]   forward / forward+backward ms, tiny32, T threads

Test weights are a formula of (tensor index, element index) that the C test
computes too (test_weight below, test_weight() in tests/test_unet.c), so the
fixtures store no weights: only outputs, input gradients and, per parameter
tensor, 16 sampled gradient elements with the tensor's gradient L2 norm, sum
and sum of absolute values.  References are computed in float64.
"""
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(2)

PRESETS = {
    # in, out, model_channels, num_res_blocks, channel_mult, attention downsample rates, heads, image size
    "cifar32": dict(cin=3, cout=3, mc=128, nrb=3, mult=(1, 2, 2, 2), attn=(2, 4), heads=4, size=32),
    "imagenet64": dict(cin=3, cout=3, mc=128, nrb=3, mult=(1, 2, 3, 4), attn=(4, 8), heads=4, size=64),
    "small32": dict(cin=3, cout=3, mc=64, nrb=2, mult=(1, 2, 2), attn=(2, 4), heads=4, size=32),
    "tiny32": dict(cin=3, cout=3, mc=32, nrb=1, mult=(1, 2, 2), attn=(4,), heads=4, size=32),
}
# The second fixture: one channel (MNIST-like), 16x16, two levels, two res
# blocks, attention at both levels with 2 heads.
MONO16 = dict(cin=1, cout=1, mc=32, nrb=2, mult=(1, 2), attn=(1, 2), heads=2, size=16)
GROUPS = 32


def zeroed(m):
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


class ResBlock(nn.Module):
    def __init__(self, cin, cout, emb_dim):
        super().__init__()
        self.in_layers = nn.Sequential(nn.GroupNorm(GROUPS, cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * cout))
        self.out_layers = nn.Sequential(nn.GroupNorm(GROUPS, cout), nn.SiLU(), nn.Dropout(0.0),
                                        zeroed(nn.Conv2d(cout, cout, 3, padding=1)))
        self.skip_connection = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x, emb):
        h = self.in_layers(x)
        scale, shift = self.emb_layers(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.out_layers[0](h) * (1 + scale) + shift
        h = self.out_layers[3](self.out_layers[1](h))
        return self.skip_connection(x) + h


class Attention(nn.Module):
    """Legacy order: head j owns qkv rows [3dj, 3d(j+1)) = its q | k | v."""

    def __init__(self, c, heads):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(GROUPS, c)
        self.qkv = nn.Conv1d(c, 3 * c, 1)
        self.proj_out = zeroed(nn.Conv1d(c, c, 1))

    def forward(self, x):
        b, c, hh, ww = x.shape
        t = hh * ww
        flat = x.reshape(b, c, t)
        d = c // self.heads
        qkv = self.qkv(self.norm(flat)).reshape(b * self.heads, 3 * d, t)
        s = d ** -0.25
        q, k, v = qkv[:, :d] * s, qkv[:, d:2 * d] * s, qkv[:, 2 * d:]
        w = torch.softmax(torch.bmm(q.transpose(1, 2), k), dim=-1)  # [bh, t (query), t (key)]
        a = torch.bmm(v, w.transpose(1, 2))                          # a[c, t] = sum_t' w[t, t'] v[c, t']
        return x + self.proj_out(a.reshape(b, c, t)).reshape(b, c, hh, ww)


class Down(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.op = nn.Conv2d(c, c, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Up(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


def sinusoidal(t, dim, dtype):
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=dtype) / half)
    args = t.to(dtype)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class UNet(nn.Module):
    def __init__(self, cin, cout, mc, nrb, mult, attn, heads, size):
        super().__init__()
        ed = 4 * mc
        self.mc = mc
        self.time_embed = nn.Sequential(nn.Linear(mc, ed), nn.SiLU(), nn.Linear(ed, ed))
        self.input_blocks = nn.ModuleList([nn.ModuleList([nn.Conv2d(cin, mc, 3, padding=1)])])
        skips = [mc]
        ch, ds = mc, 1
        for level, m in enumerate(mult):
            for _ in range(nrb):
                blk = [ResBlock(ch, m * mc, ed)]
                ch = m * mc
                if ds in attn:
                    blk.append(Attention(ch, heads))
                self.input_blocks.append(nn.ModuleList(blk))
                skips.append(ch)
            if level != len(mult) - 1:
                self.input_blocks.append(nn.ModuleList([Down(ch)]))
                skips.append(ch)
                ds *= 2
        self.middle_block = nn.ModuleList([ResBlock(ch, ch, ed), Attention(ch, heads), ResBlock(ch, ch, ed)])
        self.output_blocks = nn.ModuleList()
        for level in reversed(range(len(mult))):
            for i in range(nrb + 1):
                blk = [ResBlock(ch + skips.pop(), mult[level] * mc, ed)]
                ch = mult[level] * mc
                if ds in attn:
                    blk.append(Attention(ch, heads))
                if level and i == nrb:
                    blk.append(Up(ch))
                    ds //= 2
                self.output_blocks.append(nn.ModuleList(blk))
        self.out = nn.Sequential(nn.GroupNorm(GROUPS, ch), nn.SiLU(), zeroed(nn.Conv2d(mc, cout, 3, padding=1)))

    @staticmethod
    def run(block, h, emb):
        for layer in block:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        return h

    def forward(self, x, t):
        emb = self.time_embed(sinusoidal(t, self.mc, x.dtype))
        stack = []
        h = x
        for blk in self.input_blocks:
            h = self.run(blk, h, emb)
            stack.append(h)
        h = self.run(self.middle_block, h, emb)
        for blk in self.output_blocks:
            h = self.run(blk, torch.cat([h, stack.pop()], dim=1), emb)
        return self.out(h)


# ---- deterministic test data (the same formula is in tests/test_unet.c) ----

def hash_u(i, j):
    """Uniform [0, 1) from (stream i, element j): a 32-bit integer hash."""
    m = 0xFFFFFFFF
    h = (np.uint64((i + 1) * 0x9E3779B1 & m) + np.asarray(j, dtype=np.uint64) * np.uint64(0x85EBCA77)) & np.uint64(m)
    h ^= h >> np.uint64(15)
    h = (h * np.uint64(0x2C1B3C6D)) & np.uint64(m)
    h ^= h >> np.uint64(12)
    h = (h * np.uint64(0x297A2D39)) & np.uint64(m)
    h ^= h >> np.uint64(15)
    return h.astype(np.float64) / 4294967296.0


def test_weights(model):
    """Tensor i of the state dict, element j: GroupNorm weight 1 + (2u-1)/4,
    GroupNorm bias (2u-1)/4, conv/linear weight and bias (2u-1)/sqrt(fan_in)
    (fan_in of the layer's weight), u = hash_u(i, j); float32 values."""
    sd = model.state_dict()
    names = list(sd.keys())
    prev_shape = None
    with torch.no_grad():
        for i, name in enumerate(names):
            p = sd[name]
            u = hash_u(i, np.arange(p.numel(), dtype=np.uint64))
            shape = tuple(p.shape)
            if name.endswith("weight") and len(shape) == 1:
                val = 1.0 + 0.25 * (2.0 * u - 1.0)
            elif name.endswith("bias") and len(prev_shape) == 1:
                val = 0.25 * (2.0 * u - 1.0)
            else:
                wshape = shape if name.endswith("weight") else prev_shape
                fan = int(np.prod(wshape[1:]))
                val = (2.0 * u - 1.0) * (1.0 / math.sqrt(fan))
            p.copy_(torch.from_numpy(val.astype(np.float32).reshape(shape)))
            prev_shape = shape


def test_inputs(cfg, batch):
    n = batch * cfg["cin"] * cfg["size"] ** 2
    x = (2.0 * hash_u(1000, np.arange(n, dtype=np.uint64)) - 1.0).astype(np.float32)
    r = (2.0 * hash_u(1001, np.arange(batch * cfg["cout"] * cfg["size"] ** 2, dtype=np.uint64)) - 1.0)
    t = np.array([0.3, 0.85, 0.0, 1.0][:batch], dtype=np.float32)
    return (torch.from_numpy(x.reshape(batch, cfg["cin"], cfg["size"], cfg["size"])), torch.from_numpy(t),
            torch.from_numpy(r.astype(np.float32).reshape(batch, cfg["cout"], cfg["size"], cfg["size"])))


def reference(cfg, batch, dtype):
    """v, dx and parameter gradients of L = sum(v * r) at the test weights."""
    model = UNet(**cfg)
    test_weights(model)
    model = model.to(dtype)
    x, t, r = test_inputs(cfg, batch)
    x = x.to(dtype).requires_grad_(True)
    v = model(x, t)
    (v * r.to(dtype)).sum().backward()
    grads = [(name, p.grad.detach().double().numpy().ravel()) for name, p in model.named_parameters()]
    return model, v.detach().double().numpy().ravel(), x.grad.double().numpy().ravel(), grads


def rel_err(a, ref):
    return float(np.max(np.abs(a - ref)) / max(np.max(np.abs(ref)), 1e-30))


def grad_err(a, ref, gmax):
    """As tests/test_unet.c measures a parameter gradient: max error over the
    tensor's largest reference value, or over 1% of the largest gradient of the
    whole network when the tensor's is smaller (conv biases in front of a
    GroupNorm with one channel per group have an exactly zero gradient)."""
    return float(np.max(np.abs(a - ref)) / max(np.max(np.abs(ref)), 0.01 * gmax))


def fmt(vals):
    out, line = [], []
    for v in vals:
        line.append("%.9ef" % v)
        if len(line) == 6:
            out.append("    " + ", ".join(line) + ",")
            line = []
    if line:
        out.append("    " + ", ".join(line) + ",")
    return "\n".join(out)


NSAMPLE = 16


def tensor_kind(name):
    """The classes the errors are reported by (the C test uses the same)."""
    if any(k in name for k in ("in_layers.0.", "out_layers.0.", ".norm.", "out.0.")):
        return "groupnorm"
    if "time_embed" in name or "emb_layers" in name:
        return "linear"
    if ".qkv." in name or "proj_out" in name:
        return "attention 1x1"
    return "conv"


def write_fixture(f, tag, cfg, batch):
    model, v, dx, grads = reference(cfg, batch, torch.float64)
    _, v32, dx32, g32 = reference(cfg, batch, torch.float32)
    sd = model.state_dict()
    gmax = max(np.abs(g).max() for _, g in grads)
    worst = {}
    for (name, g), (_, g2) in zip(grads, g32):
        kind = tensor_kind(name)
        worst[kind] = max(worst.get(kind, 0.0), grad_err(g2, g, gmax))
    print("%s: PyTorch float32 vs float64: v %.2e, dx %.2e, parameter gradients %s" %
          (tag, rel_err(v32, v), rel_err(dx32, dx), ", ".join("%s %.2e" % kv for kv in worst.items())))
    f.write("/* %s: batch %d, config %r */\n" % (tag, batch, cfg))
    f.write("#define %s_BATCH %d\n" % (tag.upper(), batch))
    f.write("static const int %s_config[] = {%d, %d, %d, %d, %d, %d, /* channel_mult */ %s, %d, "
            "/* attention_ds */ %s};\n" % (
                tag, cfg["cin"], cfg["cout"], cfg["mc"], cfg["nrb"], cfg["heads"], cfg["size"],
                ", ".join(map(str, list(cfg["mult"]) + [0] * (8 - len(cfg["mult"])))), len(cfg["attn"]),
                ", ".join(map(str, list(cfg["attn"]) + [0] * (8 - len(cfg["attn"]))))))
    f.write("static const float %s_v[] = {\n%s\n};\n" % (tag, fmt(v)))
    f.write("static const float %s_dx[] = {\n%s\n};\n" % (tag, fmt(dx)))
    f.write("#define %s_NTENSORS %d\n" % (tag.upper(), len(grads)))
    f.write("static const char *const %s_names[] = {\n" % tag)
    for name, _ in grads:
        f.write('    "%s",\n' % name)
    f.write("};\n")
    f.write("static const int %s_shapes[][5] = { /* ndim, shape */\n" % tag)
    for name, _ in grads:
        s = list(sd[name].shape)
        f.write("    {%d, %s},\n" % (len(s), ", ".join(map(str, s + [1] * (4 - len(s))))))
    f.write("};\n")
    f.write("static const double %s_gstats[][3] = { /* gradient L2 norm, sum, sum of |g| */\n" % tag)
    for _, g in grads:
        f.write("    {%.17e, %.17e, %.17e},\n" % (np.sqrt(np.sum(g * g)), np.sum(g), np.sum(np.abs(g))))
    f.write("};\n")
    idx_rows, val_rows = [], []
    for _, g in grads:
        n = g.size
        idx = sorted(set(int(k * n // NSAMPLE + (n // NSAMPLE) // 2) for k in range(NSAMPLE)))
        idx += [-1] * (NSAMPLE - len(idx))
        idx_rows.append(idx)
        val_rows.append([g[k] if k >= 0 else 0.0 for k in idx])
    f.write("static const int %s_gidx[][%d] = {\n" % (tag, NSAMPLE))
    for row in idx_rows:
        f.write("    {%s},\n" % ", ".join(map(str, row)))
    f.write("};\n")
    f.write("static const float %s_gval[][%d] = {\n" % (tag, NSAMPLE))
    for row in val_rows:
        f.write("    {%s},\n" % ", ".join("%.9ef" % x for x in row))
    f.write("};\n\n")


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else "counts"
    here = os.path.dirname(os.path.abspath(__file__))
    if cmd == "counts":
        for name, cfg in PRESETS.items():
            print("%-11s %12d" % (name, sum(p.numel() for p in UNet(**cfg).parameters())))
    elif cmd == "fixtures":
        path = os.path.join(here, "..", "tests", "fixtures", "unet_ref.h")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write("/* Generated by tools/ref_unet.py fixtures (PyTorch %s, float64); do not edit.\n"
                    "   U-Net outputs, input gradients and sampled parameter gradients of\n"
                    "   L = sum(v * r) at the formula weights of tools/ref_unet.py. */\n" % torch.__version__)
            write_fixture(f, "fx_tiny32", PRESETS["tiny32"], 2)
            write_fixture(f, "fx_mono16", MONO16, 2)
        print("wrote", os.path.normpath(path), os.path.getsize(path), "bytes")
    elif cmd == "check-grl":
        sys.path.insert(0, sys.argv[2])
        from unet_2D import unet_2D  # a fetched copy, only for this check
        for name, cfg in list(PRESETS.items()) + [("mono16", MONO16)]:
            ours = UNet(**cfg)
            theirs = unet_2D(in_channels=cfg["cin"], model_channels=cfg["mc"], out_channels=cfg["cout"],
                             num_res_blocks=cfg["nrb"], attention_resolutions=cfg["attn"], dropout=0,
                             channel_mult=cfg["mult"], num_heads=cfg["heads"], use_scale_shift_norm=True)
            a = [(k, tuple(v.shape)) for k, v in ours.state_dict().items()]
            b = [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()]
            line = "%-11s state_dict %s (%d tensors, %d params)" % (
                name, "identical" if a == b else "DIFFERENT", len(a), sum(p.numel() for p in ours.parameters()))
            if name in ("tiny32", "mono16"):
                test_weights(ours)
                theirs.load_state_dict(ours.state_dict())
                for dt in (torch.float32,):  # theirs computes the embedding in float32 only
                    x, t, _ = test_inputs(cfg, 2)
                    with torch.no_grad():
                        va = ours.to(dt)(x.to(dt), t.to(dt))
                        vb = theirs.to(dt)(x.to(dt), t.to(dt))
                    line += ", %s max|diff| %.2e (max|v| %.2f)" % (
                        str(dt)[6:], (va - vb).abs().max().item(), va.abs().max().item())
            print(line)
    elif cmd == "bench":
        import time
        batch = int(sys.argv[2]) if len(sys.argv) > 2 else 32
        threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
        torch.set_num_threads(threads)
        cfg = PRESETS["tiny32"]
        model = UNet(**cfg)
        x = torch.randn(batch, 3, 32, 32)
        t = torch.rand(batch)
        for mode in ("forward", "forward+backward"):
            times = []
            for it in range(6):
                t0 = time.perf_counter()
                if mode == "forward":
                    with torch.no_grad():
                        model(x, t)
                else:
                    model.zero_grad()
                    model(x, t).square().sum().backward()
                times.append(time.perf_counter() - t0)
            best = min(times[1:])
            print("pytorch %s tiny32 batch %d, %d threads: %.1f ms/batch, %.2f ms/image" %
                  (mode, batch, threads, best * 1e3, best * 1e3 / batch))
    else:
        print(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
