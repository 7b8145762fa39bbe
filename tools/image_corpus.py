#!/usr/bin/python3
"""Measures prg.h's JPEG/PNG decoders on folders of test images against PIL.

    /usr/bin/python3 tools/image_corpus.py [--list] NAME=DIR [NAME=DIR ...]
    /usr/bin/python3 tools/image_corpus.py --clone DIR     # shallow git clones of the public corpora into DIR,
                                                           # then prints the command that measures them

Every *.png, *.jpg and *.jpeg under DIR (any case) is decoded by prg.h
(build/image_corpus, from tools/image_corpus.c, built here with cc when it is
missing) with the file's own channels, leniently and in strict mode, and by
PIL (Debian's python3-pil), converted to the same channels: "L", "LA", "RGB"
or "RGBA" (16-bit gray: the high byte, as prg.h keeps it).  Prints one
markdown table: files, decoded (of them, with a warning; accepted in strict
mode), refused, decoded by PIL, pixel-identical to PIL, differing from PIL
(largest difference), refused although PIL decodes, decoded although PIL
refuses.  --list adds a line per file that is refused or differs.
Nothing is written besides the build/image_corpus program.
"""
import io, os, subprocess, sys

CORPORA = [  # name, repository, folder inside it
    ("Pillow Tests/images", "https://github.com/python-pillow/Pillow", "Tests/images"),
    ("libjpeg-turbo testimages", "https://github.com/libjpeg-turbo/libjpeg-turbo", "testimages"),
    ("image-rs tests/images", "https://github.com/image-rs/image", "tests/images"),
    ("PngSuite (libpng contrib/pngsuite)", "https://github.com/pnggroup/libpng", "contrib/pngsuite"),
]
EXTS = (".png", ".jpg", ".jpeg")


def build_decoder():
    exe = os.path.join("build", "image_corpus")
    if not os.path.exists(exe) or os.path.getmtime(exe) < max(os.path.getmtime("prg.h"), os.path.getmtime("tools/image_corpus.c")):
        os.makedirs("build", exist_ok=True)
        subprocess.run(["cc", "-O2", "-I.", "-o", exe, "tools/image_corpus.c", "-lm", "-pthread"], check=True)
    return exe


def files_under(d):
    out = []
    for root, _, names in os.walk(d):
        out += [os.path.join(root, n) for n in names if n.lower().endswith(EXTS)]
    return sorted(out)


def prg_decode_all(exe, paths):
    """{path: (w, h, c, warnings, strict_ok, bytes) or error text}"""
    p = subprocess.run([exe], input=("\n".join(paths) + "\n").encode(), stdout=subprocess.PIPE, check=True)
    out, buf, pos = {}, p.stdout, 0
    for path in paths:
        end = buf.index(b"\n", pos)
        line = buf[pos:end].decode(errors="replace"); pos = end + 1
        if line.startswith("ERR "):
            out[path] = line[4:]
            continue
        _, w, h, c, warn, strict = line.split()
        w, h, c = int(w), int(h), int(c)
        out[path] = (w, h, c, int(warn), strict == "1", buf[pos:pos + w * h * c])
        pos += w * h * c
    return out


def pil_as(path, c):
    """PIL's pixels in c channels, or the text of its error."""
    from PIL import Image
    try:
        im = Image.open(path)
        im.load()
    except Exception as e:  # noqa: BLE001 (PIL raises many kinds)
        return "%s: %s" % (type(e).__name__, e)
    import numpy as np
    with open(path, "rb") as f:
        head = f.read(25)
    depth = head[24] if head[:8] == b"\x89PNG\r\n\x1a\n" else 8
    key = im.info.get("transparency") if im.mode in ("1", "L", "I", "I;16", "I;16B", "I;16L") else None
    raw = np.asarray(im).astype(np.uint32)
    if im.mode in ("I", "I;16", "I;16B", "I;16L"):   # 16-bit gray: the high byte
        im = Image.fromarray((raw >> 8).astype(np.uint8) if depth == 16 else raw.astype(np.uint8), "L")
    if c == 2 and isinstance(key, int):   # a gray colour key: PIL's convert("LA") leaves it aside
        if depth < 8:   # PIL's pixels are scaled to 0..255; its key too for mode "1", not for 2 and 4 bits
            raw = np.asarray(im.convert("L")).astype(np.uint32)
            if im.mode != "1": key = key * 255 // ((1 << depth) - 1)
        a = np.where(raw == key, 0, 255).astype(np.uint8)
        return np.dstack([np.asarray(im.convert("L")), a]).tobytes()
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[c]
    if im.mode == "P" and c in (2, 4):
        im = im.convert("RGBA")
    if im.mode != mode:
        im = im.convert(mode)
    return im.tobytes()


def measure(name, d, exe, listing):
    paths = files_under(d)
    got = prg_decode_all(exe, paths) if paths else {}
    row = dict(files=len(paths), dec=0, warn=0, strict=0, ref=0, pil=0, same=0, diff=0, maxd=0, lost=0, extra=0)
    for path in paths:
        g = got[path]
        ours = not isinstance(g, str)
        pil = pil_as(path, g[2] if ours else 3)
        pil_ok = not isinstance(pil, str)
        row["pil"] += pil_ok
        rel = os.path.relpath(path, d)
        if not ours:
            row["ref"] += 1
            if pil_ok:
                row["lost"] += 1
            if listing: print("  %s: refused%s: %s" % (rel, " (PIL decodes)" if pil_ok else "", g), file=sys.stderr)
            continue
        w, h, c, warn, strict, px = g
        row["dec"] += 1
        row["warn"] += warn != 0
        row["strict"] += strict
        if not pil_ok:
            row["extra"] += 1
            if listing: print("  %s: decoded (warnings 0x%x), PIL refuses: %s" % (rel, warn, pil), file=sys.stderr)
            continue
        if pil == px:
            row["same"] += 1
        else:
            m = max(abs(a - b) for a, b in zip(pil, px)) if len(pil) == len(px) else 255
            row["diff"] += 1
            row["maxd"] = max(row["maxd"], m)
            if listing: print("  %s: differs from PIL by up to %d (%dx%dx%d, warnings 0x%x)" % (rel, m, w, h, c, warn), file=sys.stderr)
    return row


def main():
    args = sys.argv[1:]
    if args[:1] == ["--clone"]:
        dest = args[1]
        os.makedirs(dest, exist_ok=True)
        cmd = ["/usr/bin/python3", "tools/image_corpus.py"]
        for name, url, sub in CORPORA:
            repo = os.path.join(dest, url.rsplit("/", 1)[1])
            if not os.path.exists(repo):
                subprocess.run(["git", "clone", "--depth", "1", url, repo], check=True)
            cmd.append("'%s=%s'" % (name, os.path.join(repo, sub)))
        cmd.append("'Debian /usr/share=/usr/share'")
        print(" ".join(cmd))
        return
    listing = "--list" in args
    specs = [a for a in args if a != "--list"]
    if not specs:
        print(__doc__)
        sys.exit(2)
    exe = build_decoder()
    print("| corpus | files | decoded | with a warning | strict accepts | refused | PIL decodes | identical to PIL | differ (max) | refused, PIL decodes | decoded, PIL refuses |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    tot = None
    for spec in specs:
        name, d = spec.split("=", 1)
        if listing: print("%s:" % name, file=sys.stderr)
        r = measure(name, d, exe, listing)
        tot = r if tot is None else {k: (max(tot[k], r[k]) if k == "maxd" else tot[k] + r[k]) for k in r}
        print("| %s | %d | %d | %d | %d | %d | %d | %d | %d (%d) | %d | %d |" % (name, r["files"], r["dec"], r["warn"], r["strict"], r["ref"], r["pil"],
                                                                        r["same"], r["diff"], r["maxd"], r["lost"], r["extra"]))
    if len(specs) > 1:
        r = tot
        print("| all | %d | %d | %d | %d | %d | %d | %d | %d (%d) | %d | %d |" % (r["files"], r["dec"], r["warn"], r["strict"], r["ref"], r["pil"],
                                                                       r["same"], r["diff"], r["maxd"], r["lost"], r["extra"]))


if __name__ == "__main__":
    main()
