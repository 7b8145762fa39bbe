#!/usr/bin/python3
"""PyTorch reference for the prg section of prg.h (docs/METHOD.md A.2, A.3, C.1).

Uses the U-Net of tools/ref_unet.py (its UNet, its formula test weights and
inputs) and adds, in its own words, the encoder (Euler steps data -> noise on
linspace(0, 1, t_span)[t_cutoff:]) and the classifier head (16x16 average
pool, LayerNorm, Linear, tanh, Linear without bias), then writes
tests/fixtures/prg_ref.h:

  - z = encode(x) and the logits, in float64;
  - the label-smoothing (0.1) cross-entropy loss and its gradients for every
    head tensor and, sampled as in unet_ref.h, every U-Net tensor:
      exact:   autograd through the Euler loop (left-end, what prg.h computes
               by default);
      adjoint: torchdiffeq's adjoint rule (Jacobians at the right end of each
               interval, docs/METHOD.md A.3), written out with autograd.grad.

    /usr/bin/python3 tools/ref_prg.py          writes the fixture
"""
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ref_unet  # noqa: E402

torch.set_num_threads(2)

CFG = dict(ref_unet.PRESETS["tiny32"])
BATCH, CLASSES, T_SPAN, T_CUTOFF, SMOOTHING = 2, 10, 5, 1, 0.1
LABELS = [3, 7]
POOL = 16
HEAD_NAMES = ["head.norm.weight", "head.norm.bias", "head.fc1.weight", "head.fc1.bias", "head.fc2.weight"]


def head_weights(d, classes):
    """Head tensor i (stream 2000 + i), element j, u = hash_u: LayerNorm weight
    1 + (2u-1)/4, bias (2u-1)/4; linear weights and bias (2u-1)/sqrt(d)."""
    shapes = [(d,), (d,), (d, d), (d,), (classes, d)]
    out = []
    for i, s in enumerate(shapes):
        u = ref_unet.hash_u(2000 + i, np.arange(int(np.prod(s)), dtype=np.uint64))
        if i == 0:
            v = 1.0 + 0.25 * (2.0 * u - 1.0)
        elif i == 1:
            v = 0.25 * (2.0 * u - 1.0)
        else:
            v = (2.0 * u - 1.0) / math.sqrt(d)
        out.append(torch.from_numpy(v.astype(np.float32).reshape(s)))
    return out


def grid():
    """Model times tau_k and the step h, rounded to float32 as prg.h does."""
    m = T_SPAN - 1 - T_CUTOFF
    taus = [float(np.float32(1.0 - k / (T_SPAN - 1))) for k in range(m + 1)]
    return m, taus, float(np.float32(1.0 / (T_SPAN - 1)))


def head(z, hw):
    n = z.shape[0]
    f = F.avg_pool2d(z, z.shape[2] // POOL).reshape(n, -1)
    y = F.layer_norm(f, (f.shape[1],), hw[0], hw[1], 1e-5)
    return F.linear(torch.tanh(F.linear(y, hw[2], hw[3])), hw[4])


def ls_cross_entropy(logits, labels):
    logp = F.log_softmax(logits, dim=-1)
    nll = -logp.gather(1, labels[:, None])[:, 0]
    return ((1.0 - SMOOTHING) * nll + SMOOTHING * (-logp.mean(dim=-1))).mean()


def run(dtype):
    model = ref_unet.UNet(**CFG)
    ref_unet.test_weights(model)
    model = model.to(dtype)
    x, _, _ = ref_unet.test_inputs(CFG, BATCH)
    x = x.to(dtype)
    d = CFG["cin"] * POOL * POOL
    hw = [w.to(dtype).requires_grad_(True) for w in head_weights(d, CLASSES)]
    labels = torch.tensor(LABELS)
    m, taus, h = grid()
    tvec = lambda k: torch.full((BATCH,), taus[k], dtype=dtype)  # noqa: E731

    # exact: autograd through the Euler loop
    states = [x]
    xk = x
    for k in range(m):
        xk = xk - h * model(xk, tvec(k))
        states.append(xk)
    logits = head(xk, hw)
    loss = ls_cross_entropy(logits, labels)
    loss.backward()
    exact_unet = [p.grad.detach().double().numpy().ravel().copy() for _, p in model.named_parameters()]
    exact_head = [w.grad.detach().double().numpy().ravel().copy() for w in hw]

    # adjoint: a_M = dL/dz, then for k = M .. 1, Jacobians at (tau_k, x_k)
    model.zero_grad()
    z = states[-1].detach().requires_grad_(True)
    (a,) = torch.autograd.grad(ls_cross_entropy(head(z, hw), labels), [z])
    params = list(model.parameters())
    acc = [torch.zeros_like(p) for p in params]
    for k in range(m, 0, -1):
        xs = states[k].detach().requires_grad_(True)
        v = model(xs, tvec(k))
        gs = torch.autograd.grad(v, [xs] + params, grad_outputs=-h * a)
        a = a + gs[0]
        for i, g in enumerate(gs[1:]):
            acc[i] += g
    adj_unet = [g.detach().double().numpy().ravel() for g in acc]
    names = [n for n, _ in model.named_parameters()]
    return (names, states[-1].detach().double().numpy().ravel(), logits.detach().double().numpy().ravel(),
            float(loss), exact_unet, exact_head, adj_unet)


def write_grads(f, tag, grads):
    f.write("static const double %s_gstats[][3] = { /* gradient L2 norm, sum, sum of |g| */\n" % tag)
    for g in grads:
        f.write("    {%.17e, %.17e, %.17e},\n" % (np.sqrt(np.sum(g * g)), np.sum(g), np.sum(np.abs(g))))
    f.write("};\n")
    ns = ref_unet.NSAMPLE
    f.write("static const int %s_gidx[][%d] = {\n" % (tag, ns))
    rows = []
    for g in grads:
        n = g.size
        idx = sorted(set(int(k * n // ns + (n // ns) // 2) for k in range(ns)))
        idx += [-1] * (ns - len(idx))
        rows.append((idx, [g[k] if k >= 0 else 0.0 for k in idx]))
        f.write("    {%s},\n" % ", ".join(map(str, idx)))
    f.write("};\n")
    f.write("static const double %s_gval[][%d] = {\n" % (tag, ns))
    for _, vals in rows:
        f.write("    {%s},\n" % ", ".join("%.17e" % v for v in vals))
    f.write("};\n")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    names, z, logits, loss, ex_u, ex_h, adj_u = run(torch.float64)
    _, z32, logits32, loss32, ex_u32, _, _ = run(torch.float32)
    print("PyTorch float32 vs float64: z %.2e, logits %.2e, loss %.2e" % (
        np.abs(z32 - z).max() / np.abs(z).max(), np.abs(logits32 - logits).max() / np.abs(logits).max(),
        abs(loss32 - loss) / abs(loss)))
    path = os.path.join(here, "..", "tests", "fixtures", "prg_ref.h")
    with open(path, "w") as f:
        f.write("/* Generated by tools/ref_prg.py (PyTorch %s, float64); do not edit.\n"
                "   tiny32 with the formula weights of tools/ref_unet.py, batch %d, %d classes,\n"
                "   t_span %d, t_cutoff %d, labels %s, label smoothing %g. */\n" % (
                    torch.__version__, BATCH, CLASSES, T_SPAN, T_CUTOFF, LABELS, SMOOTHING))
        f.write("#define PRG_REF_BATCH %d\n#define PRG_REF_CLASSES %d\n#define PRG_REF_T_SPAN %d\n"
                "#define PRG_REF_T_CUTOFF %d\n#define PRG_REF_SMOOTHING %gf\n" % (
                    BATCH, CLASSES, T_SPAN, T_CUTOFF, SMOOTHING))
        f.write("static const int prg_ref_labels[] = {%s};\n" % ", ".join(map(str, LABELS)))
        f.write("static const double prg_ref_loss = %.17e;\n" % loss)
        f.write("static const float prg_ref_z[] = {\n%s\n};\n" % ref_unet.fmt(z))
        f.write("static const float prg_ref_logits[] = {\n%s\n};\n" % ref_unet.fmt(logits))
        f.write("#define PRG_REF_NUNET %d\n" % len(names))
        f.write("static const char *const prg_ref_unet_names[] = {\n%s};\n" % "".join('    "%s",\n' % n for n in names))
        write_grads(f, "prg_ref_exact_unet", ex_u)
        write_grads(f, "prg_ref_adjoint_unet", adj_u)
        f.write("static const char *const prg_ref_head_names[] = {\n%s};\n" % "".join('    "%s",\n' % n for n in HEAD_NAMES))
        write_grads(f, "prg_ref_exact_head", ex_h)
    print("wrote", os.path.normpath(path))


if __name__ == "__main__":
    main()
