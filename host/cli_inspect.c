// cli_inspect.c — PLACEHOLDER (owner: safetensors helper)
#include "cli.h"
#include "common.h"
int cmd_inspect(int argc, char **argv) { DF_FATAL("inspect: placeholder"); }
