/* classify: one image -> the top-5 classes of a fine-tuned PRG classifier.

     classify --model finetune-best.safetensors digit.pgm

   Reads JPEG, PNG or binary PGM/PPM (prg_image_load).  The image is
   converted to the model's channel count (gray <-> RGB), 28x28 images for
   a 32x32 model get MNIST's 2-pixel border, other sizes are centre-cropped
   to a square and resized (bicubic); then normalised as in
   training (0.1307/0.3081 for 1 channel, ImageNet's for 3). */
#define PRG_IMPLEMENTATION
#include "prg.h"
#include "ex_common.h"

static void usage(void) {
    printf("usage: classify --model CLASSIFIER [options] IMAGE (JPEG, PNG, PGM or PPM)\n"
           "Prints the top-5 classes with their probabilities.\n"
           "  --model PATH     classifier checkpoint (finetune's -best / -last file)\n"
           "  --labels PATH    class names, one per line (default: class numbers);\n"
           "                   \"cifar10\" uses the CIFAR-10 names\n"
           "  --threads N      (0 = all)\n"
           "  --quiet          accepted for symmetry with the other programs (prints the classes only)\n");
}

static const char *cifar10_names[10] = {"airplane", "automobile", "bird", "cat", "deer",
                                        "dog", "frog", "horse", "ship", "truck"};

int main(int argc, char **argv) {
    const char *model = NULL, *image = NULL, *labels = NULL;
    int threads = 0, w, h, mc, size, i, j, k, *order;
    uint8_t *planes, *fitted;
    prg_image img;
    prg_classifier *clf;
    const prg_unet_config *cfg;
    float *x, *logits, mean[4], std[4];
    double mx, sum;
    char **names = NULL;

    ex_prog = "classify";
    ex_argc = argc; ex_argv = argv;
    for (ex_argi = 1; ex_argi < argc; ex_argi++) {
        if (EX_FLAG("--help") || EX_FLAG("-h")) { usage(); return 0; }
        else if (EX_FLAG("--model")) model = ex_val();
        else if (EX_FLAG("--labels")) labels = ex_val();
        else if (EX_FLAG("--threads")) threads = ex_int_in(0, 1024);
        else if (EX_FLAG("--quiet")) ex_quiet = 1;
        else if (argv[ex_argi][0] != '-' && !image) image = argv[ex_argi];
        else ex_bad_flag();
    }
    if (!model || !image) { usage(); return 2; }
    ex_check_input(model, "--model");
    ex_check_input(image, "IMAGE");
    if (labels && strcmp(labels, "cifar10")) ex_check_input(labels, "--labels");
    prg_set_num_threads(threads);
    ex_check(prg_classifier_load(&clf, model, NULL), model);
    cfg = prg_unet_config_get(prg_classifier_unet(clf));
    mc = cfg->in_channels;
    size = cfg->image_size;
    k = prg_classifier_num_classes(clf);
    if (mc != 1 && mc != 3) { fprintf(stderr, "classify: models of 1 or 3 channels only (this one: %d)\n", mc); return 1; }
    ex_check(prg_image_load(&img, image, mc), image); /* converted to the model's channels */
    w = img.w;
    h = img.h;
    planes = (uint8_t *)ex_alloc((size_t)mc * h * w);
    prg_image_to_planar(planes, &img);
    prg_image_free(&img);

    /* fit to size x size */
    fitted = (uint8_t *)ex_alloc((size_t)mc * size * size);
    if (h == w && h < size && (size - h) % 2 == 0 && size - h <= 4) {
        prg_planes_crop(fitted, planes, -(size - h) / 2, -(size - w) / 2, size, size, mc, h, w); /* zero border */
    } else if (h == size && w == size) {
        memcpy(fitted, planes, (size_t)mc * size * size);
    } else { /* the centre square, then resized: buffers of the output's size, whatever the aspect ratio */
        int side = h < w ? h : w;
        uint8_t *sq = (uint8_t *)ex_alloc((size_t)mc * side * side);
        prg_planes_crop(sq, planes, (h - side) / 2, (w - side) / 2, side, side, mc, h, w);
        ex_check(prg_planes_resize(fitted, size, size, sq, mc, side, side, NULL), "resize");
        prg_free(sq);
    }
    ex_norm(mc, mean, std);
    x = (float *)ex_alloc((size_t)mc * size * size * sizeof(float));
    prg_planes_normalize(x, fitted, mean, std, mc, size, size);
    logits = (float *)ex_alloc((size_t)k * sizeof(float));
    ex_check(prg_classifier_forward(clf, 1, x, logits), "classifier");

    if (labels && !strcmp(labels, "cifar10")) {
        if (k == 10) names = (char **)cifar10_names;
    } else if (labels) {
        FILE *f = fopen(labels, "r");
        char line[256];
        if (!f) { fprintf(stderr, "classify: cannot read %s\n", labels); return 1; }
        names = (char **)calloc((size_t)k, sizeof(char *));
        for (i = 0; i < k && fgets(line, sizeof(line), f); i++) {
            line[strcspn(line, "\r\n")] = 0;
            names[i] = (char *)malloc(strlen(line) + 1);
            if (names[i]) strcpy(names[i], line);
        }
        fclose(f);
    }
    /* softmax and the top 5 */
    order = (int *)ex_alloc((size_t)k * sizeof(int));
    mx = logits[0];
    for (i = 1; i < k; i++) if (logits[i] > mx) mx = logits[i];
    for (sum = 0, i = 0; i < k; i++) sum += exp(logits[i] - mx);
    for (i = 0; i < k; i++) order[i] = i;
    for (i = 0; i < k && i < 5; i++)
        for (j = i + 1; j < k; j++)
            if (logits[order[j]] > logits[order[i]]) { int s = order[i]; order[i] = order[j]; order[j] = s; }
    printf("%s (%dx%d, as %d channel%s):\n", image, w, h, mc, mc > 1 ? "s" : "");
    for (i = 0; i < k && i < 5; i++) {
        int l = order[i];
        printf("  %6.2f%%  %d%s%s\n", 100 * exp(logits[l] - mx) / sum, l, names && names[l] ? "  " : "",
               names && names[l] ? names[l] : "");
    }
    prg_free(planes); prg_free(fitted); prg_free(x); prg_free(logits); prg_free(order);
    prg_classifier_free(clf);
    return 0;
}
