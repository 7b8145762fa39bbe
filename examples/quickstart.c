#define PRG_IMPLEMENTATION
#include "prg.h"
#include <stdio.h>
#define TRY(call) \
    do { if ((call) != PRG_OK) { fprintf(stderr, "%s\n", prg_last_error()); return 1; } } while (0)
enum { B = 16, C = 3, S = 16, D = C * S * S };   // batches of 16 images 3x16x16, 2 classes

static void make_batch(float *x, int *y, prg_rng *rng) {   // class 1: the left half is bright
    for (int i = 0; i < B * D; i++) {
        y[i / D] = i / D % 2;
        x[i] = 0.5f * prg_rng_normal(rng) + ((i % S < S / 2) == y[i / D] ? 1.0f : -1.0f);
    }
}

int main(int argc, char **argv) {
    static float x[B * D], xt[B * D], target[B * D], t[B], v[B * D], z[B * D];
    float logits[B * 2], dl[B * 2], loss = 0;
    int y[B], step, right = 0;
    prg_rng rng; prg_unet_config cfg; prg_adam_config ac;
    prg_unet *net; prg_classifier *clf; prg_adam *opt;
    prg_rng_seed(&rng, 1, 0); make_batch(x, y, &rng);
    TRY(prg_unet_config_preset(&cfg, "tiny32"));    // 1. pretrain a small U-Net by flow matching
    cfg.image_size = S; cfg.model_channels = 16; cfg.groups = 8;
    TRY(prg_unet_create(&net, &cfg, 42));
    prg_adam_config_default(&ac);
    TRY(prg_adam_create(&opt, prg_unet_num_params(net), &ac));
    for (step = 0; step < 40; step++) {
        prg_flow_icfm_pairs(xt, target, t, NULL, x, B, D, &rng);   // noise-data pairs, velocity
        prg_unet_zero_grad(net);
        TRY(prg_unet_forward(net, B, xt, t, v));
        loss = prg_flow_loss_forward_backward(v, v, target, B, C, S * S);   // v becomes dloss/dv
        TRY(prg_unet_backward(net, v, NULL));
        TRY(prg_adam_step(opt, prg_unet_params(net), prg_unet_grads(net), 2e-3, NULL));
    }
    TRY(prg_encode(net, 4, 0, B, x, z));             // 2. features: data -> noise, 3 Euler steps
    printf("pretrained: flow loss %.3f; encoded x[0] = %.3f as z[0] = %.3f\n", loss, x[0], z[0]);
    TRY(prg_classifier_create(&clf, net, 2, 4, 0, 7));  // 3. fine-tune U-Net + head
    float *p[2]; const float *g[2]; size_t n[2], all;   // what it trains: U-Net + head
    int nb = prg_classifier_param_blocks(clf, p, g, n, &all);
    prg_adam_free(opt); ac.decoupled = 1; ac.weight_decay = 0.05;
    TRY(prg_adam_create(&opt, all, &ac));
    for (step = 0; step < 20; step++) {
        make_batch(x, y, &rng);
        prg_classifier_zero_grad(clf);
        TRY(prg_classifier_forward(clf, B, x, logits));
        loss = prg_cross_entropy_forward_backward(dl, logits, y, B, 2, 0.1f);  // label smoothing
        TRY(prg_classifier_backward(clf, dl));       // exact gradient through the Euler steps
        TRY(prg_adam_step_blocks(opt, nb, p, g, n, 1e-3, NULL));
    }
    make_batch(x, y, &rng);                          // 4. classify images it has not seen
    TRY(prg_classifier_forward(clf, B, x, logits));
    for (int b = 0; b < B; b++) right += (logits[2 * b + 1] > logits[2 * b]) == y[b];
    printf("fine-tuned: cross-entropy %.3f; %d of %d new images right\n", loss, right, B);
    TRY(prg_classifier_save(clf, argc > 1 ? argv[1] : "quickstart.safetensors"));   // 5. save
    prg_classifier_free(clf); prg_adam_free(opt);
    return 0;
}
