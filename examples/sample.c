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
           "  --n N                    images (64)\n"
           "  --steps N                solver steps (20)\n"
           "  --solver euler|heun|rk4  (euler)\n"
           "  --out PATH               grid image, .png (or .pgm/.ppm) (samples.png)\n"
           "  --cols N                 images per row (0 = square)\n"
           "  --mean X[,Y,Z] --std X[,Y,Z]  de-normalisation (default: 0.1307/0.3081 for 1 channel,\n"
           "                           ImageNet's for 3, as the examples normalise)\n"
           "  --seed N (0)  --batch N (64)  --threads N (0 = all)\n"
           "U-Net flags, for a file without a config (a plain state_dict):\n"
           EX_NET_HELP);
}

static void parse_floats(const char *s, float *v, int c) {
    int i;
    for (i = 0; i < c; i++) {
        char *end;
        v[i] = (float)strtod(s, &end);
        if (end == s) { fprintf(stderr, "sample: bad list '%s'\n", s); exit(2); }
        s = *end == ',' ? end + 1 : end;
        if (!*s) { for (i++; i < c; i++) v[i] = v[i - 1]; break; }
    }
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

    ex_prog = "sample";
    ex_net_flags_init(&nf, "tiny32");
    ex_argc = argc; ex_argv = argv;
    for (ex_argi = 1; ex_argi < argc; ex_argi++) {
        if (EX_FLAG("--help") || EX_FLAG("-h")) { usage(); return 0; }
        else if (ex_net_flag(&nf)) {}
        else if (EX_FLAG("--model")) model = ex_val();
        else if (EX_FLAG("--n")) n = ex_int();
        else if (EX_FLAG("--steps")) steps = ex_int();
        else if (EX_FLAG("--solver")) solver = ex_val();
        else if (EX_FLAG("--path")) path_flag = ex_val();
        else if (EX_FLAG("--out")) out = ex_val();
        else if (EX_FLAG("--cols")) cols = ex_int();
        else if (EX_FLAG("--mean")) mean_s = ex_val();
        else if (EX_FLAG("--std")) std_s = ex_val();
        else if (EX_FLAG("--seed")) seed = (uint64_t)ex_int();
        else if (EX_FLAG("--batch")) batch = ex_int();
        else if (EX_FLAG("--threads")) threads = ex_int();
        else ex_bad_flag();
    }
    if (!model || n < 1 || steps < 1 || batch < 1 ||
        (strcmp(solver, "euler") && strcmp(solver, "heun") && strcmp(solver, "rk4"))) {
        usage();
        return 2;
    }
    prg_set_num_threads(threads);
    ex_check(prg_unet_load(&net, model, ex_file_config(&fcfg, &nf, model)), model);
    path = ex_choose_path(prg_unet_loss(net) != PRG_LOSS_NONE ? prg_unet_path(net) : -1, path_flag, model, &path_src);
    method = !strcmp(solver, "euler") ? PRG_SOLVER_EULER : !strcmp(solver, "heun") ? PRG_SOLVER_HEUN : PRG_SOLVER_RK4;
    cfg = prg_unet_config_get(net);
    if (cfg->out_channels != 1 && cfg->out_channels != 3) {
        fprintf(stderr, "sample: can draw 1 or 3 channels, the model has %d\n", cfg->out_channels);
        return 1;
    }
    ex_norm(cfg->out_channels, mean, std);
    if (mean_s) parse_floats(mean_s, mean, cfg->out_channels);
    if (std_s) parse_floats(std_s, std, cfg->out_channels);
    dim = (size_t)cfg->in_channels * cfg->image_size * cfg->image_size;
    x = (float *)ex_alloc(dim * n * sizeof(float));
    prg_rng_seed(&rng, seed, 3);
    for (j = 0; j < dim * n; j++) x[j] = prg_rng_normal(&rng);
    t0 = ex_now(); c0 = ex_cpu();
    for (i = 0; i < n; i += batch) {
        int bs = n - i < batch ? n - i : batch;
        float *xb = x + dim * i;
        ex_check(prg_sample_path(path, method, prg_unet_velocity, net, steps, bs, dim, xb), "sampling");
    }
    ex_check(prg_image_grid(out, x, n, cfg->out_channels, cfg->image_size, cfg->image_size, cols, mean, std), out);
    printf("%d samples (%s, %d steps, %s path from %s: t %s) -> %s (%.1fs wall, %.1fs cpu)\n", n, solver, steps,
           prg_path_name(path), path_src, path == PRG_PATH_GVP ? "1 -> 0" : "0 -> 1", out, ex_now() - t0,
           ex_cpu() - c0);
    prg_free(x); prg_unet_free(net);
    return 0;
}
