/* sample: images from a pretrained flow-matching U-Net, noise -> data with
   Euler, Heun or RK4 along the model's own probability path (ICFM / OT-CFM:
   t = 0 -> 1; GVP: t = 1 -> 0, prg_sample_path), written as one PNG grid.

     sample --model pretrain.safetensors --n 64 --steps 20 --out samples.png */
#define PRG_IMPLEMENTATION
#include "prg.h"
#include "ex_common.h"

static void usage(void) {
    printf("usage: sample --model UNET [options]\n"
           "Generates images by integrating dx/dt = v(t, x) from noise to data along the model's path:\n"
           "ICFM and OT-CFM from t = 0 to t = 1, GVP from t = 1 to t = 0.\n"
           "  --model PATH             U-Net checkpoint (pretrain's output)\n"
           "  --path icfm|ot|gvp       path (default: the checkpoint's; a file that records none: icfm)\n"
           "  --n N                    images, 1..65536 (64)\n"
           "  --steps N                solver steps, 1..100000 (20)\n"
           "  --solver euler|heun|rk4  (euler)\n"
           "  --out PATH               grid image, .png (or .pgm/.ppm) (samples.png); checked writable first\n"
           "  --cols N                 images per row (0 = square)\n"
           "  --mean X[,Y,Z] --std X[,Y,Z]  de-normalisation (default: 0.1307/0.3081 for 1 channel,\n"
           "                           ImageNet's for 3, as the examples normalise)\n"
           "  --seed N (0, 64-bit)  --batch N (64, at most --n)  --threads N (0 = all)\n"
           "  --quiet                  no progress lines\n"
           "U-Net flags, for a file without a config (a plain state_dict):\n"
           EX_NET_HELP);
}

/* "X" or "X,Y,Z" (one value per channel; one value for all), each finite,
   a std positive. */
static void parse_floats(const char *name, const char *s, float *v, int c, int positive) {
    char buf[256], *p, *q;
    int i = 0;
    if (strlen(s) >= sizeof buf) ex_usage_error(name, s, "list too long");
    snprintf(buf, sizeof buf, "%s", s);
    for (p = buf;; p = q + 1) {
        q = strchr(p, ',');
        if (q) *q = 0;
        if (i >= c) ex_usage_error(name, s, c == 1 ? "wants 1 value (the model has 1 channel)" : "wants 1 value or one per channel");
        v[i++] = (float)ex_parse_num(name, p, positive ? 0 : -1e6, 1e6, positive);
        if (!q) break;
    }
    if (i != 1 && i != c) ex_usage_error(name, s, "wants 1 value or one per channel");
    for (; i < c; i++) v[i] = v[0];
}

int main(int argc, char **argv) {
    const char *model = NULL, *out = "samples.png", *solver = "euler", *mean_s = NULL, *std_s = NULL;
    const char *path_flag = NULL, *path_src;
    int n = 64, steps = 20, cols = 0, batch = 64, threads = 0, i, path, method;
    uint64_t seed = 0;
    prg_unet *net;
    const prg_unet_config *cfg;
    prg_unet_config fcfg;
    ex_net_flags nf;
    prg_rng rng;
    float *x, mean[4], std[4];
    size_t dim, j;
    double t0, c0;
    ex_progress pr;

    ex_prog = "sample";
    ex_net_flags_init(&nf, "tiny32");
    ex_argc = argc; ex_argv = argv;
    for (ex_argi = 1; ex_argi < argc; ex_argi++) {
        if (EX_FLAG("--help") || EX_FLAG("-h")) { usage(); return 0; }
        else if (ex_net_flag(&nf)) {}
        else if (EX_FLAG("--model")) model = ex_val();
        else if (EX_FLAG("--n")) n = ex_int_in(1, 65536);
        else if (EX_FLAG("--steps")) steps = ex_int_in(1, 100000);
        else if (EX_FLAG("--solver")) solver = ex_val();
        else if (EX_FLAG("--path")) path_flag = ex_val();
        else if (EX_FLAG("--out")) out = ex_val();
        else if (EX_FLAG("--cols")) cols = ex_int_in(0, 65536);
        else if (EX_FLAG("--mean")) mean_s = ex_val();
        else if (EX_FLAG("--std")) std_s = ex_val();
        else if (EX_FLAG("--seed")) seed = ex_seed();
        else if (EX_FLAG("--batch")) batch = ex_int_in(1, 65536);
        else if (EX_FLAG("--threads")) threads = ex_int_in(0, 1024);
        else if (EX_FLAG("--quiet")) ex_quiet = 1;
        else ex_bad_flag();
    }
    if (!model) { usage(); return 2; }
    if (strcmp(solver, "euler") && strcmp(solver, "heun") && strcmp(solver, "rk4"))
        ex_usage_error("--solver", solver, "wants euler, heun or rk4");
    ex_check_input(model, "--model");
    ex_check_writable(out, "--out");
    ex_check_not_input(out, "--out", model, "--model");
    if (batch > n) batch = n;
    if (cols > n) cols = n;
    prg_set_num_threads(threads);
    ex_check(prg_unet_load(&net, model, ex_file_config(&fcfg, &nf, model)), model);
    path = ex_choose_path(prg_unet_loss(net) != PRG_LOSS_NONE ? prg_unet_path(net) : -1, path_flag, model, &path_src);
    method = !strcmp(solver, "euler") ? PRG_SOLVER_EULER : !strcmp(solver, "heun") ? PRG_SOLVER_HEUN : PRG_SOLVER_RK4;
    cfg = prg_unet_config_get(net);
    if (cfg->in_channels != cfg->out_channels) { /* the ODE's state is the image: the velocity must have its shape */
        fprintf(stderr, "sample: %s: the U-Net maps %d channels to %d; sampling needs as many out as in\n", model,
                cfg->in_channels, cfg->out_channels);
        return 1;
    }
    if (cfg->out_channels != 1 && cfg->out_channels != 3) {
        fprintf(stderr, "sample: can draw 1 or 3 channels, the model has %d\n", cfg->out_channels);
        return 1;
    }
    ex_norm(cfg->out_channels, mean, std);
    if (mean_s) parse_floats("--mean", mean_s, mean, cfg->out_channels, 0);
    if (std_s) parse_floats("--std", std_s, std, cfg->out_channels, 1);
    dim = (size_t)cfg->in_channels * cfg->image_size * cfg->image_size;
    if ((double)dim * n * sizeof(float) > 2e9) {
        fprintf(stderr, "sample: --n %d images of %dx%dx%d need %.1f GB for the grid; at most 2 GB (fewer images)\n", n,
                cfg->in_channels, cfg->image_size, cfg->image_size, (double)dim * n * sizeof(float) / 1e9);
        return 2;
    }
    x = (float *)ex_alloc(dim * n * sizeof(float));
    prg_rng_seed(&rng, seed, 3);
    for (j = 0; j < dim * n; j++) x[j] = prg_rng_normal(&rng);
    t0 = ex_now(); c0 = ex_cpu();
    ex_progress_start(&pr, "sample", n, "images");
    for (i = 0; i < n; i += batch) {
        int bs = n - i < batch ? n - i : batch;
        float *xb = x + dim * i;
        ex_check(prg_unet_sample_path(net, path, method, steps, bs, xb), "sampling");
        ex_progress_update(&pr, i + bs);
    }
    ex_check(prg_image_grid(out, x, n, cfg->out_channels, cfg->image_size, cfg->image_size, cols, mean, std), out);
    printf("%d samples (%s, %d steps, %s path from %s: t %s) -> %s (%.1fs wall, %.1fs cpu)\n", n, solver, steps,
           prg_path_name(path), path_src, path == PRG_PATH_GVP ? "1 -> 0" : "0 -> 1", out, ex_now() - t0,
           ex_cpu() - c0);
    prg_free(x); prg_unet_free(net);
    return 0;
}
