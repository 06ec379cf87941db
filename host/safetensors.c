// safetensors.c — PLACEHOLDER (owner: safetensors helper)
#include "safetensors.h"
