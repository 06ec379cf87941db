// shapes.h — the "shapes" world: diffurl's embedded text-to-image world (DESIGN.md §2). Prompts over a small
// vocabulary ("a small red circle above a blue square"), a parser back to facts, a renderer of images that
// match a prompt, the shapes_alignment reward computed from the final image alone, the tokenizer for the
// learned text embedding, and the train/test prompt splits (the test split holds unseen combinations).
//
// Images are uint8 RGB [H, W, 3], or fp32 in [-1, 1] channels-last [H, W, 3] for the diffusion model.
// Any size from 8×8 to 1024×1024 works; lengths scale with u = min(H, W)/16 (16×16 is the default).
// Geometry, the split rules and the reward's terms are documented at the top of host/shapes.c and
// host/shapes_reward.c. Everything here is deterministic and thread-safe (no global state).
#ifndef DIFFURL_SHAPES_H
#define DIFFURL_SHAPES_H

#include <stdbool.h>
#include <stddef.h>
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
// The palette (RGB) of the colours, in ShapeColor order.
extern const uint8_t shapes_palette[SHAPE_COLOR_COUNT][3];
// Same facts (sizes and relation compared only where they apply).
bool shape_prompt_equal(const ShapePrompt *a, const ShapePrompt *b);

#define SHAPES_PROMPT_TEXT_MAX 64  // bytes that hold the canonical text of any prompt (the longest is 56)

// Canonical text: "a small red circle", "a red circle left of a large blue square", "" (empty).
// Grammar: prompt := "" | object | object relation object;  object := "a"|"an" [small|large] colour shape;
//          relation := "left of" | "right of" | "above" | "below" (object 0's place relative to object 1).
void shape_prompt_text(const ShapePrompt *p, char *buf, size_t size);
// Parses text (case-insensitive, extra spaces ignored) into facts. A word outside the vocabulary or a
// sentence outside the grammar is refused with a message naming the word (df_error_message()); < 0 then.
int shape_prompt_parse(const char *text, ShapePrompt *out);

// ---- tokenizer (for the learned token + position embedding) --------------------------------------------

#define SHAPES_MAX_TOKENS 12  // "a small red circle left of a large blue square" is 10 words
// Token ids: 0 = padding, 1 = the empty prompt marker, then one id per vocabulary word from 2: a small large
// red green blue yellow purple orange circle square triangle left right of above below an (20 ids in all).
int shapes_vocab_size(void);
const char *shapes_vocab_word(int id);
// Tokenizes canonical or user text into ids [SHAPES_MAX_TOKENS] (padded with 0; the empty prompt is {1, 0…}).
// Returns the number of non-padding tokens, or < 0 (message names the word) for words outside the vocabulary
// or more than SHAPES_MAX_TOKENS words. It checks words, not grammar (shape_prompt_parse does that).
int shapes_tokenize(const char *text, int *ids);
// Tokenizes a prompt's canonical text (never fails). Returns the number of non-padding tokens.
int shapes_tokenize_prompt(const ShapePrompt *p, int *ids);

// ---- rendering -----------------------------------------------------------------------------------------

// Renders an image that matches p (positions and sizes drawn from rng_seed, consistent with the relation and
// sizes; anti-aliased edges; a plain background with slight, seeded variation). Empty prompt: an image of a
// random single object (what an unconditional model should produce something like).
void shapes_render(const ShapePrompt *p, uint64_t rng_seed, int H, int W, uint8_t *rgb);
// The same image as fp32 x/127.5 − 1 in [-1, 1], channels-last [H, W, 3] (the diffusion model's data).
void shapes_render_f32(const ShapePrompt *p, uint64_t rng_seed, int H, int W, float *out);

// Geometry shared by the renderer and the reward. An object is placed by its bounding-box centre (bx, by)
// and extent e (bbox width = height, pixels); pixel (x, y) covers [x, x+1) × [y, y+1).
#define SHAPES_MIN_SIDE 8
#define SHAPES_MAX_SIDE 1024
#define SHAPES_SUPERSAMPLE 4          // anti-aliasing: 4×4 coverage samples per pixel
#define SHAPES_SMALL_MIN 4.0          // extents in units of u = min(H, W)/16
#define SHAPES_SMALL_MAX 5.0
#define SHAPES_LARGE_MIN 6.5
#define SHAPES_LARGE_MAX 9.0
#define SHAPES_MARGIN 0.5             // u: bounding boxes stay this far inside the image
#define SHAPES_GAP 1.0                // u: least gap between two objects' bounding boxes along the relation axis
#define SHAPES_GAP_SAME_COLOR 2.0     // u: the same for two objects of one colour (they stay separate blobs)
double shapes_size_min(ShapeSize s, double u);  // extent range of "small"/"large" (ANY: as small)
double shapes_size_max(ShapeSize s, double u);
// Fraction of pixel (x, y) covered by the shape (supersampled).
double shapes_coverage(ShapeKind kind, double bx, double by, double extent, int x, int y);
// Extent of a shape of the given area (circle: area = π/4·e², square: e², triangle: e²/2).
double shapes_extent_of_area(ShapeKind kind, double area);
// Centroid minus bbox centre along y (triangles: e/6; otherwise 0).
double shapes_centroid_dy(ShapeKind kind, double extent);
// splitmix64: the generator behind shapes_render's layouts and shapes_sample_pretrain_prompt.
uint64_t shapes_rng_next(uint64_t *state);

// ---- reward --------------------------------------------------------------------------------------------

// Per-term scores of shapes_alignment, each in [0, 1] (host/shapes_reward.c defines each term).
typedef struct {
    double color[2];   // each object's colour present (enough pixels of its colour)
    double shape[2];   // its shape (the colour blob matched against templates of each shape)
    double size[2];    // its size, when the prompt states one (1 when it does not)
    double relation;   // the spatial relation between the two objects (1 for one-object prompts)
    double clean;      // the share of the image's coloured mass that belongs to the prompt's objects
    double total;      // the reward: the mean of the applicable terms
} ShapeScore;

// The shapes_alignment reward of an RGB image [H, W, 3] for prompt p: deterministic, in [0, 1]; terms may
// be NULL. The empty prompt scores 1 (it states nothing).
double shapes_alignment(const uint8_t *rgb, int H, int W, const ShapePrompt *p, ShapeScore *terms);

// ---- splits ----------------------------------------------------------------------------------------------

typedef enum { SHAPES_SPLIT_PRETRAIN = 0, SHAPES_SPLIT_TRAIN, SHAPES_SPLIT_TEST } ShapesSplit;
// The prompts of a split, in a fixed order. TEST holds colour/shape/relation combinations that appear in
// neither PRETRAIN nor TRAIN. Returns the count; fills out[0..max) (pass NULL to count).
// Sizes: PRETRAIN 54 one-object + 141 two-object = 195, TRAIN 288, TEST 108 (rules in host/shapes.c).
int shapes_split_prompts(ShapesSplit split, ShapePrompt *out, int max);
const char *shapes_split_name(ShapesSplit split);  // "pretrain", "train", "test"
int shapes_split_from_name(const char *name, ShapesSplit *out);  // < 0 with a message for other names
// True for a two-object prompt whose scene (axis and the colours on each side) is held out for TEST.
bool shapes_prompt_held_out(const ShapePrompt *p);
// Draws a pretraining prompt with the splitmix64 state *rng_state: the empty prompt with probability
// empty_fraction; otherwise a one-object prompt (uniform over the 54) with probability
// SHAPES_PRETRAIN_ONE_OBJECT_FRACTION, else one of PRETRAIN's two-object prompts (uniform).
#define SHAPES_PRETRAIN_ONE_OBJECT_FRACTION 0.5
ShapePrompt shapes_sample_pretrain_prompt(uint64_t *rng_state, double empty_fraction);

#ifdef __cplusplus
}
#endif

#endif  // DIFFURL_SHAPES_H
