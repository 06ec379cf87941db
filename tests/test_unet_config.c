// test_unet_config.c — diffusers config.json → UNetConfig (host/unet_config.c).
//
//  - the three fixture configs (tests/fixtures/unet/{lin2,conv3,sd2ish4}/unet/config.json) parse, from the
//    file and from the text, to the architecture the fixtures were made with: levels, channels, block types,
//    heads from attention_head_dim as a list or an int, transformer layers per level, projections, context
//    width, time_embed_dim = 4·block_out_channels[0];
//  - num_attention_heads, when set (non-null), takes precedence over attention_head_dim;
//  - per-level lists (layers_per_block, only_cross_attention, cross_attention_dim with equal entries) and the
//    defaults when keys are absent (a minimal config);
//  - refusals: every unsupported value, unknown key, inconsistent size and malformed text is refused with a
//    message naming the label (file), the key and the offending value. Each refusal runs in a forked child,
//    so a crash (e.g. a division by zero) is reported as a failed check instead of killing the suite.
#include <math.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "harness.h"
#include "unet.h"

#define FIXTURES "tests/fixtures/unet"

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!CHECK(f != NULL, "open %s", path)) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = DF_MALLOC((size_t)n + 1, "config text");
    size_t got = fread(text, 1, (size_t)n, f);
    fclose(f);
    text[got] = '\0';
    return text;
}

static char *fixture_config_text(const char *name) {
    char path[256];
    snprintf(path, sizeof path, FIXTURES "/%s/unet/config.json", name);
    return read_text(path);
}

// base with every key of the JSON object `overrides` replaced (or added), and every key of the
// NULL-terminated `remove` list deleted; a malloc'd JSON string.
static char *edited(const char *base, const char *overrides, const char *const *remove) {
    cJSON *root = cJSON_Parse(base);
    DF_CHECK(root && cJSON_IsObject(root), "test base config is a JSON object");
    if (overrides) {
        cJSON *ov = cJSON_Parse(overrides);
        DF_CHECK(ov && cJSON_IsObject(ov), "test overrides are a JSON object");
        for (cJSON *item = ov->child; item; item = item->next) {
            cJSON *copy = cJSON_Duplicate(item, 1);
            if (cJSON_GetObjectItemCaseSensitive(root, item->string))
                cJSON_ReplaceItemInObjectCaseSensitive(root, item->string, copy);
            else
                cJSON_AddItemToObject(root, item->string, copy);
        }
        cJSON_Delete(ov);
    }
    for (int i = 0; remove && remove[i]; i++) cJSON_DeleteItemFromObjectCaseSensitive(root, remove[i]);
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return text;
}

static bool ints_are(const int *got, const int *want, int n) {
    for (int i = 0; i < n; i++)
        if (got[i] != want[i]) return false;
    return true;
}

static bool bools_are(const bool *got, const int *want, int n) {
    for (int i = 0; i < n; i++)
        if (got[i] != (want[i] != 0)) return false;
    return true;
}

// ---- the fixtures ---------------------------------------------------------------------------------------

typedef struct {
    const char *name;
    int levels, in_ch, out_ch;
    int boc[4], layers[4], heads[4], tlayers[4], down_cross[4], up_cross[4];
    int cross_dim;
    bool linear, upcast;
    float freq_shift;
} FixtureWant;

static void check_fixture(const FixtureWant *w) {
    char path[256];
    snprintf(path, sizeof path, FIXTURES "/%s/unet/config.json", w->name);
    UNetConfig c;
    int rc = unet_config_load(&c, path);
    if (!CHECK(rc == 0, "%s parses: %s", path, df_error_message())) return;
    int n = w->levels;
    CHECK(c.levels == n, "%s: levels %d (want %d)", w->name, c.levels, n);
    CHECK(c.in_channels == w->in_ch && c.out_channels == w->out_ch, "%s: in/out channels %d/%d (want %d/%d)", w->name,
          c.in_channels, c.out_channels, w->in_ch, w->out_ch);
    CHECK(ints_are(c.block_out_channels, w->boc, n), "%s: block_out_channels", w->name);
    CHECK(ints_are(c.layers_per_block, w->layers, n), "%s: layers_per_block per level", w->name);
    CHECK(ints_are(c.heads, w->heads, n), "%s: heads per level (%d %d ...) from attention_head_dim", w->name,
          c.heads[0], c.heads[1]);
    CHECK(ints_are(c.transformer_layers, w->tlayers, n), "%s: transformer_layers per level", w->name);
    CHECK(bools_are(c.down_cross, w->down_cross, n), "%s: down block types", w->name);
    CHECK(bools_are(c.up_cross, w->up_cross, n), "%s: up block types", w->name);
    CHECK(c.cross_attention_dim == w->cross_dim, "%s: cross_attention_dim %d (want %d)", w->name,
          c.cross_attention_dim, w->cross_dim);
    CHECK(c.use_linear_projection == w->linear, "%s: use_linear_projection %d", w->name, c.use_linear_projection);
    CHECK(c.upcast_attention == w->upcast, "%s: upcast_attention %d", w->name, c.upcast_attention);
    CHECK(c.time_embed_dim == 4 * w->boc[0], "%s: time_embed_dim %d = 4 * %d", w->name, c.time_embed_dim, w->boc[0]);
    CHECK(c.norm_num_groups == 4 && fabsf(c.norm_eps - 1e-5f) < 1e-12f, "%s: norm_num_groups %d, norm_eps %g", w->name,
          c.norm_num_groups, c.norm_eps);
    CHECK(c.flip_sin_to_cos && c.freq_shift == w->freq_shift, "%s: flip_sin_to_cos %d, freq_shift %g", w->name,
          c.flip_sin_to_cos, c.freq_shift);
    CHECK(c.downsample_padding == 1 && c.sample_size == 16, "%s: downsample_padding %d, sample_size %d", w->name,
          c.downsample_padding, c.sample_size);
    bool any_only_cross = false;
    for (int i = 0; i < n; i++) any_only_cross |= c.only_cross_attention[i];
    CHECK(!any_only_cross, "%s: only_cross_attention false on every level", w->name);

    // the same text through unet_config_parse gives the same struct
    char *text = read_text(path);
    UNetConfig c2;
    rc = unet_config_parse(&c2, text, "label");
    CHECK(rc == 0 && memcmp(&c, &c2, sizeof c) == 0, "%s: unet_config_parse(text) == unet_config_load(path)", w->name);
    free(text);

    // unet_config_print summarises it
    char *printed = NULL;
    size_t printed_size = 0;
    FILE *mem = open_memstream(&printed, &printed_size);
    unet_config_print(&c, mem);
    fclose(mem);
    char want_levels[32], want_ctx[32];
    snprintf(want_levels, sizeof want_levels, "levels %d", n);
    snprintf(want_ctx, sizeof want_ctx, "ctx %d", w->cross_dim);
    CHECK(strstr(printed, want_levels) && strstr(printed, want_ctx), "%s: unet_config_print: %s", w->name, printed);
    free(printed);
}

static void test_fixtures(void) {
    const FixtureWant wants[] = {
        // attention_head_dim [3, 2] (a list), use_linear_projection true
        {"lin2", 2, 4, 4, {12, 16}, {1, 1}, {3, 2}, {1, 1}, {1, 0}, {0, 1}, 24, true, false, 0.0f},
        // attention_head_dim 2 (an int → every level), 1×1-conv projections, layers_per_block 2, freq_shift 1
        {"conv3", 3, 3, 3, {8, 12, 16}, {2, 2, 2}, {2, 2, 2}, {1, 1, 1}, {1, 1, 0}, {0, 1, 1}, 32, false, false, 1.0f},
        // per-level heads and transformer_layers_per_block [1, 2, 1, 1], upcast_attention
        {"sd2ish4", 4, 4, 4, {8, 12, 16, 16}, {1, 1, 1, 1}, {2, 3, 4, 4}, {1, 2, 1, 1}, {1, 1, 1, 0}, {0, 1, 1, 1}, 16,
         true, true, 0.0f},
    };
    for (size_t i = 0; i < sizeof wants / sizeof wants[0]; i++) check_fixture(&wants[i]);
}

// ---- accepted variations --------------------------------------------------------------------------------

static bool parse_ok(const char *text, UNetConfig *c, const char *what) {
    int rc = unet_config_parse(c, text, "variant.json");
    return CHECK(rc == 0, "%s parses: %s", what, df_error_message());
}

static void test_variations(const char *lin2) {
    UNetConfig c;
    // num_attention_heads (non-null) wins over attention_head_dim [3, 2]
    char *t = edited(lin2, "{\"num_attention_heads\": [4, 8]}", NULL);
    if (parse_ok(t, &c, "num_attention_heads [4, 8]"))
        CHECK(c.heads[0] == 4 && c.heads[1] == 8, "num_attention_heads [4, 8] takes precedence: heads %d %d", c.heads[0],
              c.heads[1]);
    free(t);
    t = edited(lin2, "{\"num_attention_heads\": 2}", NULL);
    if (parse_ok(t, &c, "num_attention_heads 2"))
        CHECK(c.heads[0] == 2 && c.heads[1] == 2, "num_attention_heads 2 (int) applies to every level: %d %d",
              c.heads[0], c.heads[1]);
    free(t);
    // without num_attention_heads at all, attention_head_dim is still the head count
    const char *rm_heads[] = {"num_attention_heads", NULL};
    t = edited(lin2, NULL, rm_heads);
    if (parse_ok(t, &c, "no num_attention_heads key"))
        CHECK(c.heads[0] == 3 && c.heads[1] == 2, "attention_head_dim [3, 2] gives heads %d %d", c.heads[0], c.heads[1]);
    free(t);

    // per-level lists
    t = edited(lin2, "{\"layers_per_block\": [1, 3], \"transformer_layers_per_block\": 2, "
                     "\"only_cross_attention\": [true, false], \"cross_attention_dim\": [24, 24]}", NULL);
    if (parse_ok(t, &c, "per-level lists")) {
        CHECK(c.layers_per_block[0] == 1 && c.layers_per_block[1] == 3, "layers_per_block [1, 3]");
        CHECK(c.transformer_layers[0] == 2 && c.transformer_layers[1] == 2, "transformer_layers_per_block 2 everywhere");
        CHECK(c.only_cross_attention[0] && !c.only_cross_attention[1], "only_cross_attention [true, false]");
        CHECK(c.cross_attention_dim == 24, "cross_attention_dim [24, 24] → 24");
    }
    free(t);
    t = edited(lin2, "{\"only_cross_attention\": true}", NULL);
    if (parse_ok(t, &c, "only_cross_attention true"))
        CHECK(c.only_cross_attention[0] && c.only_cross_attention[1], "only_cross_attention true → every level");
    free(t);

    // keys accepted at their neutral value, and ignored bookkeeping keys
    t = edited(lin2, "{\"class_embed_type\": null, \"center_input_sample\": false, \"dropout\": 0, "
                     "\"_name_or_path\": \"/some/where\", \"resnet_out_scale_factor\": 1}", NULL);
    parse_ok(t, &c, "neutral values of fixed keys");
    free(t);

    // defaults: only block_out_channels and the block types given
    const char *minimal = "{\"block_out_channels\": [32, 64], \"down_block_types\": [\"CrossAttnDownBlock2D\", "
                          "\"DownBlock2D\"], \"up_block_types\": [\"UpBlock2D\", \"CrossAttnUpBlock2D\"]}";
    if (parse_ok(minimal, &c, "minimal config")) {
        const int two[2] = {2, 2}, eight[2] = {8, 8}, one[2] = {1, 1};
        CHECK(c.levels == 2 && c.block_out_channels[0] == 32 && c.block_out_channels[1] == 64, "minimal: channels");
        CHECK(c.in_channels == 4 && c.out_channels == 4, "default in/out channels 4 (got %d/%d)", c.in_channels,
              c.out_channels);
        CHECK(ints_are(c.layers_per_block, two, 2), "default layers_per_block 2");
        CHECK(ints_are(c.heads, eight, 2), "default attention_head_dim 8 heads (got %d %d)", c.heads[0], c.heads[1]);
        CHECK(ints_are(c.transformer_layers, one, 2), "default transformer_layers_per_block 1");
        CHECK(c.cross_attention_dim == 1280, "default cross_attention_dim 1280 (got %d)", c.cross_attention_dim);
        CHECK(!c.use_linear_projection && !c.upcast_attention, "default use_linear_projection/upcast_attention false");
        CHECK(c.norm_num_groups == 32 && c.norm_eps == 1e-5f, "default norm_num_groups 32, norm_eps 1e-5 (got %d, %g)",
              c.norm_num_groups, c.norm_eps);
        CHECK(c.flip_sin_to_cos && c.freq_shift == 0.0f, "default flip_sin_to_cos true, freq_shift 0");
        CHECK(c.downsample_padding == 1 && c.sample_size == 0, "default downsample_padding 1 (sample_size 0: unset)");
        CHECK(!c.only_cross_attention[0] && !c.only_cross_attention[1], "default only_cross_attention false");
        CHECK(c.down_cross[0] && !c.down_cross[1] && !c.up_cross[0] && c.up_cross[1], "minimal: block types");
        CHECK(c.time_embed_dim == 128, "minimal: time_embed_dim 4*32 = %d", c.time_embed_dim);
    }
}

// ---- refusals -------------------------------------------------------------------------------------------

// Parses `text` labelled "bad.json" in a forked child (a crash there fails the check instead of the suite);
// the status and df_error_message() come back through a pipe. Returns false when the child did not exit.
static bool parse_isolated(const char *text, int *status, char *msg, size_t msg_size, char *how, size_t how_size) {
    int fds[2];
    DF_CHECK(pipe(fds) == 0, "pipe for the isolated parse");
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    DF_CHECK(pid >= 0, "fork for the isolated parse");
    if (pid == 0) {
        close(fds[0]);
        alarm(30);
        UNetConfig c;
        int s = unet_config_parse(&c, text, "bad.json");
        const char *m = df_error_message();
        size_t len = strlen(m);
        if (write(fds[1], &s, sizeof s) != (ssize_t)sizeof s || write(fds[1], m, len) != (ssize_t)len) _exit(3);
        _exit(0);
    }
    close(fds[1]);
    size_t used = 0;
    char buf[4096];
    ssize_t got;
    while ((got = read(fds[0], buf + used, sizeof buf - 1 - used)) > 0) used += (size_t)got;
    close(fds[0]);
    int wstatus = 0;
    waitpid(pid, &wstatus, 0);
    buf[used] = '\0';
    if (WIFSIGNALED(wstatus)) {
        snprintf(how, how_size, "crashed with signal %d", WTERMSIG(wstatus));
        return false;
    }
    if (WEXITSTATUS(wstatus) != 0 || used < sizeof(int)) {
        snprintf(how, how_size, "exited %d", WEXITSTATUS(wstatus));
        return false;
    }
    memcpy(status, buf, sizeof(int));
    snprintf(msg, msg_size, "%s", buf + sizeof(int));
    how[0] = '\0';
    return true;
}

typedef struct {
    const char *what;
    const char *overrides;      // a JSON object merged into lin2's config (NULL: `raw` is the whole text)
    const char *raw;
    const char *needles[4];     // each must appear in the message (besides the label "bad.json")
} BadCase;

static const BadCase bad_cases[] = {
    // keys that change the architecture: refused by name with the value
    {"class_embed_type", "{\"class_embed_type\": \"timestep\"}", NULL, {"class_embed_type", "timestep"}},
    {"addition_embed_type", "{\"addition_embed_type\": \"text\"}", NULL, {"addition_embed_type", "\"text\""}},
    {"unknown key", "{\"foo_bar\": \"baz\"}", NULL, {"'foo_bar'", "baz"}},
    {"time_embedding_type", "{\"time_embedding_type\": \"fourier\"}", NULL, {"time_embedding_type", "fourier"}},
    {"resnet_time_scale_shift", "{\"resnet_time_scale_shift\": \"scale_shift\"}", NULL,
     {"resnet_time_scale_shift", "scale_shift"}},
    {"mid_block_type", "{\"mid_block_type\": \"UNetMidBlock2DSimpleCrossAttn\"}", NULL,
     {"mid_block_type", "UNetMidBlock2DSimpleCrossAttn"}},
    {"mid_block_type null (no mid block)", "{\"mid_block_type\": null}", NULL, {"mid_block_type", "null"}},
    {"down block type", "{\"down_block_types\": [\"AttnDownBlock2D\", \"DownBlock2D\"]}", NULL,
     {"down_block_types", "AttnDownBlock2D"}},
    {"up block type", "{\"up_block_types\": [\"UpBlock2D\", \"SimpleCrossAttnUpBlock2D\"]}", NULL,
     {"up_block_types", "SimpleCrossAttnUpBlock2D"}},
    // the message also says what is supported: "(only 0)", not the refused value again
    {"dropout", "{\"dropout\": 0.1}", NULL, {"dropout", "0.1", "(only 0)"}},
    {"downsample_padding", "{\"downsample_padding\": 0}", NULL, {"downsample_padding", "= 0"}},
    {"center_input_sample", "{\"center_input_sample\": true}", NULL, {"center_input_sample", "true"}},
    {"dual_cross_attention", "{\"dual_cross_attention\": true}", NULL, {"dual_cross_attention", "true"}},
    {"encoder_hid_dim", "{\"encoder_hid_dim\": 768}", NULL, {"encoder_hid_dim", "768"}},
    {"num_class_embeds", "{\"num_class_embeds\": 10}", NULL, {"num_class_embeds", "10"}},
    {"time_cond_proj_dim (LCM)", "{\"time_cond_proj_dim\": 256}", NULL, {"time_cond_proj_dim", "256"}},
    {"conv_in_kernel", "{\"conv_in_kernel\": 1}", NULL, {"conv_in_kernel", "= 1", "(only 3)"}},
    {"act_fn", "{\"act_fn\": \"gelu\"}", NULL, {"act_fn", "gelu"}},
    {"attention_type", "{\"attention_type\": \"gated\"}", NULL, {"attention_type", "gated"}},
    {"_class_name", "{\"_class_name\": \"UNet2DModel\"}", NULL, {"_class_name", "UNet2DModel"}},
    {"mid_block_scale_factor", "{\"mid_block_scale_factor\": 1.414}", NULL,
     {"mid_block_scale_factor", "1.414", "(only 1)"}},
    // sizes that do not fit together
    {"groups do not divide channels", "{\"norm_num_groups\": 5}", NULL, {"norm_num_groups = 5", "12"}},
    {"heads do not divide channels", "{\"attention_head_dim\": [5, 2]}", NULL, {"5 attention heads", "12"}},
    {"num_attention_heads do not divide", "{\"num_attention_heads\": 7}", NULL, {"7 attention heads", "12"}},
    {"heads 0", "{\"attention_head_dim\": 0}", NULL, {"attention_head_dim", "0"}},
    {"layers_per_block wrong length", "{\"layers_per_block\": [1, 1, 1]}", NULL, {"layers_per_block", "[1,1,1]"}},
    {"layers_per_block 0", "{\"layers_per_block\": 0}", NULL, {"layers_per_block", "0"}},
    {"num_attention_heads wrong length", "{\"num_attention_heads\": [2, 2, 2]}", NULL,
     {"num_attention_heads", "[2,2,2]"}},
    {"transformer_layers_per_block nested (SDXL)", "{\"transformer_layers_per_block\": [[1, 2], 1]}", NULL,
     {"transformer_layers_per_block", "[[1,2],1]"}},
    {"cross_attention_dim differs per level", "{\"cross_attention_dim\": [24, 32]}", NULL,
     {"cross_attention_dim", "[24,32]"}},
    {"only_cross_attention wrong length", "{\"only_cross_attention\": [true]}", NULL, {"only_cross_attention", "[true]"}},
    {"down_block_types shorter than block_out_channels", "{\"down_block_types\": [\"CrossAttnDownBlock2D\"]}", NULL,
     {"down_block_types", "2"}},
    {"block_out_channels not a list", "{\"block_out_channels\": 12}", NULL, {"block_out_channels"}},
    {"block_out_channels empty", "{\"block_out_channels\": []}", NULL, {"block_out_channels"}},
    {"block_out_channels non-integer", "{\"block_out_channels\": [12, 16.5]}", NULL, {"block_out_channels", "16.5"}},
    {"block_out_channels[0] odd", "{\"block_out_channels\": [7, 16], \"norm_num_groups\": 1, \"attention_head_dim\": 1}",
     NULL, {"block_out_channels[0] = 7", "even"}},
    {"use_linear_projection not a bool", "{\"use_linear_projection\": \"yes\"}", NULL,
     {"use_linear_projection", "yes"}},
    {"in_channels non-integer", "{\"in_channels\": 4.5}", NULL, {"in_channels", "4.5"}},
    // values that make no model: refused, never a crash or a silent default
    {"norm_num_groups 0", "{\"norm_num_groups\": 0}", NULL, {"norm_num_groups", "0"}},
    {"norm_num_groups negative", "{\"norm_num_groups\": -4}", NULL, {"norm_num_groups", "-4"}},
    {"in_channels 0", "{\"in_channels\": 0}", NULL, {"in_channels", "0"}},
    {"out_channels negative", "{\"out_channels\": -1}", NULL, {"out_channels", "-1"}},
    {"norm_eps not a number", "{\"norm_eps\": \"abc\"}", NULL, {"norm_eps", "abc"}},
    {"freq_shift not a number", "{\"freq_shift\": \"abc\"}", NULL, {"freq_shift", "abc"}},
    // a key given twice: diffusers (Python's json) takes the last, so taking the first is a different model
    {"duplicate key", NULL,
     "{\"block_out_channels\": [12, 16], \"norm_num_groups\": 4, \"attention_head_dim\": 2, "
     "\"down_block_types\": [\"CrossAttnDownBlock2D\", \"DownBlock2D\"], "
     "\"up_block_types\": [\"UpBlock2D\", \"CrossAttnUpBlock2D\"], \"cross_attention_dim\": 24, "
     "\"cross_attention_dim\": 32}",
     {"cross_attention_dim"}},
    // not a config at all
    {"not JSON", NULL, "this is not json {", {"JSON"}},
    {"a JSON array", NULL, "[1, 2, 3]", {"JSON object"}},
    {"empty text", NULL, "", {"JSON"}},
    {"JSON null", NULL, "null", {"JSON object"}},
    {"truncated JSON", NULL, "{\"block_out_channels\": [12, 16], \"down_block_types\": [", {"JSON"}},
    // a valid object followed by more text (Python's json.loads refuses it: "Extra data")
    {"text after the object", NULL,
     "{\"block_out_channels\": [32, 64], \"down_block_types\": [\"CrossAttnDownBlock2D\", \"DownBlock2D\"], "
     "\"up_block_types\": [\"UpBlock2D\", \"CrossAttnUpBlock2D\"]} {\"class_embed_type\": \"timestep\"}",
     {"JSON"}},
};

static void test_refusals(const char *lin2) {
    int crashed = 0;
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const BadCase *bc = &bad_cases[i];
        char *text = bc->overrides ? edited(lin2, bc->overrides, NULL) : NULL;
        int status = 0;
        char msg[4096], how[128];
        bool exited = parse_isolated(text ? text : bc->raw, &status, msg, sizeof msg, how, sizeof how);
        if (!CHECK(exited, "%s: parse %s (input %s)", bc->what, how, bc->overrides ? bc->overrides : bc->raw)) {
            crashed++;
            free(text);
            continue;
        }
        bool named = strstr(msg, "bad.json") != NULL;
        char wanted[256] = "'bad.json'";
        for (int k = 0; k < 4 && bc->needles[k]; k++) {
            named = named && strstr(msg, bc->needles[k]) != NULL;
            snprintf(wanted + strlen(wanted), sizeof wanted - strlen(wanted), ", '%s'", bc->needles[k]);
        }
        CHECK(status < 0 && named, "%s: refused (status %d, want < 0) with %s in the message: \"%s\"", bc->what,
              status, wanted, msg);
        if (getenv("TEST_VERBOSE")) printf("    %-45s → %s\n", bc->what, msg);
        free(text);
    }
    CHECK(crashed == 0, "no bad config crashes the parser (%d did)", crashed);
}

static void test_load_errors(void) {
    UNetConfig c;
    const char *missing = "/tmp/diffurl-unetbad-no-such-dir/config.json";
    int rc = unet_config_load(&c, missing);
    CHECK(rc == DF_ERR_IO && strstr(df_error_message(), missing), "missing config.json: DF_ERR_IO naming the path: %s",
          df_error_message());
    rc = unet_config_load(&c, FIXTURES "/lin2/unet/diffusion_pytorch_model.safetensors");
    CHECK(rc < 0 && strstr(df_error_message(), "diffusion_pytorch_model.safetensors"),
          "a binary file as config is refused naming it: %s", df_error_message());
}

int main(void) {
    test_fixtures();
    char *lin2 = fixture_config_text("lin2");
    if (lin2) {
        test_variations(lin2);
        test_refusals(lin2);
    }
    free(lin2);
    test_load_errors();
    return test_finish("unet_config");
}
