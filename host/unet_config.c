// unet_config.c — diffusers UNet2DConditionModel config.json → UNetConfig.
//
// Every key diffusers may write is either understood, accepted only at the value that leaves the
// architecture unchanged (e.g. class_embed_type: null), or refused by name. Unknown keys are refused: a
// silently ignored key would be a silently different model.
#include <math.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "unet.h"

// Keys accepted only when null / at the stated default (the architecture diffurl implements).
typedef struct {
    const char *key;
    enum { MUST_BE_NULL, MUST_BE_FALSE, MUST_BE_NUMBER, MUST_BE_STRING, IGNORED } rule;
    double number;
    const char *string;
} FixedKey;

static const FixedKey fixed_keys[] = {
    {"_class_name", MUST_BE_STRING, 0, "UNet2DConditionModel"},
    {"_diffusers_version", IGNORED, 0, NULL},
    {"_name_or_path", IGNORED, 0, NULL},
    {"center_input_sample", MUST_BE_FALSE, 0, NULL},
    {"dual_cross_attention", MUST_BE_FALSE, 0, NULL},
    {"class_embed_type", MUST_BE_NULL, 0, NULL},
    {"addition_embed_type", MUST_BE_NULL, 0, NULL},
    {"addition_time_embed_dim", MUST_BE_NULL, 0, NULL},
    {"num_class_embeds", MUST_BE_NULL, 0, NULL},
    {"encoder_hid_dim", MUST_BE_NULL, 0, NULL},
    {"encoder_hid_dim_type", MUST_BE_NULL, 0, NULL},
    {"time_embedding_dim", MUST_BE_NULL, 0, NULL},
    {"time_embedding_act_fn", MUST_BE_NULL, 0, NULL},
    {"timestep_post_act", MUST_BE_NULL, 0, NULL},
    {"time_cond_proj_dim", MUST_BE_NULL, 0, NULL},
    {"projection_class_embeddings_input_dim", MUST_BE_NULL, 0, NULL},
    {"class_embeddings_concat", MUST_BE_FALSE, 0, NULL},
    {"mid_block_only_cross_attention", MUST_BE_NULL, 0, NULL},
    {"cross_attention_norm", MUST_BE_NULL, 0, NULL},
    {"reverse_transformer_layers_per_block", MUST_BE_NULL, 0, NULL},
    {"resnet_skip_time_act", MUST_BE_FALSE, 0, NULL},
    {"resnet_out_scale_factor", MUST_BE_NUMBER, 1.0, NULL},
    {"mid_block_scale_factor", MUST_BE_NUMBER, 1.0, NULL},
    {"dropout", MUST_BE_NUMBER, 0.0, NULL},
    {"conv_in_kernel", MUST_BE_NUMBER, 3, NULL},
    {"conv_out_kernel", MUST_BE_NUMBER, 3, NULL},
    {"resnet_time_scale_shift", MUST_BE_STRING, 0, "default"},
    {"time_embedding_type", MUST_BE_STRING, 0, "positional"},
    {"attention_type", MUST_BE_STRING, 0, "default"},
    {"act_fn", MUST_BE_STRING, 0, "silu"},
    {"mid_block_type", MUST_BE_STRING, 0, "UNetMidBlock2DCrossAttn"},
    {"addition_embed_type_num_heads", IGNORED, 0, NULL},  // used only with addition_embed_type (must be null)
};

static const char *const handled_keys[] = {
    "in_channels", "out_channels", "block_out_channels", "down_block_types", "up_block_types",
    "layers_per_block", "attention_head_dim", "num_attention_heads", "transformer_layers_per_block",
    "only_cross_attention", "cross_attention_dim", "use_linear_projection", "norm_num_groups", "norm_eps",
    "flip_sin_to_cos", "freq_shift", "upcast_attention", "downsample_padding", "sample_size",
};

static char *json_value_str(const cJSON *v, char *buf, size_t size) {
    char *printed = cJSON_PrintUnformatted(v);
    snprintf(buf, size, "%s", printed ? printed : "?");
    free(printed);
    return buf;
}

static int check_fixed(const FixedKey *fk, const cJSON *v, const char *label) {
    char shown[128], allowed[64];
    bool ok = true;
    switch (fk->rule) {
    case IGNORED: return DF_OK;
    case MUST_BE_NULL: ok = cJSON_IsNull(v); break;
    case MUST_BE_FALSE: ok = cJSON_IsFalse(v) || cJSON_IsNull(v); break;
    case MUST_BE_NUMBER: ok = cJSON_IsNumber(v) && v->valuedouble == fk->number; break;
    case MUST_BE_STRING: ok = cJSON_IsString(v) && strcmp(v->valuestring, fk->string) == 0; break;
    }
    if (ok) return DF_OK;
    return df_fail(DF_ERR_ARG, "%s: config key '%s' = %s is not supported by diffurl (only %s)", label, fk->key,
                   json_value_str(v, shown, sizeof shown),
                   fk->rule == MUST_BE_NULL    ? "null"
                   : fk->rule == MUST_BE_FALSE ? "false"
                   : fk->rule == MUST_BE_STRING ? fk->string
                                                : (snprintf(allowed, sizeof allowed, "%g", fk->number), allowed));
}

// Sizes beyond this are not a UNet anyone can run: refuse them rather than overflow.
#define CONFIG_INT_MAX 1000000

// An int, or a per-level list of ints (len must be `levels`), into out[levels].
static int int_or_list(const cJSON *v, int levels, int *out, const char *key, const char *label, int min_value) {
    char shown[128];
    if (cJSON_IsNumber(v)) {
        if (v->valuedouble != floor(v->valuedouble) || v->valuedouble < min_value || v->valuedouble > CONFIG_INT_MAX)
            return df_fail(DF_ERR_ARG, "%s: config key '%s' = %s must be an integer in [%d, %d]", label, key,
                           json_value_str(v, shown, sizeof shown), min_value, CONFIG_INT_MAX);
        for (int i = 0; i < levels; i++) out[i] = (int)v->valuedouble;
        return DF_OK;
    }
    if (cJSON_IsArray(v) && cJSON_GetArraySize(v) == levels) {
        for (int i = 0; i < levels; i++) {
            const cJSON *e = cJSON_GetArrayItem(v, i);
            if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || e->valuedouble < min_value ||
                e->valuedouble > CONFIG_INT_MAX)
                return df_fail(DF_ERR_ARG, "%s: config key '%s' = %s: entry %d must be an integer in [%d, %d]", label,
                               key, json_value_str(v, shown, sizeof shown), i, min_value, CONFIG_INT_MAX);
            out[i] = (int)e->valuedouble;
        }
        return DF_OK;
    }
    return df_fail(DF_ERR_ARG, "%s: config key '%s' = %s must be an integer or a list of %d integers", label, key,
                   json_value_str(v, shown, sizeof shown), levels);
}

static int get_int(const cJSON *root, const char *key, int fallback, int min_value, int *out, const char *label) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    char shown[128];
    if (!v || cJSON_IsNull(v)) {
        *out = fallback;
        return DF_OK;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < min_value ||
        v->valuedouble > CONFIG_INT_MAX)
        return df_fail(DF_ERR_ARG, "%s: config key '%s' = %s must be an integer in [%d, %d]", label, key,
                       json_value_str(v, shown, sizeof shown), min_value, CONFIG_INT_MAX);
    *out = (int)v->valuedouble;
    return DF_OK;
}

// A number (not a string, not null unless absent); `positive` requires > 0.
static int get_float(const cJSON *root, const char *key, float fallback, bool positive, float *out, const char *label) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    char shown[128];
    if (!v) {
        *out = fallback;
        return DF_OK;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || (positive && !(v->valuedouble > 0)))
        return df_fail(DF_ERR_ARG, "%s: config key '%s' = %s must be a %snumber", label, key,
                       json_value_str(v, shown, sizeof shown), positive ? "positive " : "");
    *out = (float)v->valuedouble;
    return DF_OK;
}

static int get_bool(const cJSON *root, const char *key, bool fallback, bool *out, const char *label) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    char shown[128];
    if (!v || cJSON_IsNull(v)) {
        *out = fallback;
        return DF_OK;
    }
    if (!cJSON_IsBool(v))
        return df_fail(DF_ERR_ARG, "%s: config key '%s' = %s must be true or false", label, key,
                       json_value_str(v, shown, sizeof shown));
    *out = cJSON_IsTrue(v);
    return DF_OK;
}

static int parse_block_types(const cJSON *root, const char *key, int levels, const char *cross_name,
                             const char *plain_name, bool *cross, const char *label) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    char shown[256];
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != levels)
        return df_fail(DF_ERR_ARG, "%s: config key '%s' must be a list of %d block types (one per entry of "
                       "block_out_channels)", label, key, levels);
    for (int i = 0; i < levels; i++) {
        const cJSON *e = cJSON_GetArrayItem(v, i);
        if (cJSON_IsString(e) && !strcmp(e->valuestring, cross_name)) cross[i] = true;
        else if (cJSON_IsString(e) && !strcmp(e->valuestring, plain_name)) cross[i] = false;
        else
            return df_fail(DF_ERR_ARG, "%s: config key '%s' entry %d = %s is not supported (only %s, %s)", label,
                           key, i, json_value_str(e, shown, sizeof shown), cross_name, plain_name);
    }
    return DF_OK;
}

int unet_config_parse(UNetConfig *cfg, const char *json_text, const char *label) {
    memset(cfg, 0, sizeof *cfg);
    // require_null_terminated: text after the object (a second object, say) is an error, not ignored
    cJSON *root = cJSON_ParseWithOpts(json_text, NULL, 1);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return df_fail(DF_ERR_FORMAT, "%s: not a JSON object", label);
    }
    int status = DF_OK;
    char shown[256];
#define TRY(call)                     \
    do {                              \
        if ((status = (call)) < 0) goto done; \
    } while (0)

    // 1. every key is known, and appears once (Python's json keeps the last duplicate, cJSON finds the first)
    for (const cJSON *item = root->child; item; item = item->next) {
        for (const cJSON *later = item->next; later; later = later->next)
            if (!strcmp(item->string, later->string)) {
                status = df_fail(DF_ERR_FORMAT, "%s: config key '%s' appears more than once", label, item->string);
                goto done;
            }
        bool known = false;
        for (size_t i = 0; i < sizeof fixed_keys / sizeof fixed_keys[0] && !known; i++)
            if (!strcmp(item->string, fixed_keys[i].key)) {
                known = true;
                TRY(check_fixed(&fixed_keys[i], item, label));
            }
        for (size_t i = 0; i < sizeof handled_keys / sizeof handled_keys[0] && !known; i++)
            known = !strcmp(item->string, handled_keys[i]);
        if (!known) {
            status = df_fail(DF_ERR_ARG, "%s: unknown config key '%s' = %s (diffurl refuses keys it does not "
                             "implement rather than ignoring them)", label, item->string,
                             json_value_str(item, shown, sizeof shown));
            goto done;
        }
    }

    // 2. the architecture
    const cJSON *boc = cJSON_GetObjectItemCaseSensitive(root, "block_out_channels");
    if (!cJSON_IsArray(boc) || cJSON_GetArraySize(boc) < 1 || cJSON_GetArraySize(boc) > UNET_MAX_LEVELS) {
        status = df_fail(DF_ERR_ARG, "%s: config key 'block_out_channels' must be a list of 1..%d integers", label,
                         UNET_MAX_LEVELS);
        goto done;
    }
    cfg->levels = cJSON_GetArraySize(boc);
    TRY(int_or_list(boc, cfg->levels, cfg->block_out_channels, "block_out_channels", label, 1));
    TRY(get_int(root, "in_channels", 4, 1, &cfg->in_channels, label));
    TRY(get_int(root, "out_channels", 4, 1, &cfg->out_channels, label));
    TRY(parse_block_types(root, "down_block_types", cfg->levels, "CrossAttnDownBlock2D", "DownBlock2D",
                          cfg->down_cross, label));
    TRY(parse_block_types(root, "up_block_types", cfg->levels, "CrossAttnUpBlock2D", "UpBlock2D", cfg->up_cross,
                          label));
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "layers_per_block");
    if (v) TRY(int_or_list(v, cfg->levels, cfg->layers_per_block, "layers_per_block", label, 1));
    else for (int i = 0; i < cfg->levels; i++) cfg->layers_per_block[i] = 2;
    // diffusers' naming quirk: attention_head_dim is the number of heads unless num_attention_heads is set.
    const cJSON *heads = cJSON_GetObjectItemCaseSensitive(root, "num_attention_heads");
    const char *heads_key = "num_attention_heads";
    if (!heads || cJSON_IsNull(heads)) {
        heads = cJSON_GetObjectItemCaseSensitive(root, "attention_head_dim");
        heads_key = "attention_head_dim";
    }
    if (heads && !cJSON_IsNull(heads)) TRY(int_or_list(heads, cfg->levels, cfg->heads, heads_key, label, 1));
    else for (int i = 0; i < cfg->levels; i++) cfg->heads[i] = 8;
    v = cJSON_GetObjectItemCaseSensitive(root, "transformer_layers_per_block");
    if (v && !cJSON_IsNull(v)) TRY(int_or_list(v, cfg->levels, cfg->transformer_layers, "transformer_layers_per_block", label, 1));
    else for (int i = 0; i < cfg->levels; i++) cfg->transformer_layers[i] = 1;
    v = cJSON_GetObjectItemCaseSensitive(root, "only_cross_attention");
    if (!v || cJSON_IsNull(v) || cJSON_IsBool(v)) {
        for (int i = 0; i < cfg->levels; i++) cfg->only_cross_attention[i] = v && cJSON_IsTrue(v);
    } else if (cJSON_IsArray(v) && cJSON_GetArraySize(v) == cfg->levels) {
        for (int i = 0; i < cfg->levels; i++) {
            const cJSON *e = cJSON_GetArrayItem(v, i);
            if (!cJSON_IsBool(e)) {
                status = df_fail(DF_ERR_ARG, "%s: config key 'only_cross_attention' = %s must hold booleans", label,
                                 json_value_str(v, shown, sizeof shown));
                goto done;
            }
            cfg->only_cross_attention[i] = cJSON_IsTrue(e);
        }
    } else {
        status = df_fail(DF_ERR_ARG, "%s: config key 'only_cross_attention' = %s must be a boolean or a list of %d",
                         label, json_value_str(v, shown, sizeof shown), cfg->levels);
        goto done;
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "cross_attention_dim");
    int cross_dims[UNET_MAX_LEVELS];
    if (v) TRY(int_or_list(v, cfg->levels, cross_dims, "cross_attention_dim", label, 1));
    else for (int i = 0; i < cfg->levels; i++) cross_dims[i] = 1280;
    for (int i = 1; i < cfg->levels; i++)
        if (cross_dims[i] != cross_dims[0]) {
            status = df_fail(DF_ERR_ARG, "%s: config key 'cross_attention_dim' = %s: per-level context widths are "
                             "not supported (all levels must share one)", label, json_value_str(v, shown, sizeof shown));
            goto done;
        }
    cfg->cross_attention_dim = cross_dims[0];
    TRY(get_bool(root, "use_linear_projection", false, &cfg->use_linear_projection, label));
    TRY(get_int(root, "norm_num_groups", 32, 1, &cfg->norm_num_groups, label));
    TRY(get_float(root, "norm_eps", 1e-5f, true, &cfg->norm_eps, label));
    TRY(get_bool(root, "flip_sin_to_cos", true, &cfg->flip_sin_to_cos, label));
    TRY(get_float(root, "freq_shift", 0.0f, false, &cfg->freq_shift, label));
    TRY(get_bool(root, "upcast_attention", false, &cfg->upcast_attention, label));
    TRY(get_int(root, "downsample_padding", 1, 0, &cfg->downsample_padding, label));
    TRY(get_int(root, "sample_size", 0, 0, &cfg->sample_size, label));
    cfg->time_embed_dim = cfg->block_out_channels[0] * 4;

    // 3. consistency
    if (cfg->downsample_padding != 1) {
        status = df_fail(DF_ERR_ARG, "%s: config key 'downsample_padding' = %d is not supported (only 1: diffusers "
                         "pads 0 asymmetrically)", label, cfg->downsample_padding);
        goto done;
    }
    for (int i = 0; i < cfg->levels; i++) {
        int c = cfg->block_out_channels[i];
        if (c % cfg->norm_num_groups != 0) {
            status = df_fail(DF_ERR_ARG, "%s: block_out_channels[%d] = %d is not divisible by norm_num_groups = %d",
                             label, i, c, cfg->norm_num_groups);
            goto done;
        }
        if (c % cfg->heads[i] != 0) {
            status = df_fail(DF_ERR_ARG, "%s: block_out_channels[%d] = %d is not divisible by its %d attention heads",
                             label, i, c, cfg->heads[i]);
            goto done;
        }
    }
    if (cfg->block_out_channels[0] % 2 != 0) {
        status = df_fail(DF_ERR_ARG, "%s: block_out_channels[0] = %d must be even (sinusoidal embedding width)",
                         label, cfg->block_out_channels[0]);
        goto done;
    }
#undef TRY
done:
    cJSON_Delete(root);
    return status;
}

int unet_config_load(UNetConfig *cfg, const char *path) {
    char *text = df_read_text_file(path, 64u << 20, "diffusers UNet config.json");
    if (!text) return DF_ERR_IO;
    int status = unet_config_parse(cfg, text, path);
    free(text);
    return status;
}

void unet_config_print(const UNetConfig *cfg, FILE *f) {
    fprintf(f, "unet: in %d out %d, levels %d:", cfg->in_channels, cfg->out_channels, cfg->levels);
    for (int i = 0; i < cfg->levels; i++)
        fprintf(f, " [%s C=%d x%d heads=%d%s]", cfg->down_cross[i] ? "attn" : "res", cfg->block_out_channels[i],
                cfg->layers_per_block[i], cfg->heads[i], cfg->transformer_layers[i] > 1 ? " deep" : "");
    fprintf(f, "; ctx %d, %s proj, groups %d, temb %d\n", cfg->cross_attention_dim,
            cfg->use_linear_projection ? "linear" : "conv1x1", cfg->norm_num_groups, cfg->time_embed_dim);
}
