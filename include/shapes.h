// shapes.h — the "shapes" world: diffurl's embedded text-to-image world (DESIGN.md §2). Prompts over a small
// vocabulary ("a small red circle above a blue square"), a parser back to facts, a renderer of images that
// match a prompt, the shapes_alignment reward computed from the final image alone, the tokenizer for the
// learned text embedding, and the train/test prompt splits (the test split holds unseen combinations).
//
// Images are uint8 RGB [H, W, 3], or fp32 in [-1, 1] channels-last [H, W, 3] for the diffusion model.
#ifndef DIFFURL_SHAPES_H
#define DIFFURL_SHAPES_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { SHAPE_COLOR_RED = 0, SHAPE_COLOR_GREEN, SHAPE_COLOR_BLUE, SHAPE_COLOR_YELLOW, SHAPE_COLOR_PURPLE,
               SHAPE_COLOR_ORANGE, SHAPE_COLOR_COUNT } ShapeColor;
typedef enum { SHAPE_CIRCLE = 0, SHAPE_SQUARE, SHAPE_TRIANGLE, SHAPE_KIND_COUNT } ShapeKind;
typedef enum { SHAPE_SIZE_ANY = 0, SHAPE_SIZE_SMALL, SHAPE_SIZE_LARGE } ShapeSize;  // ANY: the prompt says none
typedef enum { REL_NONE = 0, REL_LEFT_OF, REL_RIGHT_OF, REL_ABOVE, REL_BELOW, REL_COUNT } ShapeRelation;

typedef struct {
    ShapeColor color;
    ShapeKind kind;
    ShapeSize size;
} ShapeObject;

// What a prompt says: one object, or two objects and the relation of the first to the second.
// count == 0 is the empty prompt (unconditional).
typedef struct {
    int count;
    ShapeObject obj[2];
    ShapeRelation relation;
} ShapePrompt;

const char *shape_color_name(ShapeColor c);
const char *shape_kind_name(ShapeKind k);
const char *shape_size_name(ShapeSize s);          // "" for SHAPE_SIZE_ANY
const char *shape_relation_name(ShapeRelation r);  // "left of", ...

// Canonical text: "a small red circle", "a red circle left of a large blue square", "" (empty).
void shape_prompt_text(const ShapePrompt *p, char *buf, size_t size);
// Parses text (case-insensitive, extra spaces ignored) into facts. A word outside the vocabulary or a
// sentence outside the grammar is refused with a message naming the word (df_error_message()); < 0 then.
int shape_prompt_parse(const char *text, ShapePrompt *out);

// ---- tokenizer (for the learned token + position embedding) --------------------------------------------

#define SHAPES_MAX_TOKENS 12  // "a small red circle left of a large blue square" is 10 words
// Token ids: 0 = padding, 1 = the empty prompt marker, then one id per vocabulary word.
int shapes_vocab_size(void);
const char *shapes_vocab_word(int id);
// Tokenizes canonical or user text into ids [SHAPES_MAX_TOKENS] (padded with 0; the empty prompt is {1, 0…}).
// Returns the number of non-padding tokens, or < 0 (message names the word) for words outside the vocabulary.
int shapes_tokenize(const char *text, int *ids);

// ---- rendering -----------------------------------------------------------------------------------------

// Renders an image that matches p (positions and sizes drawn from rng_seed, consistent with the relation and
// sizes; anti-aliased edges; a plain background with slight, seeded variation). Empty prompt: an image of a
// random single object (what an unconditional model should produce something like).
void shapes_render(const ShapePrompt *p, uint64_t rng_seed, int H, int W, uint8_t *rgb);

// ---- reward --------------------------------------------------------------------------------------------

// Per-term scores of shapes_alignment, each in [0, 1] (see shapes.c for the definition of each term).
typedef struct {
    double color[2];   // each object's colour present (enough pixels of its colour)
    double shape[2];   // its shape (fill ratio and aspect of the colour blob)
    double size[2];    // its size, when the prompt states one (1 when it does not)
    double relation;   // the spatial relation between the two objects (1 for one-object prompts)
    double total;      // the reward: the mean of the applicable terms
} ShapeScore;

// The shapes_alignment reward of an RGB image [H, W, 3] for prompt p: deterministic, in [0, 1].
double shapes_alignment(const uint8_t *rgb, int H, int W, const ShapePrompt *p, ShapeScore *terms);

// ---- splits ----------------------------------------------------------------------------------------------

typedef enum { SHAPES_SPLIT_PRETRAIN = 0, SHAPES_SPLIT_TRAIN, SHAPES_SPLIT_TEST } ShapesSplit;
// The prompts of a split, in a fixed order. TEST holds colour/shape/relation combinations that appear in
// neither PRETRAIN nor TRAIN. Returns the count; fills out[0..max) (pass NULL to count).
int shapes_split_prompts(ShapesSplit split, ShapePrompt *out, int max);
// Draws a pretraining prompt (mostly one object; some two-object prompts; a fraction of empty prompts).
ShapePrompt shapes_sample_pretrain_prompt(uint64_t *rng_state, double empty_fraction);

#ifdef __cplusplus
}
#endif

#endif  // DIFFURL_SHAPES_H
