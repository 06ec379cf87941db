// shapes_reward.c — shapes_alignment: the programmatic alignment reward of the shapes world (the role
// CLIPScore plays for real models). It reads only the final uint8 RGB image and the prompt's facts; it is
// deterministic (no randomness, fixed iteration order) and costs microseconds for a 16×16 image.
//
// Lengths scale with u = min(H, W)/16 (pixels at 16×16); σ(z) = 1/(1 + e^−z); smoothstep is the C¹ ramp.
//
// 1. Background: the per-channel median of the border pixels (the renderer keeps objects inside a margin).
// 2. Pixel classes: a pixel v is compared with each palette colour c along the segment background → c:
//    α = (v − bg)·(c − bg)/|c − bg|² is the coverage the pixel would have if it were c blended with the
//    background (the renderer's anti-aliasing is exactly such a blend), and r = |v − bg − min(α, 1.5)(c − bg)|
//    the distance from that segment. The pixel takes the colour with the smallest r among those with
//    α ≥ 0.2, if r ≤ 10 + 0.25·α·|c − bg| (a relative tolerance: a gray or dark pixel is no colour); its
//    mass is min(α, 1). Edge pixels thus count by their coverage; pixels under 20% coverage (whose colour
//    cannot be told reliably) count not at all.
// 3. Blobs: 8-connected components of each colour's pixels; a blob's mass is Σ mass. Object i of the prompt is
//    the largest blob of its colour. When both objects share a colour they take its two largest blobs, in
//    whichever of the two assignments scores higher. For the shape, size and relation a blob is read as a
//    soft mask: its pixels plus a one-pixel halo of unclassified neighbours weighted by their coverage of the
//    blob's colour, clamped to [0, 0.2] (the anti-aliased or blurred fringe that step 2 leaves out), with
//    soft mass A and centroid (cx, cy) = the mass-weighted mean of pixel centres. The halo makes A the
//    shape's true area, also for blurred images (a blur moves mass outwards but keeps it).
// 4. Terms (each in [0, 1]):
//    colour_i   = min(1, M_i / 6u²), M_i the blob's mass: the object's colour is present with at least
//                 the mass of a small object (a small triangle has 8u²).
//    shape_i    = colour_i · σ((IoU_k − max_{j≠k} IoU_j)/0.03) · smoothstep(IoU_k; 0.5, 0.8), k the prompted
//                 shape, IoU_j the soft IoU Σmin/Σmax of the soft mask with a template of shape j that has the
//                 mask's area A and centroid, rendered like the renderer draws (4×4 supersampled coverage),
//                 the best of the template sharp and blurred by the separable kernels [w, 1−2w, w],
//                 w = 1/8, 1/4 (a blurry square is compared with a blurry square): the blob must look more
//                 like a k than like any other shape, and like a k at all. Equal-area templates of different
//                 shapes overlap by IoU ≈ 0.8 (circle/square), so the margin is what tells them apart.
//    size_i     = colour_i · (small: 1 − smoothstep(e; 5.25u, 6.25u); large: smoothstep(e; 5.25u, 6.25u) ·
//                 (1 − smoothstep(e; 11u, 13u))), e = √(A/fill_k) the extent of a shape k of area A (fill:
//                 circle π/4, square 1, triangle 1/2); the renderer's ranges are small 4–5u, large 6.5–9u.
//                 Only when the prompt states the object's size (reported as 1 otherwise).
//    relation   = min(colour_0, colour_1) · σ((a − 2u)/0.5u) · σ((a − p)/0.5u), with a the centroids'
//                 separation along the relation's axis, signed so that a > 0 when the relation holds, and
//                 p the absolute separation across it: object 0 must be at least ~2u on the right side of
//                 object 1, and more along the axis than across it. Only for two-object prompts.
//    clean      = M_sel / (M_sel + max(0, M_other − 0.5u²)): the share of the image's coloured mass that
//                 belongs to the prompt's blobs (M_other: every other classified pixel, beyond a half-pixel
//                 allowance). 0 when no blob was found. It stops "paint every colour" images from scoring.
//    total      = the mean of the applicable terms: colour and shape of each object, size of each object
//                 whose size is stated, relation for two objects, clean. The empty prompt states nothing:
//                 every term and the total are 1.
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "common.h"
#include "shapes.h"

#define ALPHA_FLOOR 0.2        // pixels under this coverage are not classified
#define ALPHA_OVERSHOOT 1.5    // α above 1 (over-saturated outputs) still matches the colour's segment
#define RESIDUAL_ABS 10.0      // colour tolerance: r ≤ RESIDUAL_ABS + RESIDUAL_REL·α·|c − bg|
#define RESIDUAL_REL 0.25
#define MIN_COLOR_DIST2 400.0  // a palette colour within 20 levels of the background cannot be detected
#define COLOR_MASS 6.0         // u²: the mass at which the colour term saturates
#define SHAPE_TEMPERATURE 0.03
#define SHAPE_IOU_LO 0.5
#define SHAPE_IOU_HI 0.8
#define SIZE_SPLIT_LO 5.25  // u: small ends, large begins (a 1u ramp between the two ranges)
#define SIZE_SPLIT_HI 6.25
#define SIZE_HUGE_LO 11.0  // u: "large" fades out between these extents
#define SIZE_HUGE_HI 13.0
#define REL_MIN_SEP 2.0  // u
#define REL_SCALE 0.5    // u
#define CLEAN_ALLOWANCE 0.5  // u²

typedef struct {
    int color;
    double mass;         // Σ mass over the blob's pixels (classified, α ≥ 0.2)
    int x0, y0, x1, y1;  // bbox, inclusive
} Blob;

// What the terms need of a blob: its soft mask (the blob's pixels plus a one-pixel halo of low-coverage
// pixels of its colour), the mask's mass and centroid, and its IoU with each shape's best template.
typedef struct {
    bool present;
    double mass, cx, cy;
    double iou[SHAPE_KIND_COUNT];
} BlobFit;

typedef struct {
    const uint8_t *rgb;
    int H, W;
    double u, bg[3];
    double dir[SHAPE_COLOR_COUNT][3], norm2[SHAPE_COLOR_COUNT];
    const int *label;     // [H·W] colour, −1 for unclassified
    const int *comp;      // [H·W] blob id, −1 for unclassified
    const double *mass;   // [H·W]
    double *soft;         // [(H+2)·(W+2)] scratch: a blob's soft mask over its window
    double *grid;         // [(H+4)·(W+4)] scratch: a template's coverage
} Scene;

static double sigmoid(double z) { return 1.0 / (1.0 + exp(-z)); }
static double clamp01(double x) { return x < 0 ? 0 : x > 1 ? 1 : x; }
static double smoothstep(double x, double lo, double hi) {
    double t = clamp01((x - lo) / (hi - lo));
    return t * t * (3 - 2 * t);
}

static int median_u8(const unsigned *hist, unsigned n) {
    unsigned want = (n - 1) / 2, seen = 0;
    for (int v = 0; v < 256; v++) {
        seen += hist[v];
        if (seen > want) return v;
    }
    return 255;
}

// Coverage of colour c that pixel i would have as a blend of c with the background (unclamped).
static double alpha_of(const Scene *sc, size_t i, int c) {
    double a = 0;
    for (int k = 0; k < 3; k++) a += (sc->rgb[i * 3 + k] - sc->bg[k]) * sc->dir[c][k];
    return a / sc->norm2[c];
}

// Fits blob `id`: soft mask over the window [x0−1, x1+1] × [y0−1, y1+1] ∩ image, then for each shape kind
// the best soft IoU Σmin/Σmax with a template of the mask's mass placed on its centroid, over the template
// sharp and blurred by the separable kernels [w, 1−2w, w] (w = 1/8, 1/4): a blurry image of a square is
// compared with a blurry square.
static void fit_blob(const Scene *sc, const Blob *b, int id, BlobFit *f) {
    int H = sc->H, W = sc->W;
    int wx0 = b->x0 > 0 ? b->x0 - 1 : 0, wy0 = b->y0 > 0 ? b->y0 - 1 : 0;
    int wx1 = b->x1 < W - 1 ? b->x1 + 1 : W - 1, wy1 = b->y1 < H - 1 ? b->y1 + 1 : H - 1;
    int ww = wx1 - wx0 + 1;
    double mass = 0, sx = 0, sy = 0;
    for (int y = wy0; y <= wy1; y++)
        for (int x = wx0; x <= wx1; x++) {
            size_t i = (size_t)y * W + x;
            double m = 0;
            if (sc->comp[i] == id) {
                m = sc->mass[i];
            } else if (sc->label[i] < 0) {  // halo: an unclassified neighbour of the blob, at most 0.2
                bool near = false;
                for (int dy = -1; dy <= 1 && !near; dy++)
                    for (int dx = -1; dx <= 1 && !near; dx++) {
                        int xx = x + dx, yy = y + dy;
                        near = xx >= 0 && yy >= 0 && xx < W && yy < H && sc->comp[(size_t)yy * W + xx] == id;
                    }
                if (near) {
                    double a = alpha_of(sc, i, b->color);
                    m = a < 0 ? 0 : a > ALPHA_FLOOR ? ALPHA_FLOOR : a;
                }
            }
            sc->soft[(size_t)(y - wy0) * ww + (x - wx0)] = m;
            mass += m;
            sx += m * (x + 0.5);
            sy += m * (y + 0.5);
        }
    f->present = true;
    f->mass = mass;
    f->cx = sx / mass;
    f->cy = sy / mass;
    static const double blur_w[3] = {0.0, 0.125, 0.25};
    for (int k = 0; k < SHAPE_KIND_COUNT; k++) {
        double e = shapes_extent_of_area((ShapeKind)k, mass);
        double bx = f->cx, by = f->cy - shapes_centroid_dy((ShapeKind)k, e);
        // the template grid: the mask's window ∪ the template's bbox, one pixel wider for the blur
        int gx0 = (int)floor(bx - e / 2) - 1, gx1 = (int)ceil(bx + e / 2);
        int gy0 = (int)floor(by - e / 2) - 1, gy1 = (int)ceil(by + e / 2);
        if (wx0 - 1 < gx0) gx0 = wx0 - 1;
        if (wy0 - 1 < gy0) gy0 = wy0 - 1;
        if (wx1 + 1 > gx1) gx1 = wx1 + 1;
        if (wy1 + 1 > gy1) gy1 = wy1 + 1;
        if (gx0 < -2) gx0 = -2;
        if (gy0 < -2) gy0 = -2;
        if (gx1 > W + 1) gx1 = W + 1;
        if (gy1 > H + 1) gy1 = H + 1;
        int gw = gx1 - gx0 + 1;
        for (int y = gy0; y <= gy1; y++)
            for (int x = gx0; x <= gx1; x++)
                sc->grid[(size_t)(y - gy0) * gw + (x - gx0)] = shapes_coverage((ShapeKind)k, bx, by, e, x, y);
        double best = 0;
        for (int bl = 0; bl < 3; bl++) {
            double w = blur_w[bl], c = 1 - 2 * w;
            // IoU over the image pixels of the grid (the outer ring only feeds the blur)
            double inter = 0, uni = 0;
            for (int y = gy0 + 1; y < gy1; y++) {
                if (y < 0 || y >= H) continue;
                for (int x = gx0 + 1; x < gx1; x++) {
                    if (x < 0 || x >= W) continue;
                    double t;
                    if (w == 0) {
                        t = sc->grid[(size_t)(y - gy0) * gw + (x - gx0)];
                    } else {
                        t = 0;
                        for (int dy = -1; dy <= 1; dy++) {
                            const double *row = sc->grid + (size_t)(y + dy - gy0) * gw + (x - gx0);
                            t += (dy == 0 ? c : w) * (w * row[-1] + c * row[0] + w * row[1]);
                        }
                    }
                    double m = (x >= wx0 && x <= wx1 && y >= wy0 && y <= wy1)
                                   ? sc->soft[(size_t)(y - wy0) * ww + (x - wx0)]
                                   : 0.0;
                    inter += m < t ? m : t;
                    uni += m > t ? m : t;
                }
            }
            double iou = uni > 0 ? inter / uni : 0.0;
            if (iou > best) best = iou;
        }
        f->iou[k] = best;
    }
}

static double shape_term(const BlobFit *f, ShapeKind kind) {
    double best_other = 0;
    for (int k = 0; k < SHAPE_KIND_COUNT; k++)
        if (k != (int)kind && f->iou[k] > best_other) best_other = f->iou[k];
    return sigmoid((f->iou[kind] - best_other) / SHAPE_TEMPERATURE) * smoothstep(f->iou[kind], SHAPE_IOU_LO, SHAPE_IOU_HI);
}

static double size_term(double extent, ShapeSize size, double u) {
    double large = smoothstep(extent, SIZE_SPLIT_LO * u, SIZE_SPLIT_HI * u);
    if (size == SHAPE_SIZE_SMALL) return 1 - large;
    return large * (1 - smoothstep(extent, SIZE_HUGE_LO * u, SIZE_HUGE_HI * u));
}

static double relation_term(const BlobFit *b0, const BlobFit *b1, ShapeRelation rel, double u) {
    double dx = b1->cx - b0->cx, dy = b1->cy - b0->cy;
    double a, p;  // a > 0 when the relation holds
    switch (rel) {
    case REL_LEFT_OF: a = dx, p = fabs(dy); break;
    case REL_RIGHT_OF: a = -dx, p = fabs(dy); break;
    case REL_ABOVE: a = dy, p = fabs(dx); break;
    default: a = -dy, p = fabs(dx); break;
    }
    return sigmoid((a - REL_MIN_SEP * u) / (REL_SCALE * u)) * sigmoid((a - p) / (REL_SCALE * u));
}

// Scores one assignment of blobs to the prompt's objects (ids −1: no blob). Fills terms, returns the total.
static double score_assignment(const Scene *sc, const Blob *blobs, const BlobFit *fits, const int *ids,
                               const ShapePrompt *p, double total_mass, ShapeScore *t) {
    double u = sc->u, sum = 0, selected = 0;
    int n_terms = 0;
    memset(t, 0, sizeof *t);
    t->relation = 1;
    t->size[0] = t->size[1] = 1;
    for (int i = 0; i < p->count; i++) {
        const Blob *b = ids[i] >= 0 ? &blobs[ids[i]] : NULL;
        const BlobFit *f = ids[i] >= 0 ? &fits[ids[i]] : NULL;
        if (b) selected += b->mass;
        t->color[i] = b ? fmin(1.0, b->mass / (COLOR_MASS * u * u)) : 0.0;
        t->shape[i] = b ? t->color[i] * shape_term(f, p->obj[i].kind) : 0.0;
        sum += t->color[i] + t->shape[i];
        n_terms += 2;
        if (p->obj[i].size != SHAPE_SIZE_ANY) {
            t->size[i] =
                b ? t->color[i] * size_term(shapes_extent_of_area(p->obj[i].kind, f->mass), p->obj[i].size, u) : 0.0;
            sum += t->size[i];
            n_terms++;
        }
    }
    if (p->count == 2) {
        t->relation = ids[0] >= 0 && ids[1] >= 0
                          ? fmin(t->color[0], t->color[1]) * relation_term(&fits[ids[0]], &fits[ids[1]], p->relation, u)
                          : 0.0;
        sum += t->relation;
        n_terms++;
    }
    double other = total_mass - selected - CLEAN_ALLOWANCE * u * u;
    t->clean = selected > 0 ? selected / (selected + (other > 0 ? other : 0)) : 0.0;
    sum += t->clean;
    n_terms++;
    t->total = clamp01(sum / n_terms);
    return t->total;
}

double shapes_alignment(const uint8_t *rgb, int H, int W, const ShapePrompt *p, ShapeScore *terms) {
    DF_CHECK(H >= SHAPES_MIN_SIDE && W >= SHAPES_MIN_SIDE && H <= SHAPES_MAX_SIDE && W <= SHAPES_MAX_SIDE,
             "shapes images are 8..1024 pixels on a side (16×16 is the default)");
    DF_CHECK(p->count >= 0 && p->count <= 2, "a ShapePrompt has 0, 1 or 2 objects");
    ShapeScore local;
    ShapeScore *out = terms ? terms : &local;
    if (p->count == 0) {
        *out = (ShapeScore){{1, 1}, {1, 1}, {1, 1}, 1, 1, 1};
        return 1.0;
    }
    for (int i = 0; i < p->count; i++)
        DF_CHECK(p->obj[i].color >= 0 && p->obj[i].color < SHAPE_COLOR_COUNT && p->obj[i].kind >= 0 &&
                     p->obj[i].kind < SHAPE_KIND_COUNT && p->obj[i].size >= SHAPE_SIZE_ANY &&
                     p->obj[i].size <= SHAPE_SIZE_LARGE,
                 "a ShapePrompt object has a valid colour, kind and size");
    DF_CHECK(p->count == 1 || (p->relation > REL_NONE && p->relation < REL_COUNT), "a two-object prompt has a relation");

    size_t n = (size_t)H * W;
    Scene sc = {.rgb = rgb, .H = H, .W = W, .u = (H < W ? H : W) / 16.0};
    // 1. background
    unsigned hist[3][256];
    memset(hist, 0, sizeof hist);
    unsigned border = 0;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            if (y != 0 && y != H - 1 && x != 0 && x != W - 1) continue;
            for (int c = 0; c < 3; c++) hist[c][rgb[((size_t)y * W + x) * 3 + c]]++;
            border++;
        }
    for (int c = 0; c < 3; c++) sc.bg[c] = median_u8(hist[c], border);

    // 2. pixel classes
    double len[SHAPE_COLOR_COUNT];
    for (int k = 0; k < SHAPE_COLOR_COUNT; k++) {
        sc.norm2[k] = 0;
        for (int c = 0; c < 3; c++) {
            sc.dir[k][c] = shapes_palette[k][c] - sc.bg[c];
            sc.norm2[k] += sc.dir[k][c] * sc.dir[k][c];
        }
        len[k] = sqrt(sc.norm2[k]);
    }
    size_t grid = (size_t)(H + 4) * (W + 4);
    int *label = DF_MALLOC(n * 3 * sizeof(int), "shapes reward labels");
    int *comp = label + n, *stack = label + 2 * n;
    double *mass = DF_MALLOC((n + grid) * sizeof(double), "shapes reward masses");
    sc.soft = DF_MALLOC((size_t)(H + 2) * (W + 2) * sizeof(double), "shapes reward soft mask");
    sc.grid = mass + n;
    sc.label = label;
    sc.comp = comp;
    sc.mass = mass;
    for (size_t i = 0; i < n; i++) {
        double v[3] = {rgb[i * 3] - sc.bg[0], rgb[i * 3 + 1] - sc.bg[1], rgb[i * 3 + 2] - sc.bg[2]};
        int best = -1;
        double best_r = 0, best_a = 0;
        for (int k = 0; k < SHAPE_COLOR_COUNT; k++) {
            if (sc.norm2[k] < MIN_COLOR_DIST2) continue;
            double a = (v[0] * sc.dir[k][0] + v[1] * sc.dir[k][1] + v[2] * sc.dir[k][2]) / sc.norm2[k];
            if (a < ALPHA_FLOOR) continue;
            double ac = a < ALPHA_OVERSHOOT ? a : ALPHA_OVERSHOOT, r2 = 0;
            for (int c = 0; c < 3; c++) {
                double d = v[c] - ac * sc.dir[k][c];
                r2 += d * d;
            }
            double r = sqrt(r2);
            if (r > RESIDUAL_ABS + RESIDUAL_REL * (a < 1 ? a : 1) * len[k]) continue;
            if (best < 0 || r < best_r) best = k, best_r = r, best_a = a;
        }
        label[i] = best;
        mass[i] = best >= 0 ? (best_a < 1 ? best_a : 1) : 0;
        comp[i] = -1;
    }

    // 3. blobs: 8-connected components, labelled in scan order (deterministic ids)
    Blob *blobs = DF_MALLOC(n * sizeof(Blob), "shapes reward blobs");
    int n_blobs = 0;
    double total_mass = 0;
    for (size_t s = 0; s < n; s++) {
        if (label[s] < 0 || comp[s] >= 0) continue;
        Blob *b = &blobs[n_blobs];
        *b = (Blob){label[s], 0, W, H, -1, -1};
        int top = 0;
        stack[top++] = (int)s;
        comp[s] = n_blobs;
        while (top > 0) {
            int i = stack[--top], x = i % W, y = i / W;
            b->mass += mass[i];
            if (x < b->x0) b->x0 = x;
            if (x > b->x1) b->x1 = x;
            if (y < b->y0) b->y0 = y;
            if (y > b->y1) b->y1 = y;
            for (int dy = -1; dy <= 1; dy++)
                for (int dx = -1; dx <= 1; dx++) {
                    int xx = x + dx, yy = y + dy;
                    if (xx < 0 || yy < 0 || xx >= W || yy >= H) continue;
                    int j = yy * W + xx;
                    if (label[j] == b->color && comp[j] < 0) {
                        comp[j] = n_blobs;
                        stack[top++] = j;
                    }
                }
        }
        total_mass += b->mass;
        n_blobs++;
    }
    // the two largest blobs of each colour (ties: the first in scan order)
    int top2[SHAPE_COLOR_COUNT][2];
    for (int k = 0; k < SHAPE_COLOR_COUNT; k++) top2[k][0] = top2[k][1] = -1;
    for (int i = 0; i < n_blobs; i++) {
        int *t = top2[blobs[i].color];
        if (t[0] < 0 || blobs[i].mass > blobs[t[0]].mass) {
            t[1] = t[0];
            t[0] = i;
        } else if (t[1] < 0 || blobs[i].mass > blobs[t[1]].mass) {
            t[1] = i;
        }
    }

    // 4. fits of the candidate blobs (the largest two of each prompt colour), then the terms
    BlobFit *fits = DF_CALLOC(n_blobs > 0 ? (size_t)n_blobs : 1, sizeof(BlobFit), "shapes reward fits");
    for (int i = 0; i < p->count; i++)
        for (int j = 0; j < 2; j++) {
            int id = top2[p->obj[i].color][j];
            if (id >= 0 && !fits[id].present) fit_blob(&sc, &blobs[id], id, &fits[id]);
        }
    int ids[2] = {top2[p->obj[0].color][0], p->count == 2 ? top2[p->obj[1].color][0] : -1};
    double total;
    if (p->count == 2 && p->obj[0].color == p->obj[1].color) {
        int c = p->obj[0].color;
        int a[2] = {top2[c][0], top2[c][1]}, b[2] = {top2[c][1], top2[c][0]};
        ShapeScore sa, sb;
        double ta = score_assignment(&sc, blobs, fits, a, p, total_mass, &sa);
        double tb = score_assignment(&sc, blobs, fits, b, p, total_mass, &sb);
        *out = tb > ta ? sb : sa;
        total = tb > ta ? tb : ta;
    } else {
        total = score_assignment(&sc, blobs, fits, ids, p, total_mass, out);
    }
    free(fits);
    free(blobs);
    free(sc.soft);
    free(mass);
    free(label);
    return total;
}
