#!/usr/bin/python3
"""Reference outputs of the deterministic ImageNet-C / CIFAR-10-C corruptions
for tests/test_robust.c (writes tests/fixtures/robust/corrupt_ref.bin).

The formulas are those of Hendrycks and Dietterich (ICLR 2019), re-implemented
here with numpy, scipy and PIL (no skimage / OpenCV / ImageMagick needed):
  brightness  HSV (skimage's rgb2hsv / hsv2rgb written out), V + c, clipped
  contrast    (x - mean per channel) * c + mean
  defocus     a disk of radius r on a 17x17 grid (radius <= 8) or 2r+1, normalised,
              blurred by a 3x3 (5x5) Gaussian of sigma = alias with reflect-101
              borders (cv2.GaussianBlur), then correlated with the image with
              reflect-101 borders (cv2.filter2D)
  zoom_blur   mean of the image and its clipped zooms, scipy.ndimage.zoom order 1, float32
  pixelate    PIL BOX resize to int(side * c), then back
  jpeg        PIL's JPEG save at quality c (libjpeg: 4:2:0 for RGB) and decode
Float results go to uint8 by truncation, as np.uint8() in the benchmark.
Images: [C][H][W] uint8; the CIFAR-10-C parameter set for sides <= 32, the
ImageNet-C set above.

File layout: for each of the three test images (3x16x16, 1x16x16, 3x34x34):
the input, then for each corruption in the order below and severity 1..5 the
output, all raw uint8 planes.
"""
import numpy as np
from PIL import Image
from scipy.ndimage import zoom as scizoom, correlate

CIFAR = dict(brightness=[.05, .1, .15, .2, .3], contrast=[.75, .5, .4, .3, .15],
             defocus=[(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
             zoom=[np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
                   np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)],
             pixelate=[0.95, 0.9, 0.85, 0.75, 0.65], jpeg=[80, 65, 58, 50, 40])
IMAGENET = dict(brightness=[.1, .2, .3, .4, .5], contrast=[0.4, .3, .2, .1, .05],
                defocus=[(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)],
                zoom=[np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
                      np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03)],
                pixelate=[0.6, 0.5, 0.4, 0.3, 0.25], jpeg=[25, 18, 15, 10, 7])
ORDER = ["brightness", "contrast", "defocus", "zoom", "pixelate", "jpeg"]


def rgb2hsv(x):  # skimage.color.rgb2hsv, x [H][W][3] in [0, 1]
    v = x.max(-1)
    delta = x.ptp(-1)
    s = np.where(delta == 0, 0, delta / np.where(v == 0, 1, v))
    d = np.where(delta == 0, 1, delta)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    # assigned in R, G, B order as skimage does: the last channel equal to the maximum wins
    h = np.where(x[..., 2] == v, 4 + (r - g) / d, np.where(x[..., 1] == v, 2 + (b - r) / d, (g - b) / d))
    h = (h / 6) % 1
    h[delta == 0] = 0
    return np.stack([h, s, v], -1)


def hsv2rgb(hsv):
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    sel = [np.stack(c, -1) for c in [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]]
    out = np.zeros(hsv.shape)
    for k in range(6):
        out[i == k] = sel[k][i == k]
    return out


def gauss_kernel_1d(k, sigma):
    x = np.arange(k) - (k - 1) / 2
    g = np.exp(-x * x / (2 * sigma * sigma))
    return g / g.sum()


def disk(radius, alias):
    L = np.arange(-8, 9) if radius <= 8 else np.arange(-radius, radius + 1)
    k = 3 if radius <= 8 else 5
    X, Y = np.meshgrid(L, L)
    d = np.array((X ** 2 + Y ** 2) <= radius ** 2, dtype=np.float64)
    d /= d.sum()
    g = gauss_kernel_1d(k, alias)
    return correlate(correlate(d, g[None, :], mode='mirror'), g[:, None], mode='mirror')


def clipped_zoom(img, z):  # img [H][W]
    h, w = img.shape
    ch, cw = int(np.ceil(h / z)), int(np.ceil(w / z))
    top, left = (h - ch) // 2, (w - cw) // 2
    out = scizoom(img[top:top + ch, left:left + cw], (z, z), order=1)
    th, tw = (out.shape[0] - h) // 2, (out.shape[1] - w) // 2
    return out[th:th + h, tw:tw + w]


def u8(x):
    return np.uint8(np.clip(x, 0, 1) * 255)


def corrupt(img, name, sev):  # img [C][H][W] uint8
    c, h, w = img.shape
    P = CIFAR if h <= 32 and w <= 32 else IMAGENET
    p = P[name][sev - 1]
    x = img.astype(np.float64) / 255
    if name == "brightness":
        if c == 1:
            return u8(np.clip(x + p, 0, 1))
        hsv = rgb2hsv(x.transpose(1, 2, 0))
        hsv[..., 2] = np.clip(hsv[..., 2] + p, 0, 1)
        return u8(hsv2rgb(hsv).transpose(2, 0, 1))
    if name == "contrast":
        m = x.mean(axis=(1, 2), keepdims=True)
        return u8((x - m) * p + m)
    if name == "defocus":
        k = disk(p[0], p[1])
        return u8(np.stack([correlate(x[i], k, mode='mirror') for i in range(c)]))
    if name == "zoom":
        xf = x.astype(np.float32)
        out = np.zeros_like(xf)
        for z in p:
            out += np.stack([clipped_zoom(xf[i], z) for i in range(c)])
        return u8((xf + out) / (len(p) + 1))
    if name == "pixelate":
        planes = []
        for i in range(c):
            im = Image.fromarray(img[i])
            im = im.resize((int(w * p), int(h * p)), Image.BOX).resize((w, h), Image.BOX)
            planes.append(np.array(im))
        return np.stack(planes)
    if name == "jpeg":  # PIL's save(quality): libjpeg, 4:2:0 for RGB, islow DCT
        import io
        im = Image.fromarray(img[0] if c == 1 else img.transpose(1, 2, 0))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=p)
        out = np.array(Image.open(io.BytesIO(buf.getvalue())))
        return out[None] if c == 1 else out.transpose(2, 0, 1)
    raise ValueError(name)


def test_image(c, h, w, seed):
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    planes = []
    for i in range(c):
        v = 128 + 80 * np.sin(xx * (0.35 + 0.1 * i) + i) * np.cos(yy * 0.27) + 30 * (xx > w // 2) - 15
        v += rng.randint(-20, 21, size=(h, w))
        planes.append(np.clip(v, 0, 255))
    return np.array(planes, dtype=np.uint8)


if __name__ == "__main__":
    import os
    out = bytearray()
    for (c, h, w, seed) in [(3, 16, 16, 1), (1, 16, 16, 2), (3, 34, 34, 3)]:
        img = test_image(c, h, w, seed)
        out += img.tobytes()
        for name in ORDER:
            for sev in range(1, 6):
                out += corrupt(img, name, sev).astype(np.uint8).tobytes()
    path = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "robust", "corrupt_ref.bin")
    with open(path, "wb") as f:
        f.write(bytes(out))
    print("wrote", path, len(out), "bytes")
