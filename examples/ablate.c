/* ablate: the paper's ablation study as one command.  Runs build/pretrain
   once per (pretraining loss, seed) and build/finetune once per cell of a
   grid over t_span, t_cutoff, gradient mode, pretrained vs from scratch,
   loss, beta, augmentation, label budget and seed; appends each cell's
   top-1 / top-5 / seconds to DIR/ablate.csv as it finishes (a rerun skips
   the cells already there, so a study killed halfway continues), then prints
   one table per varied axis and draws the charts with prg.h's chart API.

     ablate --preset demo                     (make ablate-demo)
     ablate --data TRAIN --test TEST --t-cutoff 0,1,2 --init pretrained,scratch --out DIR */
#define PRG_IMPLEMENTATION
#include "prg.h"
#include "ex_common.h"
#include <sys/wait.h>

#define AX_CAP 16
enum { AX_SPAN, AX_CUT, AX_GRAD, AX_INIT, AX_LOSS, AX_BETA, AX_AUG, AX_LABELS, AX_N };
static const char *ax_name[AX_N] = {"t_span", "t_cutoff", "grad", "init", "loss", "beta", "augment", "labels"};
static const int ax_numeric[AX_N] = {1, 1, 0, 0, 0, 1, 0, 1};
static const char *ax_flag[AX_N] = {"--t-span", "--t-cutoff", "--grad", "--init", "--loss", "--beta", "--augment",
                                    "--labels"};
static const char *ax_allowed[AX_N] = {NULL, NULL, "exact,adjoint,frozen", "pretrained,scratch", "icfm,ot,gvp", NULL,
                                       "none,light,full", NULL};

/* an axis: its values as text (the CSV's spelling) and, numeric ones, as numbers */
typedef struct axis { int n; char val[AX_CAP][24]; double num[AX_CAP]; } axis;
static axis ax[AX_N];
static int seeds[AX_CAP], nseeds;

typedef struct cell { int v[AX_N]; int seed; } cell;
typedef struct result { char key[200]; double top1, top5, secs; } result;
static result *done;
static int ndone, capdone;

static void usage(void) {
    printf("usage: ablate [--preset demo|tiny] [--data TRAIN --test TEST] [axes] [budgets] [--out DIR]\n"
           "The ablation study (docs/METHOD.md): pretrain once per (loss, seed), fine-tune each cell, CSV,\n"
           "tables and charts.  Axes take comma-separated lists; the first value of each is the baseline.\n"
           "  --t-span L             ODE grid points, each 2..1024 (2)\n"
           "  --t-cutoff L           grid points dropped at the noise end (0); a cell whose cutoff leaves\n"
           "                         no Euler step (t_cutoff > t_span - 2) is skipped\n"
           "  --grad L               exact | adjoint | frozen (exact)\n"
           "  --init L               pretrained | scratch (pretrained)\n"
           "  --loss L               pretraining loss icfm | ot | gvp (icfm); scratch cells take its path\n"
           "  --beta L               weight of the flow-matching term, each in [0, 1000] (0)\n"
           "  --augment L            none | light | full (none): finetune --augment\n"
           "  --labels L             labelled images per class (finetune --labels-per-class, --label-seed\n"
           "                         0), 0 or all = every image (all); pretraining always sees every image\n"
           "  --seeds L              seeds, each 0..2^31-1 (0): one pretraining per (loss, seed)\n"
           "  --grid axes|full       axes (default): the baseline and each axis varied alone, plus\n"
           "                         scratch and frozen at every label budget; full: every combination\n"
           "budgets and sizes:\n"
           "  --pre-steps N (300)  --pre-batch N (64)  --pre-lr X (1e-3)    pretraining\n"
           "  --ft-steps N (150)   --ft-batch N (32)   --ft-lr X (2e-3)     fine-tuning of each cell\n"
           "  --limit N              the first N training images (0: all)\n"
           "  --eval-limit N         evaluate on the first N test images (0: all)\n"
           "  --net \"FLAGS\"          U-Net flags given to pretrain and finetune as words (default\n"
           "                         \"--model-channels 16 --groups 8 --res-blocks 1 --channel-mult 1,2,2\n"
           "                         --attention-ds 4 --heads 1\")\n"
           "  --threads N            threads of each run (0: all CPUs)\n"
           "  --bin DIR              where pretrain and finetune are (the directory of this program)\n"
           "  --out DIR              results (build/ablate): ablate.csv, pretrain-LOSS-sSEED.safetensors,\n"
           "                         cells/NAME.log, ablate-AXIS.png per varied axis, ablate-methods.png\n"
           "                         (PRG / scratch / frozen per label budget)\n"
           "  --max-cells N          stop after N new cells (a rerun continues)\n"
           "  --report               no runs: the tables and charts of ablate.csv\n"
           "  --preset demo          bundled MNIST, t_span 4,2,8, t_cutoff 0,1,2, exact,frozen,\n"
           "                         pretrained,scratch, icfm,ot,gvp, labels all,10,100, 200 pretraining\n"
           "                         steps x 64, 80 fine-tuning steps x 32, 500 test images, 2 threads:\n"
           "                         77 minutes measured on 2 shared cores (the axes grid: 15 cells, 3 pretrainings);\n"
           "                         tiny: seconds (tests).  The other flags override a preset's values\n"
           "Each cell's result goes to DIR/ablate.csv when it finishes.  Ctrl-C stops the running cell\n"
           "(not recorded), SIGTERM to ablate alone lets it finish first; either way ablate exits with\n"
           "130 / 143 and the next run continues with the cells not in the CSV (a killed pretraining\n"
           "resumes from its checkpoint).\n");
}

static void axis_set(int a, const char *list) {
    char buf[512], *p, *next;
    axis *x = &ax[a];
    if (strlen(list) >= sizeof buf) ex_usage_error(ax_flag[a], list, "is too long");
    if (!list[0] || list[0] == ',' || list[strlen(list) - 1] == ',' || strstr(list, ",,"))
        ex_usage_error(ax_flag[a], list, "wants a comma-separated list without empty items");
    strcpy(buf, list);
    x->n = 0;
    for (p = buf; p; p = next) {
        char *v = x->val[x->n];
        next = strchr(p, ',');
        if (next) *next++ = 0;
        if (x->n >= AX_CAP) ex_usage_error(ax_flag[a], list, "has more than 16 values");
        {
            int j; /* a value given twice would be one cell twice */
            for (j = 0; j < x->n; j++)
                if (!strcmp(x->val[j], p)) ex_usage_error(ax_flag[a], list, "names a value twice");
        }
        if (a == AX_SPAN) snprintf(v, 24, "%d", (int)(x->num[x->n] = (double)ex_parse_i64(ax_flag[a], p, 2, 1024)));
        else if (a == AX_CUT) snprintf(v, 24, "%d", (int)(x->num[x->n] = (double)ex_parse_i64(ax_flag[a], p, 0, 1022)));
        else if (a == AX_BETA) snprintf(v, 24, "%g", x->num[x->n] = ex_parse_num(ax_flag[a], p, 0, 1000, 0));
        else if (a == AX_LABELS) {
            x->num[x->n] = !strcmp(p, "all") ? 0 : (double)ex_parse_i64(ax_flag[a], p, 0, 1000000);
            if (x->num[x->n] == 0) strcpy(v, "all");
            else snprintf(v, 24, "%d", (int)x->num[x->n]);
        } else {
            char want[96];
            const char *q = ax_allowed[a];
            size_t len = strlen(p);
            int ok = 0;
            while (*q) {
                size_t l = strcspn(q, ",");
                if (l == len && !strncmp(q, p, l)) ok = 1;
                q += l + (q[l] == ',');
            }
            snprintf(want, sizeof want, "wants a comma-separated list of %s", ax_allowed[a]);
            if (!ok) ex_usage_error(ax_flag[a], list, want);
            snprintf(v, 24, "%.23s", p);
            x->num[x->n] = x->n;
        }
        x->n++;
    }
}

/* "5,0,exact,..." : the cell's key, the CSV's first nine fields */
static void cell_key(const cell *c, char *key, size_t cap) {
    snprintf(key, cap, "%s,%s,%s,%s,%s,%s,%s,%s,%d", ax[AX_SPAN].val[c->v[AX_SPAN]], ax[AX_CUT].val[c->v[AX_CUT]],
             ax[AX_GRAD].val[c->v[AX_GRAD]], ax[AX_INIT].val[c->v[AX_INIT]], ax[AX_LOSS].val[c->v[AX_LOSS]],
             ax[AX_BETA].val[c->v[AX_BETA]], ax[AX_AUG].val[c->v[AX_AUG]], ax[AX_LABELS].val[c->v[AX_LABELS]],
             c->seed);
}
static const result *find_done(const char *key) {
    int i;
    for (i = 0; i < ndone; i++)
        if (!strcmp(done[i].key, key)) return &done[i];
    return NULL;
}
static void add_done(const char *key, double t1, double t5, double s) {
    if (ndone == capdone) {
        capdone = capdone ? 2 * capdone : 64;
        done = (result *)realloc(done, (size_t)capdone * sizeof *done);
        if (!done) { fprintf(stderr, "ablate: out of memory\n"); exit(1); }
    }
    snprintf(done[ndone].key, sizeof done[ndone].key, "%s", key);
    done[ndone].top1 = t1; done[ndone].top5 = t5; done[ndone].secs = s;
    ndone++;
}

static int csv_needs_nl; /* the CSV's last line lacks its line break (a run killed while writing it) */
static const char *csv_header = "t_span,t_cutoff,grad,init,loss,beta,augment,labels,seed,top1,top5,seconds";

/* Reads the finished cells of an earlier run; a line that does not parse
   (a run killed while writing it) is reported and left out. */
static void load_csv(const char *path) {
    FILE *f = fopen(path, "r");
    char line[512];
    int ln = 0;
    if (!f) return;
    while (fgets(line, sizeof line, f)) {
        char *p = line, key[200];
        int commas = 0;
        double t1, t5, s;
        csv_needs_nl = !strchr(line, '\n');
        ln++;
        if (ln == 1 && !strncmp(line, csv_header, strlen(csv_header))) continue;
        while (*p && commas < 9) if (*p++ == ',') commas++;
        if (commas == 9 && (size_t)(p - line - 1) < sizeof key &&
            sscanf(p, "%lf,%lf,%lf", &t1, &t5, &s) == 3 && strchr(p, '\n')) {
            memcpy(key, line, (size_t)(p - line - 1));
            key[p - line - 1] = 0;
            if (!find_done(key)) add_done(key, t1, t5, s);
        } else {
            fprintf(stderr, "ablate: %s line %d is not a finished cell (left out, the cell runs again)\n", path, ln);
        }
    }
    fclose(f);
}

/* 'text' for the shell */
static void shq(char *out, size_t cap, const char *s) {
    size_t n = 0;
    if (cap < 3) return;
    out[n++] = '\'';
    for (; *s && n + 6 < cap; s++) {
        if (*s == '\'') { memcpy(out + n, "'\\''", 4); n += 4; }
        else out[n++] = *s;
    }
    out[n++] = '\'';
    out[n] = 0;
}

/* Runs cmd (stdout and stderr to log); 0 when it succeeded; an interrupted
   child (130 / 143, or a signal) stops the study. */
static int run(const char *cmd, const char *log) {
    char full[8192], ql[1100];
    int st;
    shq(ql, sizeof ql, log);
    snprintf(full, sizeof full, "%s > %s 2>&1", cmd, ql);
    st = system(full);
    if (st == -1) { fprintf(stderr, "ablate: cannot run a shell: %s\n", strerror(errno)); exit(1); }
    if (WIFSIGNALED(st) || (WIFEXITED(st) && (WEXITSTATUS(st) == 130 || WEXITSTATUS(st) == 143))) {
        printf("ablate: interrupted (%s); the finished cells are in the CSV, a rerun continues\n", log);
        exit(130);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}

static int file_exists(const char *p) { FILE *f = fopen(p, "rb"); if (f) fclose(f); return f != NULL; }

/* the last "top-1 X%  top-5 Y%" of finetune's log */
static int parse_eval(const char *log, double *t1, double *t5) {
    FILE *f = fopen(log, "r");
    char line[1024];
    int ok = 0;
    if (!f) return 0;
    while (fgets(line, sizeof line, f)) {
        const char *a = strstr(line, "top-1 "), *b = strstr(line, "top-5 ");
        if (!strncmp(line, "eval step", 9) && a && b && sscanf(a + 6, "%lf", t1) == 1 && sscanf(b + 6, "%lf", t5) == 1) ok = 1;
    }
    fclose(f);
    return ok;
}

/* the study's settings */
static const char *data, *test, *bin, *outdir = "build/ablate";
static const char *net = "--model-channels 16 --groups 8 --res-blocks 1 --channel-mult 1,2,2 --attention-ds 4 --heads 1";
static int pre_steps = 300, pre_batch = 64, ft_steps = 150, ft_batch = 32, limit = 0, eval_limit = 0, threads = 0;
static double pre_lr = 1e-3, ft_lr = 2e-3;

/* DIR/pretrain-LOSS-sSEED.safetensors, trained (or finished: a killed
   pretraining resumes) when missing; the .done file marks it complete. */
static void pretrained(const char *loss, int seed, char *path, size_t cap) {
    char mark[1100], log[1100], cmd[4096], qd[1100], qp[1100];
    int resume;
    snprintf(path, cap, "%s/pretrain-%s-s%d.safetensors", outdir, loss, seed);
    snprintf(mark, sizeof mark, "%s/pretrain-%s-s%d.done", outdir, loss, seed);
    snprintf(log, sizeof log, "%s/pretrain-%s-s%d.log", outdir, loss, seed);
    if (file_exists(mark) && file_exists(path)) return;
    resume = file_exists(path);
    shq(qd, sizeof qd, data); shq(qp, sizeof qp, path);
    snprintf(cmd, sizeof cmd, "%s/pretrain --data %s %s --loss %s --batch %d --lr %g --steps %d --no-augment "
             "--limit %d --threads %d --seed %d --log-every 50 --out %s%s", bin, qd, net, loss, pre_batch, pre_lr,
             pre_steps, limit, threads, seed, qp, resume ? " --resume" : "");
    printf("pretrain %s seed %d (%d steps x %d)%s -> %s\n", loss, seed, pre_steps, pre_batch, resume ? ", resumed" : "",
           path);
    fflush(stdout);
    if (run(cmd, log) != 0) { fprintf(stderr, "ablate: pretraining failed, see %s\n", log); exit(1); }
    { FILE *f = fopen(mark, "w"); if (!f || fclose(f)) { fprintf(stderr, "ablate: cannot write %s\n", mark); exit(1); } }
}

/* Runs one cell; 1 when it ran, 0 when it is not a valid cell. */
static int run_cell(const cell *c, const char *key) {
    char name[256], log[1400], pre[1400], cmd[8192], qd[1100], qt[1100], qo[1400], qp[1100], extra[256];
    const char *grad = ax[AX_GRAD].val[c->v[AX_GRAD]], *loss = ax[AX_LOSS].val[c->v[AX_LOSS]];
    int scratch = !strcmp(ax[AX_INIT].val[c->v[AX_INIT]], "scratch"), labels = (int)ax[AX_LABELS].num[c->v[AX_LABELS]];
    double t0, t1 = 0, t5 = 0;
    size_t i;
    FILE *f;
    snprintf(name, sizeof name, "%s", key);
    for (i = 0; name[i]; i++) if (name[i] == ',') name[i] = '_';
    snprintf(log, sizeof log, "%s/cells/%s.log", outdir, name);
    snprintf(qo, sizeof qo, "%s/cells/%s", outdir, name);
    shq(qd, sizeof qd, data); shq(qt, sizeof qt, test);
    { char o[1400]; snprintf(o, sizeof o, "%s", qo); shq(qo, sizeof qo, o); }
    if (scratch) snprintf(pre, sizeof pre, "--from-scratch %s --path %s", net, loss);
    else {
        char p[1100];
        pretrained(loss, c->seed, p, sizeof p);
        shq(qp, sizeof qp, p);
        snprintf(pre, sizeof pre, "--init %s", qp);
    }
    extra[0] = 0;
    if (labels > 0) snprintf(extra, sizeof extra, " --labels-per-class %d", labels);
    snprintf(cmd, sizeof cmd, "%s/finetune %s --data %s --test %s --t-span %s --t-cutoff %s %s --beta %s "
             "--augment %s --no-flip --batch %d --lr %g --steps %d --eval-every 1000000 --eval-limit %d --limit %d "
             "--threads %d --seed %d --log-every 25 --force --out %s%s", bin, pre, qd, qt, ax[AX_SPAN].val[c->v[AX_SPAN]],
             ax[AX_CUT].val[c->v[AX_CUT]], !strcmp(grad, "frozen") ? "--frozen" : !strcmp(grad, "adjoint") ? "--grad adjoint" : "--grad exact",
             ax[AX_BETA].val[c->v[AX_BETA]], ax[AX_AUG].val[c->v[AX_AUG]], ft_batch, ft_lr, ft_steps, eval_limit, limit,
             threads, c->seed, qo, extra);
    printf("cell %s ... ", key);
    fflush(stdout);
    t0 = ex_now();
    if (run(cmd, log) != 0 || !parse_eval(log, &t1, &t5)) {
        fprintf(stderr, "\nablate: the cell %s failed, see %s\n", key, log);
        exit(1);
    }
    t0 = ex_now() - t0;
    printf("top-1 %.2f%%  top-5 %.2f%%  (%.1fs)\n", t1, t5, t0);
    fflush(stdout);
    {
        char path[1100];
        int fresh;
        snprintf(path, sizeof path, "%s/ablate.csv", outdir);
        fresh = !file_exists(path);
        f = fopen(path, "a");
        if (!f) { fprintf(stderr, "ablate: cannot append to %s: %s\n", path, strerror(errno)); exit(1); }
        if (fresh) fprintf(f, "%s\n", csv_header);
        if (csv_needs_nl) fputc('\n', f);
        csv_needs_nl = 0;
        fprintf(f, "%s,%.2f,%.2f,%.1f\n", key, t1, t5, t0);
        if (fclose(f) != 0) { fprintf(stderr, "ablate: cannot write %s: %s\n", path, strerror(errno)); exit(1); }
    }
    add_done(key, t1, t5, t0);
    return 1;
}

/* The grid's cells in order, without repeats: *n of them in out (cap). */
static int cell_valid(const cell *c) { return ax[AX_CUT].num[c->v[AX_CUT]] <= ax[AX_SPAN].num[c->v[AX_SPAN]] - 2; }
static int cell_same(const cell *a, const cell *b) { return !memcmp(a, b, sizeof *a); }
static void push(cell *out, int *n, int cap, const cell *c) {
    int i;
    if (!cell_valid(c)) return;
    for (i = 0; i < *n; i++) if (cell_same(&out[i], c)) return;
    if (*n >= cap) { fprintf(stderr, "ablate: more than %d cells; fewer values, or --grid axes\n", cap); exit(2); }
    out[(*n)++] = *c;
}
static int value_index(int a, const char *v) {
    int i;
    for (i = 0; i < ax[a].n; i++) if (!strcmp(ax[a].val[i], v)) return i;
    return -1;
}
static int make_grid(cell *out, int cap, int full) {
    int n = 0, s, a, i;
    for (s = 0; s < nseeds; s++) {
        cell c;
        memset(&c, 0, sizeof c);
        c.seed = seeds[s];
        if (full) {
            for (;;) { /* odometer over every axis */
                push(out, &n, cap, &c);
                for (a = 0; a < AX_N && ++c.v[a] == ax[a].n; a++) c.v[a] = 0;
                if (a == AX_N) break;
            }
            continue;
        }
        push(out, &n, cap, &c);
        for (a = 0; a < AX_N; a++)
            for (i = 1; i < ax[a].n; i++) { cell d = c; d.v[a] = i; push(out, &n, cap, &d); }
        /* PRG / scratch / frozen at every label budget */
        for (i = 0; i < ax[AX_LABELS].n; i++) {
            int sc = value_index(AX_INIT, "scratch"), fr = value_index(AX_GRAD, "frozen");
            cell d = c;
            d.v[AX_LABELS] = i;
            push(out, &n, cap, &d);
            if (sc > 0) { cell e = d; e.v[AX_INIT] = sc; push(out, &n, cap, &e); }
            if (fr > 0) { cell e = d; e.v[AX_GRAD] = fr; push(out, &n, cap, &e); }
        }
    }
    return n;
}

/* mean and sample standard deviation of top-1/top-5/seconds over the seeds
   of the baseline cell with axis a (or also b) set; count 0: none ran */
static int stats(const cell *base, double m[3], double *sd1) {
    int s, k = 0;
    double q = 0;
    m[0] = m[1] = m[2] = 0;
    for (s = 0; s < nseeds; s++) {
        cell c = *base;
        char key[200];
        const result *r;
        c.seed = seeds[s];
        cell_key(&c, key, sizeof key);
        if (!(r = find_done(key))) continue;
        m[0] += r->top1; m[1] += r->top5; m[2] += r->secs; q += r->top1 * r->top1;
        k++;
    }
    if (k) {
        m[0] /= k; m[1] /= k; m[2] /= k;
        *sd1 = k > 1 ? sqrt(fmax(0, (q - k * m[0] * m[0]) / (k - 1))) : 0;
    }
    return k;
}

static void write_chart(prg_chart *c, const char *name) {
    char path[1100];
    prg_image im;
    snprintf(path, sizeof path, "%s/%s", outdir, name);
    c->y_label = "accuracy %";
    ex_check(prg_chart_write(path, c), path);
    memset(&im, 0, sizeof im);
    ex_check(prg_image_load(&im, path, 3), path); /* read back: the file decodes */
    printf("chart %s (%dx%d)\n", path, im.w, im.h);
    prg_image_free(&im);
}

static void report(void) {
    int a, i, g;
    cell base;
    memset(&base, 0, sizeof base);
    printf("\nbaseline: t_span %s, t_cutoff %s, grad %s, init %s, loss %s, beta %s, augment %s, labels %s; "
           "mean over %d seed%s (top-1 sd when more)\n",
           ax[0].val[0], ax[1].val[0], ax[2].val[0], ax[3].val[0], ax[4].val[0], ax[5].val[0], ax[6].val[0],
           ax[7].val[0], nseeds, nseeds > 1 ? "s" : "");
    for (a = 0; a < AX_N; a++) {
        double x[AX_CAP], y1[AX_CAP], y5[AX_CAP];
        const char *groups[AX_CAP];
        int k = 0;
        if (ax[a].n < 2) continue;
        printf("\n%-10s  top-1      top-5    seconds  (others at the baseline)\n", ax_name[a]);
        for (i = 0; i < ax[a].n; i++) {
            cell c = base;
            double m[3], sd = 0;
            c.v[a] = i;
            if (!stats(&c, m, &sd)) {
                if (!cell_valid(&c)) printf("%-10s  (no Euler step at t_span %s: skipped)\n", ax[a].val[i], ax[AX_SPAN].val[0]);
                else printf("%-10s  (not run)\n", ax[a].val[i]);
                continue;
            }
            if (nseeds > 1) printf("%-10s  %6.2f%% +-%.2f  %6.2f%%  %7.1f\n", ax[a].val[i], m[0], sd, m[1], m[2]);
            else printf("%-10s  %6.2f%%  %6.2f%%  %7.1f\n", ax[a].val[i], m[0], m[1], m[2]);
            x[k] = a == AX_LABELS && ax[a].num[i] == 0 ? NAN : ax[a].num[i];
            groups[k] = ax[a].val[i];
            y1[k] = m[0]; y5[k] = m[1];
            k++;
        }
        if (k >= 1) {
            prg_chart_series s[2];
            prg_chart c;
            char title[96], name[64];
            int line = ax_numeric[a] && a != AX_LABELS && k >= 2, p, q;
            for (p = 1; line && p < k; p++) /* a line runs left to right: the points by x (the table keeps the baseline first) */
                for (q = p; q > 0 && x[q - 1] > x[q]; q--) {
                    double t = x[q]; x[q] = x[q - 1]; x[q - 1] = t;
                    t = y1[q]; y1[q] = y1[q - 1]; y1[q - 1] = t;
                    t = y5[q]; y5[q] = y5[q - 1]; y5[q - 1] = t;
                }
            s[0].name = "top-1"; s[0].x = line ? x : NULL; s[0].y = y1; s[0].n = k;
            s[1].name = "top-5"; s[1].x = line ? x : NULL; s[1].y = y5; s[1].n = k;
            snprintf(title, sizeof title, "top-1 and top-5 vs %s", ax_name[a]);
            prg_chart_init(&c, line ? PRG_CHART_LINE : PRG_CHART_BARS, title, s, 2);
            c.x_label = ax_name[a];
            if (!line) { c.groups = groups; c.ngroups = k; }
            snprintf(name, sizeof name, "ablate-%s.png", ax_name[a]);
            write_chart(&c, name);
        }
    }
    /* PRG / scratch / frozen per label budget */
    {
        int sc = value_index(AX_INIT, "scratch"), fr = value_index(AX_GRAD, "frozen"), nser = 0, any = 0;
        double y[3][AX_CAP];
        const char *groups[AX_CAP], *names[3];
        prg_chart_series s[3];
        prg_chart c;
        int which[3];
        which[nser] = 0; names[nser++] = "PRG";
        if (sc > 0) { which[nser] = 1; names[nser++] = "scratch"; }
        if (fr > 0) { which[nser] = 2; names[nser++] = "frozen"; }
        if (nser < 2) return;
        printf("\nlabels      ");
        for (i = 0; i < nser; i++) printf("%-10s", names[i]);
        printf(" (top-1)\n");
        for (g = 0; g < ax[AX_LABELS].n; g++) {
            printf("%-10s", ax[AX_LABELS].val[g]);
            groups[g] = ax[AX_LABELS].val[g];
            for (i = 0; i < nser; i++) {
                cell d = base;
                double m[3], sd = 0;
                d.v[AX_LABELS] = g;
                if (which[i] == 1) d.v[AX_INIT] = sc;
                if (which[i] == 2) d.v[AX_GRAD] = fr;
                if (stats(&d, m, &sd)) { y[i][g] = m[0]; printf("  %6.2f%% ", m[0]); any = 1; }
                else { y[i][g] = NAN; printf("  %-8s", "-"); }
            }
            printf("\n");
        }
        if (!any) return;
        for (i = 0; i < nser; i++) { s[i].name = names[i]; s[i].x = NULL; s[i].y = y[i]; s[i].n = ax[AX_LABELS].n; }
        prg_chart_init(&c, PRG_CHART_BARS, "PRG / from scratch / frozen per label budget (top-1)", s, nser);
        c.x_label = "labelled images per class";
        c.groups = groups;
        c.ngroups = ax[AX_LABELS].n;
        write_chart(&c, "ablate-methods.png");
    }
}

static void preset(const char *p) {
    if (!strcmp(p, "demo")) {
        data = "data/mnist/train-images-idx3-ubyte.gz";
        test = "data/mnist/t10k-images-idx3-ubyte.gz";
        axis_set(AX_SPAN, "4,2,8"); axis_set(AX_CUT, "0,1,2"); axis_set(AX_GRAD, "exact,frozen");
        axis_set(AX_INIT, "pretrained,scratch"); axis_set(AX_LOSS, "icfm,ot,gvp"); axis_set(AX_LABELS, "all,10,100");
        pre_steps = 200; pre_batch = 64; ft_steps = 80; ft_batch = 32; eval_limit = 500; threads = 2;
    } else if (!strcmp(p, "tiny")) {
        data = "data/mnist/train-images-idx3-ubyte.gz";
        test = "data/mnist/t10k-images-idx3-ubyte.gz";
        axis_set(AX_SPAN, "2"); axis_set(AX_CUT, "0");
        pre_steps = 2; pre_batch = 8; ft_steps = 2; ft_batch = 8; eval_limit = 20; limit = 300; threads = 2;
        net = "--model-channels 8 --groups 4 --res-blocks 1 --channel-mult 1,2 --attention-ds none --heads 1";
    } else ex_usage_error("--preset", p, "wants demo or tiny");
}

int main(int argc, char **argv) {
    int max_cells = 0, full = 0, only_report = 0, n, i, ran = 0, skipped = 0;
    char dir[1100], csv[1100];
    static cell grid[4096];
    static char bindir[1024];
    ex_prog = "ablate";
    axis_set(AX_SPAN, "2"); axis_set(AX_CUT, "0"); axis_set(AX_GRAD, "exact"); axis_set(AX_INIT, "pretrained");
    axis_set(AX_LOSS, "icfm"); axis_set(AX_BETA, "0"); axis_set(AX_AUG, "none"); axis_set(AX_LABELS, "all");
    nseeds = 1; seeds[0] = 0;
    ex_argc = argc; ex_argv = argv;
    for (ex_argi = 1; ex_argi < argc; ex_argi++) { /* the preset first, so that the other flags override it */
        if (EX_FLAG("--help") || EX_FLAG("-h")) { usage(); return 0; }
        if (EX_FLAG("--preset")) preset(ex_val());
    }
    for (ex_argi = 1; ex_argi < argc; ex_argi++) {
        int a, hit = 0;
        for (a = 0; a < AX_N; a++) if (EX_FLAG(ax_flag[a])) { axis_set(a, ex_val()); hit = 1; }
        if (hit) continue;
        if (EX_FLAG("--preset")) ex_val();
        else if (EX_FLAG("--seeds")) nseeds = ex_int_list("--seeds", ex_val(), seeds, AX_CAP, 0, INT_MAX);
        else if (EX_FLAG("--grid")) {
            const char *g = ex_val();
            if (strcmp(g, "axes") && strcmp(g, "full")) ex_usage_error("--grid", g, "wants axes or full");
            full = !strcmp(g, "full");
        }
        else if (EX_FLAG("--data")) data = ex_val();
        else if (EX_FLAG("--test")) test = ex_val();
        else if (EX_FLAG("--pre-steps")) pre_steps = ex_int_in(1, 1000000000);
        else if (EX_FLAG("--pre-batch")) pre_batch = ex_int_in(1, 65536);
        else if (EX_FLAG("--pre-lr")) pre_lr = ex_num_in(0, 1, 1);
        else if (EX_FLAG("--ft-steps")) ft_steps = ex_int_in(1, 1000000000);
        else if (EX_FLAG("--ft-batch")) ft_batch = ex_int_in(1, 65536);
        else if (EX_FLAG("--ft-lr")) ft_lr = ex_num_in(0, 1, 1);
        else if (EX_FLAG("--limit")) limit = ex_int_in(0, INT_MAX);
        else if (EX_FLAG("--eval-limit")) eval_limit = ex_int_in(0, INT_MAX);
        else if (EX_FLAG("--net")) net = ex_val();
        else if (EX_FLAG("--threads")) threads = ex_int_in(0, 1024);
        else if (EX_FLAG("--bin")) bin = ex_val();
        else if (EX_FLAG("--out")) outdir = ex_val();
        else if (EX_FLAG("--max-cells")) max_cells = ex_int_in(1, INT_MAX);
        else if (EX_FLAG("--report")) only_report = 1;
        else ex_bad_flag();
    }
    if (!bin) { /* the directory of this program */
        const char *sl = strrchr(argv[0], '/');
        if (sl) snprintf(bindir, sizeof bindir, "%.*s", (int)(sl - argv[0]), argv[0]);
        else snprintf(bindir, sizeof bindir, "build");
        bin = bindir;
    }
    if (!only_report && (!data || !test)) { usage(); return 2; }
    if (!only_report) { ex_check_input(data, "--data"); ex_check_input(test, "--test"); }
    snprintf(dir, sizeof dir, "%s/cells", outdir);
    {
        char cmd[2400], q[1200];
        shq(q, sizeof q, dir);
        snprintf(cmd, sizeof cmd, "mkdir -p %s", q);
        if (system(cmd) != 0) { fprintf(stderr, "ablate: cannot create %s\n", dir); return 1; }
    }
    snprintf(csv, sizeof csv, "%s/ablate.csv", outdir);
    load_csv(csv);
    n = make_grid(grid, (int)(sizeof grid / sizeof grid[0]), full);
    ex_catch_signals();
    for (i = 0; i < n; i++) {
        char key[200];
        cell_key(&grid[i], key, sizeof key);
        if (find_done(key)) skipped++;
    }
    printf("ablate: %d cells (%s grid, %d seed%s), %d already in %s\n", n, full ? "full" : "axes", nseeds,
           nseeds > 1 ? "s" : "", skipped, csv);
    for (i = 0; i < n && !only_report; i++) {
        char key[200];
        cell_key(&grid[i], key, sizeof key);
        if (find_done(key)) continue;
        if (max_cells && ran >= max_cells) {
            printf("ablate: --max-cells %d reached; %d cells left (rerun to continue)\n", max_cells, n - skipped - ran);
            break;
        }
        run_cell(&grid[i], key);
        ran++;
        if (ex_stop) { /* SIGTERM to this process alone: the cell finished and is in the CSV */
            printf("ablate: stopped by signal %d after the cell above; a rerun continues\n", (int)ex_stop);
            return 128 + (int)ex_stop;
        }
    }
    if (!only_report) printf("ablate: %d cells run, %d skipped (in the CSV already)\n", ran, skipped);
    report();
    free(done);
    return 0;
}
