// test_unet_load_errors.c — bad diffusers UNet folders and bad inputs to `diffurl unet`, each refused with a
// message that names the file and the tensor or key (host/unet_load.c, host/unet_config.c, host/cli_unet.c).
//
// Model folders are built under a fresh /tmp directory from the lin2 fixture (tests/fixtures/unet/lin2: its
// config.json and the tensors of its diffusion_pytorch_model.safetensors, rewritten with safetensors_write):
//  - a missing tensor (its name and shape in the message; several missing: the count, all listed on stderr);
//  - a wrong shape (name and both shapes): a conv kernel 1×1 instead of 3×3, a transposed linear weight, an
//    extra dimension on a bias;
//  - an extra, unexpected tensor only: loads, warns by name on stderr, and the forward output is bitwise the
//    clean model's;
//  - truncated weights (empty, 7 bytes, mid-header, mid-data, one byte short) and a non-safetensors file:
//    refused naming the file;
//  - a config.json with an unsupported or unknown key: refused naming the key and the value;
//  - missing config.json, missing weights, a folder that does not exist, an empty config.json;
//  - the pipeline layout (model under unet/) and the bare UNet folder both load;
//  - F16 and BF16 weights files load to exactly the rounded values; forward within 3e-3 / 2e-2 of F32.
// `diffurl unet` (cmd_unet called directly, stdout/stderr captured): a successful forward(+backward) writes
// `out` of the right shape and values; a missing encoder_hidden_states / grad_out, a sample with the wrong
// channel count, a context of the wrong width, a timestep of the wrong batch: exit 1 naming the key (and both
// shapes); --help 0; missing --model 2; a bad model folder or IN file: exit 1 naming it; a sample size the
// UNet cannot downsample: a clean non-zero exit (run in a forked child), never a crash.
#define _GNU_SOURCE
#include <fcntl.h>
#include <ftw.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "harness.h"
#include "safetensors.h"
#include "unet.h"

#define LIN2_DIR "tests/fixtures/unet/lin2"
#define LIN2_CONFIG LIN2_DIR "/unet/config.json"
#define LIN2_WEIGHTS LIN2_DIR "/unet/diffusion_pytorch_model.safetensors"
#define LIN2_IO LIN2_DIR "/io.safetensors"
#define WEIGHTS_NAME "diffusion_pytorch_model.safetensors"

static char tmp_root[64];
static Backend *cpu;

// ---- files ----------------------------------------------------------------------------------------------

static uint8_t *read_bytes(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    DF_CHECK(f != NULL, "the test can read its fixture / temp file");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = DF_MALLOC((size_t)n + 1, "file bytes");
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    buf[got] = 0;
    *size = got;
    return buf;
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = DF_FOPEN(path, "wb");
    if (n) DF_FWRITE(data, n, f, path);
    DF_FCLOSE(f, path);
}

// tmp_root/<name>; created (as a folder) when mkdir_it.
static const char *tmp_sub(char *buf, size_t size, const char *name, bool mkdir_it) {
    snprintf(buf, size, "%s/%s", tmp_root, name);
    if (mkdir_it) DF_CHECK(mkdir(buf, 0700) == 0, "mkdir of a test folder under the temp root");
    return buf;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

// ---- the lin2 tensors -----------------------------------------------------------------------------------

typedef struct {
    char name[176];
    int ndim;
    int64_t shape[DF_MAX_DIMS];
    size_t numel;
    float *data;  // fp32, owned
} HostTensor;

typedef struct {
    HostTensor *t;
    int count;
} TensorSet;

static TensorSet read_all(const char *path) {
    SafeTensorsFile f;
    TensorSet s = {0};
    DF_CHECK(safetensors_open(&f, path) == 0, "the lin2 fixture weights open");
    s.t = DF_CALLOC((size_t)f.count + 8, sizeof(HostTensor), "tensor set");
    for (int i = 0; i < f.count; i++) {
        const SafeTensorInfo *ti = &f.tensors[i];
        HostTensor *h = &s.t[s.count++];
        snprintf(h->name, sizeof h->name, "%s", ti->name);
        h->ndim = ti->ndim;
        h->numel = 1;
        for (int d = 0; d < ti->ndim; d++) h->numel *= (size_t)(h->shape[d] = ti->shape[d]);
        h->data = DF_MALLOC(h->numel * sizeof(float), "tensor copy");
        DF_CHECK(safetensors_read_f32(&f, ti, h->data) == 0, "the lin2 fixture tensors read");
    }
    safetensors_close(&f);
    return s;
}

static void free_set(TensorSet *s) {
    for (int i = 0; i < s->count; i++) free(s->t[i].data);
    free(s->t);
    s->t = NULL, s->count = 0;
}

static TensorSet copy_set(const TensorSet *src) {
    TensorSet s = {DF_CALLOC((size_t)src->count + 8, sizeof(HostTensor), "tensor set"), src->count};
    for (int i = 0; i < src->count; i++) {
        s.t[i] = src->t[i];
        s.t[i].data = test_alloc_copy(src->t[i].data, src->t[i].numel);
    }
    return s;
}

static HostTensor *find_tensor(TensorSet *s, const char *name) {
    for (int i = 0; i < s->count; i++)
        if (!strcmp(s->t[i].name, name)) return &s->t[i];
    DF_FATAL("test: lin2 has no tensor '%s'", name);
}

static void remove_tensor(TensorSet *s, const char *name) {
    HostTensor *h = find_tensor(s, name);
    free(h->data);
    *h = s->t[--s->count];
}

// Gives tensor `name` a new shape (and new random data of that size).
static void reshape_tensor(TensorSet *s, const char *name, int ndim, const int64_t *shape, TestRng *rng) {
    HostTensor *h = find_tensor(s, name);
    h->ndim = ndim;
    h->numel = 1;
    for (int d = 0; d < ndim; d++) h->numel *= (size_t)(h->shape[d] = shape[d]);
    free(h->data);
    h->data = test_alloc_normal(rng, h->numel, 0.1f);
}

static void add_tensor(TensorSet *s, const char *name, int ndim, const int64_t *shape, TestRng *rng) {
    HostTensor *h = &s->t[s->count++];
    memset(h, 0, sizeof *h);
    snprintf(h->name, sizeof h->name, "%s", name);
    h->ndim = ndim;
    h->numel = 1;
    for (int d = 0; d < ndim; d++) h->numel *= (size_t)(h->shape[d] = shape[d]);
    h->data = test_alloc_normal(rng, h->numel, 0.1f);
}

// Writes the set as `dtype` (F32, F16 or BF16) to path.
static void write_set(const char *path, const TensorSet *s, DType dtype) {
    SafeTensorsEntry *e = DF_CALLOC((size_t)s->count, sizeof *e, "entries");
    void **bufs = DF_CALLOC((size_t)s->count, sizeof(void *), "converted");
    for (int i = 0; i < s->count; i++) {
        const HostTensor *h = &s->t[i];
        e[i].name = h->name;
        e[i].dtype = dtype;
        e[i].ndim = h->ndim;
        memcpy(e[i].shape, h->shape, sizeof h->shape);
        if (dtype == DT_F32) {
            e[i].data = h->data;
        } else {
            uint16_t *c = DF_MALLOC((h->numel ? h->numel : 1) * sizeof(uint16_t), "converted tensor");
            for (size_t k = 0; k < h->numel; k++) c[k] = dtype == DT_F16 ? f32_to_f16(h->data[k]) : f32_to_bf16(h->data[k]);
            e[i].data = bufs[i] = c;
        }
    }
    DF_CHECK(safetensors_write(path, e, s->count, NULL, 0) == 0, "the test writes its weights file");
    for (int i = 0; i < s->count; i++) free(bufs[i]);
    free(bufs);
    free(e);
}

// A model folder tmp_root/<name> with lin2's config.json (or `config_text`) and the set as weights.
static const char *make_model(char *dir, size_t size, const char *name, const char *config_text, const TensorSet *s,
                              DType dtype) {
    tmp_sub(dir, size, name, true);
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (config_text) {
        write_bytes(path, config_text, strlen(config_text));
    } else {
        size_t n;
        uint8_t *cfg = read_bytes(LIN2_CONFIG, &n);
        write_bytes(path, cfg, n);
        free(cfg);
    }
    if (s) {
        snprintf(path, sizeof path, "%s/" WEIGHTS_NAME, dir);
        write_set(path, s, dtype);
    }
    return dir;
}

// ---- capturing stdout / stderr --------------------------------------------------------------------------

static int saved_out = -1, saved_err = -1;
static char cap_out_path[128], cap_err_path[128];

static void capture_begin(void) {
    snprintf(cap_out_path, sizeof cap_out_path, "%s/captured.out", tmp_root);
    snprintf(cap_err_path, sizeof cap_err_path, "%s/captured.err", tmp_root);
    fflush(stdout);
    fflush(stderr);
    saved_out = dup(1), saved_err = dup(2);
    int fo = open(cap_out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int fe = open(cap_err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    DF_CHECK(saved_out >= 0 && saved_err >= 0 && fo >= 0 && fe >= 0, "cannot redirect stdout/stderr for the test");
    dup2(fo, 1);
    dup2(fe, 2);
    close(fo);
    close(fe);
}

// Restores stdout/stderr; the captured text in malloc'd *out / *err (either may be NULL: discarded).
static void capture_end(char **out, char **err) {
    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    close(saved_out);
    close(saved_err);
    size_t n;
    char *o = (char *)read_bytes(cap_out_path, &n), *e = (char *)read_bytes(cap_err_path, &n);
    unlink(cap_out_path);
    unlink(cap_err_path);
    if (out) *out = o;
    else free(o);
    if (err) *err = e;
    else free(e);
}

// unet_load with stderr captured into *err (malloc'd).
static UNet *load_captured(const char *dir, char **err) {
    capture_begin();
    UNet *m = unet_load(dir, cpu);
    capture_end(NULL, err);
    return m;
}

// ---- forward on the io.safetensors inputs ---------------------------------------------------------------

typedef struct {
    int B, C, H, W, L, D, Co;
    float *sample_nhwc, *t, *ctx, *want_out_nhwc;  // host
    size_t n_out;
} IoInputs;

static float *io_read(const SafeTensorsFile *f, const char *name, size_t *numel) {
    const SafeTensorInfo *t = safetensors_find(f, name);
    DF_CHECK(t != NULL, "the lin2 io fixture holds sample, timestep, encoder_hidden_states, out");
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
    float *x = DF_MALLOC(n * sizeof(float), name);
    DF_CHECK(safetensors_read_f32(f, t, x) == 0, "the lin2 io fixture reads");
    if (numel) *numel = n;
    return x;
}

static IoInputs io_load(void) {
    IoInputs io;
    SafeTensorsFile f;
    DF_CHECK(safetensors_open(&f, LIN2_IO) == 0, "the lin2 io fixture opens");
    const SafeTensorInfo *ts = safetensors_find(&f, "sample"), *tc = safetensors_find(&f, "encoder_hidden_states");
    const SafeTensorInfo *to = safetensors_find(&f, "out");
    DF_CHECK(ts && tc && to, "the lin2 io fixture holds sample, encoder_hidden_states, out");
    io.B = (int)ts->shape[0], io.C = (int)ts->shape[1], io.H = (int)ts->shape[2], io.W = (int)ts->shape[3];
    io.L = (int)tc->shape[1], io.D = (int)tc->shape[2], io.Co = (int)to->shape[1];
    float *sample = io_read(&f, "sample", NULL), *out = io_read(&f, "out", &io.n_out);
    io.t = io_read(&f, "timestep", NULL);
    io.ctx = io_read(&f, "encoder_hidden_states", NULL);
    io.sample_nhwc = DF_MALLOC((size_t)io.B * io.C * io.H * io.W * sizeof(float), "sample");
    layout_nchw_to_nhwc(io.sample_nhwc, sample, io.B, io.C, io.H, io.W);
    io.want_out_nhwc = DF_MALLOC(io.n_out * sizeof(float), "out");
    layout_nchw_to_nhwc(io.want_out_nhwc, out, io.B, io.Co, io.H, io.W);
    free(sample);
    free(out);
    safetensors_close(&f);
    return io;
}

static void io_free(IoInputs *io) {
    free(io->sample_nhwc), free(io->t), free(io->ctx), free(io->want_out_nhwc);
}

// The model's output [B, H, W, Co] on the io inputs (malloc'd host array).
static float *forward(UNet *m, const IoInputs *io) {
    size_t n_in = (size_t)io->B * io->C * io->H * io->W, n_ctx = (size_t)io->B * io->L * io->D;
    float *d_s = dev_upload(cpu, io->sample_nhwc, n_in), *d_t = dev_upload(cpu, io->t, (size_t)io->B);
    float *d_c = dev_upload(cpu, io->ctx, n_ctx), *d_o = dev_poison(cpu, io->n_out);
    unet_forward(m, d_o, d_s, d_t, d_c, io->B, io->H, io->W, io->L);
    float *out = dev_download_new(cpu, d_o, io->n_out);
    cpu->free(cpu, d_s), cpu->free(cpu, d_t), cpu->free(cpu, d_c), cpu->free(cpu, d_o);
    return out;
}

// ---- the cases ------------------------------------------------------------------------------------------

static bool has(const char *text, const char *needle) { return text && strstr(text, needle) != NULL; }

// (a) one tensor missing; (a') three missing
static void test_missing_tensor(const TensorSet *clean) {
    char dir[256], weights[512], *err;
    TensorSet s = copy_set(clean);
    const char *gone = "down_blocks.0.attentions.0.proj_in.weight";
    remove_tensor(&s, gone);
    make_model(dir, sizeof dir, "missing1", NULL, &s, DT_F32);
    snprintf(weights, sizeof weights, "%s/" WEIGHTS_NAME, dir);
    UNet *m = load_captured(dir, &err);
    const char *msg = df_error_message();
    CHECK(m == NULL, "a model missing '%s' is refused", gone);
    CHECK(has(msg, weights) && has(msg, gone) && has(msg, "[12, 12]") && has(msg, "1 missing"),
          "missing tensor: the message names the file, the tensor and its shape: %s", msg);
    CHECK(has(err, gone), "missing tensor: listed on stderr: %s", err);
    printf("  missing tensor: %s\n", msg);
    free(err);
    unet_free(m);
    free_set(&s);

    s = copy_set(clean);
    const char *gone3[] = {"conv_in.weight", "mid_block.attentions.0.transformer_blocks.0.ff.net.2.bias",
                           "up_blocks.1.resnets.1.conv_shortcut.weight"};
    for (int i = 0; i < 3; i++) remove_tensor(&s, gone3[i]);
    make_model(dir, sizeof dir, "missing3", NULL, &s, DT_F32);
    m = load_captured(dir, &err);
    msg = df_error_message();
    CHECK(m == NULL && has(msg, "3 missing") && has(msg, dir), "three missing tensors: refused, counted: %s", msg);
    CHECK(has(err, gone3[0]) && has(err, gone3[1]) && has(err, gone3[2]), "three missing tensors: each named on stderr:\n%s",
          err);
    free(err);
    unet_free(m);
    free_set(&s);
}

// (b) wrong shapes: name + both shapes in the message
static void test_wrong_shape(const TensorSet *clean, TestRng *rng) {
    static const struct {
        const char *name;
        int ndim;
        int64_t shape[4];
        const char *got, *want;
    } cases[] = {
        {"conv_in.weight", 4, {12, 4, 1, 1}, "[12, 4, 1, 1]", "[12, 4, 3, 3]"},                  // a 1×1 kernel
        {"time_embedding.linear_1.weight", 2, {12, 48}, "[12, 48]", "[48, 12]"},                 // transposed
        {"up_blocks.1.resnets.0.norm1.bias", 2, {28, 1}, "[28, 1]", "[28]"},                     // an extra dim
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char dir[256], weights[512], sub[32], *err;
        TensorSet s = copy_set(clean);
        reshape_tensor(&s, cases[i].name, cases[i].ndim, cases[i].shape, rng);
        snprintf(sub, sizeof sub, "shape%zu", i);
        make_model(dir, sizeof dir, sub, NULL, &s, DT_F32);
        snprintf(weights, sizeof weights, "%s/" WEIGHTS_NAME, dir);
        UNet *m = load_captured(dir, &err);
        const char *msg = df_error_message();
        CHECK(m == NULL, "wrong shape of '%s' refuses the model", cases[i].name);
        CHECK(has(msg, weights) && has(msg, cases[i].name) && has(msg, cases[i].got) && has(msg, cases[i].want) &&
                  has(msg, "1 mismatched"),
              "wrong shape: the message names the file, '%s', %s and %s: %s", cases[i].name, cases[i].got,
              cases[i].want, msg);
        CHECK(has(err, cases[i].name) && has(err, cases[i].got), "wrong shape: reported on stderr: %s", err);
        if (i == 0) printf("  wrong shape: %s\n", msg);
        free(err);
        unet_free(m);
        free_set(&s);
    }
}

// (c) unexpected tensors only: loads, warns, and computes exactly what the clean model computes
static void test_unexpected(const TensorSet *clean, const IoInputs *io, const float *clean_out, TestRng *rng) {
    char dir[256], *err;
    TensorSet s = copy_set(clean);
    const int64_t sh1[1] = {7}, sh2[2] = {3, 5};
    add_tensor(&s, "down_blocks.0.attentions.0.extra_proj.weight", 2, sh2, rng);
    add_tensor(&s, "text_model.embeddings.position_ids", 1, sh1, rng);
    make_model(dir, sizeof dir, "unexpected", NULL, &s, DT_F32);
    UNet *m = load_captured(dir, &err);
    if (!CHECK(m != NULL, "extra tensors only: the model loads: %s", df_error_message())) {
        free(err);
        free_set(&s);
        return;
    }
    CHECK(has(err, "down_blocks.0.attentions.0.extra_proj.weight") && has(err, "text_model.embeddings.position_ids") &&
              has(err, "warning") && has(err, "2 tensors"),
          "extra tensors: named on stderr with a warning:\n%s", err);
    printf("  unexpected tensors (stderr):\n%s", err);
    float *out = forward(m, io);
    CHECK(bitwise_equal(out, clean_out, io->n_out * sizeof(float)),
          "extra tensors: forward is bitwise the clean model's");
    free(out);
    free(err);
    unet_free(m);
    free_set(&s);
}

// (d) truncated and foreign weights files
static void test_truncated(void) {
    size_t size;
    uint8_t *bytes = read_bytes(LIN2_WEIGHTS, &size);
    uint64_t header = 0;
    for (int i = 7; i >= 0; i--) header = header << 8 | bytes[i];
    const struct {
        const char *what;
        size_t keep;
    } cuts[] = {
        {"empty", 0},
        {"7 bytes", 7},
        {"length only", 8},
        {"mid-header", 8 + (size_t)header / 2},
        {"header only", 8 + (size_t)header},
        {"mid-data", 8 + (size_t)header + (size - 8 - (size_t)header) / 2},
        {"one byte short", size - 1},
    };
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        char dir[256], sub[32], weights[512], *err;
        snprintf(sub, sizeof sub, "trunc%zu", i);
        make_model(dir, sizeof dir, sub, NULL, NULL, DT_F32);
        snprintf(weights, sizeof weights, "%s/" WEIGHTS_NAME, dir);
        write_bytes(weights, bytes, cuts[i].keep);
        UNet *m = load_captured(dir, &err);
        const char *msg = df_error_message();
        CHECK(m == NULL && has(msg, weights), "weights truncated (%s, %zu of %zu bytes): refused naming the file: %s",
              cuts[i].what, cuts[i].keep, size, msg);
        printf("  truncated %-15s → %s\n", cuts[i].what, msg);
        free(err);
        unet_free(m);
    }
    free(bytes);

    // a PyTorch zip / pickle checkpoint saved under the safetensors name
    char dir[256], weights[512], *err;
    make_model(dir, sizeof dir, "pickle", NULL, NULL, DT_F32);
    snprintf(weights, sizeof weights, "%s/" WEIGHTS_NAME, dir);
    const char zip[] = "PK\003\004\024\000\000\000\000\000archive/data.pkl\200\002}q\000(X\007\000\000\000conv_in";
    write_bytes(weights, zip, sizeof zip - 1);
    UNet *m = load_captured(dir, &err);
    CHECK(m == NULL && has(df_error_message(), weights), "a zip/pickle file is refused naming it: %s", df_error_message());
    printf("  pickle under the safetensors name → %s\n", df_error_message());
    free(err);
    unet_free(m);
}

// (e) config.json with an unsupported or unknown key
static void test_bad_config(const TensorSet *clean) {
    size_t n;
    char *lin2 = (char *)read_bytes(LIN2_CONFIG, &n);
    const struct {
        const char *sub, *find, *replace, *needles[3];
    } cases[] = {
        {"cfg_class", "\"class_embed_type\": null", "\"class_embed_type\": \"timestep\"", {"class_embed_type", "timestep"}},
        {"cfg_addition", "\"addition_embed_type\": null", "\"addition_embed_type\": \"text\"",
         {"addition_embed_type", "text"}},
        {"cfg_unknown", "{", "{\"foo_bar\": 3,", {"foo_bar", "3"}},
        {"cfg_duplicate", "{", "{\"cross_attention_dim\": 32,", {"cross_attention_dim", "more than once"}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        // lin2's config with one key's value replaced, or a key inserted after the opening brace
        const char *at = strstr(lin2, cases[i].find);
        if (!CHECK(at != NULL, "lin2 config contains %s", cases[i].find)) continue;
        size_t len = n + strlen(cases[i].replace) + 1;
        char *text = DF_MALLOC(len, "config");
        snprintf(text, len, "%.*s%s%s", (int)(at - lin2), lin2, cases[i].replace, at + strlen(cases[i].find));
        char dir[256], config[512], *err;
        make_model(dir, sizeof dir, cases[i].sub, text, clean, DT_F32);
        snprintf(config, sizeof config, "%s/config.json", dir);
        UNet *m = load_captured(dir, &err);
        const char *msg = df_error_message();
        bool named = has(msg, config);
        for (int k = 0; k < 3 && cases[i].needles[k]; k++) named = named && has(msg, cases[i].needles[k]);
        CHECK(m == NULL && named, "config with %s: refused naming the file, key and value: %s", cases[i].replace, msg);
        printf("  config %s → %s\n", cases[i].replace, msg);
        free(err);
        free(text);
        unet_free(m);
    }
    free(lin2);
}

// (f) missing pieces
static void test_missing_files(const TensorSet *clean) {
    char dir[256], path[512], *err;
    // weights but no config.json
    tmp_sub(dir, sizeof dir, "noconfig", true);
    snprintf(path, sizeof path, "%s/" WEIGHTS_NAME, dir);
    write_set(path, clean, DT_F32);
    UNet *m = load_captured(dir, &err);
    CHECK(m == NULL && has(df_error_message(), dir) && has(df_error_message(), "config.json"),
          "no config.json: refused naming the folder and config.json: %s", df_error_message());
    printf("  no config.json → %s\n", df_error_message());
    free(err);
    unet_free(m);

    // config.json but no weights
    make_model(dir, sizeof dir, "noweights", NULL, NULL, DT_F32);
    snprintf(path, sizeof path, "%s/" WEIGHTS_NAME, dir);
    m = load_captured(dir, &err);
    CHECK(m == NULL && has(df_error_message(), path), "no weights: refused naming the weights path: %s",
          df_error_message());
    printf("  no weights → %s\n", df_error_message());
    free(err);
    unet_free(m);

    // a pipeline folder whose unet/ has the config but not the weights
    tmp_sub(dir, sizeof dir, "pipe_noweights", true);
    make_model(path, sizeof path, "pipe_noweights/unet", NULL, NULL, DT_F32);
    char want[600];
    snprintf(want, sizeof want, "%s/" WEIGHTS_NAME, path);
    m = load_captured(dir, &err);
    CHECK(m == NULL && has(df_error_message(), want), "pipeline without unet weights: names %s: %s", want,
          df_error_message());
    free(err);
    unet_free(m);

    // a folder that does not exist
    snprintf(dir, sizeof dir, "%s/does_not_exist", tmp_root);
    m = load_captured(dir, &err);
    CHECK(m == NULL && has(df_error_message(), dir), "a folder that does not exist: refused naming it: %s",
          df_error_message());
    printf("  no such folder → %s\n", df_error_message());
    free(err);
    unet_free(m);

    // an empty config.json
    make_model(dir, sizeof dir, "emptyconfig", "", clean, DT_F32);
    snprintf(path, sizeof path, "%s/config.json", dir);
    m = load_captured(dir, &err);
    CHECK(m == NULL && has(df_error_message(), path), "an empty config.json: refused naming it: %s", df_error_message());
    printf("  empty config.json → %s\n", df_error_message());
    free(err);
    unet_free(m);

    // unet_load_weights on a path that does not exist
    UNetConfig cfg;
    DF_CHECK(unet_config_load(&cfg, LIN2_CONFIG) == 0, "lin2 config parses");
    m = unet_create(&cfg, cpu);
    snprintf(path, sizeof path, "%s/nothing.safetensors", tmp_root);
    capture_begin();
    int rc = unet_load_weights(m, path);
    capture_end(NULL, NULL);
    CHECK(rc < 0 && has(df_error_message(), path), "unet_load_weights on a missing file: %s", df_error_message());
    unet_free(m);
}

// (g) layouts that load: the pipeline layout (unet/ below, with model_index.json) and the bare UNet folder
static void test_layouts(const TensorSet *clean, const IoInputs *io, const float *clean_out) {
    char dir[256], sub[512], *err;
    tmp_sub(dir, sizeof dir, "pipeline", true);
    snprintf(sub, sizeof sub, "%s/model_index.json", dir);
    const char *index = "{\"_class_name\": \"StableDiffusionPipeline\", \"unet\": [\"diffusers\", \"UNet2DConditionModel\"]}";
    write_bytes(sub, index, strlen(index));
    make_model(sub, sizeof sub, "pipeline/unet", NULL, clean, DT_F32);
    UNet *m = load_captured(dir, &err);
    if (CHECK(m != NULL, "pipeline folder (unet/ below) loads: %s", df_error_message())) {
        CHECK(!has(err, "missing") && !has(err, "unexpected"), "pipeline folder: no missing/unexpected tensors: %s", err);
        float *out = forward(m, io);
        CHECK(bitwise_equal(out, clean_out, io->n_out * sizeof(float)), "pipeline folder: same output as the fixture");
        free(out);
    }
    free(err);
    unet_free(m);

    m = load_captured(LIN2_DIR "/unet", &err);
    CHECK(m != NULL, "the bare UNet folder (config.json next to the weights) loads: %s", df_error_message());
    free(err);
    unet_free(m);
}

// (h) F16 and BF16 weights: exactly the rounded values, forward close to F32
static void test_half_weights(const TensorSet *clean, const IoInputs *io, const float *clean_out) {
    const DType dtypes[2] = {DT_F16, DT_BF16};
    for (int k = 0; k < 2; k++) {
        DType dt = dtypes[k];
        char dir[256], sub[32], *err;
        snprintf(sub, sizeof sub, "weights_%s", dtype_name(dt));
        make_model(dir, sizeof dir, sub, NULL, clean, dt);
        UNet *m = load_captured(dir, &err);
        free(err);
        if (!CHECK(m != NULL, "%s weights load: %s", dtype_name(dt), df_error_message())) continue;
        // every parameter holds exactly the rounded fixture value
        int wrong = 0;
        for (int i = 0; i < unet_param_count(m); i++) {
            const UNetParam *p = unet_param(m, i);
            HostTensor *h = find_tensor((TensorSet *)clean, p->name);
            float *got = DF_MALLOC(p->numel * sizeof(float), "param");
            unet_read_param(m, p, got, false);
            for (size_t j = 0; j < p->numel; j++) {
                float want = dt == DT_F16 ? f16_to_f32(f32_to_f16(h->data[j])) : bf16_to_f32(f32_to_bf16(h->data[j]));
                if (float_bits(got[j]) != float_bits(want)) {
                    wrong++;
                    break;
                }
            }
            free(got);
        }
        CHECK(wrong == 0, "%s weights: every parameter is the rounded fixture value (%d differ)", dtype_name(dt), wrong);
        float *out = forward(m, io);
        double vs_f32 = rel_error(out, clean_out, io->n_out), vs_torch = rel_error(out, io->want_out_nhwc, io->n_out);
        // Same weights rounded: F16 keeps 11 significant bits, BF16 8 (~2e-3 relative per weight), and the error
        // accumulates through ~20 layers (measured: 9.5e-4 and 8.2e-3). A wrong conversion is off by O(1); the
        // exact-value check above already pins the rounding itself.
        double tol = dt == DT_F16 ? 3e-3 : 2e-2;
        CHECK(vs_f32 <= tol && vs_f32 > 0.0, "%s weights: forward vs the F32 model rel err %.3e (want (0, %g])",
              dtype_name(dt), vs_f32, tol);
        CHECK(vs_torch <= tol, "%s weights: forward vs diffusers' out rel err %.3e", dtype_name(dt), vs_torch);
        printf("  %s weights: forward rel err %.2e vs F32, %.2e vs diffusers\n", dtype_name(dt), vs_f32, vs_torch);
        free(out);
        unet_free(m);
    }
}

// ---- diffurl unet ---------------------------------------------------------------------------------------

static int run_unet(int argc, char **argv, char **out, char **err) {
    capture_begin();
    int code = cmd_unet(argc, argv);
    capture_end(out, err);
    return code;
}

// An IN file from the io fixture: sample (optionally with its channels cut to `sample_c`), timestep
// (batch `t_batch`), encoder_hidden_states (width `ctx_d`; 0 leaves it out).
static void write_in(const char *path, int sample_c, int t_batch, int ctx_d, bool with_grad_out) {
    SafeTensorsFile f;
    DF_CHECK(safetensors_open(&f, LIN2_IO) == 0, "the lin2 io fixture opens");
    float *sample = io_read(&f, "sample", NULL), *t = io_read(&f, "timestep", NULL);
    float *ctx = io_read(&f, "encoder_hidden_states", NULL), *gout = io_read(&f, "grad_out", NULL);
    const SafeTensorInfo *ts = safetensors_find(&f, "sample"), *tc = safetensors_find(&f, "encoder_hidden_states");
    const SafeTensorInfo *tg = safetensors_find(&f, "grad_out");
    int64_t B = ts->shape[0], H = ts->shape[2], W = ts->shape[3], L = tc->shape[1];
    float *tt = DF_MALLOC((size_t)t_batch * sizeof(float), "t");
    for (int i = 0; i < t_batch; i++) tt[i] = t[i % B];
    SafeTensorsEntry e[4];
    int n = 0;
    // the first sample_c channels of each batch item are contiguous runs of H*W in NCHW: rebuild them
    float *cut = DF_MALLOC((size_t)(B * sample_c * H * W) * sizeof(float), "cut sample");
    for (int b = 0; b < B; b++)
        for (int c = 0; c < sample_c; c++)
            memcpy(cut + (size_t)(b * sample_c + c) * H * W, sample + (size_t)(b * ts->shape[1] + c) * H * W,
                   (size_t)(H * W) * sizeof(float));
    e[n++] = (SafeTensorsEntry){"sample", DT_F32, 4, {B, sample_c, H, W}, cut};
    e[n++] = (SafeTensorsEntry){"timestep", DT_F32, 1, {t_batch}, tt};
    float *cc = NULL;
    if (ctx_d > 0) {
        cc = DF_MALLOC((size_t)(B * L * ctx_d) * sizeof(float), "ctx");
        for (int64_t i = 0; i < B * L; i++)
            for (int d = 0; d < ctx_d; d++) cc[i * ctx_d + d] = ctx[i * tc->shape[2] + d % tc->shape[2]];
        e[n++] = (SafeTensorsEntry){"encoder_hidden_states", DT_F32, 3, {B, L, ctx_d}, cc};
    }
    if (with_grad_out) e[n++] = (SafeTensorsEntry){"grad_out", DT_F32, 4, {tg->shape[0], tg->shape[1], H, W}, gout};
    DF_CHECK(safetensors_write(path, e, n, NULL, 0) == 0, "the test writes its IN file");
    free(sample), free(t), free(ctx), free(gout), free(tt), free(cut), free(cc);
    safetensors_close(&f);
}

static void test_cli(const IoInputs *io) {
    char in[256], out_path[256], *out, *err;
    snprintf(out_path, sizeof out_path, "%s/cli_out.safetensors", tmp_root);

    // success: forward + backward on the fixture's own io file
    char *ok_argv[] = {"unet", "--model", LIN2_DIR, "--in", LIN2_IO, "--out", out_path, "--backward", NULL};
    int code = run_unet(8, ok_argv, &out, &err);
    if (CHECK(code == 0, "diffurl unet on lin2 exits 0 (got %d): %s", code, err)) {
        SafeTensorsFile f;
        if (CHECK(safetensors_open(&f, out_path) == 0, "the OUT file opens: %s", df_error_message())) {
            const SafeTensorInfo *t = safetensors_find(&f, "out");
            bool shape_ok = t && t->ndim == 4 && t->shape[0] == io->B && t->shape[1] == io->Co && t->shape[2] == io->H &&
                            t->shape[3] == io->W;
            if (CHECK(shape_ok, "OUT holds 'out' [%d, %d, %d, %d]", io->B, io->Co, io->H, io->W)) {
                float *o = io_read(&f, "out", NULL), *o_nhwc = DF_MALLOC(io->n_out * sizeof(float), "out");
                layout_nchw_to_nhwc(o_nhwc, o, io->B, io->Co, io->H, io->W);
                check_close("diffurl unet: out vs diffusers", o_nhwc, io->want_out_nhwc, io->n_out, 1e-4);
                free(o), free(o_nhwc);
            }
            const SafeTensorInfo *gs = safetensors_find(&f, "grad_sample");
            CHECK(gs && gs->ndim == 4 && gs->shape[1] == io->C && safetensors_find(&f, "grad_encoder_hidden_states") &&
                      safetensors_find(&f, "grad/conv_in.weight"),
                  "--backward writes grad_sample, grad_encoder_hidden_states, grad/<param>");
            safetensors_close(&f);
        }
    }
    free(out), free(err);
    unlink(out_path);

    // IN without encoder_hidden_states
    snprintf(in, sizeof in, "%s/in_noctx.safetensors", tmp_root);
    write_in(in, io->C, io->B, 0, false);
    char *a1[] = {"unet", "--model", LIN2_DIR, "--in", in, "--out", out_path, NULL};
    code = run_unet(7, a1, &out, &err);
    CHECK(code != 0 && has(err, "'encoder_hidden_states'") && has(err, in),
          "IN without encoder_hidden_states: exit %d, names the key and the file: %s", code, err);
    printf("  diffurl unet, no encoder_hidden_states (exit %d): %s", code, err);
    CHECK(access(out_path, F_OK) != 0, "no OUT file written on error");
    free(out), free(err);

    // sample with 3 channels for a 4-channel model
    snprintf(in, sizeof in, "%s/in_c3.safetensors", tmp_root);
    write_in(in, 3, io->B, io->D, false);
    char *a2[] = {"unet", "--model", LIN2_DIR, "--in", in, "--out", out_path, NULL};
    code = run_unet(7, a2, &out, &err);
    char got_shape[64], want_shape[64];
    snprintf(got_shape, sizeof got_shape, "[%d, 3, %d, %d]", io->B, io->H, io->W);
    snprintf(want_shape, sizeof want_shape, "[%d, %d, %d, %d]", io->B, io->C, io->H, io->W);
    CHECK(code != 0 && has(err, "'sample'") && has(err, got_shape) && has(err, want_shape),
          "sample with 3 channels: exit %d, names the key, %s and %s: %s", code, got_shape, want_shape, err);
    printf("  diffurl unet, 3-channel sample (exit %d): %s", code, err);
    free(out), free(err);

    // context of the wrong width (20 instead of 24)
    snprintf(in, sizeof in, "%s/in_d20.safetensors", tmp_root);
    write_in(in, io->C, io->B, 20, false);
    char *a3[] = {"unet", "--model", LIN2_DIR, "--in", in, "--out", out_path, NULL};
    code = run_unet(7, a3, &out, &err);
    snprintf(got_shape, sizeof got_shape, "[%d, %d, 20]", io->B, io->L);
    snprintf(want_shape, sizeof want_shape, "[%d, %d, %d]", io->B, io->L, io->D);
    CHECK(code != 0 && has(err, "'encoder_hidden_states'") && has(err, got_shape) && has(err, want_shape),
          "context width 20: exit %d, names the key, %s and %s: %s", code, got_shape, want_shape, err);
    free(out), free(err);

    // timestep batch 3 for a batch of 2
    snprintf(in, sizeof in, "%s/in_t3.safetensors", tmp_root);
    write_in(in, io->C, io->B + 1, io->D, false);
    char *a4[] = {"unet", "--model", LIN2_DIR, "--in", in, "--out", out_path, NULL};
    code = run_unet(7, a4, &out, &err);
    snprintf(got_shape, sizeof got_shape, "[%d]", io->B + 1);
    snprintf(want_shape, sizeof want_shape, "[%d]", io->B);
    CHECK(code != 0 && has(err, "'timestep'") && has(err, got_shape) && has(err, want_shape),
          "timestep batch %d: exit %d, names the key and both shapes: %s", io->B + 1, code, err);
    free(out), free(err);

    // --backward without grad_out
    snprintf(in, sizeof in, "%s/in_nogout.safetensors", tmp_root);
    write_in(in, io->C, io->B, io->D, false);
    char *a5[] = {"unet", "--model", LIN2_DIR, "--in", in, "--out", out_path, "--backward", NULL};
    code = run_unet(8, a5, &out, &err);
    CHECK(code != 0 && has(err, "'grad_out'"), "--backward without grad_out: exit %d naming grad_out: %s", code, err);
    free(out), free(err);

    // a model folder with a bad config / a missing model folder / a missing IN file
    char bad_model[256];
    snprintf(bad_model, sizeof bad_model, "%s/cfg_class", tmp_root);  // made by test_bad_config
    char *a6[] = {"unet", "--model", bad_model, "--in", LIN2_IO, "--out", out_path, NULL};
    code = run_unet(7, a6, &out, &err);
    CHECK(code == 1 && has(err, "class_embed_type") && has(err, bad_model), "a bad model config: exit 1 naming it: %s",
          err);
    free(out), free(err);
    char *a7[] = {"unet", "--model", "/tmp/diffurl-unetbad-no-such-model", "--in", LIN2_IO, "--out", out_path, NULL};
    code = run_unet(7, a7, &out, &err);
    CHECK(code == 1 && has(err, "diffurl-unetbad-no-such-model"), "a missing model folder: exit 1 naming it: %s", err);
    free(out), free(err);
    snprintf(in, sizeof in, "%s/no_such_in.safetensors", tmp_root);
    char *a8[] = {"unet", "--model", LIN2_DIR, "--in", in, "--out", out_path, NULL};
    code = run_unet(7, a8, &out, &err);
    CHECK(code == 1 && has(err, in), "a missing IN file: exit 1 naming it: %s", err);
    free(out), free(err);

    // usage
    char *help[] = {"unet", "--help", NULL};
    code = run_unet(2, help, &out, &err);
    CHECK(code == 0 && has(out, "--model") && has(out, "--in") && has(out, "--out"), "diffurl unet --help exits 0 (%d)",
          code);
    free(out), free(err);
    char *no_model[] = {"unet", "--in", LIN2_IO, "--out", out_path, NULL};
    code = run_unet(5, no_model, &out, &err);
    CHECK(code == 2 && has(err, "--model"), "missing --model exits 2 (got %d): %s", code, err);
    free(out), free(err);
    char *unknown[] = {"unet", "--model", LIN2_DIR, "--frobnicate", NULL};
    code = run_unet(4, unknown, &out, &err);
    CHECK(code == 2 && has(err, "frobnicate"), "an unknown option exits 2 naming it (got %d): %s", code, err);
    free(out), free(err);
    CHECK(access(out_path, F_OK) != 0, "no OUT file written by any failing run");
    unlink(out_path);
}

// A sample the UNet cannot halve (15×15 for 2 levels): runs in a forked child (the library may exit), which
// must end with a non-zero exit status and a message, never a signal. Run before any OpenMP work in this
// process (a child of a process with a live OpenMP pool must not start parallel regions).
static void test_cli_odd_size(void) {
    char in[256], out_path[256];
    snprintf(in, sizeof in, "%s/in_15.safetensors", tmp_root);
    snprintf(out_path, sizeof out_path, "%s/odd_out.safetensors", tmp_root);
    int64_t B = 1, C = 4, H = 15, W = 15, L = 5, D = 24;
    TestRng rng = test_rng(15);
    float *s = test_alloc_normal(&rng, (size_t)(B * C * H * W), 1.0f), *c = test_alloc_normal(&rng, (size_t)(B * L * D), 1.0f);
    float t = 500.0f;
    SafeTensorsEntry e[3] = {{"sample", DT_F32, 4, {B, C, H, W}, s},
                             {"timestep", DT_F32, 1, {B}, &t},
                             {"encoder_hidden_states", DT_F32, 3, {B, L, D}, c}};
    DF_CHECK(safetensors_write(in, e, 3, NULL, 0) == 0, "the test writes its IN file");
    free(s), free(c);
    capture_begin();
    pid_t pid = fork();
    DF_CHECK(pid >= 0, "fork");
    if (pid == 0) {
        alarm(60);
        char *argv[] = {"unet", "--model", LIN2_DIR, "--in", in, "--out", out_path, NULL};
        int code = cmd_unet(7, argv);
        fflush(stdout);
        fflush(stderr);
        _exit(code);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    char *err;
    capture_end(NULL, &err);
    bool clean_exit = WIFEXITED(status) && WEXITSTATUS(status) != 0;
    CHECK(clean_exit && has(err, "15"), "15x15 sample: a clean non-zero exit (%s %d) with a message naming the size: %s",
          WIFSIGNALED(status) ? "signal" : "exit", WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status), err);
    printf("  diffurl unet, 15x15 sample (exit %d): %s", WIFEXITED(status) ? WEXITSTATUS(status) : -1, err);
    free(err);
    unlink(in);
    unlink(out_path);
}

int main(void) {
    snprintf(tmp_root, sizeof tmp_root, "/tmp/diffurl_unetbad_XXXXXX");
    DF_CHECK(mkdtemp(tmp_root) != NULL, "mkdtemp under /tmp");
    test_cli_odd_size();

    cpu = backend_cpu_create(2);
    TestRng rng = test_rng(20240611);
    TensorSet clean = read_all(LIN2_WEIGHTS);
    IoInputs io = io_load();
    char *err;
    UNet *ref = load_captured(LIN2_DIR, &err);
    DF_CHECK(ref != NULL, "the clean lin2 fixture loads");
    CHECK(!has(err, "missing") && !has(err, "unexpected"), "the clean fixture loads without warnings: %s", err);
    free(err);
    float *clean_out = forward(ref, &io);
    check_close("clean lin2 forward vs diffusers", clean_out, io.want_out_nhwc, io.n_out, 1e-4);
    unet_free(ref);

    test_missing_tensor(&clean);
    test_wrong_shape(&clean, &rng);
    test_unexpected(&clean, &io, clean_out, &rng);
    test_truncated();
    test_bad_config(&clean);
    test_missing_files(&clean);
    test_layouts(&clean, &io, clean_out);
    test_half_weights(&clean, &io, clean_out);
    test_cli(&io);

    free(clean_out);
    io_free(&io);
    free_set(&clean);
    backend_destroy(cpu);
    CHECK(nftw(tmp_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS) == 0 && access(tmp_root, F_OK) != 0,
          "the temp folder %s is removed", tmp_root);
    return test_finish("unet_load_errors");
}
