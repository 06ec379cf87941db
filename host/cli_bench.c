// cli_bench.c — PLACEHOLDER
#include "cli.h"
#include "common.h"
int cmd_bench(int argc, char **argv) { DF_FATAL("bench: placeholder"); }
