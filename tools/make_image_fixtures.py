#!/usr/bin/python3
"""Writes tests/fixtures/images/: small JPEG and PNG files in every mode the
decoders support, each with its reference pixels as a PAM file (<name>.pam).

JPEG files come from libjpeg-turbo's cjpeg (and ImageMagick for CMYK); their
references are djpeg's output, checked here to equal PIL's decode (CMYK: PIL's
convert("RGB")).  PNG files are written by this script from known arrays (every
colour type, bit depth, filter type, tRNS and Adam7) plus a few by ImageMagick
and PIL; their references are those arrays, and PIL's decode of every file is
checked against them.  Defects the decoders accept with a warning (junk before
a marker, no DHT, cut entropy data, corrupt entropy data, no EOI/IEND, an empty
APP length, CRCs PIL does not check) are byte edits of clean files, with djpeg's (JPEG) or PIL's
(PNG) pixels as the reference.  Needs: python3-pil, libjpeg-turbo-progs, imagemagick.
Run from the repository root: /usr/bin/python3 tools/make_image_fixtures.py
(--defects: only the defect files, without ImageMagick).
"""
import io, os, struct, subprocess, sys, tempfile, zlib
from PIL import Image

OUT = "tests/fixtures/images"
W, H = 45, 37          # odd sizes: partial MCUs and odd chroma edges


class Lcg:
    def __init__(self, seed): self.s = seed
    def next(self, n):
        self.s = (self.s * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        return (self.s >> 33) % n


def source_rgb(w, h, seed=1):
    """A test picture: gradients, a disc, stripes and some noise."""
    r = Lcg(seed)
    px = []
    for y in range(h):
        for x in range(w):
            cr = int(255 * x / max(w - 1, 1)); cg = int(255 * y / max(h - 1, 1)); cb = (x * 7 + y * 3) % 256
            if (x - w * 0.6) ** 2 + (y - h * 0.4) ** 2 < (min(w, h) * 0.3) ** 2: cr, cg, cb = 240, 40, 60
            if (x // 3) % 5 == 0 and y > h * 0.7: cr, cg, cb = 20, 20, 20
            n = r.next(17) - 8
            px.append(tuple(max(0, min(255, v + n)) for v in (cr, cg, cb)))
    return px


def write_pam(path, w, h, c, data):
    tt = {1: "GRAYSCALE", 2: "GRAYSCALE_ALPHA", 3: "RGB", 4: "RGB_ALPHA"}[c]
    with open(path, "wb") as f:
        f.write(("P7\nWIDTH %d\nHEIGHT %d\nDEPTH %d\nMAXVAL 255\nTUPLTYPE %s\nENDHDR\n" % (w, h, c, tt)).encode())
        f.write(bytes(data))


def pil_bytes(im):
    """Interleaved 8-bit bytes and channel count of a PIL image."""
    c = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[im.mode]
    return im.tobytes(), c


def run(*cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, **kw).stdout


# ---------------------------------------------------------------- PNG writer
def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)


def paeth(a, b, c):
    p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def filter_rows(rows, bpp, r):
    """Filters each row with a pseudo-random filter type 0..4."""
    out = b""; prev = bytes(len(rows[0])) if rows else b""
    for row in rows:
        ft = r.next(5); f = bytearray([ft])
        for i, v in enumerate(row):
            a = row[i - bpp] if i >= bpp else 0; b = prev[i]; c = prev[i - bpp] if i >= bpp else 0
            p = [0, a, b, (a + b) // 2, paeth(a, b, c)][ft]
            f.append((v - p) & 255)
        out += bytes(f); prev = row
    return out


def pack_row(samples, depth):
    if depth == 8: return bytes(samples)
    if depth == 16: return b"".join(struct.pack(">H", s) for s in samples)
    per = 8 // depth; out = bytearray()
    for i in range(0, len(samples), per):
        v = 0
        for k in range(per):
            s = samples[i + k] if i + k < len(samples) else 0
            v |= s << (8 - depth * (k + 1))
        out.append(v)
    return bytes(out)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def write_png(path, w, h, ctype, depth, samples, plte=None, trns=None, interlace=0, seed=3):
    """samples: list of rows, each a flat list of channel samples."""
    nch = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ctype]
    bpp = max(1, nch * depth // 8); r = Lcg(seed)
    if not interlace:
        raw = filter_rows([pack_row(samples[y], depth) for y in range(h)], bpp, r)
    else:
        raw = b""
        for x0, y0, dx, dy in ADAM7:
            sub = []
            for y in range(y0, h, dy):
                row = []
                for x in range(x0, w, dx): row += samples[y][x * nch:(x + 1) * nch]
                if row: sub.append(pack_row(row, depth))
            if sub: raw += filter_rows(sub, bpp, r)
    d = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, interlace))
    if plte: d += chunk(b"PLTE", bytes(sum(plte, ())))
    if trns is not None: d += chunk(b"tRNS", trns)
    z = zlib.compress(raw, 9)
    d += chunk(b"IDAT", z[:len(z) // 2]) + chunk(b"IDAT", z[len(z) // 2:]) + chunk(b"IEND", b"")
    open(path, "wb").write(d)


def png_cases():
    r = Lcg(7)
    w, h = 13, 11
    cases = []
    for depth in (1, 2, 4, 8, 16):   # gray
        mx = (1 << depth) - 1
        s = [[r.next(mx + 1) for _ in range(w)] for _ in range(h)]
        ref = [(v * 255 // mx) if depth < 16 else v >> 8 for row in s for v in row]
        cases.append(("png_gray%d" % depth, 0, depth, s, None, None, ref, 1))
    for depth in (8, 16):            # gray+alpha, RGB, RGBA
        mx = (1 << depth) - 1
        for ctype, nch in ((4, 2), (2, 3), (6, 4)):
            s = [[r.next(mx + 1) for _ in range(w * nch)] for _ in range(h)]
            ref = [v >> (depth - 8) for row in s for v in row]
            name = {4: "png_ga", 2: "png_rgb", 6: "png_rgba"}[ctype] + str(depth)
            cases.append((name, ctype, depth, s, None, None, ref, nch))
    for depth in (1, 2, 4, 8):       # palette, without and with tRNS
        n = min(1 << depth, 200)
        pal = [(r.next(256), r.next(256), r.next(256)) for _ in range(n)]
        s = [[r.next(n) for _ in range(w)] for _ in range(h)]
        cases.append(("png_pal%d" % depth, 3, depth, s, pal, None, [c for row in s for i in row for c in pal[i]], 3))
        alpha = [r.next(256) for _ in range(max(1, n // 2))]
        ref = [c for row in s for i in row for c in pal[i] + ((alpha[i] if i < len(alpha) else 255),)]
        cases.append(("png_pal%d_trns" % depth, 3, depth, s, pal, bytes(alpha), ref, 4))
    # gray and RGB with a tRNS colour key
    s = [[r.next(4) * 85 for _ in range(w)] for _ in range(h)]
    cases.append(("png_gray8_trns", 0, 8, s, None, struct.pack(">H", 170),
                  [c for row in s for v in row for c in (v, 0 if v == 170 else 255)], 2))
    s = [[r.next(2) * 255 for _ in range(w * 3)] for _ in range(h)]
    ref = []
    for row in s:
        for x in range(w):
            p = tuple(row[3 * x:3 * x + 3]); ref += list(p) + [0 if p == (255, 0, 255) else 255]
    cases.append(("png_rgb8_trns", 2, 8, s, None, struct.pack(">HHH", 255, 0, 255), ref, 4))
    s = [[r.next(65536) for _ in range(w * 3)] for _ in range(h)]
    key = tuple(s[2][3:6])
    ref = []
    for row in s:
        for x in range(w):
            p = tuple(row[3 * x:3 * x + 3]); ref += [v >> 8 for v in p] + [0 if p == key else 255]
    cases.append(("png_rgb16_trns", 2, 16, s, None, struct.pack(">HHH", *key), ref, 4))
    return w, h, cases


# ------------------------------------------------------- tolerated defects
def jpeg_segments(d):
    """(marker, start, end) of each marker segment up to and including SOS."""
    out, i = [], 2
    while i < len(d):
        assert d[i] == 0xFF
        m = d[i + 1]; n = (d[i + 2] << 8) | d[i + 3]
        out.append((m, i, i + 2 + n))
        if m == 0xDA: break
        i += 2 + n
    return out


def djpeg_pixels(path):
    """djpeg's decode (it warns and goes on where libjpeg does), as a PIL image."""
    p = subprocess.run(["djpeg", "-pnm", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.returncode in (0, 2), path + ": djpeg fails: " + p.stderr.decode()   # 2: decoded with warnings
    return Image.open(io.BytesIO(p.stdout)), p.stderr.decode().strip()


def pil_pixels(path):
    """PIL's decode (RGB/L/RGBA), or None when PIL refuses the file."""
    try:
        im = Image.open(path); im.load()
    except Exception as e:   # noqa: BLE001 (PIL raises several kinds)
        return None, str(e)
    if im.mode not in ("L", "LA", "RGB", "RGBA"): im = im.convert("RGBA" if "A" in im.mode or "transparency" in im.info else "RGB")
    return im, ""


def png_chunks(d):
    out, i = [], 8
    while i < len(d):
        n = struct.unpack(">I", d[i:i + 4])[0]
        out.append((d[i + 4:i + 8], i, i + 12 + n))
        i += 12 + n
    return out


def defect_fixtures(tmp, srcppm):
    """Files with the defects the decoders accept with a warning, each made
    from a clean cjpeg or PNG file by a byte edit; the reference is djpeg's
    decode for JPEG and PIL's for PNG, and where PIL decodes a JPEG too it must
    give the same pixels (PIL refuses truncated JPEGs: then djpeg alone)."""
    def clean(name, opts):
        path = os.path.join(tmp, name + ".jpg")
        run("cjpeg", "-quality", "85", *opts, "-outfile", path, srcppm)
        return open(path, "rb").read()

    def save_jpeg(name, d, warn_word, pil_must):
        path = os.path.join(OUT, name + ".jpg")
        open(path, "wb").write(d)
        ref, err = djpeg_pixels(path)
        assert warn_word in err, "%s: djpeg says %r, expected a warning with %r" % (name, err, warn_word)
        pil, perr = pil_pixels(path)
        if pil_must: assert pil is not None, name + ": PIL refuses it: " + perr
        if pil is not None: assert pil.tobytes() == ref.tobytes(), name + ": PIL and djpeg disagree"
        b, c = pil_bytes(ref)
        write_pam(os.path.join(OUT, name + ".pam"), ref.width, ref.height, c, b)

    base = clean("base420", ["-sample", "2x2"])
    seg = jpeg_segments(base)
    # extraneous bytes: 3 before the SOF marker (between headers) and 4 after the entropy data, before EOI
    sof = [s for s in seg if s[0] == 0xC0][0]
    d = base[:sof[1]] + b"\x12\x34\x56" + base[sof[1]:-2] + b"\x00\x11\x22\x33" + base[-2:]
    save_jpeg("jpeg_junk", d, "extraneous bytes", True)
    # no DHT (a Motion-JPEG frame): cjpeg's default tables are the standard ones
    d = b"".join(base[a:b] for i, (m, a, b) in enumerate([(0xD8, 0, 2)] + seg) if m != 0xC4) + base[seg[-1][2]:]
    assert base.count(b"\xff\xc4") and not d[:jpeg_segments(d)[-1][2]].count(b"\xff\xc4")
    ref0, _ = djpeg_pixels(os.path.join(tmp, "base420.jpg"))
    path = os.path.join(OUT, "jpeg_no_dht.jpg"); open(path, "wb").write(d)
    ref, _ = djpeg_pixels(path)
    assert ref.tobytes() == ref0.tobytes(), "standard tables give other pixels"
    pil, perr = pil_pixels(path); assert pil is not None and pil.tobytes() == ref.tobytes(), "PIL on no-DHT: " + perr
    write_pam(os.path.join(OUT, "jpeg_no_dht.pam"), ref.width, ref.height, 3, ref.tobytes())
    # entropy data that ends early: baseline, progressive and with restart markers, cut mid-scan
    sos_end = seg[-1][2]
    save_jpeg("jpeg_short", base[:sos_end + (len(base) - sos_end) * 3 // 5], "Premature end", False)
    prog = clean("prog", ["-progressive", "-sample", "2x2"])
    marks = [i for i in range(2, len(prog) - 1) if prog[i] == 0xFF and prog[i + 1] not in (0, 0xFF) and not 0xD0 <= prog[i + 1] <= 0xD7]
    sos = [i for i in marks if prog[i + 1] == 0xDA]
    k = marks.index(sos[len(sos) // 2])   # cut halfway through the entropy data of the middle scan
    save_jpeg("jpeg_short_prog", prog[:(marks[k] + marks[k + 1]) // 2 + 8], "Premature end", False)
    rst = clean("rst", ["-restart", "1", "-sample", "2x2"])
    rsos = jpeg_segments(rst)[-1][2]
    save_jpeg("jpeg_short_rst", rst[:rsos + (len(rst) - rsos) // 2], "Premature end", False)
    # corrupt entropy data (one byte of the scan changed): libjpeg decodes it without a warning, through
    # coefficients past the end of a block; prg.h reads it the same way with a warning
    e = bytearray(base); e[sos_end + 94] ^= 0x55
    assert 0xFF not in e[sos_end + 93:sos_end + 96]
    save_jpeg("jpeg_bad_data", bytes(e), "", True)
    # a complete file without EOI
    save_jpeg("jpeg_no_eoi", base[:-2], "Premature end", False)
    # an APP segment with length field 0: libjpeg reads it as empty and goes on after the length bytes
    save_jpeg("jpeg_app_len0", base[:2] + b"\xff\xe5\x00\x00" + base[2:], "", True)

    # PNG: missing IEND, CRC errors PIL does not check
    png = open(os.path.join(OUT, "png_rgb8.png"), "rb").read()
    ch = png_chunks(png)
    assert ch[-1][0] == b"IEND"

    def save_png(name, d):
        path = os.path.join(OUT, name + ".png")
        open(path, "wb").write(d)
        im, err = pil_pixels(path)
        assert im is not None, name + ": PIL refuses it: " + err
        b, c = pil_bytes(im)
        write_pam(os.path.join(OUT, name + ".pam"), im.width, im.height, c, b)

    save_png("png_no_iend", png[:ch[-1][1]])
    idat = [c for c in ch if c[0] == b"IDAT"][0]
    save_png("png_crc_idat", png[:idat[2] - 1] + bytes([png[idat[2] - 1] ^ 0x55]) + png[idat[2]:])
    text = chunk(b"tEXt", b"Comment\x00after the image")
    text = text[:-1] + bytes([text[-1] ^ 0x55])
    save_png("png_crc_after", png[:ch[-1][1]] + text + png[ch[-1][1]:])


def main():
    os.makedirs(OUT, exist_ok=True)
    tmp = tempfile.mkdtemp()
    src = source_rgb(W, H)
    srcppm = os.path.join(tmp, "src.ppm")
    with open(srcppm, "wb") as f:
        f.write(b"P6\n%d %d\n255\n" % (W, H) + bytes(c for p in src for c in p))
    if "--defects" in sys.argv[1:]:   # only the defect files (edits of png_rgb8.png and of new cjpeg files)
        defect_fixtures(tmp, srcppm)
        print("defect fixtures written to", OUT)
        return
    # ---- JPEG
    jpegs = [("jpeg_444", ["-sample", "1x1"]), ("jpeg_422", ["-sample", "2x1"]),
             ("jpeg_420", ["-sample", "2x2"]), ("jpeg_440", ["-sample", "1x2"]),
             ("jpeg_420_q50", ["-sample", "2x2", "-quality", "50"]),
             ("jpeg_prog420", ["-progressive", "-sample", "2x2"]),
             ("jpeg_prog444", ["-progressive", "-sample", "1x1"]),
             ("jpeg_rst420", ["-restart", "2B", "-sample", "2x2"]),
             ("jpeg_rst_prog", ["-restart", "1", "-progressive"]),
             ("jpeg_gray", ["-grayscale"]), ("jpeg_gray_prog", ["-grayscale", "-progressive"]),
             ("jpeg_opt", ["-optimize", "-sample", "2x1", "-quality", "95"])]
    for name, opts in jpegs:
        path = os.path.join(OUT, name + ".jpg")
        run("cjpeg", "-quality", "85", *opts, "-outfile", path, srcppm)
        ref = Image.open(io.BytesIO(run("djpeg", "-pnm", path)))
        pil = Image.open(path); pil.load()
        assert pil.tobytes() == ref.tobytes(), name + ": PIL and djpeg disagree"
        b, c = pil_bytes(ref)
        write_pam(os.path.join(OUT, name + ".pam"), ref.width, ref.height, c, b)
    # YCbCr -> gray keeps Y (djpeg -grayscale)
    ref = Image.open(io.BytesIO(run("djpeg", "-grayscale", "-pnm", os.path.join(OUT, "jpeg_420.jpg"))))
    write_pam(os.path.join(OUT, "jpeg_420_gray.pam"), W, H, 1, ref.tobytes())
    # CMYK (Adobe APP14, transform 0, inverted), by ImageMagick
    path = os.path.join(OUT, "jpeg_cmyk.jpg")
    run("convert", srcppm, "-colorspace", "CMYK", "-quality", "90", path)
    im = Image.open(path); assert im.mode == "CMYK"
    b, c = pil_bytes(im.convert("RGB"))
    write_pam(os.path.join(OUT, "jpeg_cmyk.pam"), W, H, c, b)
    # YCCK (Adobe APP14, transform 2), by ImageMagick (jpeg:colorspace=5 is JCS_YCCK)
    path = os.path.join(OUT, "jpeg_ycck.jpg")
    run("convert", srcppm, "-colorspace", "CMYK", "-define", "jpeg:colorspace=5", "-quality", "90", path)
    d = open(path, "rb").read(); k = d.find(b"Adobe"); assert k > 0 and d[k + 11] == 2, "not a YCCK file"
    im = Image.open(path); assert im.mode == "CMYK"
    b, c = pil_bytes(im.convert("RGB"))
    write_pam(os.path.join(OUT, "jpeg_ycck.pam"), W, H, c, b)
    # ---- PNG from known arrays
    w, h, cases = png_cases()
    for name, ctype, depth, s, pal, trns, ref, nch in cases:
        for il in (0, 1):
            if il and name not in ("png_gray1", "png_gray16", "png_rgb8", "png_rgba16", "png_pal4_trns", "png_ga8", "png_pal2"):
                continue
            nm = name + ("_adam7" if il else "")
            path = os.path.join(OUT, nm + ".png")
            write_png(path, w, h, ctype, depth, s, pal, trns, il)
            im = Image.open(path); im.load()
            if im.mode in ("I", "I;16"):
                got = [v >> 8 for v in im.getdata()]
            else:
                base = im.convert({1: "L", 2: "L", 3: "RGB", 4: "RGB"}[nch] if im.mode not in ("P", "PA") or nch == 3
                                  else "RGBA")
                got = list(base.tobytes())
            if len(got) == w * h * nch:
                assert got == ref, nm + ": PIL disagrees"
            else:   # PIL left the tRNS colour key aside: compare the colour channels
                cc = len(got) // (w * h)
                assert got == [ref[i * nch + k] for i in range(w * h) for k in range(cc)], nm + ": PIL disagrees"
            write_pam(os.path.join(OUT, nm + ".pam"), w, h, nch, ref)
    # PNG from other encoders (adaptive filters, their own zlib streams)
    run("convert", srcppm, "-strip", "-define", "png:exclude-chunk=date,time", "-interlace", "PNG", os.path.join(OUT, "png_im_rgb_adam7.png"))
    run("convert", srcppm, "-strip", "-define", "png:exclude-chunk=date,time", "-depth", "16", "PNG48:" + os.path.join(OUT, "png_im_rgb16.png"))
    Image.open(srcppm).convert("RGBA").save(os.path.join(OUT, "png_pil_rgba.png"))
    Image.open(srcppm).convert("P", palette=Image.ADAPTIVE, colors=16).save(os.path.join(OUT, "png_pil_pal.png"))
    for nm in ("png_im_rgb_adam7", "png_im_rgb16", "png_pil_rgba", "png_pil_pal"):
        im = Image.open(os.path.join(OUT, nm + ".png")); im.load()
        im = im.convert("RGBA" if im.mode == "RGBA" else "RGB")
        b, c = pil_bytes(im)
        write_pam(os.path.join(OUT, nm + ".pam"), im.width, im.height, c, b)
    defect_fixtures(tmp, srcppm)
    # the source picture itself (input of the resize tests and of prepare)
    write_pam(os.path.join(OUT, "src.pam"), W, H, 3, bytes(c for p in src for c in p))
    # resize references by PIL (bicubic, bilinear, box; down and up)
    im = Image.open(srcppm)
    for fname, f in (("bicubic", Image.BICUBIC), ("bilinear", Image.BILINEAR), ("box", Image.BOX)):
        for (rw, rh) in ((16, 13), (7, 30), (64, 51), (45, 20)):
            out = im.resize((rw, rh), f)
            write_pam(os.path.join(OUT, "resize_%s_%dx%d.pam" % (fname, rw, rh)), rw, rh, 3, out.tobytes())
    # the reference's eval transform (torchvision Resize(73) + CenterCrop(64) on PIL images)
    short = 73; w, h = im.size
    nw, nh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    big = im.resize((nw, nh), Image.BICUBIC)
    left, top = int(round((nw - 64) / 2.0)), int(round((nh - 64) / 2.0))
    write_pam(os.path.join(OUT, "eval64.pam"), 64, 64, 3, big.crop((left, top, left + 64, top + 64)).tobytes())
    print("fixtures written to", OUT)


if __name__ == "__main__":
    main()
