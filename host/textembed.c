// textembed.c — the learned token + position embedding (textembed.h).
#include "textembed.h"

#include <string.h>

#include "common.h"
#include "philox.h"
#include "safetensors.h"

void textembed_init(TextEmbedding *e, int vocab, int length, int dim, uint64_t seed) {
    DF_CHECK(vocab > 0 && length > 0 && dim > 0, "text embedding sizes are positive");
    *e = (TextEmbedding){.vocab = vocab, .length = length, .dim = dim};
    size_t n = textembed_numel(e);
    e->params = DF_MALLOC(n * sizeof(float), "text embedding");
    e->grads = DF_CALLOC(n, sizeof(float), "text embedding gradients");
    for (size_t i = 0; i < n; i++) e->params[i] = 0.02f * philox_gaussian(seed, 0x7e47, i);
}

void textembed_free(TextEmbedding *e) {
    free(e->params), free(e->grads);
    memset(e, 0, sizeof *e);
}

size_t textembed_numel(const TextEmbedding *e) { return ((size_t)e->vocab + (size_t)e->length) * (size_t)e->dim; }

void textembed_forward(const TextEmbedding *e, float *ctx, const int *ids, int B) {
    const float *pos = e->params + (size_t)e->vocab * e->dim;
    for (int b = 0; b < B; b++)
        for (int l = 0; l < e->length; l++) {
            int id = ids[b * e->length + l];
            DF_CHECK(id >= 0 && id < e->vocab, "token ids are inside the vocabulary");
            const float *tok = e->params + (size_t)id * e->dim;
            float *out = ctx + ((size_t)b * e->length + l) * e->dim;
            for (int d = 0; d < e->dim; d++) out[d] = tok[d] + pos[(size_t)l * e->dim + d];
        }
}

void textembed_backward(TextEmbedding *e, const float *d_ctx, const int *ids, int B) {
    float *d_pos = e->grads + (size_t)e->vocab * e->dim;
    for (int b = 0; b < B; b++)
        for (int l = 0; l < e->length; l++) {
            const float *g = d_ctx + ((size_t)b * e->length + l) * e->dim;
            float *d_tok = e->grads + (size_t)ids[b * e->length + l] * e->dim;
            for (int d = 0; d < e->dim; d++) {
                d_tok[d] += g[d];
                d_pos[(size_t)l * e->dim + d] += g[d];
            }
        }
}

int textembed_save(const TextEmbedding *e, const char *path, const char *vocab_words) {
    SafeTensorsEntry entries[2] = {
        {"token_embedding.weight", DT_F32, 2, {e->vocab, e->dim}, e->params},
        {"position_embedding.weight", DT_F32, 2, {e->length, e->dim}, e->params + (size_t)e->vocab * e->dim},
    };
    const char *meta[] = {"vocab", vocab_words};
    return safetensors_write(path, entries, 2, meta, 1);
}

int textembed_load(TextEmbedding *e, const char *path, const char *expected_vocab) {
    memset(e, 0, sizeof *e);
    SafeTensorsFile f;
    if (safetensors_open(&f, path) < 0) return DF_ERR_FORMAT;
    int status = DF_OK;
    const SafeTensorInfo *tok = safetensors_find(&f, "token_embedding.weight");
    const SafeTensorInfo *pos = safetensors_find(&f, "position_embedding.weight");
    const char *vocab = safetensors_meta(&f, "vocab");
    if (!tok || !pos || tok->ndim != 2 || pos->ndim != 2 || tok->shape[1] != pos->shape[1]) {
        status = df_fail(DF_ERR_FORMAT, "%s: expected token_embedding.weight [V, D] and position_embedding.weight "
                         "[L, D]", path);
    } else if (expected_vocab && (!vocab || strcmp(vocab, expected_vocab) != 0)) {
        status = df_fail(DF_ERR_FORMAT, "%s: vocabulary '%s' does not match this build's '%s'", path,
                         vocab ? vocab : "(none)", expected_vocab);
    } else {
        textembed_init(e, (int)tok->shape[0], (int)pos->shape[0], (int)tok->shape[1], 0);
        status = safetensors_read_f32(&f, tok, e->params);
        if (status == DF_OK) status = safetensors_read_f32(&f, pos, e->params + (size_t)e->vocab * e->dim);
        if (status < 0) textembed_free(e);
    }
    safetensors_close(&f);
    return status;
}
