// shapes.c — the "shapes" world (DESIGN.md §2): vocabulary, prompt text and parser, tokenizer, renderer and
// the prompt splits. The shapes_alignment reward is in shapes_reward.c; both share the geometry below
// (shapes_coverage, shapes_extent_of_area) through shapes.h.
//
// Geometry. Continuous image coordinates: x to the right, y down, pixel (x, y) covers [x, x+1) × [y, y+1).
// Every object is placed by the centre (bx, by) of its bounding box and its extent e (bbox width = height):
//   circle   — the disc of diameter e;                      area π/4·e², centroid (bx, by)
//   square   — axis-aligned, side e;                        area e²,     centroid (bx, by)
//   triangle — upright isosceles, apex (bx, by − e/2), base from (bx ± e/2, by + e/2);
//                                                           area e²/2,   centroid (bx, by + e/6)
// Sizes scale with u = min(H, W)/16 (the 16×16 image is the unit): small e ∈ [4u, 5u], large e ∈ [6.5u, 9u]
// (16×16: small 4–5 px, large 6.5–9 px across). Pixel coverage is supersampled SHAPES_SUPERSAMPLE² points.
#include "shapes.h"

#include <ctype.h>
#include <math.h>
#include <string.h>

#include "common.h"

// ---- palette and vocabulary ------------------------------------------------------------------------------

// Saturated, well separated colours (the closest pair, orange–yellow, is 81 levels apart in RGB).
const uint8_t shapes_palette[SHAPE_COLOR_COUNT][3] = {
    {220, 40, 40},   // red
    {40, 180, 60},   // green
    {50, 80, 220},   // blue
    {230, 210, 40},  // yellow
    {150, 60, 190},  // purple
    {240, 130, 30},  // orange
};

static const char *const color_names[SHAPE_COLOR_COUNT] = {"red", "green", "blue", "yellow", "purple", "orange"};
static const char *const kind_names[SHAPE_KIND_COUNT] = {"circle", "square", "triangle"};
static const char *const size_names[3] = {"", "small", "large"};
static const char *const relation_names[REL_COUNT] = {"", "left of", "right of", "above", "below"};

// Token ids: 0 padding, 1 the empty-prompt marker, then these words from id 2 on (the order is the id order;
// append only, or saved text embeddings stop matching).
static const char *const vocab_words[] = {"a",      "small",  "large",  "red",    "green", "blue",
                                          "yellow", "purple", "orange", "circle", "square", "triangle",
                                          "left",   "right",  "of",     "above",  "below", "an"};
#define VOCAB_WORDS ((int)(sizeof vocab_words / sizeof vocab_words[0]))
#define TOKEN_FIRST_WORD 2

const char *shape_color_name(ShapeColor c) {
    return (c >= 0 && c < SHAPE_COLOR_COUNT) ? color_names[c] : "?";
}
const char *shape_kind_name(ShapeKind k) { return (k >= 0 && k < SHAPE_KIND_COUNT) ? kind_names[k] : "?"; }
const char *shape_size_name(ShapeSize s) { return (s >= 0 && s <= SHAPE_SIZE_LARGE) ? size_names[s] : "?"; }
const char *shape_relation_name(ShapeRelation r) { return (r >= 0 && r < REL_COUNT) ? relation_names[r] : "?"; }

int shapes_vocab_size(void) { return TOKEN_FIRST_WORD + VOCAB_WORDS; }

const char *shapes_vocab_word(int id) {
    if (id == 0) return "<pad>";
    if (id == 1) return "<empty>";
    if (id >= TOKEN_FIRST_WORD && id < TOKEN_FIRST_WORD + VOCAB_WORDS) return vocab_words[id - TOKEN_FIRST_WORD];
    return NULL;
}

bool shape_prompt_equal(const ShapePrompt *a, const ShapePrompt *b) {
    if (a->count != b->count) return false;
    for (int i = 0; i < a->count; i++)
        if (a->obj[i].color != b->obj[i].color || a->obj[i].kind != b->obj[i].kind || a->obj[i].size != b->obj[i].size)
            return false;
    return a->count < 2 || a->relation == b->relation;
}

// ---- prompt text ----------------------------------------------------------------------------------------

// The article is "an" before a vowel ("an orange circle"); the parser takes "a" and "an" alike.
static void append_object(const ShapeObject *o, char *buf, size_t size, size_t *len) {
    const char *next = o->size == SHAPE_SIZE_ANY ? shape_color_name(o->color) : shape_size_name(o->size);
    const char *article = strchr("aeiou", next[0]) ? "an" : "a";
    int n = o->size == SHAPE_SIZE_ANY ? snprintf(buf + *len, size - *len, "%s %s %s", article,
                                                 shape_color_name(o->color), shape_kind_name(o->kind))
                                      : snprintf(buf + *len, size - *len, "%s %s %s %s", article,
                                                 shape_size_name(o->size), shape_color_name(o->color),
                                                 shape_kind_name(o->kind));
    if (n > 0) *len += (size_t)n < size - *len ? (size_t)n : size - *len - 1;
}

void shape_prompt_text(const ShapePrompt *p, char *buf, size_t size) {
    DF_CHECK(buf != NULL && size > 0, "shape_prompt_text needs a buffer (64 bytes hold every prompt)");
    DF_CHECK(p->count >= 0 && p->count <= 2, "a ShapePrompt has 0, 1 or 2 objects");
    DF_CHECK(p->count < 2 || (p->relation > REL_NONE && p->relation < REL_COUNT), "a two-object prompt has a relation");
    buf[0] = '\0';
    size_t len = 0;
    if (p->count == 0) return;
    append_object(&p->obj[0], buf, size, &len);
    if (p->count == 2) {
        int n = snprintf(buf + len, size - len, " %s ", shape_relation_name(p->relation));
        if (n > 0) len += (size_t)n < size - len ? (size_t)n : size - len - 1;
        append_object(&p->obj[1], buf, size, &len);
    }
}

// ---- words: the scanner shared by the parser and the tokenizer ----------------------------------------------

#define MAX_WORDS 32  // more words than this is refused before any lookup

typedef struct {
    const char *start;
    int len;
    int vocab;  // index into vocab_words, or -1 when the word is not in the vocabulary
} Word;

static int vocab_lookup(const char *s, int len) {
    for (int v = 0; v < VOCAB_WORDS; v++) {
        const char *w = vocab_words[v];
        if ((int)strlen(w) != len) continue;
        int i = 0;
        while (i < len && tolower((unsigned char)s[i]) == w[i]) i++;
        if (i == len) return v;
    }
    return -1;
}

// Splits text at white space into words (case-insensitive lookup). Returns the word count, or < 0 with a
// message for too many words or a word outside the vocabulary (named, as typed).
static int scan_words(const char *text, Word *words, const char *what) {
    if (!text) return df_fail(DF_ERR_ARG, "%s: NULL text", what);
    int n = 0;
    const char *s = text;
    for (;;) {
        while (*s && isspace((unsigned char)*s)) s++;
        if (!*s) break;
        const char *start = s;
        while (*s && !isspace((unsigned char)*s)) s++;
        if (n == MAX_WORDS)
            return df_fail(DF_ERR_ARG, "%s: \"%.80s\" has more than %d words (a shapes prompt has at most 10)", what,
                           text, MAX_WORDS);
        int len = (int)(s - start);
        words[n] = (Word){start, len, vocab_lookup(start, len)};
        if (words[n].vocab < 0)
            return df_fail(DF_ERR_ARG,
                           "%s: unknown word '%.*s' in \"%.80s\"; the vocabulary is: a, small, large, red, green, "
                           "blue, yellow, purple, orange, circle, square, triangle, left of, right of, above, below, "
                           "an",
                           what, len > 40 ? 40 : len, start, text);
        n++;
    }
    return n;
}

// ---- parser ------------------------------------------------------------------------------------------------
// Grammar:  prompt   := ""  |  object  |  object relation object
//           object   := ("a" | "an") [size] colour shape       (canonical text: "an" before "orange")
//           relation := "left" "of" | "right" "of" | "above" | "below"

static int word_is(const Word *w, const char *s) { return w->vocab >= 0 && strcmp(vocab_words[w->vocab], s) == 0; }

static int find_in(const Word *w, const char *const *names, int count) {
    if (w->vocab < 0) return -1;
    for (int i = 0; i < count; i++)
        if (names[i][0] && strcmp(vocab_words[w->vocab], names[i]) == 0) return i;
    return -1;
}

// Error for "expected X" at word i (or at the end): names the word found, or the last word before the end.
static int expected(const char *text, const Word *words, int n, int i, const char *what) {
    if (i < n)
        return df_fail(DF_ERR_ARG, "prompt \"%.80s\": expected %s at word %d, got '%.*s'", text, what, i + 1,
                       words[i].len, words[i].start);
    if (n == 0) return df_fail(DF_ERR_ARG, "prompt \"%.80s\": expected %s", text, what);
    return df_fail(DF_ERR_ARG, "prompt \"%.80s\" ends after '%.*s': expected %s", text, words[n - 1].len,
                   words[n - 1].start, what);
}

static int parse_object(const char *text, const Word *words, int n, int *i, ShapeObject *o) {
    if (*i >= n || !(word_is(&words[*i], "a") || word_is(&words[*i], "an")))
        return expected(text, words, n, *i, "'a' (an object starts with 'a' or 'an')");
    (*i)++;
    o->size = SHAPE_SIZE_ANY;
    int s = *i < n ? find_in(&words[*i], size_names, 3) : -1;
    if (s > 0) {
        o->size = (ShapeSize)s;
        (*i)++;
    }
    int c = *i < n ? find_in(&words[*i], color_names, SHAPE_COLOR_COUNT) : -1;
    if (c < 0)
        return expected(text, words, n, *i,
                        o->size == SHAPE_SIZE_ANY ? "a size or a colour (red, green, blue, yellow, purple, orange)"
                                                  : "a colour (red, green, blue, yellow, purple, orange)");
    o->color = (ShapeColor)c;
    (*i)++;
    int k = *i < n ? find_in(&words[*i], kind_names, SHAPE_KIND_COUNT) : -1;
    if (k < 0) return expected(text, words, n, *i, "a shape (circle, square, triangle)");
    o->kind = (ShapeKind)k;
    (*i)++;
    return 0;
}

int shape_prompt_parse(const char *text, ShapePrompt *out) {
    Word words[MAX_WORDS];
    int n = scan_words(text, words, "prompt");
    if (n < 0) return n;
    ShapePrompt p;
    memset(&p, 0, sizeof p);
    if (n == 0) {  // the empty prompt
        *out = p;
        return 0;
    }
    int i = 0, status = parse_object(text, words, n, &i, &p.obj[0]);
    if (status < 0) return status;
    p.count = 1;
    if (i < n) {
        if (word_is(&words[i], "left") || word_is(&words[i], "right")) {
            p.relation = word_is(&words[i], "left") ? REL_LEFT_OF : REL_RIGHT_OF;
            i++;
            if (i >= n || !word_is(&words[i], "of"))
                return expected(text, words, n, i, p.relation == REL_LEFT_OF ? "'of' after 'left'" : "'of' after 'right'");
            i++;
        } else if (word_is(&words[i], "above")) {
            p.relation = REL_ABOVE;
            i++;
        } else if (word_is(&words[i], "below")) {
            p.relation = REL_BELOW;
            i++;
        } else {
            return expected(text, words, n, i, "a relation (left of, right of, above, below) or the end");
        }
        status = parse_object(text, words, n, &i, &p.obj[1]);
        if (status < 0) return status;
        p.count = 2;
        if (i < n)
            return df_fail(DF_ERR_ARG, "prompt \"%.80s\": unexpected word '%.*s' after the second object", text,
                           words[i].len, words[i].start);
    }
    *out = p;
    return 0;
}

// ---- tokenizer -----------------------------------------------------------------------------------------------

int shapes_tokenize(const char *text, int *ids) {
    Word words[MAX_WORDS];
    int n = scan_words(text, words, "tokenize");
    if (n < 0) return n;
    if (n > SHAPES_MAX_TOKENS)
        return df_fail(DF_ERR_ARG, "tokenize: \"%.80s\" has %d words; at most %d fit", text, n, SHAPES_MAX_TOKENS);
    for (int t = 0; t < SHAPES_MAX_TOKENS; t++) ids[t] = 0;
    if (n == 0) {
        ids[0] = 1;
        return 1;
    }
    for (int t = 0; t < n; t++) ids[t] = TOKEN_FIRST_WORD + words[t].vocab;
    return n;
}

int shapes_tokenize_prompt(const ShapePrompt *p, int *ids) {
    char text[SHAPES_PROMPT_TEXT_MAX];
    shape_prompt_text(p, text, sizeof text);
    int n = shapes_tokenize(text, ids);
    DF_CHECK(n > 0, "the canonical text of a ShapePrompt always tokenizes");
    return n;
}

// ---- random numbers (splitmix64) ------------------------------------------------------------------------------

uint64_t shapes_rng_next(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double rng_uniform(uint64_t *state, double lo, double hi) {
    return lo + (hi - lo) * (double)(shapes_rng_next(state) >> 11) * 0x1.0p-53;
}

static int rng_below(uint64_t *state, int n) { return (int)((shapes_rng_next(state) >> 11) % (uint64_t)n); }

// ---- geometry ----------------------------------------------------------------------------------------------

static const double area_factor[SHAPE_KIND_COUNT] = {0.78539816339744831, 1.0, 0.5};  // area / e²

double shapes_extent_of_area(ShapeKind kind, double area) { return area > 0 ? sqrt(area / area_factor[kind]) : 0.0; }

double shapes_centroid_dy(ShapeKind kind, double extent) { return kind == SHAPE_TRIANGLE ? extent / 6.0 : 0.0; }

static inline bool inside(ShapeKind kind, double bx, double by, double half, double px, double py) {
    double dx = px - bx, dy = py - by;
    switch (kind) {
    case SHAPE_CIRCLE: return dx * dx + dy * dy <= half * half;
    case SHAPE_SQUARE: return fabs(dx) <= half && fabs(dy) <= half;
    default: {  // upright triangle: at depth t below the apex the half-width is t/2
        double t = dy + half;
        return t >= 0 && dy <= half && fabs(dx) <= 0.5 * t;
    }
    }
}

double shapes_coverage(ShapeKind kind, double bx, double by, double extent, int x, int y) {
    double half = 0.5 * extent;
    if (x + 1 <= bx - half || x >= bx + half || y + 1 <= by - half || y >= by + half) return 0.0;
    int hits = 0;
    const int S = SHAPES_SUPERSAMPLE;
    for (int j = 0; j < S; j++) {
        double py = y + (j + 0.5) / S;
        for (int i = 0; i < S; i++) hits += inside(kind, bx, by, half, x + (i + 0.5) / S, py);
    }
    return (double)hits / (S * S);
}

// ---- renderer ------------------------------------------------------------------------------------------------

typedef struct {
    ShapeObject o;
    double bx, by, e;  // bbox centre and extent (pixels)
} Placed;

double shapes_size_min(ShapeSize s, double u) { return (s == SHAPE_SIZE_LARGE ? SHAPES_LARGE_MIN : SHAPES_SMALL_MIN) * u; }
double shapes_size_max(ShapeSize s, double u) { return (s == SHAPE_SIZE_LARGE ? SHAPES_LARGE_MAX : SHAPES_SMALL_MAX) * u; }

static double draw_extent(uint64_t *rng, ShapeSize s, double u) {
    if (s == SHAPE_SIZE_ANY) s = rng_below(rng, 2) ? SHAPE_SIZE_LARGE : SHAPE_SIZE_SMALL;
    return rng_uniform(rng, shapes_size_min(s, u), shapes_size_max(s, u));
}

// Lays out one object anywhere, or two objects along the relation's axis: bounding boxes inside a margin,
// separated by a gap (wider for two objects of one colour, so they stay two connected blobs), centroids at
// most a third of their along-axis separation apart across the axis (the relation reads unambiguously).
static int layout(const ShapePrompt *p, uint64_t *rng, int H, int W, Placed *out) {
    double u = (H < W ? H : W) / 16.0, margin = SHAPES_MARGIN * u;
    if (p->count == 1) {
        out[0].o = p->obj[0];
        out[0].e = draw_extent(rng, p->obj[0].size, u);
        out[0].bx = rng_uniform(rng, margin + out[0].e / 2, W - margin - out[0].e / 2);
        out[0].by = rng_uniform(rng, margin + out[0].e / 2, H - margin - out[0].e / 2);
        return 1;
    }
    bool horizontal = p->relation == REL_LEFT_OF || p->relation == REL_RIGHT_OF;
    // lo: the object at the smaller coordinate along the axis (left, or top since y grows downwards)
    int lo = (p->relation == REL_LEFT_OF || p->relation == REL_ABOVE) ? 0 : 1, hi = 1 - lo;
    double L = horizontal ? W : H, P = horizontal ? H : W;
    double gap = (p->obj[0].color == p->obj[1].color ? SHAPES_GAP_SAME_COLOR : SHAPES_GAP) * u;
    double e[2];
    bool fits = false;
    for (int attempt = 0; attempt < 32 && !fits; attempt++) {
        e[0] = draw_extent(rng, p->obj[0].size, u);
        e[1] = draw_extent(rng, p->obj[1].size, u);
        fits = e[0] + e[1] + gap <= L - 2 * margin;
    }
    if (!fits) {  // the smallest sizes always fit (2·6.5u + 2u ≤ 16u − 2·0.5u)
        ShapeSize s0 = p->obj[0].size == SHAPE_SIZE_ANY ? SHAPE_SIZE_SMALL : p->obj[0].size;
        ShapeSize s1 = p->obj[1].size == SHAPE_SIZE_ANY ? SHAPE_SIZE_SMALL : p->obj[1].size;
        e[0] = shapes_size_min(s0, u);
        e[1] = shapes_size_min(s1, u);
    }
    // along the axis: split the slack uniformly into (before lo, extra gap, after hi)
    double slack = L - 2 * margin - e[0] - e[1] - gap;
    if (slack < 0) slack = 0;
    double t1 = rng_uniform(rng, 0, 1), t2 = rng_uniform(rng, 0, 1);
    double a = t1 < t2 ? t1 : t2, b = t1 < t2 ? t2 : t1;
    double along[2];
    along[lo] = margin + a * slack + e[lo] / 2;
    along[hi] = along[lo] + e[lo] / 2 + gap + (b - a) * slack + e[hi] / 2;
    // centroid offsets (triangles: the centroid is e/6 below the bbox centre)
    double dy[2] = {shapes_centroid_dy(p->obj[0].kind, e[0]), shapes_centroid_dy(p->obj[1].kind, e[1])};
    double sep = horizontal ? along[hi] - along[lo] : (along[hi] + dy[hi]) - (along[lo] + dy[lo]);
    double across_off[2] = {horizontal ? dy[0] : 0, horizontal ? dy[1] : 0};  // centroid − bbox centre, across
    double across[2];
    bool ok = false;
    for (int attempt = 0; attempt < 64 && !ok; attempt++) {
        for (int k = 0; k < 2; k++) across[k] = rng_uniform(rng, margin + e[k] / 2, P - margin - e[k] / 2);
        ok = fabs((across[0] + across_off[0]) - (across[1] + across_off[1])) <= sep / 3;
    }
    if (!ok) {  // both centroids on the middle of the intersection of their ranges
        double c_lo = -1e30, c_hi = 1e30;
        for (int k = 0; k < 2; k++) {
            double l = margin + e[k] / 2 + across_off[k], h = P - margin - e[k] / 2 + across_off[k];
            if (l > c_lo) c_lo = l;
            if (h < c_hi) c_hi = h;
        }
        double c = 0.5 * (c_lo + c_hi);
        for (int k = 0; k < 2; k++) {
            across[k] = c - across_off[k];
            double l = margin + e[k] / 2, h = P - margin - e[k] / 2;
            across[k] = across[k] < l ? l : across[k] > h ? h : across[k];
        }
    }
    for (int k = 0; k < 2; k++) {
        out[k].o = p->obj[k];
        out[k].e = e[k];
        out[k].bx = horizontal ? along[k] : across[k];
        out[k].by = horizontal ? across[k] : along[k];
    }
    return 2;
}

void shapes_render(const ShapePrompt *p, uint64_t rng_seed, int H, int W, uint8_t *rgb) {
    DF_CHECK(H >= SHAPES_MIN_SIDE && W >= SHAPES_MIN_SIDE && H <= SHAPES_MAX_SIDE && W <= SHAPES_MAX_SIDE,
             "shapes images are 8..1024 pixels on a side (16×16 is the default)");
    DF_CHECK(p->count >= 0 && p->count <= 2, "a ShapePrompt has 0, 1 or 2 objects");
    uint64_t rng = rng_seed ^ 0x5EED5EED12345678ull;
    shapes_rng_next(&rng);
    ShapePrompt q = *p;
    if (q.count == 0) {  // unconditional: one random object
        q.count = 1;
        q.obj[0] = (ShapeObject){(ShapeColor)rng_below(&rng, SHAPE_COLOR_COUNT), (ShapeKind)rng_below(&rng, SHAPE_KIND_COUNT),
                                 SHAPE_SIZE_ANY};
    }
    for (int i = 0; i < q.count; i++)
        DF_CHECK(q.obj[i].color >= 0 && q.obj[i].color < SHAPE_COLOR_COUNT && q.obj[i].kind >= 0 &&
                     q.obj[i].kind < SHAPE_KIND_COUNT && q.obj[i].size >= SHAPE_SIZE_ANY && q.obj[i].size <= SHAPE_SIZE_LARGE,
                 "a ShapePrompt object has a valid colour, kind and size");
    DF_CHECK(q.count == 1 || (q.relation > REL_NONE && q.relation < REL_COUNT), "a two-object prompt has a relation");

    // background: light gray with a per-image level, a per-channel tint and a gentle linear gradient
    double base = 215 + rng_uniform(&rng, -4, 4), tint[3], angle = rng_uniform(&rng, 0, 6.283185307179586);
    for (int c = 0; c < 3; c++) tint[c] = rng_uniform(&rng, -2, 2);
    double amp = rng_uniform(&rng, 0, 3), gx = cos(angle) * amp / (0.5 * W), gy = sin(angle) * amp / (0.5 * H);
    double *img = DF_MALLOC((size_t)H * W * 3 * sizeof(double), "shapes render buffer");
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            double g = base + gx * (x + 0.5 - 0.5 * W) + gy * (y + 0.5 - 0.5 * H);
            for (int c = 0; c < 3; c++) img[((size_t)y * W + x) * 3 + c] = g + tint[c];
        }

    Placed placed[2];
    int n = layout(&q, &rng, H, W, placed);
    for (int k = 0; k < n; k++) {
        const Placed *o = &placed[k];
        const uint8_t *col = shapes_palette[o->o.color];
        int x0 = (int)floor(o->bx - o->e / 2), x1 = (int)ceil(o->bx + o->e / 2);
        int y0 = (int)floor(o->by - o->e / 2), y1 = (int)ceil(o->by + o->e / 2);
        for (int y = y0 < 0 ? 0 : y0; y < (y1 > H ? H : y1); y++)
            for (int x = x0 < 0 ? 0 : x0; x < (x1 > W ? W : x1); x++) {
                double cov = shapes_coverage(o->o.kind, o->bx, o->by, o->e, x, y);
                if (cov <= 0) continue;
                double *px = &img[((size_t)y * W + x) * 3];
                for (int c = 0; c < 3; c++) px[c] = px[c] * (1 - cov) + col[c] * cov;
            }
    }
    for (size_t i = 0; i < (size_t)H * W * 3; i++) {
        double v = floor(img[i] + 0.5);
        rgb[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
    free(img);
}

void shapes_render_f32(const ShapePrompt *p, uint64_t rng_seed, int H, int W, float *out) {
    uint8_t *rgb = DF_MALLOC((size_t)H * W * 3, "shapes render");
    shapes_render(p, rng_seed, H, W, rgb);
    for (size_t i = 0; i < (size_t)H * W * 3; i++) out[i] = (float)(rgb[i] / 127.5 - 1.0);
    free(rgb);
}

// ---- splits ----------------------------------------------------------------------------------------------------
// Two-object prompts are built from *scenes*: an axis (horizontal or vertical) and the colours of the object
// on the left/top (A) and on the right/bottom (B), A ≠ B: 2 × 6 × 5 = 60 scenes. Each scene has two phrasings
// (horizontal: "A left of B" and "B right of A"; vertical: "A above B" and "B below A") and 9 shape pairs
// (kind of the A-side object, kind of the B-side object).
//
// Held out for TEST (12 scenes): horizontal scenes with B ≡ A + 1 (mod 6) and vertical scenes with
// B ≡ A + 2 (mod 6). The mirror image of each held-out scene (B left of A, B above A) is *not* held out, so the
// test asks for a colour arrangement the model has only seen the other way round, and a held-out scene is
// unseen in both phrasings.
//   TEST     = every held-out scene × 9 shape pairs, phrasing (q + s) mod 2                        = 108 prompts
//   TRAIN    = other scenes × 2 phrasings × the 3 shape pairs with (q + s + ph) ≡ 0 (mod 3)       = 288 prompts
//   PRETRAIN = all 54 one-object prompts (6 colours × 3 shapes × {no size, small, large}), then the 141
//              two-object combinations of non-held-out scenes with (q + s + ph) ≡ 1 (mod 6)  = 195 prompts
//              (141 of the 864 two-object combinations of seen scenes: 16%)
// s: scene index (0..59), ph: phrasing (0, 1), q: shape pair (0..8). TRAIN and PRETRAIN's two-object prompts
// are disjoint (residues 0 vs 1 mod 3), so RL trains on compositions the pretrained model never saw exactly,
// in scenes it did see. Sizes: a fixed hash of (s, ph, q) gives each two-object prompt one of six size
// patterns (half of them name no size). No randomness: the order is fixed by the loops below.

static bool scene_held_out(int axis, int a, int b) {
    int d = ((b - a) % SHAPE_COLOR_COUNT + SHAPE_COLOR_COUNT) % SHAPE_COLOR_COUNT;
    return axis == 0 ? d == 1 : d == 2;
}

bool shapes_prompt_held_out(const ShapePrompt *p) {
    if (p->count != 2) return false;
    int axis = (p->relation == REL_LEFT_OF || p->relation == REL_RIGHT_OF) ? 0 : 1;
    bool first_is_a = p->relation == REL_LEFT_OF || p->relation == REL_ABOVE;
    int a = first_is_a ? p->obj[0].color : p->obj[1].color, b = first_is_a ? p->obj[1].color : p->obj[0].color;
    return a != b && scene_held_out(axis, a, b);
}

static ShapePrompt two_object_prompt(int axis, int a, int b, int q, int ph, int s) {
    ShapeObject side_a = {(ShapeColor)a, (ShapeKind)(q / 3), SHAPE_SIZE_ANY};
    ShapeObject side_b = {(ShapeColor)b, (ShapeKind)(q % 3), SHAPE_SIZE_ANY};
    ShapePrompt p = {.count = 2};
    if (ph == 0) {
        p.obj[0] = side_a;
        p.obj[1] = side_b;
        p.relation = axis == 0 ? REL_LEFT_OF : REL_ABOVE;
    } else {
        p.obj[0] = side_b;
        p.obj[1] = side_a;
        p.relation = axis == 0 ? REL_RIGHT_OF : REL_BELOW;
    }
    uint64_t h = (uint64_t)(s * 18 + q * 2 + ph);
    static const ShapeSize patterns[6][2] = {{SHAPE_SIZE_ANY, SHAPE_SIZE_ANY},   {SHAPE_SIZE_ANY, SHAPE_SIZE_ANY},
                                             {SHAPE_SIZE_ANY, SHAPE_SIZE_ANY},   {SHAPE_SIZE_SMALL, SHAPE_SIZE_ANY},
                                             {SHAPE_SIZE_ANY, SHAPE_SIZE_LARGE}, {SHAPE_SIZE_LARGE, SHAPE_SIZE_SMALL}};
    int pattern = (int)(shapes_rng_next(&h) % 6);
    p.obj[0].size = patterns[pattern][0];
    p.obj[1].size = patterns[pattern][1];
    return p;
}

// Visits the two-object prompts of a split in the fixed order; returns the count, storing those with index
// in [0, max) into out (out may be NULL). one_object: PRETRAIN's one-object prompts first.
static int enumerate_split(ShapesSplit split, ShapePrompt *out, int max, bool one_object, bool two_object) {
    int n = 0;
    if (split == SHAPES_SPLIT_PRETRAIN && one_object)
        for (int c = 0; c < SHAPE_COLOR_COUNT; c++)
            for (int k = 0; k < SHAPE_KIND_COUNT; k++)
                for (int sz = SHAPE_SIZE_ANY; sz <= SHAPE_SIZE_LARGE; sz++) {
                    if (out && n < max)
                        out[n] = (ShapePrompt){.count = 1, .obj = {{(ShapeColor)c, (ShapeKind)k, (ShapeSize)sz}}};
                    n++;
                }
    if (!two_object) return n;
    for (int axis = 0; axis < 2; axis++)
        for (int a = 0; a < SHAPE_COLOR_COUNT; a++)
            for (int b = 0; b < SHAPE_COLOR_COUNT; b++) {
                if (a == b) continue;
                int s = axis * 30 + a * 5 + (b > a ? b - 1 : b);
                bool held = scene_held_out(axis, a, b);
                if ((split == SHAPES_SPLIT_TEST) != held) continue;
                for (int ph = 0; ph < 2; ph++)
                    for (int q = 0; q < 9; q++) {
                        bool take = split == SHAPES_SPLIT_TEST    ? (q + s) % 2 == ph
                                    : split == SHAPES_SPLIT_TRAIN ? (q + s + ph) % 3 == 0
                                                                  : (q + s + ph) % 6 == 1;
                        if (!take) continue;
                        if (out && n < max) out[n] = two_object_prompt(axis, a, b, q, ph, s);
                        n++;
                    }
            }
    return n;
}

int shapes_split_prompts(ShapesSplit split, ShapePrompt *out, int max) {
    DF_CHECK(split == SHAPES_SPLIT_PRETRAIN || split == SHAPES_SPLIT_TRAIN || split == SHAPES_SPLIT_TEST,
             "shapes splits are PRETRAIN, TRAIN and TEST");
    return enumerate_split(split, out, out ? max : 0, true, true);
}

const char *shapes_split_name(ShapesSplit split) {
    return split == SHAPES_SPLIT_PRETRAIN ? "pretrain" : split == SHAPES_SPLIT_TRAIN ? "train" : split == SHAPES_SPLIT_TEST ? "test" : "?";
}

int shapes_split_from_name(const char *name, ShapesSplit *out) {
    for (int s = SHAPES_SPLIT_PRETRAIN; s <= SHAPES_SPLIT_TEST; s++)
        if (name && strcmp(name, shapes_split_name((ShapesSplit)s)) == 0) {
            *out = (ShapesSplit)s;
            return 0;
        }
    return df_fail(DF_ERR_ARG, "unknown shapes split '%s' (pretrain, train, test)", name ? name : "(null)");
}

ShapePrompt shapes_sample_pretrain_prompt(uint64_t *rng_state, double empty_fraction) {
    ShapePrompt p = {0};
    if (rng_uniform(rng_state, 0, 1) < empty_fraction) return p;
    if (rng_uniform(rng_state, 0, 1) < SHAPES_PRETRAIN_ONE_OBJECT_FRACTION) {
        int j = rng_below(rng_state, SHAPE_COLOR_COUNT * SHAPE_KIND_COUNT * 3);
        return (ShapePrompt){.count = 1, .obj = {{(ShapeColor)(j / 9), (ShapeKind)(j / 3 % 3), (ShapeSize)(j % 3)}}};
    }
    int n_two = enumerate_split(SHAPES_SPLIT_PRETRAIN, NULL, 0, false, true);
    int j = rng_below(rng_state, n_two);
    // enumerate up to j (the list is small: ~150 prompts, microseconds)
    ShapePrompt list[256];
    DF_CHECK(n_two <= 256, "the PRETRAIN two-object list fits its buffer");
    enumerate_split(SHAPES_SPLIT_PRETRAIN, list, 256, false, true);
    return list[j];
}
