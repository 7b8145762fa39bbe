/* prginfo: prints a checkpoint's config, tensor table and parameter count,
   and verifies it (every tensor read, shapes checked against the config,
   NaN/Inf refused).

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

int main(int argc, char **argv) {
    const char *path = NULL;
    int quiet = 0, i, j, has_head;
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
    has_head = prg_st_find(st, "head.fc2.weight", NULL) == PRG_OK;
    prg_st_close(st);
    printf("  %d tensors, %.0f values in all\n", i, total);
    use = ex_file_config(&cfg, &nf, path);
    /* verify by loading it as what it says it is (a plain file: a classifier when it has a head) */
    if (kind ? !strcmp(kind, "classifier") : has_head) {
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
