// test_pretrain.c — `diffurl pretrain` at a tiny size (8×8 images, a small UNet), on the CPU or, with the argument
// "cuda", on the CUDA backend (ctest: test_gpu_pretrain; emu_test_gpu_pretrain on the CPU emulation):
//  - the loss goes down over a short run (40 steps; not on the emulation, where a run is 12 steps);
//  - a run stopped at a checkpoint and resumed ends bit-identical to an uninterrupted run (weights, optimizer
//    moments, EMA and text embedding: all randomness is keyed by (seed, step));
//  - the written model folder loads as a shapes model and samples.
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "harness.h"
#include "safetensors.h"
#include "shapes_model.h"

static const char *CONFIG =
    "{\"_class_name\": \"UNet2DConditionModel\", \"in_channels\": 3, \"out_channels\": 3,"
    " \"block_out_channels\": [16, 32], \"down_block_types\": [\"CrossAttnDownBlock2D\", \"DownBlock2D\"],"
    " \"up_block_types\": [\"UpBlock2D\", \"CrossAttnUpBlock2D\"], \"layers_per_block\": 1,"
    " \"attention_head_dim\": [2, 2], \"cross_attention_dim\": 32, \"norm_num_groups\": 4,"
    " \"use_linear_projection\": true, \"sample_size\": 8}";

static const char *device = "cpu";

static int run(const char *out, const char *config, int steps, int ckpt_every, bool resume) {
    char steps_s[16], ckpt_s[16];
    snprintf(steps_s, sizeof steps_s, "%d", steps);
    snprintf(ckpt_s, sizeof ckpt_s, "%d", ckpt_every);
    char *argv[] = {"pretrain", "--out", (char *)out, "--config", (char *)config, "--res", "8", "--batch", "6",
                    "--steps", steps_s, "--lr", "3e-3", "--warmup", "5", "--log-every", "10", "--sample-every", "0",
                    "--ckpt-every", ckpt_s, "--seed", "3", "--device", (char *)device, resume ? "--resume" : NULL,
                    NULL};
    int argc = 0;
    while (argv[argc]) argc++;
    return cmd_pretrain(argc, argv);
}

static double mean_loss(const char *metrics, int from, int to) {
    FILE *f = fopen(metrics, "r");
    if (!f) return -1;
    char line[512];
    double sum = 0;
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        int step;
        double loss;
        if (sscanf(line, "{\"step\": %d, \"loss\": %lf", &step, &loss) == 2 && step >= from && step <= to) sum += loss, n++;
    }
    fclose(f);
    return n ? sum / n : -1;
}

static float *read_state(const char *dir, size_t *bytes) {
    char path[512];
    snprintf(path, sizeof path, "%s/checkpoint/state.safetensors", dir);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *bytes = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    float *data = malloc(*bytes);
    size_t got = fread(data, 1, *bytes, f);
    fclose(f);
    if (got != *bytes) {
        free(data);
        return NULL;
    }
    return data;
}

int main(int argc, char **argv) {
    Backend *be = NULL;
    if (argc > 1 && strcmp(argv[1], "cuda") == 0) {
        be = test_require_cuda();  // skips (77) without a GPU
        device = "cuda";
    } else {
        be = backend_cpu_create(0);
    }
    // The emulated GPU (tests/emu) runs a step in about a second: a shorter run there, resume still checked.
    const bool on_cuda = be->kind == DEV_CUDA;
    const int steps = test_cuda_emulated() && on_cuda ? 12 : 40;
    char root[128], config[256], a[256], b[256];
    snprintf(root, sizeof root, "/tmp/diffurl_test_pretrain_%d", (int)getpid());
    mkdir(root, 0755);
    snprintf(config, sizeof config, "%s/config.json", root);
    FILE *f = fopen(config, "w");
    fputs(CONFIG, f);
    fclose(f);
    snprintf(a, sizeof a, "%s/a", root);
    snprintf(b, sizeof b, "%s/b", root);

    // uninterrupted
    CHECK(run(a, config, steps, steps / 4, false) == 0, "pretrain %d steps on %s", steps, device);
    if (steps >= 40) {
        char metrics[300];
        snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", a);
        double first = mean_loss(metrics, 1, 5), last = mean_loss(metrics, steps - 4, steps);
        printf("  loss: steps 1-5 %.4f, steps %d-%d %.4f\n", first, steps - 4, steps, last);
        CHECK(first > 0 && last > 0 && last < 0.8 * first, "the loss goes down (%.4f → %.4f)", first, last);
    }

    // interrupted half way (a checkpoint), then resumed to the end
    CHECK(run(b, config, steps / 2, steps / 4, false) == 0, "pretrain %d steps", steps / 2);
    CHECK(run(b, config, steps, steps / 4, true) == 0, "resume to %d steps", steps);
    size_t na = 0, nb = 0;
    float *sa = read_state(a, &na), *sb = read_state(b, &nb);
    CHECK(sa && sb && na == nb && memcmp(sa, sb, na) == 0,
          "the resumed run's checkpoint is byte-identical to the uninterrupted run's (%zu vs %zu bytes)", na, nb);
    free(sa), free(sb);

    // the model folder loads and samples
    char model[300];
    snprintf(model, sizeof model, "%s/model", a);
    ShapesModel sm;
    if (CHECK(shapes_model_load(&sm, model, be) == 0, "the model folder loads: %s", df_error_message())) {
        CHECK(sm.resolution == 8 && sm.text.vocab == shapes_vocab_size(), "resolution and vocabulary");
        char *eval_argv[] = {"eval", "--model", model, "--split", "test", "--limit", "3", "--steps", "4", "--device",
                             (char *)device, NULL};
        CHECK(cmd_eval(11, eval_argv) == 0, "eval runs on the written model");
        shapes_model_free(&sm);
    }
    backend_destroy(be);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    CHECK(system(cmd) == 0, "clean up");
    return test_finish(on_cuda ? "pretrain (cuda)" : "pretrain (cpu)");
}
