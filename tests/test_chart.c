/* Charts: line and grouped bar charts rendered, written as PNG, decoded
   back with the project's PNG decoder, and the axes, the series (points,
   segments, bars, gaps), the tick widening, the title and the legend found
   at the pixels the layout puts them; refused arguments. */
#define PRG_IMPLEMENTATION
#include "../prg.h"
#include "prg_test.h"
#include <math.h>
#include <string.h>

static char tmpdir[512] = "";

static const uint8_t *px_at(const prg_image *im, int x, int y) { return im->data + ((size_t)y * im->w + x) * 3; }
static int is_col(const uint8_t *p, const uint8_t *c) { return p[0] == c[0] && p[1] == c[1] && p[2] == c[2]; }
static int is_white(const uint8_t *p) { return p[0] == 255 && p[1] == 255 && p[2] == 255; }
static int is_dark(const uint8_t *p) { return p[0] < 100 && p[1] < 100 && p[2] < 100; }
static int rnd(double v) { return (int)floor(v + 0.5); }

/* Renders c, writes it as PNG, decodes the file: *im, identical to the render. */
static int render_and_decode(const prg_chart *c, const char *name, prg_image *im) {
    char path[700];
    uint8_t *rgb = (uint8_t *)malloc((size_t)c->width * c->height * 3), *file;
    size_t len;
    int ok;
    memset(im, 0, sizeof *im);
    snprintf(path, sizeof path, "%schart_%s.png", tmpdir, name);
    CHECK(rgb && prg_chart_render(c, rgb) == PRG_OK, "%s: render: %s", name, prg_last_error());
    CHECK(prg_chart_write(path, c) == PRG_OK, "%s: write: %s", name, prg_last_error());
    file = prg_test_read_file(path, &len);
    ok = file && prg_png_decode(im, file, len, 3, path) == PRG_OK;
    CHECK(ok, "%s: decode %s: %s", name, path, prg_last_error());
    if (ok) {
        CHECK(im->w == c->width && im->h == c->height && !memcmp(im->data, rgb, (size_t)c->width * c->height * 3),
              "%s: the decoded PNG differs from the render", name);
    }
    free(rgb);
    free(file);
    return ok;
}

static void test_line(void) {
    static const double x[4] = {0, 10, 20, 30}, a[4] = {0.66, 0.70, 0.74, 0.77}, b[4] = {0.76, 0.75, NAN, 0.70};
    prg_chart_series s[2] = {{"kNN", x, a, 4}, {"linear", x, b, 4}};
    prg_chart c;
    prg_image im;
    uint8_t c0[3], c1[3];
    int rect[4], i, dark = 0, legend0 = 0, legend1 = 0, axis = 1, xx, yy;
    double px, py, qx, qy;
    prg_chart_color(0, c0);
    prg_chart_color(1, c1);
    CHECK(!is_col(c0, c1), "two series, two colours");
    prg_chart_init(&c, PRG_CHART_LINE, "Probe top-1", s, 2);
    c.x_label = "t_cutoff";
    c.y_label = "top-1";
    CHECK(c.width == 800 && c.height == 500, "default size");
    c.width = 480;
    c.height = 360;
    CHECK(prg_chart_map(&c, 0, 0.66, &px, &py, rect) == PRG_OK, "map: %s", prg_last_error());
    if (!render_and_decode(&c, "line", &im)) return;
    /* the data's y range [0.66, 0.77] widens to whole ticks (step 0.02): 0.66 .. 0.78; x spans 0 .. 30 */
    CHECK(rnd(px) == rect[0] && rnd(py) == rect[3], "(0, 0.66) at the plot's bottom left: %g %g vs %d %d", px, py, rect[0], rect[3]);
    prg_chart_map(&c, 30, 0.78, &px, &py, NULL);
    CHECK(rnd(px) == rect[2] && rnd(py) == rect[1], "(30, 0.78) at the top right: %g %g vs %d %d", px, py, rect[2], rect[1]);
    for (i = rect[1]; i <= rect[3]; i++) axis &= is_col(px_at(&im, rect[0], i), (const uint8_t *)"\0\0\0");
    for (i = rect[0]; i <= rect[2]; i++) axis &= is_col(px_at(&im, i, rect[3]), (const uint8_t *)"\0\0\0");
    CHECK(axis, "the y axis (column %d) and the x axis (row %d) are black", rect[0], rect[3]);
    /* points and segment midpoints of both series in their colours */
    for (i = 1; i < 4; i++) {
        prg_chart_map(&c, x[i], a[i], &px, &py, NULL);
        CHECK(is_col(px_at(&im, rnd(px), rnd(py)), c0), "kNN point %d at (%d, %d)", i, rnd(px), rnd(py));
    }
    prg_chart_map(&c, 15, 0.72, &px, &py, NULL);
    CHECK(is_col(px_at(&im, rnd(px), rnd(py)), c0), "kNN segment midpoint");
    prg_chart_map(&c, 5, 0.755, &px, &py, NULL);
    CHECK(is_col(px_at(&im, rnd(px), rnd(py)), c1), "linear segment midpoint");
    prg_chart_map(&c, 30, 0.70, &px, &py, NULL);
    CHECK(is_col(px_at(&im, rnd(px) - 1, rnd(py)), c1), "linear's last point after the gap");
    /* the NaN is a gap: nothing of series 1 between x = 10 and x = 30 */
    prg_chart_map(&c, 15, 0.75, &px, &py, NULL);
    prg_chart_map(&c, 25, 0.725, &qx, &qy, NULL);
    CHECK(!is_col(px_at(&im, rnd(px), rnd(py)), c1) && !is_col(px_at(&im, rnd(qx), rnd(qy)), c1), "no line across the NaN");
    /* empty plot area is white or grid grey */
    prg_chart_map(&c, 27, 0.665, &px, &py, NULL);
    CHECK(px_at(&im, rnd(px) + 1, rnd(py))[0] >= 200, "empty plot area is light");
    /* title above the plot, tick labels left of it, legend right of it */
    for (yy = 0; yy < rect[1]; yy++)
        for (xx = rect[0]; xx <= rect[2]; xx++) dark += is_dark(px_at(&im, xx, yy));
    CHECK(dark > 50, "title pixels above the plot: %d", dark);
    dark = 0;
    for (yy = rect[3] - 12; yy <= rect[3] + 12 && yy < im.h; yy++)
        for (xx = 0; xx < rect[0] - 4; xx++) dark += is_dark(px_at(&im, xx, yy));
    CHECK(dark > 20, "the tick label of the bottom tick: %d dark pixels", dark);
    for (yy = 0; yy < im.h; yy++)
        for (xx = rect[2] + 4; xx < im.w; xx++) {
            legend0 += is_col(px_at(&im, xx, yy), c0);
            legend1 += is_col(px_at(&im, xx, yy), c1);
        }
    CHECK(legend0 > 20 && legend1 > 20, "legend swatches right of the plot: %d, %d pixels", legend0, legend1);
    prg_image_free(&im);
    /* without a title the band above the plot is white */
    c.title = NULL;
    if (render_and_decode(&c, "notitle", &im)) {
        prg_chart_map(&c, 0, 0, NULL, NULL, rect);
        dark = 0;
        for (yy = 0; yy < rect[1] - 8; yy++)
            for (xx = rect[0] + 4; xx <= rect[2]; xx++) dark += !is_white(px_at(&im, xx, yy));
        CHECK(dark == 0, "no title: %d non-white pixels above the plot", dark);
        prg_image_free(&im);
    }
    /* an explicit range is kept as given */
    c.y_min = 0;
    c.y_max = 1;
    prg_chart_map(&c, 0, 1, &px, &py, rect);
    CHECK(rnd(py) == rect[1], "y_max at the top");
    prg_chart_map(&c, 0, 0, &px, &py, rect);
    CHECK(rnd(py) == rect[3], "y_min at the bottom");
}

/* whole-number x (steps, cutoffs): grid lines at whole numbers only */
static void test_whole_ticks(void) {
    static const double x[4] = {0, 1, 2, 3}, y[4] = {5, 6, 7, 9};
    static const uint8_t grey[3] = {225, 225, 225};
    prg_chart_series s = {NULL, x, y, 4};
    prg_chart c;
    prg_image im;
    int rect[4], yy, half = 0, whole = 0;
    double ph, pw, pq;
    prg_chart_init(&c, PRG_CHART_LINE, NULL, &s, 1);
    c.width = 400;
    c.height = 300;
    if (!render_and_decode(&c, "whole", &im)) return;
    prg_chart_map(&c, 0.5, 0, &ph, NULL, rect);
    prg_chart_map(&c, 2.0, 0, &pw, NULL, NULL);
    prg_chart_map(&c, 0.75, 0, &pq, NULL, NULL);
    /* rows where the column is grey and a column between ticks is not: vertical grid lines only */
    for (yy = rect[1]; yy < rect[3]; yy++) {
        int between = is_col(px_at(&im, rnd(pq), yy), grey);
        half += is_col(px_at(&im, rnd(ph), yy), grey) && !between;
        whole += is_col(px_at(&im, rnd(pw), yy), grey) && !between;
    }
    CHECK(half == 0 && whole > (rect[3] - rect[1]) / 2, "grid at x = 2 (%d px) and not at 0.5 (%d px)", whole, half);
    prg_image_free(&im);
}

static void test_bars(void) {
    static const char *const groups[3] = {"PRG", "scratch", "frozen"};
    static const double a[3] = {0.9, 0.6, 0.3}, b[3] = {0.5, NAN, 0.8};
    prg_chart_series s[2] = {{"10 labels", NULL, a, 3}, {"100 labels", NULL, b, 3}};
    prg_chart c;
    prg_image im;
    uint8_t col[2][3];
    int rect[4], g, k, labels = 0, xx, yy;
    prg_chart_color(0, col[0]);
    prg_chart_color(1, col[1]);
    prg_chart_init(&c, PRG_CHART_BARS, "Top-1 by label budget", s, 2);
    c.groups = groups;
    c.ngroups = 3;
    c.width = 400;
    c.height = 300;
    if (!render_and_decode(&c, "bars", &im)) return;
    prg_chart_map(&c, 0, 0, NULL, NULL, rect);
    for (g = 0; g < 3; g++)
        for (k = 0; k < 2; k++) {
            double v = k ? b[g] : a[g], cx, top, base, gw = (double)(rect[2] - rect[0]) / 3, bw = 0.8 * gw / 2;
            prg_chart_map(&c, g, 0, &cx, &base, NULL);
            cx += (k - 0.5) * bw; /* the centre of bar k of 2 */
            if (v != v) {
                CHECK(!is_col(px_at(&im, rnd(cx), rnd(base) - 5), col[k]), "NaN: no bar (%d, %d)", g, k);
                continue;
            }
            prg_chart_map(&c, g, v, NULL, &top, NULL);
            CHECK(is_col(px_at(&im, rnd(cx), rnd((top + base) / 2)), col[k]), "bar (%d, %d) in its colour", g, k);
            CHECK(is_col(px_at(&im, rnd(cx), rnd(top) + 2), col[k]), "bar (%d, %d) reaches its value", g, k);
            CHECK(!is_col(px_at(&im, rnd(cx), rnd(top) - 3), col[k]), "bar (%d, %d) stops at its value", g, k);
        }
    {
        double zy;
        prg_chart_map(&c, 0, 0, NULL, &zy, NULL);
        CHECK(rnd(zy) == rect[3], "the value axis starts at 0");
    }
    for (yy = rect[3] + 2; yy < im.h; yy++)
        for (xx = rect[0]; xx <= rect[2]; xx++) labels += is_dark(px_at(&im, xx, yy));
    CHECK(labels > 60, "group names under the bars: %d dark pixels", labels);
    prg_image_free(&im);
}

static void test_refused(void) {
    static const double y[3] = {1, 2, 3}, x[3] = {0, NAN, 2};
    prg_chart_series s = {"a", NULL, y, 3}, bad = {"b", x, y, 3};
    prg_chart c;
    static uint8_t rgb[800 * 500 * 3];
    prg_chart_init(&c, PRG_CHART_LINE, "t", &s, 1);
    CHECK(prg_chart_render(NULL, rgb) == PRG_ERR_ARG, "NULL chart");
    CHECK(prg_chart_render(&c, NULL) == PRG_ERR_ARG, "NULL buffer");
    c.nseries = 0;
    CHECK(prg_chart_render(&c, rgb) == PRG_ERR_ARG, "no series");
    c.nseries = 1;
    c.width = 50;
    CHECK(prg_chart_render(&c, rgb) == PRG_ERR_ARG && prg_chart_write("x.png", &c) == PRG_ERR_ARG, "too small");
    c.width = 800;
    c.kind = 7;
    CHECK(prg_chart_render(&c, rgb) == PRG_ERR_ARG, "unknown kind");
    c.kind = PRG_CHART_BARS;
    c.ngroups = 2;
    CHECK(prg_chart_render(&c, rgb) == PRG_ERR_ARG, "bars: n != ngroups");
    c.kind = PRG_CHART_LINE;
    c.series = &bad;
    CHECK(prg_chart_render(&c, rgb) == PRG_ERR_ARG && strstr(prg_last_error(), "x ="), "NaN x: %s", prg_last_error());
    c.series = &s;
    c.y_min = 2;
    c.y_max = 1;
    CHECK(prg_chart_render(&c, rgb) == PRG_ERR_ARG, "y_min > y_max");
    c.y_min = c.y_max = 0;
    CHECK(prg_chart_render(&c, rgb) == PRG_OK, "valid again: %s", prg_last_error());
    {
        static const double big[2] = {1e20, 1e20 + 65536.0}; /* a tick step near the numbers' precision */
        prg_chart_series sb = {"big", NULL, big, 2};
        c.series = &sb;
        CHECK(prg_chart_render(&c, rgb) == PRG_OK, "values of 1e20 differing by 65536: %s", prg_last_error());
        c.series = &s;
    }
    s.n = 0; /* no data: still a chart, range 0 .. 1 */
    CHECK(prg_chart_render(&c, rgb) == PRG_OK, "empty series: %s", prg_last_error());
}

int main(int argc, char **argv) {
    const char *slash = argc > 0 ? strrchr(argv[0], '/') : NULL;
    if (slash && (size_t)(slash - argv[0]) < sizeof tmpdir - 2) {
        memcpy(tmpdir, argv[0], (size_t)(slash - argv[0]) + 1);
        tmpdir[slash - argv[0] + 1] = 0;
    }
    test_line();
    test_whole_ticks();
    test_bars();
    test_refused();
    return prg_test_finish("test_chart");
}
