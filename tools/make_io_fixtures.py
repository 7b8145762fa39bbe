#!/usr/bin/python3
"""Writes the small fixture files of tests/test_io.c into tests/fixtures/io/.

Run once with Debian's python3 (numpy, PIL) and gzip; the files are committed,
so the tests need neither.  Every file's content follows a formula that
tests/test_io.c recomputes in C (see the comments there).

    /usr/bin/python3 tools/make_io_fixtures.py            # (re)write the fixtures
    /usr/bin/python3 tools/make_io_fixtures.py --check-png grid.png   # decode a PNG with PIL
    /usr/bin/python3 tools/make_io_fixtures.py --classes   # only the classes_{u,s}.npz datasets
"""
import gzip, io, os, struct, subprocess, sys, zlib

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "io")


def text(nlines):
    return "".join("line %d: the quick brown fox jumps over %d lazy dogs\n" % (i, i * i % 1000)
                   for i in range(nlines)).encode()


def lcg_bytes(n, seed=1):
    x, out = seed, bytearray()
    for _ in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out.append((x >> 16) & 0xFF)
    return bytes(out)


def gzip_tool(data, name, level):
    """Debian's gzip on a named file (so the header carries FNAME)."""
    tmp = os.path.join(OUT, name)
    with open(tmp, "wb") as f:
        f.write(data)
    subprocess.run(["/usr/bin/gzip", "-f", "-%d" % level, tmp], check=True)
    return tmp + ".gz"


def gzip_all_flags(data):
    """A member with FEXTRA, FNAME, FCOMMENT and FHCRC and fixed Huffman blocks."""
    hdr = bytearray(b"\x1f\x8b\x08" + bytes([2 | 4 | 8 | 16]) + struct.pack("<I", 0) + b"\x00\x03")
    hdr += struct.pack("<H", 6) + b"PG" + struct.pack("<H", 2) + b"ok"   # one extra subfield
    hdr += b"fixed.txt\x00" + b"all four optional header fields\x00"
    hdr += struct.pack("<H", zlib.crc32(bytes(hdr)) & 0xFFFF)
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_FIXED)
    body = c.compress(data) + c.flush()
    return bytes(hdr) + body + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


def main():
    os.makedirs(OUT, exist_ok=True)
    import numpy as np
    # gzip: dynamic Huffman (text, -9), stored blocks (random bytes, -1), all header flags + fixed
    # Huffman, two members, and zlib level 0 (stored) in a python-made member
    gzip_tool(text(3000), "text.txt", 9)
    gzip_tool(lcg_bytes(6000), "random.bin", 1)
    with open(os.path.join(OUT, "flags_fixed.gz"), "wb") as f:
        f.write(gzip_all_flags(text(200)))
    a = gzip_tool(text(100), "part1.txt", 6)
    b = gzip_tool(lcg_bytes(500), "part2.bin", 6)
    with open(os.path.join(OUT, "multi.gz"), "wb") as f:
        f.write(open(a, "rb").read() + open(b, "rb").read())
    os.remove(a); os.remove(b)
    with open(os.path.join(OUT, "level0.gz"), "wb") as f:
        f.write(gzip.compress(text(50), compresslevel=0, mtime=0))
    with open(os.path.join(OUT, "text.zlib"), "wb") as f:
        f.write(zlib.compress(text(1000), 9))
    # MNIST-style IDX, gzipped by Debian's gzip: 20 images 28x28, pixel (i,y,x) = (i*7 + y*3 + x*5) % 256,
    # label i % 10
    n = 20
    img = struct.pack(">IIII", 0x803, n, 28, 28) + bytes((i * 7 + y * 3 + x * 5) % 256
                                                        for i in range(n) for y in range(28) for x in range(28))
    lab = struct.pack(">II", 0x801, n) + bytes(i % 10 for i in range(n))
    gzip_tool(img, "mini-images-idx3-ubyte", 9)
    gzip_tool(lab, "mini-labels-idx1-ubyte", 9)
    # downsampled-ImageNet layout, 8x8: data[i][j] = (i*31 + j*7) % 256, labels 1-based
    data = np.array([[(i * 31 + j * 7) % 256 for j in range(192)] for i in range(6)], dtype=np.uint8)
    labels = np.array([1, 1000, 500, 2, 999, 42], dtype=np.int64)
    np.savez(os.path.join(OUT, "imagenet8_stored.npz"), data=data, labels=labels)
    np.savez_compressed(os.path.join(OUT, "imagenet8_deflate.npz"), data=data, labels=labels)
    # assorted dtypes: f[i] = i * 0.25 - 1
    f32 = (np.arange(24, dtype=np.float32) * 0.25 - 1).reshape(2, 3, 4)
    np.savez_compressed(os.path.join(OUT, "dtypes.npz"), f32=f32, f64=f32.astype(np.float64),
                        f16=f32.astype(np.float16), i4be=np.arange(-5, 5, dtype=">i4"),
                        u2=np.arange(7, dtype=np.uint16), b1=np.array([True, False, True]),
                        scalar=np.float32(3.5))
    np.save(os.path.join(OUT, "f32.npy"), f32)
    with open(os.path.join(OUT, "f32_v2.npy"), "wb") as f:
        np.lib.format.write_array(f, f32, version=(2, 0))
    # PNG by PIL (zlib, dynamic Huffman): RGB 23x17, pixel (x, y) = (x*11 % 256, y*13 % 256, x*y % 256)
    from PIL import Image
    im = Image.new("RGB", (23, 17))
    im.putdata([((x * 11) % 256, (y * 13) % 256, (x * y) % 256) for y in range(17) for x in range(23)])
    im.save(os.path.join(OUT, "pil_rgb.png"), compress_level=9)
    class_name_npzs()
    for name in sorted(os.listdir(OUT)):
        print("%-28s %6d bytes" % (name, os.path.getsize(os.path.join(OUT, name))))


def class_name_npzs():
    """Datasets whose 'classes' are numpy strings, as a user's np.savez writes them: data u8
    [3][1][2][2] = arange, labels 0, 2, 1; classes Banana, apple, cafe with an acute e, as
    unicode ('<U6', stored) and as bytes ('|S6', UTF-8, deflate)."""
    import numpy as np
    data = np.arange(12, dtype=np.uint8).reshape(3, 1, 2, 2)
    labels = np.array([0, 2, 1], dtype=np.int64)
    names = ["Banana", "apple", "caf\u00e9"]
    np.savez(os.path.join(OUT, "classes_u.npz"), data=data, labels=labels, classes=np.array(names))
    np.savez_compressed(os.path.join(OUT, "classes_s.npz"), data=data, labels=labels,
                        classes=np.array([n.encode() for n in names]))


def check_png(path):
    from PIL import Image
    import numpy as np
    im = Image.open(path)
    im.load()
    a = np.asarray(im)
    print("%s: PIL reads %s %s, mean %.3f, checksum %d" % (path, im.mode, im.size, a.mean(), int(a.astype(np.int64).sum())))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check-png":
        check_png(sys.argv[2])
    elif len(sys.argv) == 2 and sys.argv[1] == "--classes":
        class_name_npzs()
    else:
        main()
