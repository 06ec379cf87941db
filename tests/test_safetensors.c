// test_safetensors.c — the safetensors reader, writer and `diffurl inspect`.
//
//  - reference: tests/fixtures/safetensors/reference.safetensors (written by huggingface/safetensors
//    0.4.5, see tests/fixtures/make_safetensors_fixtures.py) reads back the values recomputed here, and
//    safetensors_write reproduces the file byte for byte from the same tensors in the same order;
//  - round trip: random F32/F16/BF16/I64 tensors of odd shapes (a 0-dim scalar, a zero-size dim, 8 dims)
//    with metadata, written and read back exactly, in order; load_f32 shape checks; writer refusals;
//  - malformed files: a table of broken files, each refused cleanly with a message naming the file and
//    the tensor or the offending value; every truncation and random byte mutations of a valid file never
//    crash and never yield a table that breaks the invariants;
//  - inspect: cmd_inspect on a valid file (exit 0, listing checked), a malformed and a missing one (exit 1).
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "harness.h"
#include "safetensors.h"

#define REFERENCE_PATH "tests/fixtures/safetensors/reference.safetensors"

static char tmp_dir_prefix[64];
static int tmp_counter = 0;

// A unique /tmp path for this process (the caller deletes it).
static const char *tmp_path(char *buf, size_t size) {
    snprintf(buf, size, "%s_%d.safetensors", tmp_dir_prefix, tmp_counter++);
    return buf;
}

static bool file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = DF_FOPEN(path, "wb");
    DF_FWRITE(data, n, f, path);
    DF_FCLOSE(f, path);
}

static uint8_t *read_file(const char *path, size_t *n) {
    FILE *f = DF_FOPEN(path, "rb");
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = DF_MALLOC((size_t)len + 1, "test file");
    *n = fread(buf, 1, (size_t)len, f);
    fclose(f);
    return buf;
}

static bool bits_equal_f32(const float *a, const float *b, size_t n) { return n == 0 || !memcmp(a, b, n * 4); }

// The invariants every successfully parsed table must satisfy (also checked by the fuzz target).
static bool table_invariants_hold(const SafeTensorsFile *f) {
    size_t pos = 0;
    for (int i = 0; i < f->count; i++) {
        const SafeTensorInfo *t = &f->tensors[i];
        int64_t numel = df_shape_numel(t->shape, t->ndim);
        if (t->ndim < 0 || t->ndim > DF_MAX_DIMS || numel < 0) return false;
        if ((size_t)numel * dtype_size(t->dtype) != t->nbytes) return false;
        if (t->data_offset != pos || t->data != f->data + t->data_offset) return false;
        pos += t->nbytes;
        if (safetensors_find(f, t->name) != t) return false;
    }
    return pos == f->data_size;
}

// ---- the reference fixture -----------------------------------------------------------------------------

// x_i = float(((i + add) * mul % mod) - center) / float(div): exact float32 arithmetic, as in the script.
static void ramp(float *x, int n, int mul, int add, int mod, int center, int div) {
    for (int i = 0; i < n; i++) x[i] = (float)((int64_t)(i + add) * mul % mod - center) / (float)div;
}

static void test_reference_fixture(void) {
    SafeTensorsFile f;
    int rc = safetensors_open(&f, REFERENCE_PATH);
    if (!CHECK(rc == 0, "open %s: %s", REFERENCE_PATH, df_error_message())) return;
    CHECK(f.count == 6, "reference has 6 tensors (got %d)", f.count);
    CHECK(f.meta_count == 1 && safetensors_meta(&f, "format") && !strcmp(safetensors_meta(&f, "format"), "pt"),
          "reference metadata format=pt");
    CHECK(table_invariants_hold(&f), "reference table invariants");

    float f32[30], f16[7], bf16[6];
    ramp(f32, 30, 37, 0, 101, 50, 7);
    ramp(f16, 7, 53, 11, 97, 48, 3);
    ramp(bf16, 6, 29, 5, 89, 44, 9);
    uint16_t f16_bits[7], bf16_bits[6];
    float f16_want[7], bf16_want[6];
    for (int i = 0; i < 7; i++) f16_want[i] = f16_to_f32(f16_bits[i] = f32_to_f16(f16[i]));
    for (int i = 0; i < 6; i++) bf16_want[i] = bf16_to_f32(bf16_bits[i] = f32_to_bf16(bf16[i]));
    int64_t ids[4], step = 123456789012345LL;
    float ids_want[4];
    for (int i = 0; i < 4; i++) ids_want[i] = (float)(ids[i] = ((int64_t)i * 7919 - 12000) * 1234567);

    float got[32];
    const int64_t s_w[3] = {3, 5, 2}, s_e[1] = {7}, s_l[2] = {2, 3}, s_ids[1] = {4}, s_empty[2] = {0, 3};
    CHECK(safetensors_load_f32(&f, "unet.conv_in.weight", 3, s_w, got) == 0 && bits_equal_f32(got, f32, 30),
          "reference F32 values: %s", df_error_message());
    CHECK(safetensors_load_f32(&f, "te.embed", 1, s_e, got) == 0 && bits_equal_f32(got, f16_want, 7),
          "reference F16 values (numpy float32->float16 == f32_to_f16): %s", df_error_message());
    CHECK(safetensors_load_f32(&f, "lora.down", 2, s_l, got) == 0 && bits_equal_f32(got, bf16_want, 6),
          "reference BF16 values: %s", df_error_message());
    CHECK(safetensors_load_f32(&f, "ids", 1, s_ids, got) == 0 && bits_equal_f32(got, ids_want, 4),
          "reference I64 values as f32: %s", df_error_message());
    got[0] = 0;
    CHECK(safetensors_load_f32(&f, "step", 0, NULL, got) == 0 && got[0] == (float)step, "reference I64 scalar");
    CHECK(safetensors_load_f32(&f, "empty", 2, s_empty, got) == 0, "reference zero-size tensor");
    const SafeTensorInfo *ti = safetensors_find(&f, "step");
    int64_t raw_step = 0;
    if (ti) memcpy(&raw_step, ti->data, 8);
    CHECK(ti && ti->ndim == 0 && ti->nbytes == 8 && raw_step == step, "reference I64 scalar raw value");

    // Our writer, given the same tensors in the reference's order, must produce the same bytes.
    SafeTensorsEntry entries[6];
    int n = 0;
    for (int i = 0; i < f.count && n < 6; i++) {
        const SafeTensorInfo *t = &f.tensors[i];
        SafeTensorsEntry *e = &entries[n++];
        e->name = t->name;
        e->dtype = t->dtype;
        e->ndim = t->ndim;
        memcpy(e->shape, t->shape, sizeof e->shape);
        e->data = !strcmp(t->name, "unet.conv_in.weight") ? (const void *)f32
                  : !strcmp(t->name, "te.embed")          ? (const void *)f16_bits
                  : !strcmp(t->name, "lora.down")         ? (const void *)bf16_bits
                  : !strcmp(t->name, "ids")               ? (const void *)ids
                  : !strcmp(t->name, "step")              ? (const void *)&step
                                                          : (const void *)f32;  // "empty": 0 bytes
    }
    const char *meta[2] = {"format", "pt"};
    char path[128];
    tmp_path(path, sizeof path);
    rc = safetensors_write(path, entries, n, meta, 1);
    CHECK(rc == 0, "write reference copy: %s", df_error_message());
    size_t n_ref = 0, n_ours = 0;
    uint8_t *ref = read_file(REFERENCE_PATH, &n_ref);
    uint8_t *ours = rc == 0 ? read_file(path, &n_ours) : NULL;
    CHECK(ours && n_ours == n_ref && !memcmp(ours, ref, n_ref),
          "safetensors_write reproduces the reference file byte for byte (%zu vs %zu bytes)", n_ours, n_ref);
    free(ref);
    free(ours);
    unlink(path);
    safetensors_close(&f);
    CHECK(f.tensors == NULL && f.map == NULL && f.count == 0, "close resets the struct");
}

// ---- round trip --------------------------------------------------------------------------------------

static int64_t random_i64(TestRng *rng) {
    uint64_t hi = (uint64_t)test_uniform(rng, 0, 4294967296.0), lo = (uint64_t)test_uniform(rng, 0, 4294967296.0);
    return (int64_t)((hi << 32) | lo);
}

static void test_round_trip(void) {
    TestRng rng = test_rng(7);
    enum { NT = 8 };
    static const struct {
        const char *name;
        DType dtype;
        int ndim;
        int64_t shape[DF_MAX_DIMS];
    } spec[NT] = {
        {"down.0.conv.weight", DT_F32, 4, {5, 3, 3, 7}},
        {"mid.attn.to_q.lora_A", DT_F16, 3, {2, 1, 9}},
        {"emb.scale", DT_BF16, 1, {13}},
        {"tokens", DT_I64, 2, {5, 3}},
        {"scalar", DT_F32, 0, {0}},
        {"empty.f16", DT_F16, 3, {4, 0, 2}},
        {"deep", DT_F32, 8, {1, 2, 1, 3, 1, 1, 2, 1}},
        {"a \"quoted\"\\name\twith\x01 control and \xc3\xa9", DT_BF16, 2, {3, 1}},
    };
    SafeTensorsEntry entries[NT];
    void *data[NT];
    float *want[NT];
    size_t numel[NT];
    for (int i = 0; i < NT; i++) {
        numel[i] = (size_t)df_shape_numel(spec[i].shape, spec[i].ndim);
        data[i] = DF_MALLOC(numel[i] * dtype_size(spec[i].dtype), "round-trip data");
        want[i] = DF_MALLOC(numel[i] * sizeof(float) + 4, "round-trip expected");
        for (size_t k = 0; k < numel[i]; k++) {
            float x = (float)(test_normal(&rng) * pow(10.0, test_uniform(&rng, -6, 4)));  // subnormal-ish to large
            switch (spec[i].dtype) {
            case DT_F32: ((float *)data[i])[k] = want[i][k] = x; break;
            case DT_F16: {
                uint16_t h = f32_to_f16(x);
                memcpy((uint16_t *)data[i] + k, &h, 2);
                want[i][k] = f16_to_f32(h);
                break;
            }
            case DT_BF16: {
                uint16_t h = f32_to_bf16(x);
                memcpy((uint16_t *)data[i] + k, &h, 2);
                want[i][k] = bf16_to_f32(h);
                break;
            }
            case DT_I64: {
                int64_t v = k == 0 ? INT64_MIN : k == 1 ? INT64_MAX : random_i64(&rng);
                ((int64_t *)data[i])[k] = v;
                want[i][k] = (float)v;
                break;
            }
            }
        }
        entries[i] = (SafeTensorsEntry){.name = spec[i].name, .dtype = spec[i].dtype, .ndim = spec[i].ndim, .data = data[i]};
        memcpy(entries[i].shape, spec[i].shape, sizeof entries[i].shape);
    }
    const char *meta[6] = {"format", "pt", "zeta", "last key first? no: given order", "alpha", "{\"json\": [1, 2]}\n"};

    char path[128], tmp[160];
    tmp_path(path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int rc = safetensors_write(path, entries, NT, meta, 3);
    if (!CHECK(rc == 0, "round-trip write: %s", df_error_message())) goto done;
    CHECK(!file_exists(tmp), "no .tmp file left after a successful write");

    size_t fsize = 0;
    uint8_t *bytes = read_file(path, &fsize);
    uint64_t hlen = 0;
    for (int b = 7; b >= 0; b--) hlen = (hlen << 8) | bytes[b];
    CHECK(hlen % 8 == 0 && hlen + 8 <= fsize && bytes[8] == '{' && !memcmp(bytes + 8, "{\"__metadata__\":", 16),
          "header length %llu is a multiple of 8 and starts with __metadata__", (unsigned long long)hlen);
    free(bytes);

    SafeTensorsFile f;
    rc = safetensors_open(&f, path);
    if (!CHECK(rc == 0, "round-trip open: %s", df_error_message())) goto done;
    CHECK(f.count == NT, "round trip keeps %d tensors (got %d)", NT, f.count);
    CHECK(table_invariants_hold(&f), "round-trip table invariants");
    CHECK((uintptr_t)f.data % 8 == 0, "data block is 8-byte aligned in the mapping");
    CHECK(f.meta_count == 3 && !strcmp(f.meta[0].key, "format") && !strcmp(f.meta[1].key, "zeta") &&
              !strcmp(f.meta[2].key, "alpha"),
          "metadata keys kept in the given order");
    for (int i = 0; i < 3; i++)
        CHECK(safetensors_meta(&f, meta[2 * i]) && !strcmp(safetensors_meta(&f, meta[2 * i]), meta[2 * i + 1]),
              "metadata '%s' value round-trips", meta[2 * i]);
    CHECK(safetensors_meta(&f, "missing") == NULL, "absent metadata key gives NULL");
    for (int i = 0; i < NT && i < f.count; i++) {
        const SafeTensorInfo *t = &f.tensors[i];  // sorted by offset == written order
        bool same_shape = t->ndim == spec[i].ndim;
        for (int d = 0; same_shape && d < t->ndim; d++) same_shape = t->shape[d] == spec[i].shape[d];
        CHECK(!strcmp(t->name, spec[i].name) && t->dtype == spec[i].dtype && same_shape,
              "tensor %d is '%s' %s with its shape, in order", i, spec[i].name, dtype_name(spec[i].dtype));
        CHECK(t->nbytes == numel[i] * dtype_size(spec[i].dtype) &&
                  (numel[i] == 0 || !memcmp(t->data, data[i], t->nbytes)),
              "tensor '%s' raw bytes identical", spec[i].name);
        float *got = DF_MALLOC(numel[i] * sizeof(float) + 4, "round-trip read");
        rc = safetensors_load_f32(&f, spec[i].name, spec[i].ndim, spec[i].shape, got);
        CHECK(rc == 0 && bits_equal_f32(got, want[i], numel[i]), "tensor '%s' reads back exactly as f32 (%zu values)",
              spec[i].name, numel[i]);
        free(got);
    }

    // load_f32 refusals name the file, the tensor and both shapes.
    float dummy[400];
    const int64_t wrong[4] = {5, 3, 7, 3};
    rc = safetensors_load_f32(&f, "down.0.conv.weight", 4, wrong, dummy);
    const char *msg = df_error_message();
    CHECK(rc < 0 && strstr(msg, path) && strstr(msg, "'down.0.conv.weight'") && strstr(msg, "[5, 3, 3, 7]") &&
              strstr(msg, "[5, 3, 7, 3]"),
          "wrong shape is refused with both shapes: %s", msg);
    rc = safetensors_load_f32(&f, "down.0.conv.weight", 3, wrong, dummy);
    CHECK(rc < 0 && strstr(df_error_message(), "[5, 3, 7]"), "wrong rank is refused: %s", df_error_message());
    rc = safetensors_load_f32(&f, "no.such.tensor", 1, wrong, dummy);
    CHECK(rc < 0 && strstr(df_error_message(), "'no.such.tensor'"), "missing tensor named: %s", df_error_message());
    safetensors_close(&f);

    // Overwriting an existing file goes through the tmp file as well.
    rc = safetensors_write(path, entries, 2, NULL, 0);
    CHECK(rc == 0 && safetensors_open(&f, path) == 0 && f.count == 2 && f.meta_count == 0,
          "rewrite without metadata: %s", df_error_message());
    safetensors_close(&f);

done:
    unlink(path);
    for (int i = 0; i < NT; i++) {
        free(data[i]);
        free(want[i]);
    }
}

static void test_writer_refusals(void) {
    float x[4] = {1, 2, 3, 4};
    SafeTensorsEntry e[2] = {{.name = "w", .dtype = DT_F32, .ndim = 1, .shape = {2}, .data = x},
                             {.name = "w", .dtype = DT_F32, .ndim = 1, .shape = {2}, .data = x + 2}};
    char path[128], tmp[160];
    tmp_path(path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);

    int rc = safetensors_write(path, e, 2, NULL, 0);
    CHECK(rc < 0 && strstr(df_error_message(), "duplicate") && strstr(df_error_message(), "'w'") &&
              strstr(df_error_message(), path),
          "writer refuses duplicate names: %s", df_error_message());
    CHECK(!file_exists(path) && !file_exists(tmp), "nothing written on refusal");

    e[1].name = "v";
    e[1].dtype = (DType)7;
    rc = safetensors_write(path, e, 2, NULL, 0);
    CHECK(rc < 0 && strstr(df_error_message(), "'v'") && strstr(df_error_message(), "dtype"),
          "writer refuses a bad dtype: %s", df_error_message());
    e[1].dtype = DT_F32;
    e[1].shape[0] = -2;
    rc = safetensors_write(path, e, 2, NULL, 0);
    CHECK(rc < 0 && strstr(df_error_message(), "[-2]"), "writer refuses a negative dim: %s", df_error_message());
    e[1].shape[0] = 2;
    e[1].name = "__metadata__";
    rc = safetensors_write(path, e, 2, NULL, 0);
    CHECK(rc < 0 && strstr(df_error_message(), "__metadata__"), "writer refuses the name __metadata__: %s",
          df_error_message());
    e[1].name = "v";
    const char *meta[4] = {"k", "1", "k", "2"};
    rc = safetensors_write(path, e, 2, meta, 2);
    CHECK(rc < 0 && strstr(df_error_message(), "'k'"), "writer refuses duplicate metadata keys: %s", df_error_message());
    CHECK(!file_exists(path) && !file_exists(tmp), "nothing written on refusals");

    const char *bad_path = "/nonexistent-diffurl-dir/x.safetensors";
    rc = safetensors_write(bad_path, e, 2, NULL, 0);
    CHECK(rc == DF_ERR_IO && strstr(df_error_message(), bad_path), "unwritable path is an I/O error naming it: %s",
          df_error_message());

    // A directory where the file should go: the tmp file is written, the rename fails, the tmp is removed.
    char dir[128];
    snprintf(dir, sizeof dir, "%s_dir", tmp_dir_prefix);
    char dir_tmp[160];
    snprintf(dir_tmp, sizeof dir_tmp, "%s.tmp", dir);
    CHECK(mkdir(dir, 0700) == 0, "mkdir %s", dir);
    rc = safetensors_write(dir, e, 2, NULL, 0);
    CHECK(rc == DF_ERR_IO && strstr(df_error_message(), dir) && strstr(df_error_message(), "rename"),
          "failed rename reported: %s", df_error_message());
    CHECK(!file_exists(dir_tmp), "tmp file removed after a failed rename");
    rmdir(dir);
}

// ---- malformed files ---------------------------------------------------------------------------------

typedef struct {
    const char *what;
    const char *header;  // JSON text (space padded to 8); NULL: `raw` is the whole file
    size_t data_bytes;   // zero bytes of data block after the header
    int64_t length;      // > 0: header length field override (as an unsigned value; -1 for 2^63)
    const char *raw;
    size_t raw_len;
    const char *expect[3];  // substrings of the message (besides the file name)
} BadCase;

static const BadCase bad_cases[] = {
    {"empty file", NULL, 0, 0, "", 0, {"0 bytes"}},
    {"7-byte file", NULL, 0, 0, "\x10\0\0\0\0\0\0", 7, {"7 bytes", "too short"}},
    {"header length past EOF", "{}", 0, 1000, NULL, 0, {"header length 1000", "past the end"}},
    {"header length 2^63", "{}", 0, -1, NULL, 0, {"9223372036854775808"}},
    {"header length 0", NULL, 0, 0, "\0\0\0\0\0\0\0\0", 8, {"empty"}},
    {"non-JSON header", "this is not json", 0, 0, NULL, 0, {"not valid JSON", "this is not json"}},
    {"JSON array header", "[1, 2, 3]", 0, 0, NULL, 0, {"an array", "expected a JSON object"}},
    {"trailing garbage after JSON", "{} xyz", 0, 0, NULL, 0, {"after", "xyz"}},
    {"byte-order mark", "\xef\xbb\xbf{}", 0, 0, NULL, 0, {"not valid JSON", "byte-order mark"}},
    {"invalid UTF-8", "{\"w\xff\": 1}", 0, 0, NULL, 0, {"UTF-8", "byte 3"}},
    {"tensor not an object", "{\"w\": 5}", 0, 0, NULL, 0, {"'w'", "a number"}},
    {"missing dtype", "{\"w\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4, 0, NULL, 0, {"'w'", "missing \"dtype\""}},
    {"missing shape", "{\"w\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", 4, 0, NULL, 0, {"'w'", "\"shape\""}},
    {"missing data_offsets", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1]}}", 4, 0, NULL, 0, {"'w'", "\"data_offsets\""}},
    {"unknown dtype F64", "{\"w\": {\"dtype\": \"F64\", \"shape\": [1], \"data_offsets\": [0, 8]}}", 8, 0, NULL, 0,
     {"'w'", "F64", "not supported"}},
    {"unknown dtype BOOL", "{\"w\": {\"dtype\": \"BOOL\", \"shape\": [1], \"data_offsets\": [0, 1]}}", 1, 0, NULL, 0,
     {"'w'", "BOOL"}},
    {"made-up dtype", "{\"w\": {\"dtype\": \"Q7\", \"shape\": [1], \"data_offsets\": [0, 1]}}", 1, 0, NULL, 0,
     {"'w'", "unknown dtype 'Q7'"}},
    {"dtype not a string", "{\"w\": {\"dtype\": 4, \"shape\": [1], \"data_offsets\": [0, 4]}}", 4, 0, NULL, 0,
     {"'w'", "dtype is a number"}},
    {"unknown key", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4], \"foo\": 1}}", 4, 0, NULL, 0,
     {"'w'", "unknown key 'foo'"}},
    {"duplicate key", "{\"w\": {\"dtype\": \"F32\", \"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4, 0,
     NULL, 0, {"'w'", "duplicate key 'dtype'"}},
    {"shape not an array", "{\"w\": {\"dtype\": \"F32\", \"shape\": 3, \"data_offsets\": [0, 12]}}", 12, 0, NULL, 0,
     {"'w'", "shape is a number"}},
    {"negative dim", "{\"w\": {\"dtype\": \"F32\", \"shape\": [2, -3], \"data_offsets\": [0, 4]}}", 4, 0, NULL, 0,
     {"'w'", "dim 1 is -3"}},
    {"fractional dim", "{\"w\": {\"dtype\": \"F32\", \"shape\": [2.5], \"data_offsets\": [0, 10]}}", 10, 0, NULL, 0,
     {"'w'", "2.5"}},
    {"dim not a number", "{\"w\": {\"dtype\": \"F32\", \"shape\": [\"2\"], \"data_offsets\": [0, 8]}}", 8, 0, NULL, 0,
     {"'w'", "dim 0 is a string"}},
    {"huge dim", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1e300], \"data_offsets\": [0, 8]}}", 8, 0, NULL, 0,
     {"'w'", "e+300"}},
    {"too many dims", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 4]}}", 4, 0,
     NULL, 0, {"'w'", "9 dims"}},
    {"shape overflow", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1099511627776, 1099511627776], \"data_offsets\": [0, 4]}}",
     4, 0, NULL, 0, {"'w'", "overflows", "[1099511627776, 1099511627776]"}},
    {"data_offsets out of range", "{\"w\": {\"dtype\": \"F32\", \"shape\": [100], \"data_offsets\": [0, 400]}}", 4, 0,
     NULL, 0, {"'w'", "[0, 400]", "data block of 4 bytes"}},
    {"data_offsets begin > end", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 4]}}", 8, 0, NULL, 0,
     {"'w'", "[8, 4]", "begin > end"}},
    {"data_offsets wrong length", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}", 4, 0, NULL, 0,
     {"'w'", "data_offsets", "wrong length"}},
    {"data_offsets negative", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [-4, 0]}}", 4, 0, NULL, 0,
     {"'w'", "data_offsets[0] is -4"}},
    {"size mismatch", "{\"conv.weight\": {\"dtype\": \"F32\", \"shape\": [3, 4], \"data_offsets\": [0, 40]}}", 40, 0, NULL,
     0, {"'conv.weight'", "shape [3, 4] × F32 = 48 bytes but data_offsets span 40"}},
    {"overlapping tensors",
     "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
     " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
     12, 0, NULL, 0, {"'a' [0, 8]", "'b' [4, 12]", "overlap"}},
    {"hole between tensors",
     "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
     " \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 12]}}",
     12, 0, NULL, 0, {"hole", "[4, 8)", "'b'"}},
    {"trailing data bytes", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 8, 0, NULL, 0,
     {"cover 4 bytes", "has 8"}},
    {"duplicate names",
     "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
     " \"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}",
     8, 0, NULL, 0, {"duplicate tensor name 'a'"}},
    {"metadata not an object", "{\"__metadata__\": [\"x\"]}", 0, 0, NULL, 0, {"__metadata__", "an array"}},
    {"metadata value not a string", "{\"__metadata__\": {\"epoch\": 5}}", 0, 0, NULL, 0, {"'epoch'", "a number", "strings"}},
    {"duplicate metadata key", "{\"__metadata__\": {\"k\": \"1\", \"k\": \"2\"}}", 0, 0, NULL, 0,
     {"duplicate metadata key 'k'"}},
    {"two __metadata__", "{\"__metadata__\": {}, \"__metadata__\": {}}", 0, 0, NULL, 0, {"duplicate \"__metadata__\""}},
    {"truncated data block", "{\"w\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", 9, 0, NULL, 0,
     {"'w'", "[0, 16]", "truncated"}},
};

static const BadCase *find_case(const char *what) {
    for (size_t k = 0; k < sizeof bad_cases / sizeof bad_cases[0]; k++)
        if (!strcmp(bad_cases[k].what, what)) return &bad_cases[k];
    DF_FATAL("no bad case named '%s'", what);
}

// Builds the file bytes of a case (malloc'd).
static uint8_t *build_case(const BadCase *c, size_t *size) {
    if (!c->header) {
        uint8_t *b = DF_MALLOC(c->raw_len + 1, "bad case");
        memcpy(b, c->raw, c->raw_len);
        *size = c->raw_len;
        return b;
    }
    size_t hl = strlen(c->header), padded = (hl + 7) / 8 * 8;
    *size = 8 + padded + c->data_bytes;
    uint8_t *b = DF_CALLOC(*size, 1, "bad case");
    uint64_t len = c->length > 0 ? (uint64_t)c->length : c->length < 0 ? (1ull << 63) : (uint64_t)padded;
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(len >> (8 * i));
    memcpy(b + 8, c->header, hl);
    memset(b + 8 + hl, ' ', padded - hl);
    for (size_t i = 0; i < c->data_bytes; i++) b[8 + padded + i] = (uint8_t)(i * 37 + 1);  // never all zeros
    return b;
}

static void test_malformed(void) {
    for (size_t k = 0; k < sizeof bad_cases / sizeof bad_cases[0]; k++) {
        const BadCase *c = &bad_cases[k];
        size_t size;
        uint8_t *bytes = build_case(c, &size);
        char path[128];
        tmp_path(path, sizeof path);
        write_file(path, bytes, size);

        SafeTensorsFile f;
        memset(&f, 0x5a, sizeof f);  // garbage in: open must not depend on it
        int rc = safetensors_open(&f, path);
        const char *msg = df_error_message();
        bool ok = rc == DF_ERR_FORMAT && strstr(msg, path) != NULL;
        for (int e = 0; e < 3 && c->expect[e]; e++) ok = ok && strstr(msg, c->expect[e]) != NULL;
        CHECK(ok, "%s: refused (rc %d) with a message naming the file and the detail: %s", c->what, rc, msg);
        CHECK(f.tensors == NULL && f.meta == NULL && f.map == NULL && f.path == NULL && f.count == 0,
              "%s: the struct is left closed", c->what);
        if (rc == 0) safetensors_close(&f);

        rc = safetensors_parse(&f, bytes, size, "in-memory");
        msg = df_error_message();
        ok = rc == DF_ERR_FORMAT && strstr(msg, "in-memory") != NULL;
        for (int e = 0; e < 3 && c->expect[e]; e++) ok = ok && strstr(msg, c->expect[e]) != NULL;
        CHECK(ok, "%s: refused from memory too: %s", c->what, msg);
        if (rc == 0) safetensors_close(&f);
        unlink(path);
        free(bytes);
    }

    // Header over the 100 MB limit: an untouched anonymous mapping costs no memory.
    size_t big = 100000001u + 8u + 8u;
    uint8_t *map = mmap(NULL, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (CHECK(map != MAP_FAILED, "anonymous mapping for the header limit case")) {
        uint64_t len = 100000001u;
        for (int i = 0; i < 8; i++) map[i] = (uint8_t)(len >> (8 * i));
        SafeTensorsFile f;
        int rc = safetensors_parse(&f, map, big, "big");
        CHECK(rc == DF_ERR_FORMAT && strstr(df_error_message(), "100000001") && strstr(df_error_message(), "limit"),
              "header over 100 MB refused: %s", df_error_message());
        munmap(map, big);
    }

    SafeTensorsFile f;
    int rc = safetensors_open(&f, "/tmp/diffurl-no-such-file.safetensors");
    CHECK(rc == DF_ERR_IO && strstr(df_error_message(), "diffurl-no-such-file"), "missing file: %s", df_error_message());
    rc = safetensors_open(&f, "/tmp");
    CHECK(rc == DF_ERR_IO && strstr(df_error_message(), "not a regular file"), "directory refused: %s",
          df_error_message());
}

// Every truncation of a valid file is refused; random byte mutations never crash and never produce a
// table that breaks the invariants (the fuzz target does this at scale under sanitizers).
static void test_mutations(void) {
    size_t n = 0;
    uint8_t *ref = read_file(REFERENCE_PATH, &n);
    SafeTensorsFile f;
    int accepted = 0;
    for (size_t len = 0; len < n; len++) {
        if (safetensors_parse(&f, ref, len, "prefix") == 0) {
            accepted++;
            safetensors_close(&f);
        }
    }
    CHECK(accepted == 0, "every proper prefix of the reference file is refused (%d accepted)", accepted);

    TestRng rng = test_rng(11);
    uint8_t *buf = DF_MALLOC(n, "mutation buffer");
    int parsed = 0, broken = 0;
    float *scratch = DF_MALLOC(n * sizeof(float), "mutation scratch");
    for (int it = 0; it < 3000; it++) {
        memcpy(buf, ref, n);
        int flips = 1 + (int)test_uniform(&rng, 0, 4);
        for (int k = 0; k < flips; k++) {
            size_t at = (size_t)test_uniform(&rng, 0, (double)n);
            if (at < 8 || test_uniform(&rng, 0, 1) < 0.5) buf[at] = (uint8_t)test_uniform(&rng, 0, 256);
            else buf[at] = "0123456789[]{},\":- FIBe."[(int)test_uniform(&rng, 0, 24)];
        }
        if (safetensors_parse(&f, buf, n, "mutant") == 0) {
            parsed++;
            if (!table_invariants_hold(&f)) broken++;
            for (int i = 0; i < f.count; i++)
                if (safetensors_read_f32(&f, &f.tensors[i], scratch) != 0) broken++;
            safetensors_close(&f);
        }
    }
    CHECK(broken == 0, "mutants that parse satisfy the invariants (%d parsed of 3000, %d broken)", parsed, broken);
    free(scratch);
    free(buf);
    free(ref);
}

// ---- inspect -----------------------------------------------------------------------------------------

// Runs cmd_inspect with stdout and stderr captured into files; returns the exit code.
static int run_inspect(int argc, char **argv, char **out, char **err) {
    char out_path[128], err_path[128];
    snprintf(out_path, sizeof out_path, "%s_inspect.out", tmp_dir_prefix);
    snprintf(err_path, sizeof err_path, "%s_inspect.err", tmp_dir_prefix);
    fflush(stdout);
    fflush(stderr);
    int saved_out = dup(1), saved_err = dup(2);
    int fo = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600), fe = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    DF_CHECK(saved_out >= 0 && saved_err >= 0 && fo >= 0 && fe >= 0, "cannot redirect stdout/stderr for the test");
    dup2(fo, 1);
    dup2(fe, 2);
    close(fo);
    close(fe);
    int code = cmd_inspect(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    close(saved_out);
    close(saved_err);
    size_t n;
    *out = (char *)read_file(out_path, &n);
    (*out)[n] = '\0';
    *err = (char *)read_file(err_path, &n);
    (*err)[n] = '\0';
    unlink(out_path);
    unlink(err_path);
    return code;
}

static void test_inspect(void) {
    char *out, *err;
    char *ok_argv[] = {"inspect", REFERENCE_PATH, NULL};
    int code = run_inspect(2, ok_argv, &out, &err);
    CHECK(code == 0, "inspect on the reference file exits 0 (got %d; stderr: %s)", code, err);
    CHECK(strstr(out, "unet.conv_in.weight") && strstr(out, "[3, 5, 2]") && strstr(out, "BF16") &&
              strstr(out, "format: pt") && strstr(out, "total: 6 tensors") && strstr(out, "[]"),
          "inspect lists tensors, shapes, dtypes, metadata and a total:\n%s", out);
    CHECK(strstr(out, "120") && strstr(out, "186 bytes of data"), "inspect shows bytes and offsets:\n%s", out);
    char *p_step = strstr(out, "\nstep "), *p_lora = strstr(out, "\nlora.down ");
    CHECK(p_step && p_lora && p_step < p_lora, "inspect lists in file (offset) order by default");
    free(out);
    free(err);

    char *sorted_argv[] = {"inspect", "--sort", "name", REFERENCE_PATH, NULL};
    code = run_inspect(4, sorted_argv, &out, &err);
    p_step = strstr(out, "\nstep ");
    p_lora = strstr(out, "\nlora.down ");
    CHECK(code == 0 && p_step && p_lora && p_lora < p_step, "inspect --sort name orders by name");
    free(out);
    free(err);

    // A malformed file: exit 1 and "diffurl inspect: <error>" on stderr.
    char path[128];
    tmp_path(path, sizeof path);
    size_t size;
    uint8_t *bytes = build_case(find_case("size mismatch"), &size);
    write_file(path, bytes, size);
    free(bytes);
    char *bad_argv[] = {"inspect", path, NULL};
    code = run_inspect(2, bad_argv, &out, &err);
    CHECK(code == 1 && !strncmp(err, "diffurl inspect: ", 17) && strstr(err, path) && strstr(err, "'conv.weight'"),
          "inspect on a malformed file exits 1 with the error (got %d): %s", code, err);
    free(out);
    free(err);
    unlink(path);

    char *missing_argv[] = {"inspect", "/tmp/diffurl-no-such-file.safetensors", NULL};
    code = run_inspect(2, missing_argv, &out, &err);
    CHECK(code == 1 && strstr(err, "diffurl inspect: ") && strstr(err, "no-such-file"), "missing file exits 1: %s", err);
    free(out);
    free(err);

    char *help_argv[] = {"inspect", "--help", NULL};
    code = run_inspect(2, help_argv, &out, &err);
    CHECK(code == 0 && strstr(out, "usage: diffurl inspect") && strstr(out, "FILE.safetensors"), "inspect --help");
    free(out);
    free(err);

    char *none_argv[] = {"inspect", NULL};
    code = run_inspect(1, none_argv, &out, &err);
    CHECK(code == 2 && strstr(err, "expected one FILE.safetensors"), "inspect with no file is a usage error");
    free(out);
    free(err);
}

int main(void) {
    snprintf(tmp_dir_prefix, sizeof tmp_dir_prefix, "/tmp/diffurl_test_st_%d", (int)getpid());
    test_reference_fixture();
    test_round_trip();
    test_writer_refusals();
    test_malformed();
    test_mutations();
    test_inspect();
    return test_finish("safetensors");
}
