#!/usr/bin/python3
"""PyTorch side of tools/bench_encode.sh: the reverse-ODE encoder (data ->
noise, x_{k+1} = x_k - h v(1 - k h, x_k), h = 1/(t_span - 1), t_span - 1
Euler steps) with the U-Net of tools/ref_unet.py under
torch.inference_mode(); an untimed one-step encode first, then REPS timed
encodes of the full grid, best kept; peak RSS (ru_maxrss).

    /usr/bin/python3 tools/bench_encode.py PRESET BATCH [THREADS] [REPS] [T_SPAN]
prints: preset batch threads t_span images_per_s peak_rss_MiB"""
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ref_unet  # noqa: E402


def encode(model, x, t_span):
    h = 1.0 / (t_span - 1)
    t = torch.empty(x.shape[0])
    for k in range(t_span - 1):
        x = x - h * model(x, t.fill_(1.0 - k * h))
    return x


def main():
    preset, batch = sys.argv[1], int(sys.argv[2])
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    reps = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    t_span = int(sys.argv[5]) if len(sys.argv) > 5 else 32
    torch.set_num_threads(threads)
    cfg = ref_unet.PRESETS[preset]
    model = ref_unet.UNet(**cfg).eval()
    x = torch.randn(batch, cfg["cin"], cfg["size"], cfg["size"])
    best = 1e30
    with torch.inference_mode():
        for r in range(reps + 1):
            t0 = time.perf_counter()
            encode(model, x, t_span if r else 2)
            if r:
                best = min(best, time.perf_counter() - t0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print("%s %d %d %d %.2f %.0f" % (preset, batch, threads, t_span, batch / best, rss))


if __name__ == "__main__":
    main()
