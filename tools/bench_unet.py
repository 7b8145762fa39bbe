#!/usr/bin/python3
"""PyTorch side of tools/bench_unet.sh: the same U-Net (tools/ref_unet.py), the
same forward and training step (forward + ICFM loss with the reference's
reduction + backward + Adam), best of N, 2 threads.

    /usr/bin/python3 tools/bench_unet.py PRESET BATCH [THREADS] [REPS]
prints: preset batch threads fwd_ms_per_image step_ms_per_image peak_rss_MiB"""
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ref_unet  # noqa: E402


def main():
    preset, batch = sys.argv[1], int(sys.argv[2])
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    reps = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    torch.set_num_threads(threads)
    cfg = ref_unet.PRESETS[preset]
    model = ref_unet.UNet(**cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    shape = (batch, cfg["cin"], cfg["size"], cfg["size"])
    x1 = torch.randn(shape)
    best_f = best_s = 1e30
    for r in range(reps + 1):
        t = torch.rand(batch)
        x0 = torch.randn(shape)
        tb = t[:, None, None, None]
        xt = (1 - tb) * x0 + tb * x1
        target = x1 - x0
        t0 = time.perf_counter()
        with torch.no_grad():
            model(xt, t)
        if r:
            best_f = min(best_f, time.perf_counter() - t0)
        t0 = time.perf_counter()
        v = model(xt, t)
        loss = (0.5 * ((v - target) ** 2).sum(dim=1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if r:
            best_s = min(best_s, time.perf_counter() - t0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print("%s %d %d %.3f %.3f %.0f" % (preset, batch, threads, 1e3 * best_f / batch, 1e3 * best_s / batch, rss))


if __name__ == "__main__":
    main()
