/* io: checksums, inflate/deflate, gzip, .npy/.npz, safetensors, IDX, CIFAR,
   PNG, PGM/PPM and the image grid.  Round trips, files in the official
   layouts written here byte by byte, fixtures made by Debian's gzip, numpy
   and PIL (tools/make_io_fixtures.py; their contents follow formulas that
   are recomputed below), and a corpus of broken files that must each be
   refused with a message naming the file. */
#define PRG_IMPLEMENTATION
#include "../prg.h"
#include "prg_test.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static char tmpdir[512] = "";
static const char *fixdir = "tests/fixtures/io";

static const char *tmp_path(const char *name) { /* a few rotating buffers */
    static char buf[8][600];
    static int k = 0;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%sio_%s", tmpdir, name);
    return buf[k];
}
static const char *fix_path(const char *name) {
    static char buf[8][600];
    static int k = 0;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", fixdir, name);
    return buf[k];
}
static void put_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) { printf("cannot write %s\n", path); exit(1); }
    if (n) fwrite(p, 1, n, f);
    fclose(f);
}
static int file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}
static int msg_has(const char *s) { return strstr(prg_last_error(), s) != NULL; }

/* The fixture formulas (the same as tools/make_io_fixtures.py). */
static uint8_t *text_gen(int nlines, size_t *len) {
    uint8_t *out = (uint8_t *)malloc((size_t)nlines * 80 + 1);
    int i;
    *len = 0;
    for (i = 0; i < nlines; i++)
        *len += (size_t)sprintf((char *)out + *len, "line %d: the quick brown fox jumps over %d lazy dogs\n", i, i * i % 1000);
    return out;
}
static uint8_t *lcg_gen(size_t n) {
    uint8_t *out = (uint8_t *)malloc(n + 1);
    uint32_t x = 1;
    size_t i;
    for (i = 0; i < n; i++) {
        x = (x * 1103515245u + 12345u) & 0x7fffffffu;
        out[i] = (uint8_t)(x >> 16);
    }
    return out;
}

/* ---- checksums, deflate, inflate, gzip ---- */

static void test_checksums(void) {
    CHECK(prg_crc32(0, "123456789", 9) == 0xCBF43926u, "crc32 check value %08x", prg_crc32(0, "123456789", 9));
    CHECK(prg_crc32(prg_crc32(0, "1234", 4), "56789", 5) == 0xCBF43926u, "crc32 in two pieces");
    CHECK(prg_adler32(1, "Wikipedia", 9) == 0x11E60398u, "adler32 %08x", prg_adler32(1, "Wikipedia", 9));
    CHECK(prg_crc32(0, "", 0) == 0 && prg_adler32(1, "", 0) == 1, "empty checksums");
}

static void check_gz(const char *name, const uint8_t *want, size_t want_len) {
    uint8_t *d = NULL;
    size_t n = 0;
    prg_result r = prg_file_read(fix_path(name), &d, &n);
    CHECK(r == PRG_OK, "%s: %s", name, prg_last_error());
    CHECK(r == PRG_OK && n == want_len && memcmp(d, want, n) == 0, "%s: %zu bytes, want %zu, content differs", name, n, want_len);
    prg_free(d);
}

static void test_gzip_fixtures(void) {
    size_t tl, t2, t3;
    uint8_t *t = text_gen(3000, &tl), *rnd = lcg_gen(6000), *both, *z, *out;
    size_t zn, outn;
    prg_result r;
    check_gz("text.txt.gz", t, tl);   /* gzip -9: dynamic Huffman, FNAME */
    check_gz("random.bin.gz", rnd, 6000); /* gzip -1 on noise: stored blocks */
    free(t);
    t = text_gen(200, &tl);
    check_gz("flags_fixed.gz", t, tl); /* FEXTRA FNAME FCOMMENT FHCRC, fixed Huffman */
    free(t);
    t = text_gen(100, &tl);
    both = (uint8_t *)malloc(tl + 500);
    memcpy(both, t, tl);
    free(rnd);
    rnd = lcg_gen(500);
    memcpy(both + tl, rnd, 500);
    check_gz("multi.gz", both, tl + 500); /* two members */
    free(both);
    free(t);
    t = text_gen(50, &tl);
    check_gz("level0.gz", t, tl);
    free(t);
    /* zlib stream by python's zlib */
    t = text_gen(1000, &tl);
    z = prg_test_read_file(fix_path("text.zlib"), &zn);
    out = (uint8_t *)malloc(tl + 16);
    r = z ? prg_zlib_decompress(z, zn, out, tl + 16, &outn) : PRG_ERR_IO;
    CHECK(r == PRG_OK && outn == tl && memcmp(out, t, tl) == 0, "text.zlib: %s", prg_last_error());
    /* too small an output buffer is an error, never a write past it */
    memset(out, 0xab, tl + 16);
    r = z ? prg_zlib_decompress(z, zn, out, tl - 100, &outn) : PRG_ERR_IO;
    CHECK(r == PRG_ERR_FORMAT && out[tl - 100] == 0xab && msg_has("larger than"), "small output buffer: %d %s", r, prg_last_error());
    if (z) {
        z[zn - 1] ^= 1; /* Adler-32 */
        r = prg_zlib_decompress(z, zn, out, tl + 16, &outn);
        CHECK(r == PRG_ERR_FORMAT && msg_has("Adler"), "zlib adler corruption: %s", prg_last_error());
    }
    free(z);
    free(out);
    free(t);
    free(rnd);
    (void)t2;
    (void)t3;
}

/* Every truncation and several single-byte corruptions of a gzip file are refused. */
static void test_gzip_corrupt(void) {
    size_t n, cut, i, d_n;
    uint8_t *g = prg_test_read_file(fix_path("text.txt.gz"), &n), *d, *h;
    const char *p = tmp_path("bad.gz");
    int refused = 0, tries = 0, named = 0;
    prg_result r;
    CHECK(g != NULL && n > 1000, "fixture text.txt.gz missing (run from the repository root)");
    if (!g) return;
    for (cut = 2; cut < n; cut += (cut < 64 ? 1 : 97)) {
        put_file(p, g, cut);
        r = prg_file_read(p, &d, &d_n);
        tries++;
        refused += r == PRG_ERR_FORMAT && d == NULL;
        named += strstr(prg_last_error(), p) != NULL;
        prg_free(d);
    }
    CHECK(refused == tries && named == tries, "truncated gzip: %d of %d refused, %d named the file", refused, tries, named);
    put_file(p, g, n - 1);
    CHECK(prg_file_read(p, &d, &d_n) == PRG_ERR_FORMAT && msg_has("truncated"), "gzip without its last byte: %s", prg_last_error());
    /* flipped bits in the compressed data and the trailer */
    refused = tries = 0;
    for (i = 30; i < n; i += n / 23) {
        g[i] ^= 0x10;
        put_file(p, g, n);
        g[i] ^= 0x10;
        tries++;
        r = prg_file_read(p, &d, &d_n);
        refused += r == PRG_ERR_FORMAT;
        prg_free(d);
    }
    CHECK(refused == tries, "corrupt gzip: %d of %d refused", refused, tries);
    g[n - 8] ^= 1;
    put_file(p, g, n);
    CHECK(prg_file_read(p, &d, &d_n) == PRG_ERR_FORMAT && msg_has("CRC-32") && msg_has(p), "crc flip: %s", prg_last_error());
    g[n - 8] ^= 1;
    g[n - 2] ^= 1;
    put_file(p, g, n);
    CHECK(prg_file_read(p, &d, &d_n) == PRG_ERR_FORMAT && msg_has("ISIZE"), "isize flip: %s", prg_last_error());
    g[n - 2] ^= 1;
    g[2] = 9;
    put_file(p, g, n);
    CHECK(prg_file_read(p, &d, &d_n) == PRG_ERR_FORMAT && msg_has("byte 2"), "method 9: %s", prg_last_error());
    g[2] = 8;
    h = (uint8_t *)malloc(n + 3);
    memcpy(h, g, n);
    memcpy(h + n, "xyz", 3);
    put_file(p, h, n + 3);
    CHECK(prg_file_read(p, &d, &d_n) == PRG_ERR_FORMAT && msg_has("after gzip member"), "trailing garbage: %s", prg_last_error());
    free(h);
    free(g);
    /* FHCRC */
    g = prg_test_read_file(fix_path("flags_fixed.gz"), &n);
    if (g) {
        g[12] ^= 1; /* inside FEXTRA: only the header CRC notices */
        put_file(p, g, n);
        CHECK(prg_file_read(p, &d, &d_n) == PRG_ERR_FORMAT && msg_has("header CRC"), "FHCRC: %s", prg_last_error());
        free(g);
    }
    /* a member holding only an empty stored block (found by make fuzz): empty output, no
       pointer arithmetic on the not yet allocated buffer (make asan checks that) */
    {
        static const uint8_t empty[] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0};
        d = NULL;
        d_n = 99;
        put_file(p, empty, sizeof empty);
        CHECK(prg_file_read(p, &d, &d_n) == PRG_OK && d_n == 0, "empty stored block: %s", prg_last_error());
        prg_free(d);
    }
    remove(p);
}

/* A little LSB-first bit writer to hand-make deflate streams. */
typedef struct bits_t { uint8_t *p; size_t bit; } bits_t;
static void put_bits(bits_t *b, unsigned v, int n) {
    int i;
    for (i = 0; i < n; i++, b->bit++)
        if ((v >> i) & 1) b->p[b->bit / 8] |= (uint8_t)(1u << (b->bit % 8));
}
static void put_code(bits_t *b, unsigned code, int n) { /* Huffman codes: most significant bit first */
    int i;
    for (i = n - 1; i >= 0; i--) put_bits(b, (code >> i) & 1, 1);
}

static void test_deflate_roundtrip(void) {
    static const size_t sizes[] = {0, 1, 15, 16, 17, 300, 4096, 70000, 200000};
    size_t tl, k, i;
    uint8_t *text = text_gen(4000, &tl), *rnd = lcg_gen(200000), *src = (uint8_t *)malloc(200000), *z, *back;
    int kind;
    z = (uint8_t *)malloc(prg_deflate_bound(200000));
    back = (uint8_t *)malloc(200001);
    for (kind = 0; kind < 4; kind++)
        for (k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            size_t n = sizes[k], zn, bn = 0, used = 0;
            prg_result r;
            for (i = 0; i < n; i++)
                src[i] = kind == 0 ? text[i % tl] : kind == 1 ? rnd[i] : kind == 2 ? 0 : (uint8_t)(i % 251 < 100 ? rnd[i] : i % 7);
            zn = prg_deflate(z, src, n);
            CHECK(zn <= prg_deflate_bound(n), "deflate bound %zu > %zu", zn, prg_deflate_bound(n));
            r = prg_inflate(z, zn, back, 200001, &bn, &used);
            CHECK(r == PRG_OK && bn == n && used == zn && memcmp(back, src, n) == 0, "deflate round trip kind %d size %zu: %s", kind, n,
                  prg_last_error());
            if (kind == 0 && n == 200000) CHECK(zn < n / 4, "text compresses to %zu of %zu", zn, n);
            if (kind == 1 && n == 200000) CHECK(zn <= n + 5 * (n / 65535 + 1), "noise stored: %zu", zn);
        }
    /* hand-made streams: a stored block with a bad NLEN, block type 3, a distance too far back */
    {
        const uint8_t bad_nlen[] = {0x01, 0x03, 0x00, 0xfc, 0xfe, 'a', 'b', 'c'}, type3[] = {0x07, 0x00};
        uint8_t far[8];
        size_t bn;
        bits_t bw;
        memset(&bw, 0, sizeof bw);
        bw.p = far;
        memset(far, 0, sizeof far);
        put_bits(&bw, 1, 1); /* final */
        put_bits(&bw, 1, 2); /* fixed Huffman */
        put_code(&bw, 0x30 + 'a', 8); /* literal 'a' */
        put_code(&bw, 1, 7);          /* length 3 */
        put_code(&bw, 4, 5);          /* distance 5..6 */
        put_bits(&bw, 0, 1);          /* = 5, but only 1 byte was output */
        put_code(&bw, 0, 7);          /* end of block */
        CHECK(prg_inflate(bad_nlen, sizeof bad_nlen, back, 100, &bn, NULL) == PRG_ERR_FORMAT && msg_has("NLEN"), "nlen: %s", prg_last_error());
        CHECK(prg_inflate(type3, sizeof type3, back, 100, &bn, NULL) == PRG_ERR_FORMAT && msg_has("type 3"), "type 3: %s", prg_last_error());
        CHECK(prg_inflate(far, sizeof far, back, 100, &bn, NULL) == PRG_ERR_FORMAT, "far distance: %s", prg_last_error());
    }
    free(text);
    free(rnd);
    free(src);
    free(z);
    free(back);
}

/* ---- .npy / .npz ---- */

static prg_array mk_array(prg_dtype t, void *data, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    prg_array a;
    int k;
    memset(&a, 0, sizeof a);
    a.dtype = t;
    a.ndim = ndim;
    a.shape[0] = d0;
    a.shape[1] = d1;
    a.shape[2] = d2;
    a.shape[3] = d3;
    a.count = 1;
    for (k = 0; k < ndim; k++) a.count *= (size_t)a.shape[k];
    a.data = data;
    return a;
}

static void test_npy(void) {
    prg_array a, b;
    const char *names[] = {"f32", "f64", "f16", "u2", "scalar"};
    prg_result r;
    size_t i, n;
    int k;
    uint8_t *bytes;
    const char *p = tmp_path("bad.npy");
    /* numpy's files, v1 and v2 headers */
    for (k = 0; k < 2; k++) {
        r = prg_npy_read(&a, fix_path(k ? "f32_v2.npy" : "f32.npy"));
        CHECK(r == PRG_OK && a.dtype == PRG_DT_F32 && a.ndim == 3 && a.shape[0] == 2 && a.shape[1] == 3 && a.shape[2] == 4 && a.count == 24,
              "f32.npy v%d: %s", k + 1, prg_last_error());
        for (i = 0; r == PRG_OK && i < 24; i++) CHECK(((float *)a.data)[i] == (float)i * 0.25f - 1.0f, "f32.npy[%zu]", i);
        prg_array_free(&a);
    }
    /* np.savez_compressed with assorted dtypes */
    for (k = 0; k < 5; k++) {
        float f[24];
        r = prg_npz_read(&a, fix_path("dtypes.npz"), names[k]);
        CHECK(r == PRG_OK, "dtypes.npz[%s]: %s", names[k], prg_last_error());
        if (r) continue;
        prg_convert_to_f32(f, a.data, a.dtype, a.count < 24 ? a.count : 24);
        if (k < 3) CHECK(a.count == 24 && f[5] == 0.25f && f[23] == 4.75f && f[0] == -1.0f, "%s values", names[k]);
        if (k == 3) CHECK(a.dtype == PRG_DT_U16 && a.count == 7 && f[6] == 6.0f, "u2 values");
        if (k == 4) CHECK(a.ndim == 0 && a.count == 1 && f[0] == 3.5f, "scalar");
        prg_array_free(&a);
    }
    r = prg_npz_read(&a, fix_path("dtypes.npz"), "i4be.npy");
    CHECK(r == PRG_OK && a.dtype == PRG_DT_I32 && a.count == 10 && ((int32_t *)a.data)[0] == -5 && ((int32_t *)a.data)[9] == 4,
          "big-endian int32 swapped: %s", prg_last_error());
    prg_array_free(&a);
    r = prg_npz_read(&a, fix_path("dtypes.npz"), "b1");
    CHECK(r == PRG_OK && a.dtype == PRG_DT_BOOL && a.count == 3 && ((uint8_t *)a.data)[1] == 0 && ((uint8_t *)a.data)[2] == 1, "bool");
    prg_array_free(&a);
    r = prg_npz_read(&a, fix_path("dtypes.npz"), "nothere");
    CHECK(r == PRG_ERR_FORMAT && msg_has("nothere") && msg_has("dtypes.npz") && a.data == NULL, "missing array: %s", prg_last_error());
    /* round trips through our writers */
    {
        int64_t v64[6] = {-3, 0, 7, 1LL << 40, -1, 5};
        prg_array arrs[2];
        const char *nn[2] = {"x", "labels"};
        float f32[6] = {1.5f, -2.0f, 0.0f, 1e-30f, 3e30f, -0.0f};
        arrs[0] = mk_array(PRG_DT_F32, f32, 2, 2, 3, 0, 0);
        arrs[1] = mk_array(PRG_DT_I64, v64, 1, 6, 0, 0, 0);
        r = prg_npy_write(tmp_path("rt.npy"), &arrs[0]);
        CHECK(r == PRG_OK && prg_npy_read(&b, tmp_path("rt.npy")) == PRG_OK && b.count == 6 && b.ndim == 2 && memcmp(b.data, f32, 24) == 0,
              "npy round trip: %s", prg_last_error());
        prg_array_free(&b);
        bytes = prg_test_read_file(tmp_path("rt.npy"), &n);
        CHECK(bytes && n % 64 == 24 && bytes[n - 25] == '\n', "npy header padded to 64 with a newline (%zu bytes)", n);
        CHECK(bytes && bytes[n - 24] == 0 && bytes[n - 23] == 0 && bytes[n - 22] == 0xc0 && bytes[n - 21] == 0x3f, "npy 1.5f little-endian");
        free(bytes);
        r = prg_npz_write(tmp_path("rt.npz"), nn, arrs, 2);
        CHECK(r == PRG_OK, "npz save: %s", prg_last_error());
        CHECK(prg_npz_read(&b, tmp_path("rt.npz"), "labels") == PRG_OK && b.dtype == PRG_DT_I64 && memcmp(b.data, v64, 48) == 0,
              "npz round trip: %s", prg_last_error());
        prg_array_free(&b);
        CHECK(prg_npz_write(tmp_path("rt2.npz"), nn, arrs, 0) == PRG_OK && prg_npz_read(&b, tmp_path("rt2.npz"), "x") == PRG_ERR_FORMAT,
              "empty npz");
        /* corrupt npz: every truncation, a flipped data byte (CRC) */
        bytes = prg_test_read_file(tmp_path("rt.npz"), &n);
        {
            int refused = 0, tries = 0;
            for (i = 0; i < n; i += 3) {
                put_file(p, bytes, i);
                tries++;
                r = prg_npz_read(&b, p, "labels");
                refused += r != PRG_OK && b.data == NULL && strstr(prg_last_error(), p) != NULL;
            }
            CHECK(refused == tries, "truncated npz: %d of %d refused with the name", refused, tries);
            bytes[30 + 6 + 70] ^= 4; /* inside the first entry's .npy */
            put_file(p, bytes, n);
            CHECK(prg_npz_read(&b, p, "x") == PRG_ERR_FORMAT && (msg_has("CRC") || msg_has("header")), "flipped npz byte: %s", prg_last_error());
        }
        free(bytes);
    }
    /* corrupt .npy: every truncation, wrong magic, absurd header, bad dicts */
    bytes = prg_test_read_file(fix_path("f32.npy"), &n);
    if (bytes) {
        int refused = 0;
        static const char *const bad_dicts[][2] = {
            {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4), }", ""},
            {"{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3, 4), }", "fortran"},
            {"{'descr': '<c8', 'fortran_order': False, 'shape': (2, 3, 4), }", "dtype"},
            {"{'descr': '<f4', 'shape': (2, 3, 4), }", "missing"},
            {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 5), }", "truncated"},
            {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", "trailing"},
            {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4), 'x': 1}", "unknown"},
            {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999, 4), }", "overflow"},
            {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4) ", "expected"},
        };
        for (i = 0; i < n; i++) {
            put_file(p, bytes, i);
            refused += prg_npy_read(&a, p) == PRG_ERR_FORMAT && strstr(prg_last_error(), p) != NULL;
        }
        CHECK(refused == (int)n, "truncated .npy: %d of %zu refused", refused, n);
        bytes[1] = 'X';
        put_file(p, bytes, n);
        CHECK(prg_npy_read(&a, p) == PRG_ERR_FORMAT && msg_has("magic"), "npy magic: %s", prg_last_error());
        bytes[1] = 'N';
        bytes[6] = 2;
        bytes[8] = 0xf0;
        bytes[9] = bytes[10] = bytes[11] = 0xff;
        put_file(p, bytes, n);
        CHECK(prg_npy_read(&a, p) == PRG_ERR_FORMAT && msg_has("absurd") && msg_has("byte 8"), "npy absurd header: %s", prg_last_error());
        for (k = 0; k < (int)(sizeof bad_dicts / sizeof bad_dicts[0]); k++) {
            uint8_t f[256];
            size_t hl = strlen(bad_dicts[k][0]), pad = 64 - (10 + hl + 1) % 64, tot = 10 + hl + pad + 1;
            memcpy(f, "\x93NUMPY\x01\x00", 8);
            f[8] = (uint8_t)(hl + pad + 1);
            f[9] = 0;
            memcpy(f + 10, bad_dicts[k][0], hl);
            memset(f + 10 + hl, ' ', pad);
            f[tot - 1] = '\n';
            put_file(p, f, tot);
            {
                FILE *fp = fopen(p, "ab");
                fwrite(bytes + 128, 1, 96, fp); /* 24 floats */
                fclose(fp);
            }
            r = prg_npy_read(&a, p);
            if (k == 0) CHECK(r == PRG_OK && a.count == 24, "hand-made npy: %s", prg_last_error());
            else CHECK(r != PRG_OK && a.data == NULL && strstr(prg_last_error(), p) != NULL, "bad npy dict %d (%s) accepted", k, bad_dicts[k][1]);
            prg_array_free(&a);
        }
        free(bytes);
    }
    remove(p);
}

/* ---- safetensors ---- */

static void write_st(const char *path, const char *json, size_t data_len) {
    size_t hl = strlen(json), i;
    uint8_t *f = (uint8_t *)malloc(8 + hl + data_len + 1);
    for (i = 0; i < 8; i++) f[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(f + 8, json, hl);
    for (i = 0; i < data_len; i++) f[8 + hl + i] = (uint8_t)i;
    put_file(path, f, 8 + hl + data_len);
    free(f);
}

static prg_st_tensor mk_tensor(const char *name, prg_dtype dt, const void *data, int ndim, int64_t d0, int64_t d1) {
    prg_st_tensor t;
    memset(&t, 0, sizeof t);
    t.name = name;
    t.dtype = dt;
    t.data = data;
    t.ndim = ndim;
    t.shape[0] = d0;
    t.shape[1] = d1;
    return t;
}

static void test_safetensors(void) {
    float w[6] = {1, -2, 3.5f, 0, 1e-20f, -7}, back[6], nanv[3] = {1, 0, 2};
    uint16_t f16[6] = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x8000, 0x3555}, bf16[2] = {0x3F80, 0x4049};
    int64_t step[1] = {123456789012LL}, got64 = 0;
    const float f16_want[6] = {1.0f, -2.0f, 65504.0f, 5.9604644775390625e-08f, -0.0f, 0.333251953125f};
    prg_st_tensor t[5];
    const char *meta[] = {"config", "{\"ch\": 32}", "weird \"key\"\n", "caf\xc3\xa9 \\ / \x01"};
    const char *p = tmp_path("model.safetensors");
    prg_st *st = NULL;
    prg_st_info info;
    prg_result r;
    size_t n, i;
    uint8_t *before, *after;
    size_t nb, na;
    int k;
    t[0] = mk_tensor("layer.weight", PRG_DT_F32, w, 2, 2, 3);
    t[1] = mk_tensor("half \"quoted\"\tname", PRG_DT_F16, f16, 1, 6, 0);
    t[2] = mk_tensor("bf", PRG_DT_BF16, bf16, 2, 1, 2);
    t[3] = mk_tensor("step", PRG_DT_I64, step, 0, 0, 0);
    t[4] = mk_tensor("empty", PRG_DT_F32, NULL, 2, 0, 5);
    r = prg_st_write(p, t, 5, meta, 2);
    CHECK(r == PRG_OK, "safetensors write: %s", prg_last_error());
    CHECK(!file_exists(tmp_path("model.safetensors.tmp")), "temporary file renamed away");
    r = prg_st_open(&st, p);
    CHECK(r == PRG_OK, "safetensors open: %s", prg_last_error());
    if (r) return;
    CHECK(prg_st_num_tensors(st) == 5 && strcmp(prg_st_info_at(st, 1)->name, t[1].name) == 0, "count and order");
    CHECK(prg_st_find(st, "layer.weight", &info) == PRG_OK && info.dtype == PRG_DT_F32 && info.ndim == 2 && info.shape[1] == 3 &&
              info.count == 6 && info.nbytes == 24 && info.offset % 8 == 0,
          "info");
    CHECK(prg_st_read_f32(st, "layer.weight", back, 6, PRG_ST_FINITE) == PRG_OK && memcmp(back, w, 24) == 0, "f32 values");
    {
        uint8_t *file = prg_test_read_file(p, &n); /* 1.0f little-endian on disk, on any host */
        CHECK(file && info.offset + 4 <= n && file[info.offset] == 0 && file[info.offset + 1] == 0 && file[info.offset + 2] == 0x80 &&
                  file[info.offset + 3] == 0x3f,
              "f32 stored little-endian");
        free(file);
    }
    CHECK(prg_st_read_f32(st, t[1].name, back, 6, 0) == PRG_OK, "f16 read: %s", prg_last_error());
    for (i = 0; i < 6; i++) CHECK(back[i] == f16_want[i] && signbit(back[i]) == signbit(f16_want[i]), "f16[%zu] = %g", i, back[i]);
    CHECK(prg_st_read_f32(st, "bf", back, 2, 0) == PRG_OK && back[0] == 1.0f && back[1] == 3.140625f, "bf16 values");
    {
        uint8_t raw[8];
        for (i = 0; i < 8; i++) raw[i] = 0;
        CHECK(prg_st_read_raw(st, "step", raw, 8) == PRG_OK, "i64 raw");
        for (i = 8; i-- > 0;) got64 = (int64_t)((uint64_t)got64 << 8 | raw[i]); /* little-endian on disk */
        CHECK(got64 == step[0], "i64 raw value %lld", (long long)got64);
    }
    CHECK(prg_st_read_f32(st, "empty", back, 0, 0) == PRG_OK, "empty tensor");
    CHECK(prg_st_read_f32(st, "layer.weight", back, 5, 0) == PRG_ERR_SHAPE && msg_has("layer.weight") && msg_has("[2, 3]"), "count mismatch: %s",
          prg_last_error());
    CHECK(prg_st_find(st, "nope", NULL) == PRG_ERR_FORMAT && msg_has("nope"), "missing tensor");
    CHECK(prg_st_metadata(st, "config") && strcmp(prg_st_metadata(st, "config"), meta[1]) == 0, "metadata");
    CHECK(prg_st_metadata(st, meta[2]) && strcmp(prg_st_metadata(st, meta[2]), meta[3]) == 0, "escaped metadata round trip");
    CHECK(prg_st_metadata(st, "absent") == NULL && prg_st_num_metadata(st) == 2, "metadata count");
    prg_st_close(st);
    /* NaN refused only when asked, naming the tensor */
    nanv[1] = (float)NAN;
    t[0] = mk_tensor("bad.bias", PRG_DT_F32, nanv, 1, 3, 0);
    CHECK(prg_st_write(tmp_path("nan.safetensors"), t, 1, NULL, 0) == PRG_OK, "nan write");
    if (prg_st_open(&st, tmp_path("nan.safetensors")) == PRG_OK) {
        CHECK(prg_st_read_f32(st, "bad.bias", back, 3, 0) == PRG_OK && back[1] != back[1], "nan read when allowed");
        CHECK(prg_st_read_f32(st, "bad.bias", back, 3, PRG_ST_FINITE) == PRG_ERR_NUMERIC && msg_has("bad.bias") && msg_has("element 1"),
              "nan refused: %s", prg_last_error());
        prg_st_close(st);
    }
    /* a failed write leaves the old file as it was */
    before = prg_test_read_file(p, &nb);
    t[1] = t[0];
    r = prg_st_write(p, t, 2, NULL, 0);
    after = prg_test_read_file(p, &na);
    CHECK(r == PRG_ERR_ARG && msg_has("twice") && nb == na && memcmp(before, after, nb) == 0 && !file_exists(tmp_path("model.safetensors.tmp")),
          "duplicate names refused, old file intact: %s", prg_last_error());
    free(before);
    free(after);
    CHECK(prg_st_write("/nonexistent-dir/x.safetensors", t, 1, NULL, 0) == PRG_ERR_IO && msg_has("nonexistent-dir"), "no dir");
    /* every truncation of a valid file */
    before = prg_test_read_file(p, &nb);
    {
        int refused = 0;
        for (i = 0; i < nb; i++) {
            put_file(tmp_path("cut.safetensors"), before, i);
            r = prg_st_open(&st, tmp_path("cut.safetensors"));
            refused += r == PRG_ERR_FORMAT && st == NULL && strstr(prg_last_error(), "cut.safetensors") != NULL;
            if (st) prg_st_close(st);
        }
        CHECK(refused == (int)nb, "truncated safetensors: %d of %zu refused", refused, nb);
    }
    free(before);
    /* hand-made headers: the first is valid, the others must be refused */
    {
        static const struct { const char *json; size_t data; const char *want; prg_result code; } cases[] = {
            {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"__metadata__\":{\"k\":\"\\u00e9\\ud83d\\ude00\"}}", 8, "", PRG_OK},
            {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "overlaps", PRG_ERR_FORMAT},
            {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", 20, "unused bytes", PRG_ERR_FORMAT},
            {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 12, "unused bytes at the end", PRG_ERR_FORMAT},
            {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "outside", PRG_ERR_FORMAT},
            {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "shape [3]", PRG_ERR_FORMAT},
            {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,8]}}", 8, "'a'", PRG_ERR_FORMAT},
            {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "outside", PRG_ERR_FORMAT},
            {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16, "twice", PRG_ERR_FORMAT},
            {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", 8, "expected", PRG_ERR_FORMAT},
            {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},}", 8, "expected '\"'", PRG_ERR_FORMAT},
            {"{'a':{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "byte 9", PRG_ERR_FORMAT},
            {"{\"a\":{\"dtype\":\"F32\",\"shape\":[02],\"data_offsets\":[0,8]}}", 8, "leading zero", PRG_ERR_FORMAT},
            {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "non-negative", PRG_ERR_FORMAT},
            {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8, "integer", PRG_ERR_FORMAT},
            {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"extra\":1}}", 8, "unknown", PRG_ERR_FORMAT},
            {"{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "repeated", PRG_ERR_FORMAT},
            {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "missing", PRG_ERR_FORMAT},
            {"{\"a\":{\"dtype\":\"C64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, "C64", PRG_ERR_UNSUPPORTED},
            {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", 8, "8 dimensions", PRG_ERR_FORMAT},
            {"{\"__metadata__\":{\"k\":1},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "strings", PRG_ERR_FORMAT},
            {"{\"__metadata__\":{\"k\":\"v\",\"k\":\"w\"}}", 0, "twice", PRG_ERR_FORMAT},
            {"{\"a\x01\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "control", PRG_ERR_FORMAT},
            {"{\"a\\q\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "escape", PRG_ERR_FORMAT},
            {"{\"a\\udc00\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "surrogate", PRG_ERR_FORMAT},
            {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}} x", 8, "after the header", PRG_ERR_FORMAT},
            {"[]", 0, "expected '{'", PRG_ERR_FORMAT},
        };
        for (k = 0; k < (int)(sizeof cases / sizeof cases[0]); k++) {
            const char *cp = tmp_path("case.safetensors");
            write_st(cp, cases[k].json, cases[k].data);
            st = NULL;
            r = prg_st_open(&st, cp);
            CHECK(r == cases[k].code && (r == PRG_OK || (st == NULL && msg_has(cases[k].want) && msg_has("case.safetensors"))),
                  "case %d: got %d '%s', want %d '%s'", k, r, prg_last_error(), cases[k].code, cases[k].want);
            if (k == 0 && st) CHECK(strcmp(prg_st_metadata(st, "k"), "\xc3\xa9\xf0\x9f\x98\x80") == 0, "\\u escapes decode to UTF-8");
            if (st) prg_st_close(st);
        }
        /* absurd or lying header lengths, short files, a NUL in the header */
        {
            uint8_t f[32];
            const char *cp = tmp_path("case.safetensors");
            memset(f, 0, sizeof f);
            f[5] = 1; /* 2^40 */
            put_file(cp, f, 32);
            CHECK(prg_st_open(&st, cp) == PRG_ERR_FORMAT && msg_has("absurd") && msg_has("byte 0"), "absurd length: %s", prg_last_error());
            memset(f, 0, sizeof f);
            f[0] = 100;
            memcpy(f + 8, "{}", 2);
            put_file(cp, f, 32);
            CHECK(prg_st_open(&st, cp) == PRG_ERR_FORMAT && msg_has("past the end"), "length past end: %s", prg_last_error());
            put_file(cp, f, 5);
            CHECK(prg_st_open(&st, cp) == PRG_ERR_FORMAT && msg_has("truncated"), "5-byte file: %s", prg_last_error());
            f[0] = 4;
            memcpy(f + 8, "{ \0}", 4);
            put_file(cp, f, 12);
            CHECK(prg_st_open(&st, cp) == PRG_ERR_FORMAT && msg_has("NUL"), "NUL: %s", prg_last_error());
            remove(cp);
        }
    }
    CHECK(prg_st_open(&st, tmp_path("does-not-exist")) == PRG_ERR_IO && msg_has("does-not-exist") && st == NULL, "missing file");
    remove(p);
    remove(tmp_path("nan.safetensors"));
    remove(tmp_path("cut.safetensors"));
    (void)n;
}

/* ---- datasets ---- */

static void be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void test_idx(void) {
    enum { N = 7, R = 5, C = 4 };
    uint8_t img[16 + N * R * C], lab[8 + N];
    char ip[600], lp[600];
    prg_dataset ds;
    prg_result r;
    size_t i;
    int refused = 0, ok;
    strcpy(ip, tmp_path("t-images-idx3-ubyte"));
    strcpy(lp, tmp_path("t-labels-idx1-ubyte"));
    be32(img, 0x803);
    be32(img + 4, N);
    be32(img + 8, R);
    be32(img + 12, C);
    for (i = 0; i < N * R * C; i++) img[16 + i] = (uint8_t)(i * 13 + 1);
    be32(lab, 0x801);
    be32(lab + 4, N);
    for (i = 0; i < N; i++) lab[8 + i] = (uint8_t)((i * 3) % 10);
    put_file(ip, img, sizeof img);
    put_file(lp, lab, sizeof lab);
    r = prg_dataset_load_idx(&ds, ip, lp);
    CHECK(r == PRG_OK && ds.n == N && ds.c == 1 && ds.h == R && ds.w == C && ds.num_classes == 10, "idx load: %s", prg_last_error());
    if (r == PRG_OK) {
        CHECK(memcmp(ds.images, img + 16, N * R * C) == 0, "idx pixels");
        for (i = 0, ok = 1; i < N; i++) ok &= ds.labels[i] == (int32_t)((i * 3) % 10);
        CHECK(ok, "idx labels");
    }
    prg_dataset_free(&ds);
    CHECK(ds.images == NULL && ds.n == 0, "free zeroes");
    /* auto-detect from either file */
    CHECK(prg_dataset_load(&ds, ip) == PRG_OK && ds.n == N, "auto from images: %s", prg_last_error());
    prg_dataset_free(&ds);
    CHECK(prg_dataset_load(&ds, lp) == PRG_OK && ds.n == N && ds.labels[1] == 3, "auto from labels: %s", prg_last_error());
    prg_dataset_free(&ds);
    /* the gzipped fixture (Debian's gzip) */
    r = prg_dataset_load(&ds, fix_path("mini-images-idx3-ubyte.gz"));
    CHECK(r == PRG_OK && ds.n == 20 && ds.h == 28 && ds.w == 28, "gz idx: %s", prg_last_error());
    if (r == PRG_OK) {
        int y, x, n2;
        for (n2 = 0, ok = 1; n2 < 20; n2++) {
            ok &= ds.labels[n2] == n2 % 10;
            for (y = 0; y < 28; y++)
                for (x = 0; x < 28; x++) ok &= ds.images[(n2 * 28 + y) * 28 + x] == (uint8_t)((n2 * 7 + y * 3 + x * 5) % 256);
        }
        CHECK(ok, "gz idx content");
    }
    prg_dataset_free(&ds);
    /* every truncation of the images file */
    for (i = 0; i < sizeof img; i++) {
        put_file(ip, img, i);
        r = prg_dataset_load_idx(&ds, ip, lp);
        refused += r == PRG_ERR_FORMAT && ds.images == NULL && ds.labels == NULL && strstr(prg_last_error(), ip) != NULL;
    }
    CHECK(refused == (int)sizeof img, "truncated idx: %d of %zu refused", refused, sizeof img);
    put_file(ip, img, sizeof img);
    img[3] = 1; /* labels magic in an images file */
    put_file(tmp_path("bad-images"), img, sizeof img);
    CHECK(prg_dataset_load_idx(&ds, tmp_path("bad-images"), lp) == PRG_ERR_FORMAT && msg_has("magic") && msg_has("bad-images"), "idx magic: %s",
          prg_last_error());
    img[3] = 3;
    img[2] = 0x0d; /* float32 elements */
    put_file(tmp_path("bad-images"), img, sizeof img);
    CHECK(prg_dataset_load_idx(&ds, tmp_path("bad-images"), lp) == PRG_ERR_UNSUPPORTED && msg_has("0x0d"), "idx type: %s", prg_last_error());
    img[2] = 8;
    be32(img + 4, 0xfffffff0u); /* absurd count */
    put_file(tmp_path("bad-images"), img, sizeof img);
    CHECK(prg_dataset_load_idx(&ds, tmp_path("bad-images"), lp) == PRG_ERR_FORMAT && msg_has("byte 4"), "idx absurd count: %s", prg_last_error());
    be32(img + 4, N);
    be32(img + 8, 1u << 20); /* absurd rows */
    put_file(tmp_path("bad-images"), img, sizeof img);
    CHECK(prg_dataset_load_idx(&ds, tmp_path("bad-images"), lp) == PRG_ERR_FORMAT && msg_has("byte 8"), "idx absurd rows: %s", prg_last_error());
    be32(img + 8, R);
    {
        uint8_t extra[sizeof img + 1];
        memcpy(extra, img, sizeof img);
        extra[sizeof img] = 0;
        put_file(tmp_path("bad-images"), extra, sizeof extra);
        CHECK(prg_dataset_load_idx(&ds, tmp_path("bad-images"), lp) == PRG_ERR_FORMAT && msg_has("trailing"), "idx trailing: %s", prg_last_error());
    }
    lab[8 + 4] = 10; /* label out of range */
    put_file(lp, lab, sizeof lab);
    CHECK(prg_dataset_load_idx(&ds, ip, lp) == PRG_ERR_FORMAT && msg_has("label 10") && msg_has("byte 12") && ds.images == NULL, "idx label: %s",
          prg_last_error());
    lab[8 + 4] = 1;
    be32(lab + 4, N - 1);
    put_file(lp, lab, sizeof lab - 1);
    CHECK(prg_dataset_load_idx(&ds, ip, lp) == PRG_ERR_SHAPE && msg_has("6 labels"), "idx count mismatch: %s", prg_last_error());
    CHECK(prg_dataset_load_idx(&ds, ip, tmp_path("missing-labels")) == PRG_ERR_IO && msg_has("missing-labels"), "idx missing labels");
    remove(ip);
    remove(lp);
    remove(tmp_path("bad-images"));
}

static void test_cifar(void) {
    enum { REC10 = 3073, REC100 = 3074 };
    uint8_t *f = (uint8_t *)malloc(5 * REC100);
    char p1[600], p2[600], p100[600];
    const char *paths[2];
    prg_dataset ds;
    prg_result r;
    size_t i, k;
    int ok;
    strcpy(p1, tmp_path("data_batch_1.bin"));
    strcpy(p2, tmp_path("data_batch_2.bin"));
    strcpy(p100, tmp_path("cifar-100-train.bin"));
    for (k = 0; k < 5; k++) {
        f[k * REC10] = (uint8_t)(k * 2 + 1);
        for (i = 0; i < 3072; i++) f[k * REC10 + 1 + i] = (uint8_t)(k * 5 + i);
    }
    put_file(p1, f, 3 * REC10);
    put_file(p2, f + 3 * REC10, 2 * REC10);
    paths[0] = p1;
    paths[1] = p2;
    r = prg_dataset_load_cifar10(&ds, paths, 2);
    CHECK(r == PRG_OK && ds.n == 5 && ds.c == 3 && ds.h == 32 && ds.w == 32 && ds.num_classes == 10, "cifar10: %s", prg_last_error());
    if (r == PRG_OK) {
        for (k = 0, ok = 1; k < 5; k++) {
            ok &= ds.labels[k] == (int32_t)(k * 2 + 1);
            for (i = 0; i < 3072; i++) ok &= ds.images[k * 3072 + i] == (uint8_t)(k * 5 + i);
        }
        CHECK(ok, "cifar10 content (R, G, B planes kept as [3][32][32])");
    }
    prg_dataset_free(&ds);
    CHECK(prg_dataset_load(&ds, p2) == PRG_OK && ds.n == 2 && ds.labels[1] == 9, "cifar10 auto: %s", prg_last_error());
    prg_dataset_free(&ds);
    /* truncated: the message names the file and where the partial record starts */
    put_file(p2, f, 2 * REC10 - 100);
    CHECK(prg_dataset_load_cifar10(&ds, paths, 2) == PRG_ERR_FORMAT && msg_has("data_batch_2") && msg_has("byte 3073") && ds.images == NULL,
          "cifar10 truncated: %s", prg_last_error());
    f[2 * REC10] = 10;
    put_file(p2, f, 3 * REC10);
    CHECK(prg_dataset_load_cifar10(&ds, paths, 2) == PRG_ERR_FORMAT && msg_has("label 10") && msg_has("record 2") && msg_has("byte 6146") &&
              ds.images == NULL,
          "cifar10 label: %s", prg_last_error());
    /* CIFAR-100: <coarse><fine><pixels> */
    for (k = 0; k < 4; k++) {
        f[k * REC100] = (uint8_t)(k + 16);
        f[k * REC100 + 1] = (uint8_t)(k * 30);
        for (i = 0; i < 3072; i++) f[k * REC100 + 2 + i] = (uint8_t)(i ^ k);
    }
    put_file(p100, f, 4 * REC100);
    paths[0] = p100;
    r = prg_dataset_load_cifar100(&ds, paths, 1, 0);
    CHECK(r == PRG_OK && ds.n == 4 && ds.num_classes == 100 && ds.labels[3] == 90 && ds.images[3 * 3072 + 5] == (5 ^ 3), "cifar100 fine: %s",
          prg_last_error());
    prg_dataset_free(&ds);
    r = prg_dataset_load_cifar100(&ds, paths, 1, 1);
    CHECK(r == PRG_OK && ds.num_classes == 20 && ds.labels[3] == 19, "cifar100 coarse: %s", prg_last_error());
    prg_dataset_free(&ds);
    CHECK(prg_dataset_load(&ds, p100) == PRG_OK && ds.num_classes == 100, "cifar100 auto: %s", prg_last_error());
    prg_dataset_free(&ds);
    f[REC100] = 20; /* coarse label out of range; the fine labels still fine */
    put_file(p100, f, 4 * REC100);
    CHECK(prg_dataset_load_cifar100(&ds, paths, 1, 1) == PRG_ERR_FORMAT && msg_has("label 20") && msg_has("byte 3074"), "cifar100 coarse range: %s",
          prg_last_error());
    CHECK(prg_dataset_load_cifar100(&ds, paths, 1, 0) == PRG_OK, "fine labels unaffected");
    prg_dataset_free(&ds);
    remove(p1);
    remove(p2);
    remove(p100);
    free(f);
}

static void test_npz_dataset(void) {
    static const int32_t want[6] = {0, 999, 499, 1, 998, 41};
    prg_dataset ds;
    prg_result r;
    int k, i, j, ok;
    for (k = 0; k < 2; k++) {
        const char *name = k ? "imagenet8_deflate.npz" : "imagenet8_stored.npz";
        r = prg_dataset_load(&ds, fix_path(name));
        CHECK(r == PRG_OK && ds.n == 6 && ds.c == 3 && ds.h == 8 && ds.w == 8 && ds.num_classes == 1000, "%s: %s", name, prg_last_error());
        if (r) continue;
        for (i = 0, ok = 1; i < 6; i++) {
            ok &= ds.labels[i] == want[i];
            for (j = 0; j < 192; j++) ok &= ds.images[i * 192 + j] == (uint8_t)((i * 31 + j * 7) % 256);
        }
        CHECK(ok, "%s content (labels 1-based on disk, 0-based here)", name);
        prg_dataset_free(&ds);
    }
    /* our own writer, [N][C][H][W] and a 0 label in the ImageNet layout */
    {
        uint8_t px[2 * 3 * 32 * 32];
        int64_t lab[2] = {0, 4};
        const char *nn[2] = {"data", "labels"};
        prg_array arr[2];
        const char *p = tmp_path("ds.npz");
        for (i = 0; i < (int)sizeof px; i++) px[i] = (uint8_t)(i * 7);
        arr[0] = mk_array(PRG_DT_U8, px, 4, 2, 3, 32, 32);
        arr[1] = mk_array(PRG_DT_I64, lab, 1, 2, 0, 0, 0);
        CHECK(prg_npz_write(p, nn, arr, 2) == PRG_OK, "npz dataset save: %s", prg_last_error());
        r = prg_dataset_load_npz(&ds, p);
        CHECK(r == PRG_OK && ds.n == 2 && ds.c == 3 && ds.h == 32 && ds.num_classes == 5 && ds.labels[1] == 4 && memcmp(ds.images, px, sizeof px) == 0,
              "npz NCHW: %s", prg_last_error());
        prg_dataset_free(&ds);
        arr[0].ndim = 2;
        arr[0].shape[1] = 3 * 32 * 32;
        CHECK(prg_npz_write(p, nn, arr, 2) == PRG_OK, "npz save");
        CHECK(prg_dataset_load_npz(&ds, p) == PRG_ERR_FORMAT && msg_has("label 0") && msg_has("1-based") && ds.images == NULL, "imagenet label 0: %s",
              prg_last_error());
        lab[0] = 3;
        arr[1].shape[0] = 1;
        arr[1].count = 1;
        CHECK(prg_npz_write(p, nn, arr, 2) == PRG_OK, "npz save");
        CHECK(prg_dataset_load_npz(&ds, p) == PRG_ERR_SHAPE && msg_has("labels"), "label count: %s", prg_last_error());
        arr[1].shape[0] = 2;
        arr[1].count = 2;
        arr[0].shape[1] = 3000;
        arr[0].count = 6000;
        CHECK(prg_npz_write(p, nn, arr, 2) == PRG_OK, "npz save");
        CHECK(prg_dataset_load_npz(&ds, p) == PRG_ERR_SHAPE && msg_has("3000"), "row not 3*s*s: %s", prg_last_error());
        remove(p);
    }
}

/* Class names: an npz 'classes' u8 [K][L] sets num_classes = K and the
   names (ImageFolder's [N][C][H][W] with 0-based labels, the ImageNet layout
   with 1-based ones); a label past K is refused naming its index; CIFAR-10
   has its names; prg_dataset_set_class_names checks the labels. */
static void test_dataset_class_names(void) {
    uint8_t px[3 * 3 * 8 * 8], cls[3 * 6];
    int64_t lab[3] = {0, 1, 0};
    const char *nn[3] = {"data", "labels", "classes"}, *p = tmp_path("named.npz");
    const char *three[3] = {"x", "y", "z"};
    prg_array arr[3];
    prg_dataset ds;
    prg_result r;
    int i;
    for (i = 0; i < (int)sizeof px; i++) px[i] = (uint8_t)(i * 3);
    memset(cls, 0, sizeof cls);
    memcpy(cls, "Banana", 6);        /* a name filling its row: no NUL */
    memcpy(cls + 6, "apple", 5);
    memcpy(cls + 12, "fig", 3);
    arr[0] = mk_array(PRG_DT_U8, px, 4, 3, 3, 8, 8);
    arr[1] = mk_array(PRG_DT_I64, lab, 1, 3, 0, 0, 0);
    arr[2] = mk_array(PRG_DT_U8, cls, 2, 3, 6, 0, 0);
    CHECK(prg_npz_write(p, nn, arr, 3) == PRG_OK, "save: %s", prg_last_error());
    r = prg_dataset_load(&ds, p);
    CHECK(r == PRG_OK && ds.num_classes == 3 && ds.class_names && !strcmp(ds.class_names[0], "Banana") &&
              !strcmp(ds.class_names[1], "apple") && !strcmp(ds.class_names[2], "fig"),
          "NCHW with classes: 3 named classes (labels reach only 1): %s", prg_last_error());
    CHECK(prg_dataset_set_class_names(&ds, three, 1) == PRG_ERR_ARG && strstr(prg_last_error(), "image 1") &&
              ds.num_classes == 3 && !strcmp(ds.class_names[0], "Banana"),
          "set_class_names: a label past the names is refused, nothing changed: %s", prg_last_error());
    CHECK(prg_dataset_set_class_names(&ds, three, 2) == PRG_OK && ds.num_classes == 2 && !strcmp(ds.class_names[1], "y"),
          "set_class_names: %s", prg_last_error());
    CHECK(prg_dataset_set_class_names(&ds, NULL, 0) == PRG_OK && ds.class_names == NULL, "set_class_names: removed");
    prg_dataset_free(&ds);
    /* the ImageNet layout: labels 1..K on disk */
    lab[0] = 1; lab[1] = 3; lab[2] = 2;
    arr[0] = mk_array(PRG_DT_U8, px, 2, 3, 3 * 8 * 8, 0, 0);
    CHECK(prg_npz_write(p, nn, arr, 3) == PRG_OK, "save");
    r = prg_dataset_load(&ds, p);
    CHECK(r == PRG_OK && ds.num_classes == 3 && ds.labels[1] == 2 && ds.class_names && !strcmp(ds.class_names[2], "fig"),
          "ImageNet layout with classes: 3 classes, not 1000: %s", prg_last_error());
    prg_dataset_free(&ds);
    lab[1] = 4;
    CHECK(prg_npz_write(p, nn, arr, 3) == PRG_OK, "save");
    CHECK(prg_dataset_load(&ds, p) == PRG_ERR_FORMAT && msg_has("label 4 at index 1") && msg_has("3 classes") && msg_has("1..3") &&
              ds.images == NULL && ds.class_names == NULL,
          "a label past 'classes': %s", prg_last_error());
    lab[1] = 3;
    arr[2] = mk_array(PRG_DT_I64, lab, 1, 3, 0, 0, 0);
    CHECK(prg_npz_write(p, nn, arr, 3) == PRG_OK, "save");
    CHECK(prg_dataset_load(&ds, p) == PRG_ERR_SHAPE && msg_has("'classes'") && ds.images == NULL, "classes not u8 [K][L]: %s", prg_last_error());
    CHECK(prg_npz_write(p, nn, arr, 2) == PRG_OK, "save");
    CHECK(prg_dataset_load(&ds, p) == PRG_OK && ds.num_classes == 1000 && ds.class_names == NULL, "no classes: 1000 unnamed: %s", prg_last_error());
    prg_dataset_free(&ds);
    remove(p);
    /* numpy strings, as np.savez(..., classes=np.array(names)) writes them (tools/make_io_fixtures.py) */
    for (i = 0; i < 2; i++) {
        const char *name = i ? "classes_s.npz" : "classes_u.npz";
        prg_array a;
        r = prg_npz_read(&a, fix_path(name), "classes");
        CHECK(r == PRG_OK && a.dtype == (i ? PRG_DT_U8 : PRG_DT_U32) && a.ndim == 2 && a.shape[0] == 3 && a.shape[1] == 6,
              "%s: strings as %s [3][6]: %s", name, i ? "U8" : "U32", prg_last_error());
        prg_array_free(&a);
        r = prg_dataset_load(&ds, fix_path(name));
        CHECK(r == PRG_OK && ds.n == 3 && ds.c == 1 && ds.num_classes == 3 && ds.labels[1] == 2 && ds.class_names &&
                  !strcmp(ds.class_names[0], "Banana") && !strcmp(ds.class_names[1], "apple") &&
                  !strcmp(ds.class_names[2], "caf\xc3\xa9"),
              "%s: names Banana, apple, cafe (UTF-8): %s", name, prg_last_error());
        prg_dataset_free(&ds);
    }
    /* CIFAR-10 names its classes */
    {
        uint8_t rec[2 * 3073];
        const char *cp = tmp_path("data_batch_9.bin");
        memset(rec, 0, sizeof rec);
        rec[0] = 3;
        rec[3073] = 9;
        put_file(cp, rec, sizeof rec);
        CHECK(prg_dataset_load(&ds, cp) == PRG_OK && ds.class_names && !strcmp(ds.class_names[3], "cat") && !strcmp(ds.class_names[9], "truck"),
              "CIFAR-10 names: %s", prg_last_error());
        prg_dataset_free(&ds);
        remove(cp);
    }
}

/* The usual directory layouts, in the test's temporary directory. */
static void test_dataset_dir(void) {
    static const char *const c10[6] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin",
                                       "test_batch.bin"};
    char dir[600], path[700];
    uint8_t rec[2 * 3073], img[16 + 3 * 4], lab[8 + 3];
    prg_dataset ds;
    prg_result r;
    int k;
    snprintf(dir, sizeof dir, "%s", tmpdir[0] ? tmpdir : ".");
    memset(rec, 0, sizeof rec);
    for (k = 0; k < 6; k++) {
        rec[0] = (uint8_t)k;
        rec[3073] = (uint8_t)(9 - k);
        snprintf(path, sizeof path, "%s%s", tmpdir, c10[k]);
        put_file(path, rec, k < 5 ? 3073 : 2 * 3073);
    }
    r = prg_dataset_load_dir(&ds, dir, 1);
    CHECK(r == PRG_OK && ds.n == 5 && ds.labels[4] == 4 && ds.num_classes == 10, "cifar10 dir train: %s", prg_last_error());
    prg_dataset_free(&ds);
    r = prg_dataset_load_dir(&ds, dir, 0);
    CHECK(r == PRG_OK && ds.n == 2 && ds.labels[0] == 5 && ds.labels[1] == 4, "cifar10 dir test: %s", prg_last_error());
    prg_dataset_free(&ds);
    snprintf(path, sizeof path, "%s%s", tmpdir, c10[3]);
    remove(path);
    CHECK(prg_dataset_load_dir(&ds, dir, 1) == PRG_ERR_IO && msg_has("data_batch_4.bin") && ds.images == NULL, "missing batch: %s", prg_last_error());
    for (k = 0; k < 6; k++) {
        snprintf(path, sizeof path, "%s%s", tmpdir, c10[k]);
        remove(path);
    }
    /* MNIST file names (test split only) */
    be32(img, 0x803);
    be32(img + 4, 3);
    be32(img + 8, 2);
    be32(img + 12, 2);
    memset(img + 16, 9, 12);
    be32(lab, 0x801);
    be32(lab + 4, 3);
    lab[8] = 7;
    lab[9] = 8;
    lab[10] = 9;
    snprintf(path, sizeof path, "%st10k-images-idx3-ubyte", tmpdir);
    put_file(path, img, sizeof img);
    snprintf(path, sizeof path, "%st10k-labels-idx1-ubyte", tmpdir);
    put_file(path, lab, sizeof lab);
    r = prg_dataset_load_dir(&ds, dir, 0);
    CHECK(r == PRG_OK && ds.n == 3 && ds.h == 2 && ds.labels[2] == 9, "mnist dir test split: %s", prg_last_error());
    prg_dataset_free(&ds);
    CHECK(prg_dataset_load_dir(&ds, dir, 1) == PRG_ERR_IO && msg_has("no known dataset layout"), "no train split: %s", prg_last_error());
    remove(path);
    snprintf(path, sizeof path, "%st10k-images-idx3-ubyte", tmpdir);
    remove(path);
}

/* ---- images ---- */

/* A reference PNG reader for 8-bit non-interlaced images: checks every CRC,
   inflates with prg_zlib_decompress, undoes the five filters. */
static uint8_t *png_decode(const char *path, int *w, int *h, int *c) {
    static const int chans[7] = {1, 0, 3, 0, 2, 0, 4};
    size_t n, pos = 8, zl = 0, rawn, got, y, x;
    uint8_t *f = prg_test_read_file(path, &n), *z, *raw, *img = NULL;
    int crc_ok = 1, seen_end = 0;
    *w = *h = *c = 0;
    if (!f || n < 8 || memcmp(f, "\x89PNG\r\n\x1a\n", 8) != 0) { free(f); return NULL; }
    z = (uint8_t *)malloc(n);
    while (pos + 12 <= n) {
        uint32_t len = (uint32_t)f[pos] << 24 | (uint32_t)f[pos + 1] << 16 | (uint32_t)f[pos + 2] << 8 | f[pos + 3];
        const uint8_t *type = f + pos + 4, *d = f + pos + 8, *cp = d + len;
        uint32_t crc = (uint32_t)cp[0] << 24 | (uint32_t)cp[1] << 16 | (uint32_t)cp[2] << 8 | cp[3];
        if (pos + 12 + len > n) break;
        crc_ok &= prg_crc32(0, type, 4 + (size_t)len) == crc;
        if (!memcmp(type, "IHDR", 4)) {
            *w = (int)((uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | d[3]);
            *h = (int)((uint32_t)d[4] << 24 | (uint32_t)d[5] << 16 | (uint32_t)d[6] << 8 | d[7]);
            *c = d[8] == 8 && d[9] <= 6 && d[12] == 0 ? chans[d[9]] : 0;
        } else if (!memcmp(type, "IDAT", 4)) {
            memcpy(z + zl, d, len);
            zl += len;
        } else if (!memcmp(type, "IEND", 4)) seen_end = 1;
        pos += 12 + len;
    }
    if (crc_ok && seen_end && *c && pos == n) {
        size_t stride = (size_t)*w * (size_t)*c;
        rawn = (stride + 1) * (size_t)*h;
        raw = (uint8_t *)malloc(rawn);
        if (prg_zlib_decompress(z, zl, raw, rawn, &got) == PRG_OK && got == rawn) {
            img = (uint8_t *)malloc(stride * (size_t)*h);
            for (y = 0; y < (size_t)*h; y++) {
                int ft = raw[y * (stride + 1)];
                for (x = 0; x < stride; x++) {
                    int a = x >= (size_t)*c ? img[y * stride + x - (size_t)*c] : 0, b = y ? img[(y - 1) * stride + x] : 0;
                    int cc = (y && x >= (size_t)*c) ? img[(y - 1) * stride + x - (size_t)*c] : 0, pr = 0, v = raw[y * (stride + 1) + 1 + x];
                    if (ft == 1) pr = a;
                    else if (ft == 2) pr = b;
                    else if (ft == 3) pr = (a + b) / 2;
                    else if (ft == 4) {
                        int pp = a + b - cc, pa = abs(pp - a), pb = abs(pp - b), pc = abs(pp - cc);
                        pr = (pa <= pb && pa <= pc) ? a : pb <= pc ? b : cc;
                    }
                    img[y * stride + x] = (uint8_t)(v + pr);
                }
            }
        }
        free(raw);
    }
    free(z);
    free(f);
    return img;
}

static void test_png_pnm(void) {
    enum { W = 37, H = 23 };
    uint8_t *px = (uint8_t *)malloc(W * H * 4), *back, *rnd = lcg_gen(W * H * 4);
    int c, w, h, cc, x, y, ok;
    size_t i;
    const char *p = tmp_path("img.png");
    for (c = 1; c <= 4; c++) {
        for (i = 0; i < (size_t)W * H * c; i++) px[i] = (uint8_t)(i % 3 == 0 ? rnd[i] : (i / (size_t)c) % W * 5 + i % c * 40);
        CHECK(prg_png_write(p, px, H, W, c) == PRG_OK, "png write c=%d: %s", c, prg_last_error());
        back = png_decode(p, &w, &h, &cc);
        CHECK(back && w == W && h == H && cc == c && memcmp(back, px, (size_t)W * H * c) == 0, "png c=%d decodes to the same pixels", c);
        free(back);
    }
    CHECK(!file_exists(tmp_path("img.png.tmp")), "png temp renamed");
    /* a smooth picture compresses */
    for (i = 0; i < (size_t)W * H * 3; i++) px[i] = (uint8_t)(i / 3 % W * 3);
    prg_png_write(p, px, H, W, 3);
    {
        size_t n;
        uint8_t *f = prg_test_read_file(p, &n);
        CHECK(f && n < (size_t)W * H * 3 / 4, "smooth png is %zu bytes (raw %d)", n, W * H * 3);
        free(f);
    }
    /* PIL's file through the same reader: our inflate on zlib's output */
    back = png_decode(fix_path("pil_rgb.png"), &w, &h, &cc);
    CHECK(back && w == 23 && h == 17 && cc == 3, "pil png header");
    if (back) {
        for (y = 0, ok = 1; y < 17; y++)
            for (x = 0; x < 23; x++)
                ok &= back[(y * 23 + x) * 3] == (x * 11) % 256 && back[(y * 23 + x) * 3 + 1] == (y * 13) % 256 &&
                      back[(y * 23 + x) * 3 + 2] == (x * y) % 256;
        CHECK(ok, "pil png pixels");
    }
    free(back);
    CHECK(prg_png_write(p, px, H, 0, 3) == PRG_ERR_ARG && prg_png_write(p, px, H, W, 5) == PRG_ERR_ARG, "png bad sizes");
    /* PGM / PPM */
    for (c = 1; c <= 3; c += 2) {
        const char *q = tmp_path(c == 1 ? "img.pgm" : "img.ppm");
        for (i = 0; i < (size_t)W * H * c; i++) px[i] = rnd[i];
        CHECK(prg_pnm_write(q, px, H, W, c) == PRG_OK, "pnm write");
        back = NULL;
        CHECK(prg_pnm_read(q, &back, &h, &w, &cc) == PRG_OK && w == W && h == H && cc == c && memcmp(back, px, (size_t)W * H * c) == 0,
              "pnm round trip c=%d: %s", c, prg_last_error());
        prg_free(back);
        {
            size_t n, cut;
            int refused = 0, tries = 0;
            uint8_t *f = prg_test_read_file(q, &n);
            for (cut = 0; cut < n; cut += (cut < 20 ? 1 : 211)) {
                put_file(tmp_path("cut.pnm"), f, cut);
                tries++;
                back = NULL;
                refused += prg_pnm_read(tmp_path("cut.pnm"), &back, &h, &w, &cc) == PRG_ERR_FORMAT && back == NULL && msg_has("cut.pnm");
            }
            CHECK(refused == tries, "truncated pnm: %d of %d refused", refused, tries);
            free(f);
        }
        remove(q);
    }
    {
        const char hand[] = "P5\n# a comment\n3 # width\n2\n1000\n\x03\xe8\x00\x00\x01\xf4\x00\x01\x02\x00\x03\xe7";
        const char *q = tmp_path("hand.pgm");
        put_file(q, hand, sizeof hand - 1);
        back = NULL;
        CHECK(prg_pnm_read(q, &back, &h, &w, &cc) == PRG_OK && w == 3 && h == 2 && cc == 1 && back[0] == 255 && back[1] == 0 && back[2] == 128 &&
                  back[5] == 255,
              "16-bit pgm with comments: %s", prg_last_error());
        prg_free(back);
        put_file(q, "P5\n3 2\n0\n123456", 15);
        CHECK(prg_pnm_read(q, &back, &h, &w, &cc) == PRG_ERR_FORMAT && msg_has("maxval"), "maxval 0: %s", prg_last_error());
        put_file(q, "P5\n3 2\n4\n\x01\x02\x03\x04\x05\x01", 15);
        CHECK(prg_pnm_read(q, &back, &h, &w, &cc) == PRG_ERR_FORMAT && msg_has("exceeds"), "sample > maxval: %s", prg_last_error());
        put_file(q, "P3\n1 1\n255\n1 2 3\n", 18);
        CHECK(prg_pnm_read(q, &back, &h, &w, &cc) == PRG_ERR_UNSUPPORTED, "ascii ppm unsupported");
        put_file(q, "P6\n99999999 99999999\n255\n", 25);
        CHECK(prg_pnm_read(q, &back, &h, &w, &cc) == PRG_ERR_FORMAT && msg_has("absurd"), "absurd pnm: %s", prg_last_error());
        remove(q);
    }
    free(px);
    free(rnd);
    remove(p);
    remove(tmp_path("cut.pnm"));
}

static void test_image_grid(void) {
    enum { N = 5, C = 3, S = 4 };
    float img[N * C * S * S], mean[3] = {0.5f, 0.4f, 0.3f}, sd[3] = {0.2f, 0.25f, 0.5f};
    uint8_t *g;
    int w, h, c, i, ch, y, x, ok = 1, border = 1;
    const char *p = tmp_path("grid.png");
    for (i = 0; i < N * C * S * S; i++) img[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    img[0] = 5.0f;  /* clamps to 255 */
    img[1] = -5.0f; /* clamps to 0 */
    CHECK(prg_image_grid(p, img, N, C, S, S, 0, mean, sd) == PRG_OK, "grid: %s", prg_last_error());
    g = png_decode(p, &w, &h, &c);
    CHECK(g && w == 3 * (S + 2) + 2 && h == 2 * (S + 2) + 2 && c == 3, "grid size %d x %d", w, h);
    if (g) {
        for (i = 0; i < N; i++)
            for (ch = 0; ch < C; ch++)
                for (y = 0; y < S; y++)
                    for (x = 0; x < S; x++) {
                        double v = ((double)img[((i * C + ch) * S + y) * S + x] * sd[ch] + mean[ch]) * 255.0;
                        int want = v <= 0 ? 0 : v >= 255 ? 255 : (int)floor(v + 0.5);
                        int gx = 2 + (i % 3) * (S + 2) + x, gy = 2 + (i / 3) * (S + 2) + y, got = g[(gy * w + gx) * 3 + ch];
                        ok &= abs(got - want) <= 1 && (want == 0 || want == 255 ? got == want : 1);
                    }
        for (x = 0; x < w; x++) border &= g[x * 3] == 0 && g[((h - 1) * w + x) * 3 + 1] == 0;
        for (y = 2 + S + 2; y < h; y++)
            for (x = 2 + 2 * (S + 2); x < w; x++) border &= g[(y * w + x) * 3] == 0; /* the empty sixth tile */
        CHECK(ok, "grid pixels = 255 * (x * std + mean)");
        CHECK(border, "grid border and empty tile are black");
    }
    free(g);
    CHECK(prg_image_grid(tmp_path("grid.pgm"), img, 2, 1, S, S, 2, NULL, NULL) == PRG_OK, "grid pgm");
    {
        uint8_t *back = NULL;
        CHECK(prg_pnm_read(tmp_path("grid.pgm"), &back, &h, &w, &c) == PRG_OK && w == 2 * (S + 2) + 2 && h == S + 4 && c == 1 &&
                  back[2 * w + 4] == (uint8_t)floor((img[2] * 0.5 + 0.5) * 255 + 0.5) && back[2 * w + 3] == 0,
              "grid pgm content");
        prg_free(back);
    }
    CHECK(prg_image_grid(p, img, N, 2, S, S, 0, NULL, NULL) == PRG_ERR_ARG, "grid c=2 refused");
    remove(p);
    remove(tmp_path("grid.pgm"));
}

/* ---- random damage ---- */

/* Thousands of randomly damaged files of every format: each load must end
   in PRG_OK or a file error with the output empty, never a crash (run
   under `make asan` this also proves no out-of-bounds access). */
static int load_any(int kind, const char *p) {
    prg_dataset ds;
    prg_array a;
    prg_st *st = NULL;
    uint8_t *d = NULL;
    size_t n;
    int w, h, c, r = 0;
    float buf[64];
    switch (kind) {
    case 0:
        r = prg_st_open(&st, p);
        if (r == PRG_OK) {
            int i;
            for (i = 0; i < prg_st_num_tensors(st); i++) {
                const prg_st_info *in = prg_st_info_at(st, i);
                if (in->count <= 64) {
                    int r2 = prg_st_read_f32(st, in->name, buf, in->count, PRG_ST_FINITE);
                    if (r2 != PRG_OK && r2 != PRG_ERR_NUMERIC) r = r2;
                }
            }
            prg_st_close(st);
        } else if (st) r = 99;
        return r;
    case 1:
    case 2:
        r = prg_dataset_load_npz(&ds, p);
        if (r != PRG_OK && (ds.images || ds.labels)) return 99;
        prg_dataset_free(&ds);
        return r;
    case 3:
        r = prg_file_read(p, &d, &n);
        if (r != PRG_OK && d) return 99;
        prg_free(d);
        return r;
    case 4:
        r = prg_npy_read(&a, p);
        if (r != PRG_OK && a.data) return 99;
        prg_array_free(&a);
        return r;
    case 5:
        r = prg_dataset_load(&ds, p);
        if (r != PRG_OK && (ds.images || ds.labels)) return 99;
        prg_dataset_free(&ds);
        return r;
    default:
        r = prg_pnm_read(p, &d, &h, &w, &c);
        if (r != PRG_OK && d) return 99;
        prg_free(d);
        return r;
    }
}

static void test_random_damage(void) {
    const char *src[7];
    char dst[7][600];
    prg_rng rng;
    int kind, it, bad = 0, ok = 0, refused = 0, named = 0;
    uint8_t gray[6 * 5];
    float w[12];
    prg_st_tensor t[2];
    size_t i;
    for (i = 0; i < 12; i++) w[i] = (float)i - 3.0f;
    memset(t, 0, sizeof t);
    t[0] = mk_tensor("w", PRG_DT_F32, w, 2, 3, 4);
    t[1] = mk_tensor("b", PRG_DT_BF16, w, 1, 4, 0);
    strcpy(dst[0], tmp_path("dmg-src.safetensors"));
    prg_st_write(dst[0], t, 2, NULL, 0);
    for (i = 0; i < sizeof gray; i++) gray[i] = (uint8_t)(i * 9);
    strcpy(dst[6], tmp_path("dmg-src.pgm"));
    prg_pnm_write(dst[6], gray, 5, 6, 1);
    src[0] = dst[0];
    src[1] = fix_path("imagenet8_stored.npz");
    src[2] = fix_path("imagenet8_deflate.npz");
    src[3] = fix_path("flags_fixed.gz");
    src[4] = fix_path("f32.npy");
    src[5] = fix_path("mini-labels-idx1-ubyte.gz");
    src[6] = dst[6];
    prg_rng_seed(&rng, 2024, 0);
    for (kind = 0; kind < 7; kind++) {
        size_t n;
        uint8_t *orig = prg_test_read_file(src[kind], &n), *f;
        char p[600];
        if (!orig) { CHECK(0, "no source for damage kind %d", kind); continue; }
        snprintf(p, sizeof p, "%s", tmp_path(kind == 5 ? "dmg-labels-idx1-ubyte.gz" : "dmg.bin"));
        if (kind == 5) { /* its partner, intact */
            size_t m;
            uint8_t *img = prg_test_read_file(fix_path("mini-images-idx3-ubyte.gz"), &m);
            put_file(tmp_path("dmg-images-idx3-ubyte.gz"), img, m);
            free(img);
        }
        f = (uint8_t *)malloc(n + 1);
        for (it = 0; it < 250; it++) {
            size_t len = n, k, nflip = 1 + prg_rng_below(&rng, 3);
            int r;
            memcpy(f, orig, n);
            if (it % 4 == 3) len = prg_rng_below(&rng, (uint32_t)n);
            else
                for (k = 0; k < nflip; k++) f[prg_rng_below(&rng, (uint32_t)n)] = (uint8_t)prg_rng_below(&rng, 256);
            put_file(p, f, len);
            r = load_any(kind, p);
            if (r == PRG_OK) ok++;
            else if (r == PRG_ERR_FORMAT || r == PRG_ERR_SHAPE || r == PRG_ERR_UNSUPPORTED) {
                refused++;
                named += strstr(prg_last_error(), kind == 5 ? "dmg-" : p) != NULL;
            } else {
                bad++;
                printf("damage kind %d iteration %d: result %d: %s\n", kind, it, r, prg_last_error());
            }
        }
        free(f);
        free(orig);
        remove(p);
    }
    printf("random damage: %d loaded, %d refused\n", ok, refused);
    CHECK(bad == 0, "%d damaged files gave an unexpected result", bad);
    CHECK(named == refused, "%d of %d refusals named the file", named, refused);
    CHECK(refused > 700 && ok > 50, "damage: %d loaded, %d refused", ok, refused);
    remove(dst[0]);
    remove(dst[6]);
    remove(tmp_path("dmg-images-idx3-ubyte.gz"));
}

int main(int argc, char **argv) {
    const char *slash = argc > 0 ? strrchr(argv[0], '/') : NULL;
    if (slash && (size_t)(slash - argv[0]) < sizeof tmpdir - 2) {
        memcpy(tmpdir, argv[0], (size_t)(slash - argv[0]) + 1);
        tmpdir[slash - argv[0] + 1] = 0;
    }
    if (!file_exists(fix_path("text.txt.gz"))) fixdir = "../tests/fixtures/io";
    test_checksums();
    test_gzip_fixtures();
    test_gzip_corrupt();
    test_deflate_roundtrip();
    test_npy();
    test_safetensors();
    test_idx();
    test_cifar();
    test_npz_dataset();
    test_dataset_class_names();
    test_dataset_dir();
    test_png_pnm();
    test_image_grid();
    test_random_damage();
    return prg_test_finish("test_io");
}
