// cli_inspect.c — `diffurl inspect FILE.safetensors`: validates a safetensors file and lists its metadata
// and every tensor (name, dtype, shape, bytes, offset in the data block), then a total line.
// A missing or malformed file prints "diffurl inspect: <error>" to stderr and exits 1.
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "common.h"
#include "safetensors.h"

#define INSPECT_META_SHOWN 120  // metadata values longer than this are cut unless --full

static int cmp_by_name(const void *a, const void *b) {
    const SafeTensorInfo *x = *(const SafeTensorInfo *const *)a, *y = *(const SafeTensorInfo *const *)b;
    return strcmp(x->name, y->name);
}

static void shape_to_str(const SafeTensorInfo *t, char *buf, size_t size) {
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < t->ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (used < size) snprintf(buf + used, size - used, "]");
}

int cmd_inspect(int argc, char **argv) {
    const char *sort = "offset";
    bool full = false;
    const Option options[] = {
        {"sort", OPT_STRING, &sort, "list order: offset (file order) or name"},
        {"full", OPT_FLAG, &full, "print long metadata values whole"},
    };
    const OptionTable table = {
        .verb = "inspect",
        .summary = "Validate a safetensors file and list its metadata and tensors (name, dtype, shape, bytes,\n"
                   "offset in the data block).",
        .usage = "FILE.safetensors",
        .options = options,
        .count = (int)(sizeof options / sizeof options[0]),
    };
    const char *positional[1] = {0};
    int npos = parse_options(&table, argc, argv, positional, 1);
    if (npos == -2) return 0;
    if (npos < 0) return 2;
    if (npos != 1) {
        fprintf(stderr, "diffurl inspect: expected one FILE.safetensors (see diffurl inspect --help)\n");
        return 2;
    }
    if (strcmp(sort, "offset") != 0 && strcmp(sort, "name") != 0) {
        fprintf(stderr, "diffurl inspect: --sort expects offset or name, got '%s'\n", sort);
        return 2;
    }

    SafeTensorsFile f;
    if (safetensors_open(&f, positional[0]) < 0) {
        fprintf(stderr, "diffurl inspect: %s\n", df_error_message());
        return 1;
    }
    size_t header_bytes = f.map_size - f.data_size - 8;
    printf("%s: %d tensors, %d metadata keys, %zu bytes (header %zu, data %zu)\n", f.path, f.count, f.meta_count,
           f.map_size, header_bytes, f.data_size);
    if (f.meta_count > 0) {
        printf("metadata:\n");
        for (int i = 0; i < f.meta_count; i++) {
            const char *v = f.meta[i].value;
            size_t len = strlen(v);
            if (full || len <= INSPECT_META_SHOWN) printf("  %s: %s\n", f.meta[i].key, v);
            else printf("  %s: %.*s... (%zu bytes; --full shows all)\n", f.meta[i].key, INSPECT_META_SHOWN, v, len);
        }
    }

    const SafeTensorInfo **order = DF_MALLOC((size_t)(f.count > 0 ? f.count : 1) * sizeof *order, "inspect order");
    int name_w = 4;
    for (int i = 0; i < f.count; i++) {
        order[i] = &f.tensors[i];
        int len = (int)strlen(f.tensors[i].name);
        if (len > name_w) name_w = len;
    }
    if (name_w > 64) name_w = 64;  // longer names overflow their column rather than widen every row
    if (!strcmp(sort, "name") && f.count > 1) qsort(order, (size_t)f.count, sizeof *order, cmp_by_name);

    int64_t total_elems = 0;
    if (f.count > 0) printf("%-*s  %-5s  %-22s  %12s  %12s\n", name_w, "name", "dtype", "shape", "bytes", "offset");
    for (int i = 0; i < f.count; i++) {
        const SafeTensorInfo *t = order[i];
        char shape[200];
        shape_to_str(t, shape, sizeof shape);
        printf("%-*s  %-5s  %-22s  %12zu  %12zu\n", name_w, t->name, dtype_name(t->dtype), shape, t->nbytes,
               t->data_offset);
        total_elems += df_shape_numel(t->shape, t->ndim);  // validated: no overflow per tensor
    }
    printf("total: %d tensors, %lld elements, %zu bytes of data (%.2f MiB)\n", f.count, (long long)total_elems,
           f.data_size, (double)f.data_size / (1024.0 * 1024.0));
    free(order);
    safetensors_close(&f);
    return 0;
}
