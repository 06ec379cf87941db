// main.c — `diffurl VERB [options]`: dispatches to the verbs in cli.h.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "cli.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} Verb;

static const Verb verbs[] = {
    {"inspect", cmd_inspect, "list the tensors and metadata of a safetensors file"},
    {"bench", cmd_bench, "benchmarks: bench ops (every op), bench unet (one UNet config)"},
    {"pretrain", cmd_pretrain, "pretrain a shapes-world model by diffusion (DDPM epsilon loss)"},
    {"eval", cmd_eval, "score a shapes model on a prompt split with the alignment reward"},
    {"sample", cmd_sample, "sample DDIM trajectories with per-step log-probabilities"},
    {"unet", cmd_unet, "run one UNet forward (and backward) on tensors from a safetensors file"},
};

static void print_version(void) {
    printf("diffurl %s\n", DIFFURL_VERSION);
    printf("backends compiled in: cpu%s\n", cuda_compiled_in() ? ", cuda" : "");
#ifdef DIFFURL_HAVE_MPI
    printf("mpi: yes\n");
#else
    printf("mpi: no\n");
#endif
    Backend *cpu = backend_cpu_create(0);
    printf("device cpu: %s\n", cpu->name);
    backend_destroy(cpu);
    int n = cuda_device_count();
    if (!cuda_compiled_in()) printf("cuda devices: (not compiled in)\n");
    else if (n == 0) printf("cuda devices: none found\n");
    for (int i = 0; i < n; i++) {
        Backend *be = backend_cuda_create(i);
        if (be) {
            printf("device %s\n", be->name);
            backend_destroy(be);
        } else {
            printf("device cuda:%d: unusable: %s\n", i, df_error_message());
        }
    }
}

static void print_help(void) {
    printf("diffurl %s — RL fine-tuning of diffusion models (DDPO, B2-DiffuRL) in C and CUDA\n\n", DIFFURL_VERSION);
    printf("usage: diffurl VERB [options]     (diffurl VERB --help for a verb's options)\n\nverbs:\n");
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) printf("  %-10s %s\n", verbs[i].name, verbs[i].summary);
    printf("\n  --version  print the version, the backends compiled in and the devices found\n");
}

// OpenMP threads that spin at barriers (libgomp's default) collapse throughput when the cores are shared:
// measured 3-5 vs 35 images/s in `pretrain` on a 2-core machine with one other busy process. The policy is
// read when libgomp loads, before main, so diffurl sets the passive policy (unless the user chose one) and
// re-executes itself once.
static void ensure_passive_openmp(char **argv) {
    if (getenv("OMP_WAIT_POLICY")) return;
    setenv("OMP_WAIT_POLICY", "passive", 1);
    execv("/proc/self/exe", argv);  // returns only on failure: then run with the default policy
}

int main(int argc, char **argv) {
    ensure_passive_openmp(argv);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        print_help();
        return argc < 2 ? 1 : 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        print_version();
        return 0;
    }
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
        if (!strcmp(argv[1], verbs[i].name)) return verbs[i].run(argc - 1, argv + 1);
    fprintf(stderr, "diffurl: unknown verb '%s'\n\n", argv[1]);
    print_help();
    return 2;
}
