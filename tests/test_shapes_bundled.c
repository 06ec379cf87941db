// test_shapes_bundled.c — the bundled shapes model (assets/shapes16, made by the documented `diffurl pretrain`
// command in the README): it loads, and `diffurl eval` on it is reproducible — two runs with the same seed
// give byte-identical results, and they equal the reference numbers recorded when the model was made
// (assets/shapes16/eval_reference.json: the first 12 test prompts, 10 DDIM steps, seed 0).
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "harness.h"
#include "shapes_model.h"

#define MODEL "assets/shapes16"

static cJSON *load_json(const char *path) {
    char *text = df_read_text_file(path, 1 << 20, "eval JSON");
    if (!text) return NULL;
    cJSON *j = cJSON_Parse(text);
    free(text);
    return j;
}

static int run_eval(const char *json_out) {
    char *argv[] = {"eval", "--model", MODEL, "--split", "test", "--limit", "12", "--steps", "10", "--seed", "0",
                    "--json", (char *)json_out, NULL};
    return cmd_eval(13, argv);
}

int main(void) {
    Backend *be = backend_cpu_create(0);
    ShapesModel sm;
    if (CHECK(shapes_model_load(&sm, MODEL, be) == 0, "%s loads: %s", MODEL, df_error_message())) {
        CHECK(sm.resolution == 16 && sm.text.vocab == shapes_vocab_size() && sm.text.length == SHAPES_MAX_TOKENS,
              "16x16 model with this build's vocabulary");
        shapes_model_free(&sm);
    }
    backend_destroy(be);

    char a[128], b[128];
    snprintf(a, sizeof a, "/tmp/diffurl_bundled_a_%d.json", (int)getpid());
    snprintf(b, sizeof b, "/tmp/diffurl_bundled_b_%d.json", (int)getpid());
    CHECK(run_eval(a) == 0 && run_eval(b) == 0, "eval runs twice");
    char *ta = df_read_text_file(a, 1 << 20, "eval JSON"), *tb = df_read_text_file(b, 1 << 20, "eval JSON");
    CHECK(ta && tb && strcmp(ta, tb) == 0, "two runs with the same seed are byte-identical");
    free(ta), free(tb);

    cJSON *got = load_json(a), *want = load_json(MODEL "/eval_reference.json");
    if (CHECK(got && want, "both JSON files parse")) {
        cJSON *rg = cJSON_GetObjectItem(got, "rewards"), *rw = cJSON_GetObjectItem(want, "rewards");
        int n = cJSON_GetArraySize(rw), exact = 0;
        double worst = 0.0;
        CHECK(n == 12 && cJSON_GetArraySize(rg) == n, "12 rewards each");
        for (int i = 0; i < n && i < cJSON_GetArraySize(rg); i++) {
            double g = cJSON_GetArrayItem(rg, i)->valuedouble, w = cJSON_GetArrayItem(rw, i)->valuedouble;
            exact += g == w;
            if (fabs(g - w) > worst) worst = fabs(g - w);
        }
        printf("  %d of %d rewards bit-identical to the reference, worst |diff| %.3g\n", exact, n, worst);
        // bit-identical on the machine that made the reference; another CPU's BLAS kernels may round the UNet
        // differently, which can move a pixel by one level: allow that much, no more
        CHECK(worst <= 1e-3, "rewards match the recorded reference (worst |diff| %.3g)", worst);
        double mg = cJSON_GetObjectItem(got, "mean")->valuedouble, mw = cJSON_GetObjectItem(want, "mean")->valuedouble;
        printf("  mean alignment %.6f (reference %.6f)\n", mg, mw);
    }
    cJSON_Delete(got), cJSON_Delete(want);
    unlink(a), unlink(b);
    return test_finish("shapes_bundled");
}
