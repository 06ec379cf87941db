// test_shapes.c — the shapes world: vocabulary and tokenizer, the prompt parser (round trip over every
// prompt of the grammar, errors that name the word), the renderer (determinism, objects visible where the
// prompt puts them, sizes), the shapes_alignment reward (ground truth ≥ 0.95, mismatched prompts far lower,
// adversarial images, determinism, range) and the prompt splits (sizes, the unseen-combination property,
// fixed order). Prints the reward's validation numbers.
//
// DIFFURL_SHAPES_PNG=DIR writes example grids (8× enlarged) to DIR/shapes_examples_<res>.png.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "harness.h"
#include "image.h"
#include "shapes.h"

// ---- helpers ---------------------------------------------------------------------------------------------

static void text_of(const ShapePrompt *p, char *buf) { shape_prompt_text(p, buf, SHAPES_PROMPT_TEXT_MAX); }

static ShapePrompt one(ShapeColor c, ShapeKind k, ShapeSize s) {
    return (ShapePrompt){.count = 1, .obj = {{c, k, s}}};
}
static ShapePrompt two(ShapeColor c0, ShapeKind k0, ShapeSize s0, ShapeRelation r, ShapeColor c1, ShapeKind k1,
                       ShapeSize s1) {
    return (ShapePrompt){.count = 2, .obj = {{c0, k0, s0}, {c1, k1, s1}}, .relation = r};
}

static ShapeRelation opposite(ShapeRelation r) {
    return r == REL_LEFT_OF ? REL_RIGHT_OF : r == REL_RIGHT_OF ? REL_LEFT_OF : r == REL_ABOVE ? REL_BELOW : REL_ABOVE;
}

// Independent of the reward: pixels whose colour is within `tol` of palette colour c, their count and centroid.
static int color_pixels(const uint8_t *rgb, int H, int W, int c, double tol, double *cx, double *cy) {
    int count = 0;
    double sx = 0, sy = 0;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            const uint8_t *px = rgb + ((size_t)y * W + x) * 3;
            double d = 0;
            for (int k = 0; k < 3; k++) d += (px[k] - shapes_palette[c][k]) * (double)(px[k] - shapes_palette[c][k]);
            if (d <= tol * tol) {
                count++;
                sx += x + 0.5;
                sy += y + 0.5;
            }
        }
    if (cx) *cx = count ? sx / count : 0;
    if (cy) *cy = count ? sy / count : 0;
    return count;
}

static bool terms_in_range(const ShapeScore *s) {
    double v[] = {s->color[0], s->color[1], s->shape[0], s->shape[1], s->size[0],
                  s->size[1],  s->relation, s->clean,    s->total};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        if (!(v[i] >= 0 && v[i] <= 1)) return false;
    return true;
}

// Scene of a two-object prompt, computed here from the words' meaning (independent of shapes.c): axis, the
// colour and shape on the left/top side, and on the right/bottom side.
typedef struct {
    int axis, ca, ka, cb, kb;
} Scene;
static Scene scene_of(const ShapePrompt *p) {
    bool first_is_a = p->relation == REL_LEFT_OF || p->relation == REL_ABOVE;
    const ShapeObject *a = &p->obj[first_is_a ? 0 : 1], *b = &p->obj[first_is_a ? 1 : 0];
    return (Scene){(p->relation == REL_LEFT_OF || p->relation == REL_RIGHT_OF) ? 0 : 1, a->color, a->kind, b->color,
                   b->kind};
}

static void upscale(const uint8_t *src, int H, int W, int f, uint8_t *dst) {
    for (int y = 0; y < H * f; y++)
        for (int x = 0; x < W * f; x++)
            memcpy(dst + ((size_t)y * W * f + x) * 3, src + ((size_t)(y / f) * W + x / f) * 3, 3);
}

// ---- vocabulary and tokenizer ------------------------------------------------------------------------------

static void test_tokenizer(void) {
    CHECK(shapes_vocab_size() == 20, "vocabulary: 2 special ids + 18 words (got %d)", shapes_vocab_size());
    CHECK(strcmp(shapes_vocab_word(0), "<pad>") == 0 && strcmp(shapes_vocab_word(1), "<empty>") == 0 &&
              strcmp(shapes_vocab_word(2), "a") == 0 && strcmp(shapes_vocab_word(19), "an") == 0 &&
              shapes_vocab_word(20) == NULL && shapes_vocab_word(-1) == NULL,
          "special ids, first and last words, out-of-range ids");
    // every word tokenizes to its own id
    for (int id = 2; id < shapes_vocab_size(); id++) {
        int ids[SHAPES_MAX_TOKENS];
        int n = shapes_tokenize(shapes_vocab_word(id), ids);
        CHECK(n == 1 && ids[0] == id && ids[1] == 0, "word '%s' → id %d (got n=%d id %d)", shapes_vocab_word(id), id, n,
              ids[0]);
    }
    int ids[SHAPES_MAX_TOKENS];
    int n = shapes_tokenize("a small red circle left of a large blue square", ids);
    int want[SHAPES_MAX_TOKENS] = {2, 3, 5, 11, 14, 16, 2, 4, 7, 12, 0, 0};
    CHECK(n == 10 && memcmp(ids, want, sizeof want) == 0, "ids of a ten-word prompt (n=%d: %d %d %d %d ... %d %d)", n,
          ids[0], ids[1], ids[2], ids[3], ids[9], ids[10]);
    int ids2[SHAPES_MAX_TOKENS];
    CHECK(shapes_tokenize("  A SMALL\tRed circle  LEFT of a Large BLUE square\n", ids2) == 10 &&
              memcmp(ids, ids2, sizeof ids) == 0,
          "tokenizer ignores case and extra white space");
    n = shapes_tokenize("", ids);
    CHECK(n == 1 && ids[0] == 1 && ids[1] == 0 && ids[SHAPES_MAX_TOKENS - 1] == 0, "empty prompt → {1, 0, ...}");
    CHECK(shapes_tokenize("   \t ", ids) == 1 && ids[0] == 1, "blank prompt → empty marker");
    n = shapes_tokenize("a red hexagon", ids);
    CHECK(n < 0 && strstr(df_error_message(), "'hexagon'") != NULL, "unknown word refused by name: %s",
          df_error_message());
    n = shapes_tokenize("a red circle, left of a blue square", ids);
    CHECK(n < 0 && strstr(df_error_message(), "'circle,'") != NULL, "punctuation is part of a word: %s",
          df_error_message());
    n = shapes_tokenize("a a a a a a a a a a a a a", ids);
    CHECK(n < 0 && strstr(df_error_message(), "13 words") != NULL, "13 words refused: %s", df_error_message());
    // the canonical text of every prompt of every split tokenizes; tokenize_prompt agrees with tokenize(text)
    ShapePrompt p = two(SHAPE_COLOR_ORANGE, SHAPE_TRIANGLE, SHAPE_SIZE_LARGE, REL_BELOW, SHAPE_COLOR_YELLOW,
                        SHAPE_CIRCLE, SHAPE_SIZE_ANY);
    char text[SHAPES_PROMPT_TEXT_MAX];
    text_of(&p, text);
    CHECK(shapes_tokenize_prompt(&p, ids) == 8 && shapes_tokenize(text, ids2) == 8 &&
              memcmp(ids, ids2, sizeof ids) == 0,
          "tokenize_prompt == tokenize(text) for '%s'", text);
    ShapePrompt empty = {0};
    CHECK(shapes_tokenize_prompt(&empty, ids) == 1 && ids[0] == 1, "tokenize_prompt of the empty prompt");
}

// ---- parser ------------------------------------------------------------------------------------------------

static int round_trip_failures;
static size_t longest_text;
static void round_trip(const ShapePrompt *p) {
    char text[SHAPES_PROMPT_TEXT_MAX], again[SHAPES_PROMPT_TEXT_MAX];
    text_of(p, text);
    if (strlen(text) > longest_text) longest_text = strlen(text);
    ShapePrompt q;
    memset(&q, 0x55, sizeof q);
    bool ok = shape_prompt_parse(text, &q) == 0;
    if (ok) text_of(&q, again);
    ok = ok && shape_prompt_equal(p, &q) && strcmp(text, again) == 0 && q.count == p->count;
    if (!ok && round_trip_failures++ < 5) CHECK(false, "round trip of '%s': %s", text, df_error_message());
}

static void expect_error(const char *text, const char *named) {
    ShapePrompt p;
    int status = shape_prompt_parse(text, &p);
    CHECK(status < 0 && strstr(df_error_message(), named) != NULL, "\"%s\" refused naming %s: %s", text, named,
          status < 0 ? df_error_message() : "(accepted)");
}

static void test_parser(void) {
    // every prompt the grammar can say (one object: 54; two objects: 54 × 4 × 54), and every split
    round_trip_failures = 0;
    int count = 0;
    ShapePrompt e = {0};
    round_trip(&e);
    for (int a = 0; a < 54; a++) {
        ShapeObject oa = {(ShapeColor)(a / 9), (ShapeKind)(a / 3 % 3), (ShapeSize)(a % 3)};
        ShapePrompt p = {.count = 1, .obj = {oa}};
        round_trip(&p);
        count++;
        for (int r = REL_LEFT_OF; r < REL_COUNT; r++)
            for (int b = 0; b < 54; b++) {
                ShapeObject ob = {(ShapeColor)(b / 9), (ShapeKind)(b / 3 % 3), (ShapeSize)(b % 3)};
                ShapePrompt q = {.count = 2, .obj = {oa, ob}, .relation = (ShapeRelation)r};
                round_trip(&q);
                count++;
            }
    }
    for (int s = SHAPES_SPLIT_PRETRAIN; s <= SHAPES_SPLIT_TEST; s++) {
        ShapePrompt list[512];
        int n = shapes_split_prompts((ShapesSplit)s, list, 512);
        for (int i = 0; i < n; i++) round_trip(&list[i]);
        count += n;
    }
    CHECK(round_trip_failures == 0, "text → parse → text identical, facts equal, for %d prompts (%d failures)", count,
          round_trip_failures);
    CHECK(longest_text < SHAPES_PROMPT_TEXT_MAX, "the longest canonical text (%zu chars) fits SHAPES_PROMPT_TEXT_MAX",
          longest_text);
    printf("parser: %d prompts round-trip; longest canonical text %zu chars\n", count, longest_text);

    // canonical forms
    char text[SHAPES_PROMPT_TEXT_MAX];
    ShapePrompt p = two(SHAPE_COLOR_RED, SHAPE_CIRCLE, SHAPE_SIZE_SMALL, REL_ABOVE, SHAPE_COLOR_BLUE, SHAPE_SQUARE,
                        SHAPE_SIZE_ANY);
    text_of(&p, text);
    CHECK(strcmp(text, "a small red circle above a blue square") == 0, "canonical text: '%s'", text);
    p = two(SHAPE_COLOR_ORANGE, SHAPE_TRIANGLE, SHAPE_SIZE_ANY, REL_LEFT_OF, SHAPE_COLOR_GREEN, SHAPE_CIRCLE,
            SHAPE_SIZE_LARGE);
    text_of(&p, text);
    CHECK(strcmp(text, "an orange triangle left of a large green circle") == 0, "canonical text: '%s'", text);

    // tolerance: case, white space, "a"/"an"
    ShapePrompt q;
    CHECK(shape_prompt_parse("  A  Small\tRED circle   ABOVE a blue SQUARE \n", &q) == 0, "mixed case parses: %s",
          df_error_message());
    ShapePrompt want = two(SHAPE_COLOR_RED, SHAPE_CIRCLE, SHAPE_SIZE_SMALL, REL_ABOVE, SHAPE_COLOR_BLUE, SHAPE_SQUARE,
                           SHAPE_SIZE_ANY);
    CHECK(shape_prompt_equal(&q, &want), "mixed case and spaces give the same facts");
    CHECK(shape_prompt_parse("a orange square", &q) == 0 && q.count == 1 && q.obj[0].color == SHAPE_COLOR_ORANGE,
          "'a orange square' is accepted");
    CHECK(shape_prompt_parse("", &q) == 0 && q.count == 0, "the empty text is the empty prompt");
    CHECK(shape_prompt_parse(" \t\n", &q) == 0 && q.count == 0, "blank text is the empty prompt");
    CHECK(shape_prompt_parse("a blue circle right of a blue circle", &q) == 0 && q.count == 2 &&
              q.relation == REL_RIGHT_OF,
          "two objects may share colour and shape");

    // errors, each naming the offending word
    expect_error("a red hexagon", "'hexagon'");
    expect_error("a red circle next to a blue square", "'next'");
    expect_error("red a circle", "'red'");
    expect_error("a red circle left a blue square", "'a'");
    expect_error("a red circle left a blue square", "'of' after 'left'");
    expect_error("a red circle left of", "'of'");
    expect_error("a red circle left of", "ends after");
    expect_error("a red circle above", "'above'");
    expect_error("a circle", "'circle'");
    expect_error("a small large red circle", "'large'");
    expect_error("a red blue circle", "'blue'");
    expect_error("a red", "'red'");
    expect_error("a red circle blue", "'blue'");
    expect_error("a red circle above a blue square a", "unexpected word 'a'");
    expect_error("a red circle of a blue square", "'of'");
    expect_error("of", "'of'");
    expect_error("a red circle above a blue square above a green circle", "unexpected word 'above'");
    expect_error("a red circle\xc3\xa9", "'circle\xc3\xa9'");
}

// ---- renderer ------------------------------------------------------------------------------------------------

static void test_renderer(void) {
    const int R = 16;
    uint8_t a[32 * 32 * 3], b[32 * 32 * 3];
    ShapePrompt p = two(SHAPE_COLOR_RED, SHAPE_CIRCLE, SHAPE_SIZE_SMALL, REL_LEFT_OF, SHAPE_COLOR_BLUE, SHAPE_SQUARE,
                        SHAPE_SIZE_ANY);
    shapes_render(&p, 42, R, R, a);
    shapes_render(&p, 42, R, R, b);
    CHECK(memcmp(a, b, (size_t)R * R * 3) == 0, "render is deterministic for a seed");
    int differ = 0;
    for (uint64_t s = 43; s < 53; s++) {
        shapes_render(&p, s, R, R, b);
        differ += memcmp(a, b, (size_t)R * R * 3) != 0;
    }
    CHECK(differ == 10, "different seeds give different images (%d of 10)", differ);

    // background: light gray, slight variation, no texture: neighbouring background pixels differ by ≤ 2
    float f[16 * 16 * 3];
    shapes_render_f32(&p, 42, R, R, f);
    double worst = 0;
    for (int i = 0; i < R * R * 3; i++) worst = fmax(worst, fabs(f[i] - (a[i] / 127.5 - 1.0)));
    CHECK(worst < 1e-6, "render_f32 is the uint8 image mapped to [-1, 1] (max diff %g)", worst);

    // over many prompts and seeds, at 16, 24, 32 and a non-square 16×24: objects visible, relation holds,
    // sizes in range, background light
    ShapePrompt train[512], test[512];
    int n_train = shapes_split_prompts(SHAPES_SPLIT_TRAIN, train, 512);
    int n_test = shapes_split_prompts(SHAPES_SPLIT_TEST, test, 512);
    int sizes[4][2] = {{16, 16}, {24, 24}, {32, 32}, {16, 24}};
    for (int si = 0; si < 4; si++) {
        int H = sizes[si][0], W = sizes[si][1];
        double u = (H < W ? H : W) / 16.0;
        int invisible = 0, wrong_relation = 0, bad_background = 0, images = 0;
        double min_sep = 1e9;
        for (int i = 0; i < n_train + n_test; i++) {
            const ShapePrompt *q = i < n_train ? &train[i] : &test[i - n_train];
            for (uint64_t seed = 0; seed < 3; seed++) {
                shapes_render(q, seed * 7919 + i, H, W, a);
                images++;
                double cx[2], cy[2];
                int cnt[2];
                for (int k = 0; k < 2; k++) cnt[k] = color_pixels(a, H, W, q->obj[k].color, 40, &cx[k], &cy[k]);
                if (cnt[0] < 3 * u * u || cnt[1] < 3 * u * u) invisible++;
                double dx = cx[1] - cx[0], dy = cy[1] - cy[0];
                double along = q->relation == REL_LEFT_OF    ? dx
                               : q->relation == REL_RIGHT_OF ? -dx
                               : q->relation == REL_ABOVE    ? dy
                                                             : -dy;
                double across = (q->relation == REL_LEFT_OF || q->relation == REL_RIGHT_OF) ? fabs(dy) : fabs(dx);
                if (along < 3 * u || across >= along) wrong_relation++;
                if (along < min_sep) min_sep = along;
                // background: the gray pixels (channels within 12 of each other) are at least a third of
                // the image, light, and vary by at most 24 levels (a plain background, no texture)
                int gray = 0, lo = 255, hi = 0;
                for (int j = 0; j < H * W; j++) {
                    const uint8_t *px = a + (size_t)j * 3;
                    int mn = px[0] < px[1] ? px[0] : px[1], mx = px[0] > px[1] ? px[0] : px[1];
                    mn = px[2] < mn ? px[2] : mn;
                    mx = px[2] > mx ? px[2] : mx;
                    if (mx - mn > 12) continue;
                    gray++;
                    lo = mn < lo ? mn : lo;
                    hi = mx > hi ? mx : hi;
                }
                bad_background += gray * 3 < H * W || lo < 195 || hi > 235 || hi - lo > 24;
            }
        }
        CHECK(invisible == 0, "%dx%d: both objects visible in %d images (%d not)", H, W, images, invisible);
        CHECK(wrong_relation == 0,
              "%dx%d: relation holds (centroids ≥ 3u apart along the axis, less across) in %d images (%d not)", H, W,
              images, wrong_relation);
        CHECK(bad_background == 0, "%dx%d: light, plain gray background (%d images not)", H, W, bad_background);
        printf("renderer %dx%d: %d two-object images, least along-axis centroid separation %.2f px\n", H, W, images,
               min_sep);
    }

    // sizes: the area of strong pixels of a one-object render lies in the range of its stated size
    int bad_size = 0, n_size = 0;
    for (int c = 0; c < SHAPE_COLOR_COUNT; c++)
        for (int k = 0; k < SHAPE_KIND_COUNT; k++)
            for (int s = SHAPE_SIZE_SMALL; s <= SHAPE_SIZE_LARGE; s++)
                for (uint64_t seed = 0; seed < 5; seed++) {
                    ShapePrompt q = one((ShapeColor)c, (ShapeKind)k, (ShapeSize)s);
                    shapes_render(&q, seed, R, R, a);
                    int area = color_pixels(a, R, R, c, 110, NULL, NULL);  // pixels ≥ ~half covered
                    double fill = k == SHAPE_CIRCLE ? M_PI / 4 : k == SHAPE_SQUARE ? 1.0 : 0.5;
                    double lo = shapes_size_min((ShapeSize)s, 1), hi = shapes_size_max((ShapeSize)s, 1);
                    bool ok = area >= fill * (lo - 1) * (lo - 1) && area <= fill * (hi + 1) * (hi + 1);
                    bad_size += !ok;
                    n_size++;
                    if (!ok) printf("  size: %s %s %s: %d pixels\n", shape_size_name(s), shape_color_name(c),
                                    shape_kind_name(k), area);
                }
    CHECK(bad_size == 0, "rendered areas match small/large (%d of %d outside)", bad_size, n_size);

    // two objects of one colour stay two separate blobs; the empty prompt renders one object
    ShapePrompt same = two(SHAPE_COLOR_GREEN, SHAPE_SQUARE, SHAPE_SIZE_LARGE, REL_ABOVE, SHAPE_COLOR_GREEN,
                           SHAPE_SQUARE, SHAPE_SIZE_LARGE);
    double min_same = 1;
    for (uint64_t seed = 0; seed < 50; seed++) {
        shapes_render(&same, seed, R, R, a);
        ShapeScore t;
        shapes_alignment(a, R, R, &same, &t);
        min_same = fmin(min_same, fmin(t.color[0], t.color[1]) * t.relation);
    }
    CHECK(min_same > 0.9, "two large green squares, one above the other: two blobs, relation found (min %.3f)",
          min_same);
    ShapePrompt empty = {0};
    int coloured = 0;
    for (uint64_t seed = 0; seed < 20; seed++) {
        shapes_render(&empty, seed, R, R, a);
        int colours = 0;
        for (int c = 0; c < SHAPE_COLOR_COUNT; c++) colours += color_pixels(a, R, R, c, 40, NULL, NULL) >= 3;
        coloured += colours == 1;
    }
    CHECK(coloured == 20, "the empty prompt renders one object (%d of 20)", coloured);

    // example grids (8× enlarged) for looking at
    const char *dir = getenv("DIFFURL_SHAPES_PNG");
    if (dir) {
        ShapePrompt pre[256];
        int n_pre = shapes_split_prompts(SHAPES_SPLIT_PRETRAIN, pre, 256);
        for (int ri = 16; ri <= 32; ri += 8) {
            int N = 24, F = 8;
            uint8_t *img = malloc((size_t)ri * ri * 3), *big = malloc((size_t)N * ri * F * ri * F * 3);
            for (int i = 0; i < N; i++) {
                ShapePrompt q = i < 6    ? pre[i * 9 + 4]
                                : i < 12 ? pre[54 + (i * 11) % (n_pre - 54)]
                                : i < 18 ? train[i * 15]
                                         : test[i * 5];
                char text[SHAPES_PROMPT_TEXT_MAX];
                text_of(&q, text);
                shapes_render(&q, (uint64_t)i, ri, ri, img);
                printf("  example %2d: %s  (reward %.3f)\n", i, text, shapes_alignment(img, ri, ri, &q, NULL));
                upscale(img, ri, ri, F, big + (size_t)i * ri * F * ri * F * 3);
            }
            char path[512];
            snprintf(path, sizeof path, "%s/shapes_examples_%d.png", dir, ri);
            CHECK(png_write_grid(path, big, N, ri * F, ri * F, 6, 4, 0) == 0, "wrote %s", path);
            free(img);
            free(big);
        }
    }
}

// ---- reward --------------------------------------------------------------------------------------------------

static void fill_background(uint8_t *rgb, int H, int W, int level) {
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int c = 0; c < 3; c++) rgb[((size_t)y * W + x) * 3 + c] = (uint8_t)(level + (x + y) / 8 - c);
}

static void paint_square(uint8_t *rgb, int W, int x0, int y0, int side, int color) {
    for (int y = y0; y < y0 + side; y++)
        for (int x = x0; x < x0 + side; x++) memcpy(rgb + ((size_t)y * W + x) * 3, shapes_palette[color], 3);
}

static void test_reward(void) {
    ShapePrompt train[512], test[512], pre[512];
    int n_train = shapes_split_prompts(SHAPES_SPLIT_TRAIN, train, 512);
    int n_test = shapes_split_prompts(SHAPES_SPLIT_TEST, test, 512);
    int n_pre = shapes_split_prompts(SHAPES_SPLIT_PRETRAIN, pre, 512);
    ShapePrompt *all = malloc(sizeof(ShapePrompt) * (size_t)(n_train + n_test + n_pre));
    int n_all = 0;
    for (int i = 0; i < n_pre; i++) all[n_all++] = pre[i];
    for (int i = 0; i < n_train; i++) all[n_all++] = train[i];
    for (int i = 0; i < n_test; i++) all[n_all++] = test[i];
    uint8_t img[32 * 32 * 3], img2[32 * 32 * 3];

    // validation: ground truth vs mismatched prompts, at 16 (checked) and 24, 32 (checked too, reported)
    for (int R = 16; R <= 32; R += 8) {
        double gt_sum = 0, gt_min = 1, mm_sum = 0, mm_max = 0, two_gt = 0;
        int gt_n = 0, mm_n = 0, out_of_range = 0, two_n = 0;
        double term_min[6] = {1, 1, 1, 1, 1, 1};  // colour, shape, size, relation, clean, total
        for (int i = 0; i < n_all; i++)
            for (uint64_t seed = 0; seed < 4; seed++) {
                shapes_render(&all[i], 1000003 * seed + (uint64_t)i, R, R, img);
                ShapeScore t;
                double r = shapes_alignment(img, R, R, &all[i], &t);
                out_of_range += !terms_in_range(&t) || r != t.total;
                gt_sum += r;
                gt_n++;
                if (all[i].count == 2) two_gt += r, two_n++;
                if (r < gt_min) gt_min = r;
                for (int k = 0; k < all[i].count; k++) {
                    term_min[0] = fmin(term_min[0], t.color[k]);
                    term_min[1] = fmin(term_min[1], t.shape[k]);
                    term_min[2] = fmin(term_min[2], t.size[k]);
                }
                term_min[3] = fmin(term_min[3], t.relation);
                term_min[4] = fmin(term_min[4], t.clean);
                // mismatched: the same image scored for another prompt of the same kind (one or two objects)
                int j = i;
                uint64_t h = 0x1234 + (uint64_t)i * 31 + seed;
                do {
                    j = (int)(shapes_rng_next(&h) % (uint64_t)n_all);
                } while (j == i || all[j].count != all[i].count || shape_prompt_equal(&all[i], &all[j]));
                double m = shapes_alignment(img, R, R, &all[j], &t);
                out_of_range += !terms_in_range(&t);
                mm_sum += m;
                mm_n++;
                if (m > mm_max) mm_max = m;
            }
        double gt = gt_sum / gt_n, mm = mm_sum / mm_n;
        printf("reward %dx%d: ground truth mean %.4f (two-object %.4f, min %.4f; least terms: colour %.3f shape %.3f "
               "size %.3f relation %.3f clean %.3f) over %d images; mismatched prompt mean %.4f (max %.3f)\n",
               R, R, gt, two_gt / two_n, gt_min, term_min[0], term_min[1], term_min[2], term_min[3], term_min[4], gt_n,
               mm, mm_max);
        CHECK(gt >= 0.95, "%dx%d: ground-truth renders score %.4f on average (≥ 0.95)", R, R, gt);
        CHECK(gt_min >= 0.8, "%dx%d: every ground-truth render scores ≥ 0.8 (min %.4f)", R, R, gt_min);
        CHECK(mm < 0.6 && mm < gt - 0.4, "%dx%d: mismatched prompts score %.4f on average (< 0.6)", R, R, mm);
        CHECK(out_of_range == 0, "%dx%d: every term in [0, 1], total = the returned value (%d bad)", R, R, out_of_range);
    }

    // a non-square image (16×24): ground truth still scores high
    {
        double sum = 0;
        for (int i = 0; i < n_train; i++) {
            shapes_render(&train[i], (uint64_t)i, 16, 24, img);
            sum += shapes_alignment(img, 16, 24, &train[i], NULL);
        }
        printf("reward 16x24: ground truth mean %.4f over %d TRAIN images\n", sum / n_train, n_train);
        CHECK(sum / n_train >= 0.95, "16x24: ground truth %.4f", sum / n_train);
    }

    const int R = 16;
    // blank and trivial images score low
    ShapePrompt probes[4] = {
        one(SHAPE_COLOR_RED, SHAPE_CIRCLE, SHAPE_SIZE_ANY),
        one(SHAPE_COLOR_YELLOW, SHAPE_TRIANGLE, SHAPE_SIZE_SMALL),
        two(SHAPE_COLOR_BLUE, SHAPE_SQUARE, SHAPE_SIZE_ANY, REL_LEFT_OF, SHAPE_COLOR_GREEN, SHAPE_CIRCLE, SHAPE_SIZE_ANY),
        two(SHAPE_COLOR_PURPLE, SHAPE_TRIANGLE, SHAPE_SIZE_LARGE, REL_BELOW, SHAPE_COLOR_ORANGE, SHAPE_SQUARE,
            SHAPE_SIZE_SMALL),
    };
    double worst_blank = 0, worst_flat = 0, worst_noise = 0;
    TestRng rng = test_rng(5);
    for (int k = 0; k < 4; k++) {
        fill_background(img, R, R, 210);
        worst_blank = fmax(worst_blank, shapes_alignment(img, R, R, &probes[k], NULL));
        // flat images: white, black, mid gray, and each palette colour over the whole image
        for (int c = -3; c < SHAPE_COLOR_COUNT; c++) {
            for (int i = 0; i < R * R; i++)
                for (int ch = 0; ch < 3; ch++) img[i * 3 + ch] = c >= 0 ? shapes_palette[c][ch] : (uint8_t)(-c * 127 % 256);
            worst_flat = fmax(worst_flat, shapes_alignment(img, R, R, &probes[k], NULL));
        }
        for (int rep = 0; rep < 20; rep++) {
            for (int i = 0; i < R * R * 3; i++) img[i] = (uint8_t)test_uniform(&rng, 0, 256);
            ShapeScore t;
            worst_noise = fmax(worst_noise, shapes_alignment(img, R, R, &probes[k], &t));
            CHECK(terms_in_range(&t), "uniform noise: terms in range");
        }
    }
    printf("reward: blank background ≤ %.3f, flat images ≤ %.3f, uniform noise ≤ %.3f\n", worst_blank, worst_flat,
           worst_noise);
    CHECK(worst_blank <= 0.2, "a blank background scores ≤ 0.2 (worst %.3f)", worst_blank);
    CHECK(worst_flat <= 0.2, "flat images score ≤ 0.2 (worst %.3f)", worst_flat);
    CHECK(worst_noise <= 0.35, "uniform noise scores ≤ 0.35 (worst %.3f)", worst_noise);

    // every palette colour painted as squares: the clean term catches it
    fill_background(img, R, R, 212);
    for (int c = 0; c < SHAPE_COLOR_COUNT; c++) paint_square(img, R, 1 + (c % 3) * 5, 2 + (c / 3) * 7, 4, c);
    double worst_paint = 0;
    for (int k = 0; k < 4; k++) {
        ShapeScore t;
        worst_paint = fmax(worst_paint, shapes_alignment(img, R, R, &probes[k], &t));
        CHECK(t.clean < 0.5, "six coloured squares: clean term %.3f < 0.5", t.clean);
    }
    printf("reward: an image with a square of every colour scores ≤ %.3f\n", worst_paint);
    CHECK(worst_paint < 0.7, "an image with every colour scores < 0.7 (worst %.3f)", worst_paint);

    // adversarial edits of ground-truth renders, over every TRAIN and TEST prompt
    int wrong_shape_higher = 0, swap_not_lower = 0, n_pairs = 0;
    double shape_sum = 0, swap_rel_max = 0, gt_rel_min = 1;
    for (int i = 0; i < n_train + n_test; i++) {
        const ShapePrompt *q = i < n_train ? &train[i] : &test[i - n_train];
        uint64_t seed = 77 + (uint64_t)i;
        shapes_render(q, seed, R, R, img);
        ShapeScore right, t;
        double r = shapes_alignment(img, R, R, q, &right);
        // right colours, wrong shapes (each kind moved to the next)
        ShapePrompt w = *q;
        for (int k = 0; k < 2; k++) w.obj[k].kind = (ShapeKind)((w.obj[k].kind + 1) % SHAPE_KIND_COUNT);
        shapes_render(&w, seed, R, R, img2);
        double rw = shapes_alignment(img2, R, R, q, &t);
        wrong_shape_higher += rw >= r;
        shape_sum += t.shape[0] + t.shape[1];
        // the two objects' positions swapped (the opposite relation rendered)
        ShapePrompt s = *q;
        s.relation = opposite(q->relation);
        shapes_render(&s, seed, R, R, img2);
        double rs = shapes_alignment(img2, R, R, q, &t);
        swap_not_lower += !(rs < r && t.relation < right.relation);
        swap_rel_max = fmax(swap_rel_max, t.relation);
        gt_rel_min = fmin(gt_rel_min, right.relation);
        n_pairs++;
    }
    printf("reward: wrong shapes: mean shape term %.3f; swapped positions: relation term ≤ %.4f (ground truth ≥ %.4f)\n",
           shape_sum / (2 * n_pairs), swap_rel_max, gt_rel_min);
    CHECK(wrong_shape_higher == 0, "right colours, wrong shapes score lower than the right image (%d of %d not)",
          wrong_shape_higher, n_pairs);
    CHECK(shape_sum / (2 * n_pairs) < 0.15, "wrong shapes: mean shape term %.3f < 0.15", shape_sum / (2 * n_pairs));
    CHECK(swap_not_lower == 0, "swapped positions lower the relation term and the total (%d of %d not)", swap_not_lower,
          n_pairs);
    CHECK(swap_rel_max < 0.05, "swapped positions: relation term ≤ %.4f", swap_rel_max);

    // wrong size: "small" rendered and scored as "large", and the other way round
    double size_right_min = 1, size_wrong_max = 0;
    int size_total_not_lower = 0;
    for (int c = 0; c < SHAPE_COLOR_COUNT; c++)
        for (int k = 0; k < SHAPE_KIND_COUNT; k++)
            for (int s = SHAPE_SIZE_SMALL; s <= SHAPE_SIZE_LARGE; s++)
                for (uint64_t seed = 0; seed < 6; seed++) {
                    ShapePrompt q = one((ShapeColor)c, (ShapeKind)k, (ShapeSize)s);
                    ShapePrompt wq = one((ShapeColor)c, (ShapeKind)k, s == SHAPE_SIZE_SMALL ? SHAPE_SIZE_LARGE : SHAPE_SIZE_SMALL);
                    shapes_render(&q, seed, R, R, img);
                    shapes_render(&wq, seed, R, R, img2);
                    ShapeScore tr, tw;
                    double rr = shapes_alignment(img, R, R, &q, &tr), rw = shapes_alignment(img2, R, R, &q, &tw);
                    size_right_min = fmin(size_right_min, tr.size[0]);
                    size_wrong_max = fmax(size_wrong_max, tw.size[0]);
                    size_total_not_lower += !(rw < rr);
                }
    printf("reward: size term: right size ≥ %.4f, wrong size ≤ %.4f\n", size_right_min, size_wrong_max);
    CHECK(size_right_min > 0.95 && size_wrong_max < 0.05, "size term: right ≥ %.4f, wrong ≤ %.4f", size_right_min,
          size_wrong_max);
    CHECK(size_total_not_lower == 0, "the wrong size lowers the total (%d not)", size_total_not_lower);

    // a missing object: the image of "A" scored for "A relation B" loses B's colour, shape and the relation
    {
        ShapePrompt q = probes[2], only = one(q.obj[0].color, q.obj[0].kind, SHAPE_SIZE_ANY);
        shapes_render(&only, 3, R, R, img);
        ShapeScore t;
        double r = shapes_alignment(img, R, R, &q, &t);
        CHECK(t.color[1] == 0 && t.shape[1] == 0 && t.relation == 0 && t.color[0] == 1 && r < 0.6,
              "one object of two drawn: the other's terms and the relation are 0 (total %.3f)", r);
    }

    // two objects of one colour: ground truth scores high; swapped positions score lower
    {
        ShapePrompt q = two(SHAPE_COLOR_RED, SHAPE_CIRCLE, SHAPE_SIZE_ANY, REL_LEFT_OF, SHAPE_COLOR_RED, SHAPE_SQUARE,
                            SHAPE_SIZE_ANY);
        ShapePrompt sw = q;
        sw.relation = REL_RIGHT_OF;
        double gt = 0, swapped_sum = 0, gt_min = 1;
        int not_lower = 0;
        for (uint64_t seed = 0; seed < 40; seed++) {
            shapes_render(&q, seed, R, R, img);
            shapes_render(&sw, seed, R, R, img2);
            double a = shapes_alignment(img, R, R, &q, NULL), b = shapes_alignment(img2, R, R, &q, NULL);
            gt += a;
            gt_min = fmin(gt_min, a);
            swapped_sum += b;
            not_lower += !(b < a);
        }
        printf("reward: same-colour prompt: ground truth %.4f (min %.4f), swapped %.4f\n", gt / 40, gt_min,
               swapped_sum / 40);
        CHECK(gt / 40 >= 0.95 && gt_min > 0.85, "same colour: ground truth %.4f", gt / 40);
        CHECK(not_lower == 0 && swapped_sum / 40 < gt / 40 - 0.1, "same colour: swapped scores lower (%.4f)",
              swapped_sum / 40);
    }

    // determinism: bit-identical terms on repeated calls; the image is not modified
    {
        shapes_render(&probes[3], 9, R, R, img);
        memcpy(img2, img, sizeof img);
        ShapeScore t1, t2;
        double r1 = shapes_alignment(img, R, R, &probes[3], &t1);
        double r2 = shapes_alignment(img, R, R, &probes[3], &t2);
        CHECK(bitwise_equal(&t1, &t2, sizeof t1) && r1 == r2 && memcmp(img, img2, sizeof img) == 0,
              "reward is deterministic and leaves the image alone");
        CHECK(shapes_alignment(img, R, R, &probes[3], NULL) == r1, "terms == NULL gives the same total");
        ShapePrompt empty = {0};
        CHECK(shapes_alignment(img, R, R, &empty, &t1) == 1.0 && t1.total == 1.0, "the empty prompt scores 1");
    }

    // robustness (reported, loosely checked): ground truth with noise and with a blur, as a model's images
    {
        double noisy = 0, blurred = 0;
        int n = 0;
        for (int i = 0; i < n_train; i += 3) {
            shapes_render(&train[i], (uint64_t)i, R, R, img);
            for (int y = 0; y < R; y++)
                for (int x = 0; x < R; x++)
                    for (int c = 0; c < 3; c++) {
                        double s = 0;
                        int m = 0;
                        for (int dy = -1; dy <= 1; dy++)
                            for (int dx = -1; dx <= 1; dx++) {
                                int yy = y + dy, xx = x + dx;
                                if (yy < 0 || xx < 0 || yy >= R || xx >= R) continue;
                                s += img[((size_t)yy * R + xx) * 3 + c] * (dx == 0 && dy == 0 ? 4.0 : 1.0);
                                m += dx == 0 && dy == 0 ? 4 : 1;
                            }
                        img2[((size_t)y * R + x) * 3 + c] = (uint8_t)(s / m + 0.5);
                    }
            blurred += shapes_alignment(img2, R, R, &train[i], NULL);
            for (int k = 0; k < R * R * 3; k++) {
                double v = img[k] + 12 * test_normal(&rng);
                img2[k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v + 0.5);
            }
            noisy += shapes_alignment(img2, R, R, &train[i], NULL);
            n++;
        }
        printf("reward: ground truth with N(0, 12²) noise %.4f, with a 3×3 blur %.4f (%d images)\n", noisy / n,
               blurred / n, n);
        CHECK(noisy / n > 0.8 && blurred / n > 0.8, "noise and blur degrade the reward gracefully (%.3f, %.3f)",
              noisy / n, blurred / n);
    }

    // speed
    {
        shapes_render(&probes[2], 1, R, R, img);
        int reps = 20000;
        double t0 = df_time_seconds(), sink = 0;
        for (int i = 0; i < reps; i++) sink += shapes_alignment(img, R, R, &probes[2], NULL);
        double us = (df_time_seconds() - t0) / reps * 1e6;
        double t1 = df_time_seconds();
        for (int i = 0; i < reps / 10; i++) shapes_render(&probes[2], (uint64_t)i, R, R, img);
        double us_render = (df_time_seconds() - t1) / (reps / 10) * 1e6;
        printf("reward: %.1f µs per 16×16 two-object image; render %.1f µs (checksum %.3f)\n", us, us_render, sink / reps);
        CHECK(us < 200, "reward costs microseconds (%.1f µs)", us);
    }
    free(all);
}

// ---- splits ----------------------------------------------------------------------------------------------------

static bool contains(const ShapePrompt *list, int n, const ShapePrompt *p) {
    for (int i = 0; i < n; i++)
        if (shape_prompt_equal(&list[i], p)) return true;
    return false;
}

static void test_splits(void) {
    ShapePrompt pre[512], train[512], test[512], again[512];
    int n_pre = shapes_split_prompts(SHAPES_SPLIT_PRETRAIN, pre, 512);
    int n_train = shapes_split_prompts(SHAPES_SPLIT_TRAIN, train, 512);
    int n_test = shapes_split_prompts(SHAPES_SPLIT_TEST, test, 512);
    printf("splits: pretrain %d (one-object 54), train %d, test %d\n", n_pre, n_train, n_test);
    CHECK(n_pre == 195 && n_train == 288 && n_test == 108, "split sizes 195 / 288 / 108 (got %d / %d / %d)", n_pre,
          n_train, n_test);
    CHECK(shapes_split_prompts(SHAPES_SPLIT_TRAIN, NULL, 0) == n_train, "NULL counts");
    CHECK(shapes_split_prompts(SHAPES_SPLIT_TEST, again, 10) == n_test && shape_prompt_equal(&again[9], &test[9]),
          "a short buffer gets the first entries and the full count");

    // fixed order: the same list on every call, and pinned entries
    int n_again = shapes_split_prompts(SHAPES_SPLIT_TRAIN, again, 512);
    bool same = n_again == n_train;
    for (int i = 0; same && i < n_train; i++) same = shape_prompt_equal(&again[i], &train[i]);
    CHECK(same, "TRAIN is the same list on every call");
    char text[SHAPES_PROMPT_TEXT_MAX];
    struct {
        const ShapePrompt *list;
        int index;
        const char *want;
    } pins[] = {
        {pre, 0, "a red circle"},
        {pre, 53, "a large orange triangle"},
        {pre, 54, "a red circle left of a large blue circle"},
        {train, 0, "a red circle left of a blue triangle"},
        {train, 287, "a purple circle below an orange triangle"},
        {test, 0, "a red circle left of a green circle"},
        {test, 107, "a large green square below a small orange triangle"},
    };
    for (size_t i = 0; i < sizeof pins / sizeof pins[0]; i++) {
        text_of(&pins[i].list[pins[i].index], text);
        CHECK(strcmp(text, pins[i].want) == 0, "pinned entry %zu: '%s' (want '%s')", i, text, pins[i].want);
    }

    // composition of each split
    int one_obj = 0;
    for (int i = 0; i < n_pre; i++) one_obj += pre[i].count == 1;
    CHECK(one_obj == 54, "PRETRAIN holds all 54 one-object prompts (%d)", one_obj);
    bool two_only = true, distinct_colours = true;
    for (int i = 0; i < n_train + n_test; i++) {
        const ShapePrompt *p = i < n_train ? &train[i] : &test[i - n_train];
        two_only &= p->count == 2;
        distinct_colours &= p->obj[0].color != p->obj[1].color;
    }
    for (int i = 54; i < n_pre; i++) distinct_colours &= pre[i].count == 2 && pre[i].obj[0].color != pre[i].obj[1].color;
    CHECK(two_only && distinct_colours, "TRAIN and TEST are two-object prompts; two objects have distinct colours");
    int dups = 0;
    for (int i = 0; i < n_pre; i++) dups += contains(pre, i, &pre[i]);
    for (int i = 0; i < n_train; i++) dups += contains(train, i, &train[i]) || contains(pre, n_pre, &train[i]);
    for (int i = 0; i < n_test; i++) dups += contains(test, i, &test[i]);
    CHECK(dups == 0, "no duplicates within a split; TRAIN and PRETRAIN share no prompt (%d)", dups);

    // the unseen-combination property, from the words' meaning: no TEST scene (axis + colour on each side,
    // which covers both phrasings) appears in PRETRAIN or TRAIN, with any shapes or sizes; in particular no
    // TEST (colour, shape) pairs + relation combination does
    int leaks = 0, key_leaks = 0;
    for (int i = 0; i < n_test; i++) {
        Scene t = scene_of(&test[i]);
        for (int j = 0; j < n_pre + n_train; j++) {
            const ShapePrompt *p = j < n_pre ? &pre[j] : &train[j - n_pre];
            if (p->count != 2) continue;
            Scene s = scene_of(p);
            bool same_scene = s.axis == t.axis && s.ca == t.ca && s.cb == t.cb;
            leaks += same_scene;
            key_leaks += same_scene && s.ka == t.ka && s.kb == t.kb;
        }
    }
    CHECK(leaks == 0 && key_leaks == 0, "TEST scenes never appear in PRETRAIN or TRAIN (%d scene, %d key leaks)", leaks,
          key_leaks);
    int flags = 0;
    for (int i = 0; i < n_test; i++) flags += !shapes_prompt_held_out(&test[i]);
    for (int i = 0; i < n_pre + n_train; i++) flags += shapes_prompt_held_out(i < n_pre ? &pre[i] : &train[i - n_pre]);
    CHECK(flags == 0, "shapes_prompt_held_out is true exactly for TEST prompts (%d wrong)", flags);
    // the test asks for arrangements seen the other way round: each TEST scene's mirror is in TRAIN, every
    // colour and every relation word appears in TEST, and each TEST scene has all 9 shape pairs
    int mirror_missing = 0, colours_seen = 0, rel_seen = 0;
    for (int i = 0; i < n_test; i++) {
        Scene t = scene_of(&test[i]);
        bool found = false;
        for (int j = 0; j < n_train && !found; j++) {
            Scene s = scene_of(&train[j]);
            found = s.axis == t.axis && s.ca == t.cb && s.cb == t.ca;
        }
        mirror_missing += !found;
        colours_seen |= 1 << test[i].obj[0].color | 1 << test[i].obj[1].color;
        rel_seen |= 1 << test[i].relation;
    }
    CHECK(mirror_missing == 0, "every TEST scene's mirror image is in TRAIN (%d missing)", mirror_missing);
    CHECK(colours_seen == 63 && rel_seen == 30, "TEST uses every colour and every relation");
    int sized = 0;
    for (int i = 0; i < n_train; i++) sized += train[i].obj[0].size != SHAPE_SIZE_ANY || train[i].obj[1].size != SHAPE_SIZE_ANY;
    CHECK(sized > n_train / 4 && sized < 3 * n_train / 4, "about half of TRAIN names a size (%d of %d)", sized, n_train);

    // pretraining sampler: deterministic, draws only PRETRAIN prompts or the empty prompt, in the stated fractions
    uint64_t s1 = 99, s2 = 99;
    int empties = 0, ones = 0, outside = 0, mismatch = 0, N = 20000;
    for (int i = 0; i < N; i++) {
        ShapePrompt a = shapes_sample_pretrain_prompt(&s1, 0.1), b = shapes_sample_pretrain_prompt(&s2, 0.1);
        mismatch += !shape_prompt_equal(&a, &b);
        empties += a.count == 0;
        ones += a.count == 1;
        outside += a.count > 0 && !contains(pre, n_pre, &a);
    }
    printf("pretrain sampler: %.3f empty, %.3f one-object, %.3f two-object of %d draws\n", (double)empties / N,
           (double)ones / N, 1.0 - (double)(empties + ones) / N, N);
    CHECK(mismatch == 0 && outside == 0, "sampler is deterministic and stays in PRETRAIN");
    CHECK(fabs(empties / (double)N - 0.1) < 0.01 && fabs(ones / (double)N - 0.45) < 0.015,
          "empty fraction %.3f (0.1), one-object fraction %.3f (0.45)", empties / (double)N, ones / (double)N);
    uint64_t s3 = 7;
    int e0 = 0;
    for (int i = 0; i < 1000; i++) e0 += shapes_sample_pretrain_prompt(&s3, 0.0).count == 0;
    CHECK(e0 == 0, "empty_fraction 0 draws no empty prompt");

    ShapesSplit sp;
    CHECK(shapes_split_from_name("test", &sp) == 0 && sp == SHAPES_SPLIT_TEST &&
              strcmp(shapes_split_name(SHAPES_SPLIT_TRAIN), "train") == 0,
          "split names");
    CHECK(shapes_split_from_name("validation", &sp) < 0 && strstr(df_error_message(), "'validation'"),
          "unknown split name refused: %s", df_error_message());
}

int main(void) {
    test_tokenizer();
    test_parser();
    test_splits();
    test_renderer();
    test_reward();
    return test_finish("shapes");
}
