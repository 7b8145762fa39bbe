#!/usr/bin/python3
"""PyTorch side of tools/bench_finetune.sh: the same fine-tuning step with
autograd through the Euler loop (the U-Net of tools/ref_unet.py, the head of
docs/METHOD.md C.1, label-smoothing CE 0.1, AdamW), best of N, peak memory.

    /usr/bin/python3 tools/bench_finetune.py PRESET BATCH STEPS [THREADS] [REPS] [MIN_SECONDS]
times REPS steps after an untimed one, then more (at most 50) until the timed
ones add up to MIN_SECONDS; prints: preset batch steps ms_per_step peak_rss_MiB"""
import os
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ref_unet  # noqa: E402


def main():
    preset, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    reps = int(sys.argv[5]) if len(sys.argv) > 5 else 2
    min_seconds = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    torch.set_num_threads(threads)
    cfg = ref_unet.PRESETS[preset]
    unet = ref_unet.UNet(**cfg)
    d = cfg["cin"] * 256
    head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 10, bias=False))
    opt = torch.optim.AdamW(list(unet.parameters()) + list(head.parameters()), lr=3e-5, weight_decay=0.05)
    x = torch.randn(batch, cfg["cin"], cfg["size"], cfg["size"])
    y = torch.randint(0, 10, (batch,))
    h = 1.0 / steps
    best = 1e30
    timed = 0.0
    r = 0
    while r <= reps or (timed < min_seconds and r <= 50):
        t0 = time.perf_counter()
        z = x
        for k in range(steps):
            z = z - h * unet(z, torch.full((batch,), 1.0 - k * h))
        f = F.avg_pool2d(z, cfg["size"] // 16).flatten(1)
        loss = F.cross_entropy(head(f), y, label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if r:
            dt = time.perf_counter() - t0
            timed += dt
            best = min(best, dt)
        r += 1
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print("%s %d %d %.1f %.0f" % (preset, batch, steps, 1e3 * best, rss))


if __name__ == "__main__":
    main()
