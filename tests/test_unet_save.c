// test_unet_save.c — unet_save writes a diffusers UNet folder that loads back bit-exactly: the config
// reparses to the same UNetConfig, every parameter is bitwise equal (diffusers layouts on disk), and a save
// over an existing folder replaces it.
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "unet.h"

int main(void) {
    Backend *be = backend_cpu_create(0);
    const char *models[] = {"tests/fixtures/unet/lin2", "tests/fixtures/unet/conv3", "tests/fixtures/unet/sd2ish4"};
    char dir[128];
    snprintf(dir, sizeof dir, "/tmp/diffurl_test_unet_save_%d", (int)getpid());
    for (int k = 0; k < 3; k++) {
        UNet *a = unet_load(models[k], be);
        if (!CHECK(a != NULL, "%s loads: %s", models[k], df_error_message())) continue;
        CHECK(unet_save(a, dir) == 0, "save %s: %s", models[k], df_error_message());
        UNet *b = unet_load(dir, be);
        if (!CHECK(b != NULL, "the saved folder loads: %s", df_error_message())) {
            unet_free(a);
            continue;
        }
        CHECK(memcmp(unet_config(a), unet_config(b), sizeof(UNetConfig)) == 0, "%s: config round trips", models[k]);
        int same = 0;
        for (int i = 0; i < unet_param_count(a); i++) {
            const UNetParam *p = unet_param(a, i), *q = unet_param(b, i);
            float *x = DF_MALLOC(p->numel * sizeof(float), "x"), *y = DF_MALLOC(p->numel * sizeof(float), "y");
            unet_read_param(a, p, x, false);
            unet_read_param(b, q, y, false);
            same += !strcmp(p->name, q->name) && !memcmp(x, y, p->numel * sizeof(float));
            free(x), free(y);
        }
        CHECK(same == unet_param_count(a), "%s: all %d parameters bitwise equal after save/load (%d)", models[k],
              unet_param_count(a), same);
        unet_free(a), unet_free(b);
    }
    char path[256];
    snprintf(path, sizeof path, "%s/config.json", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dir);
    unlink(path);
    rmdir(dir);
    backend_destroy(be);
    return test_finish("unet_save");
}
