/* prginfo: prints a checkpoint's config, tensor table and parameter count,
   and verifies it (every tensor read, shapes checked against the config,
   NaN/Inf refused).

     prginfo [--quiet] FILE.safetensors [--preset NAME]

   --preset gives the config of a plain file without prg metadata.  Exit
   status 0 when the file verifies, 1 otherwise. */
#define PRG_IMPLEMENTATION
#include "prg.h"
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    const char *path = NULL, *preset = NULL;
    int quiet = 0, i, j;
    prg_st *st;
    prg_unet_config cfg;
    prg_unet *net = NULL;
    prg_classifier *clf = NULL;
    const char *kind;
    double total = 0;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--preset") && i + 1 < argc) preset = argv[++i];
        else if (!strcmp(argv[i], "--quiet")) quiet = 1;
        else if (!strcmp(argv[i], "--help")) {
            printf("usage: prginfo [--quiet] FILE.safetensors [--preset cifar32|imagenet64|small32|tiny32]\n"
                   "Prints the config, the tensor table and the parameter count, and verifies the file.\n");
            return 0;
        } else if (argv[i][0] == '-' || path) {
            fprintf(stderr, "prginfo: %s '%s' (see --help)\n",
                    argv[i][0] != '-' ? "one file only, got another" : !strcmp(argv[i], "--preset") ? "a value is missing after"
                                                                                                 : "unknown argument", argv[i]);
            return 2;
        } else path = argv[i];
    }
    if (!path) {
        fprintf(stderr, "prginfo: no file given (--help)\n");
        return 2;
    }
    if (preset && prg_unet_config_preset(&cfg, preset) != PRG_OK) {
        fprintf(stderr, "prginfo: %s\n", prg_last_error());
        return 2;
    }
    if (prg_safetensors_open(&st, path) != PRG_OK) {
        fprintf(stderr, "prginfo: %s\n", prg_last_error());
        return 1;
    }
    printf("%s\n", path);
    for (i = 0; i < prg_st_metadata_count(st); i++) {
        const char *k, *v;
        prg_st_metadata_at(st, i, &k, &v);
        printf("  %-16s %s\n", k, v);
    }
    if (!quiet) {
        printf("  %-56s %-5s %s\n", "tensor", "dtype", "shape");
        for (i = 0; i < prg_st_count(st); i++) {
            const prg_st_info *t = prg_st_info_at(st, i);
            char shape[128];
            size_t len = 0;
            shape[0] = 0;
            for (j = 0; j < t->ndim && len < 100; j++)
                len += (size_t)snprintf(shape + len, sizeof shape - len, j ? ", %lld" : "%lld", (long long)t->shape[j]);
            printf("  %-56s %-5s [%s]\n", t->name, prg_dtype_name(t->dtype), shape);
        }
    }
    for (i = 0; i < prg_st_count(st); i++) total += (double)prg_st_info_at(st, i)->count;
    kind = prg_st_metadata(st, "prg.kind");
    prg_st_close(st);
    printf("  %d tensors, %.0f values in all\n", i, total);
    /* verify by loading it as what it says it is */
    if (kind && !strcmp(kind, "classifier")) {
        if (prg_classifier_load(&clf, path, preset ? &cfg : NULL) != PRG_OK) goto bad;
        net = prg_classifier_unet(clf);
    } else if (prg_unet_load(&net, path, preset ? &cfg : NULL) != PRG_OK) {
        goto bad;
    }
    printf("  U-Net parameters: %zu", prg_unet_num_params(net));
    if (clf) {
        size_t nh;
        prg_classifier_head_params(clf, &nh);
        printf(", head: %zu (%d classes)", nh, prg_classifier_num_classes(clf));
        prg_classifier_free(clf);
    } else {
        prg_unet_free(net);
    }
    printf("\n  verified: every tensor present, shaped as the config says, and finite\n");
    return 0;
bad:
    printf("  NOT VALID: %s\n", prg_last_error());
    return 1;
}
