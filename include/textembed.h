// textembed.h — the shapes world's text encoder: a learned token + position embedding table that turns
// token ids [L] into encoder_hidden_states [L, D]. Trained with the UNet during pretraining (its gradient is
// the UNet's d_ctx), frozen afterwards, saved with the model (text_embedding/ in the model folder).
// Host memory: the table is tiny and the gather/scatter is deterministic this way on every backend.
#ifndef DIFFURL_TEXTEMBED_H
#define DIFFURL_TEXTEMBED_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int vocab, length, dim;  // V token ids, L positions, D = the UNet's cross_attention_dim
    float *params;           // [V·D + L·D]: token table [V, D] then position table [L, D]
    float *grads;            // same layout (+=)
} TextEmbedding;

// Allocates a table with N(0, 0.02²)-style random init from seed (GPT-2's scale), grads zeroed.
void textembed_init(TextEmbedding *e, int vocab, int length, int dim, uint64_t seed);
void textembed_free(TextEmbedding *e);
size_t textembed_numel(const TextEmbedding *e);
// ctx [B, L, D] = tok[ids[b, l]] + pos[l]; ids [B, L] in [0, V).
void textembed_forward(const TextEmbedding *e, float *ctx, const int *ids, int B);
// grads += scatter of d_ctx [B, L, D] (fixed order: deterministic).
void textembed_backward(TextEmbedding *e, const float *d_ctx, const int *ids, int B);
// Saves/loads text_embedding.safetensors: token_embedding.weight [V, D], position_embedding.weight [L, D],
// with the vocabulary in the metadata ("vocab": space-separated words by id). Load checks the vocabulary
// against `expected_vocab` (NULL: no check) and refuses a mismatch by name.
int textembed_save(const TextEmbedding *e, const char *path, const char *vocab_words);
int textembed_load(TextEmbedding *e, const char *path, const char *expected_vocab);

#ifdef __cplusplus
}
#endif

#endif  // DIFFURL_TEXTEMBED_H
