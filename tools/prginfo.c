/* prginfo: prints a checkpoint's config, tensor table and parameter count,
   and verifies it: loaded as what its metadata says (shapes checked against
   the config), then every tensor of the file read, optim.* included, with
   float dtypes only (F32/F16/BF16/F64), NaN/Inf and a negative
   optim.exp_avg_sq refused; a training checkpoint (optim.step / prg.rng
   metadata) is also restored into a fresh optimizer, which checks its step
   counts and RNG state.

     prginfo [--quiet] FILE.safetensors [U-Net flags]

   The U-Net flags of the programs (--preset, --model-channels, ...) give
   the config of a plain file without prg metadata.  A file with head.*
   tensors is checked as a classifier.  Exit status 0 when the file
   verifies, 1 otherwise. */
#define PRG_IMPLEMENTATION
#include "prg.h"
#include "examples/ex_common.h"
#include <stdio.h>
#include <string.h>

static int training = 0;

/* Every tensor of the file, optim.* included: a float dtype, read whole,
   finite, and exp_avg_sq non-negative.  0 when all pass (else the error is
   in prg_last_error()). */
static int read_all(const char *path) {
    prg_st *st;
    float *buf = NULL;
    size_t cap = 0, k;
    int i, bad = 0;
    if (prg_st_open(&st, path) != PRG_OK) return 1;
    for (i = 0; i < prg_st_num_tensors(st) && !bad; i++) {
        const prg_st_info *t = prg_st_info_at(st, i);
        if (t->dtype != PRG_DT_F32 && t->dtype != PRG_DT_F16 && t->dtype != PRG_DT_BF16 && t->dtype != PRG_DT_F64) {
            fprintf(stderr, "prginfo: %s: tensor '%s' is stored as %s, not a float type\n", path, t->name, prg_dtype_name(t->dtype));
            printf("  NOT VALID: tensor '%s' is %s\n", t->name, prg_dtype_name(t->dtype));
            prg_st_close(st);
            prg_free(buf);
            exit(1);
        }
        if (t->count > cap) {
            prg_free(buf);
            cap = t->count;
            if (!(buf = (float *)prg_alloc(cap * sizeof(float)))) {
                fprintf(stderr, "prginfo: out of memory for tensor '%s' (%zu values)\n", t->name, t->count);
                exit(1);
            }
        }
        bad = prg_st_read_f32(st, t->name, buf, t->count, PRG_ST_FINITE) != PRG_OK;
        if (!bad && !strncmp(t->name, "optim.exp_avg_sq.", 17))
            for (k = 0; k < t->count && !bad; k++)
                if (buf[k] < 0.0f) {
                    printf("  NOT VALID: tensor '%s' element %zu is %g (a second moment)\n", t->name, k, (double)buf[k]);
                    exit(1);
                }
    }
    prg_free(buf);
    prg_st_close(st);
    return bad;
}

/* A training checkpoint restored into a fresh optimizer and RNG. */
static int restore_state(const char *path, prg_unet *net, prg_classifier *clf) {
    prg_st *st;
    prg_adam *opt = NULL;
    prg_adam_config ac;
    prg_rng rng;
    int64_t step;
    size_t n = prg_unet_num_params(net), nh = 0;
    int r;
    if (prg_st_open(&st, path) != PRG_OK) return 1;
    training = prg_st_metadata(st, "optim.step") != NULL;
    prg_st_close(st);
    if (!training) return 0;
    if (clf) prg_classifier_head_params(clf, &nh);
    prg_adam_config_default(&ac);
    if (prg_adam_create(&opt, n + nh, &ac) != PRG_OK) return 1;
    r = prg_train_state_restore(clf ? NULL : net, clf, opt, &rng, &step, path) != PRG_OK;
    prg_adam_free(opt);
    return r;
}

int main(int argc, char **argv) {
    const char *path = NULL;
    int quiet = 0, i, j, is_clf, ok;
    prg_st *st;
    prg_unet_config cfg;
    const prg_unet_config *use;
    ex_net_flags nf;
    prg_unet *net = NULL;
    prg_classifier *clf = NULL;
    const char *kind;
    double total = 0;
    ex_prog = "prginfo";
    ex_net_flags_init(&nf, "tiny32");
    ex_argc = argc; ex_argv = argv;
    for (ex_argi = 1; ex_argi < argc; ex_argi++) {
        if (EX_FLAG("--help") || EX_FLAG("-h")) {
            printf("usage: prginfo [--quiet] FILE.safetensors [U-Net flags]\n"
                   "Prints the config, the tensor table and the parameter count, and verifies the file.\n"
                   "  --quiet                no tensor table\n"
                   "U-Net flags, for a file without a config (a plain state_dict):\n"
                   EX_NET_HELP);
            return 0;
        } else if (EX_FLAG("--quiet")) quiet = 1;
        else if (ex_net_flag(&nf)) {}
        else if (argv[ex_argi][0] != '-' && !path) path = argv[ex_argi];
        else ex_bad_flag();
    }
    if (!path) {
        fprintf(stderr, "prginfo: no file given (--help)\n");
        return 2;
    }
    if (prg_st_open(&st, path) != PRG_OK) {
        fprintf(stderr, "prginfo: %s\n", prg_last_error());
        return 1;
    }
    printf("%s\n", path);
    for (i = 0; i < prg_st_num_metadata(st); i++) {
        const char *k, *v;
        prg_st_metadata_at(st, i, &k, &v);
        printf("  %-16s %s\n", k, v);
    }
    if (!quiet) {
        printf("  %-56s %-5s %s\n", "tensor", "dtype", "shape");
        for (i = 0; i < prg_st_num_tensors(st); i++) {
            const prg_st_info *t = prg_st_info_at(st, i);
            char shape[128];
            size_t len = 0;
            shape[0] = 0;
            for (j = 0; j < t->ndim && len < 100; j++)
                len += (size_t)snprintf(shape + len, sizeof shape - len, j ? ", %lld" : "%lld", (long long)t->shape[j]);
            printf("  %-56s %-5s [%s]\n", t->name, prg_dtype_name(t->dtype), shape);
        }
    }
    for (i = 0; i < prg_st_num_tensors(st); i++) total += (double)prg_st_info_at(st, i)->count;
    kind = prg_st_metadata(st, "prg.kind");
    /* a plain file: a classifier when it has a head (kind lives in st) */
    is_clf = kind ? !strcmp(kind, "classifier") : prg_st_find(st, "head.fc2.weight", NULL) == PRG_OK;
    prg_st_close(st);
    printf("  %d tensors, %.0f values in all\n", i, total);
    use = ex_file_config(&cfg, &nf, path);
    /* verify by loading it as what it says it is */
    if (is_clf) {
        if (prg_classifier_load(&clf, path, use) != PRG_OK) goto bad;
        net = prg_classifier_unet(clf);
    } else if (prg_unet_load(&net, path, use) != PRG_OK) {
        goto bad;
    }
    printf("  U-Net parameters: %zu", prg_unet_num_params(net));
    if (clf) {
        size_t nh;
        prg_classifier_head_params(clf, &nh);
        printf(", head: %zu (%d classes)", nh, prg_classifier_num_classes(clf));
    }
    printf("\n");
    ok = read_all(path) == 0 && restore_state(path, net, clf) == 0;
    if (clf) prg_classifier_free(clf);
    else prg_unet_free(net);
    if (!ok) goto bad;
    printf("  verified: every tensor present, shaped as the config says, float, read and finite%s\n",
           training ? "; training state restores" : "");
    return 0;
bad:
    printf("  NOT VALID: %s\n", prg_last_error());
    return 1;
}
