// cuda_bf16.h (emulation shim): the bf16 types and conversions live in emu_cuda.h.
#pragma once
#include "emu_cuda.h"
