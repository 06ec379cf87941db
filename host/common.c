// common.c — error reporting, checked allocation and stdio, timing.
#include "common.h"

#include <errno.h>
#include <string.h>
#include <time.h>

static _Thread_local char error_message[1024];

int df_fail(int status, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(error_message, sizeof error_message, fmt, args);
    va_end(args);
    return status;
}

const char *df_error_message(void) { return error_message; }

void df_fatal_at(const char *file, int line, const char *fmt, ...) {
    fflush(stdout);
    fprintf(stderr, "diffurl: fatal: ");
    va_list args;
    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);
    fprintf(stderr, "\n  at %s:%d\n", file, line);
    exit(1);
}

void *df_malloc_at(size_t bytes, const char *what, const char *file, int line) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p)
        df_fatal_at(file, line, "out of host memory allocating %zu bytes for %s\n"
                    "  hint: reduce the batch size or free memory", bytes, what);
    return p;
}

void *df_calloc_at(size_t count, size_t size, const char *what, const char *file, int line) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        df_fatal_at(file, line, "out of host memory allocating %zu x %zu bytes for %s\n"
                    "  hint: reduce the batch size or free memory", count, size, what);
    return p;
}

FILE *df_fopen_at(const char *path, const char *mode, const char *file, int line) {
    FILE *f = fopen(path, mode);
    if (!f)
        df_fatal_at(file, line, "cannot open '%s' (mode %s): %s\n"
                    "  hint: check the path exists and is readable/writable", path, mode, strerror(errno));
    return f;
}

void df_fwrite_at(const void *data, size_t bytes, FILE *f, const char *path, const char *file, int line) {
    if (bytes && fwrite(data, 1, bytes, f) != bytes)
        df_fatal_at(file, line, "short write of %zu bytes to '%s': %s\n"
                    "  hint: is the disk full?", bytes, path, strerror(errno));
}

void df_fclose_at(FILE *f, const char *path, const char *file, int line) {
    if (fclose(f) != 0)
        df_fatal_at(file, line, "closing '%s' failed: %s\n  hint: is the disk full?", path, strerror(errno));
}

double df_time_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int64_t df_shape_numel(const int64_t *shape, int ndim) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return -1;
        if (shape[i] != 0 && n > INT64_MAX / shape[i]) return -1;
        n *= shape[i];
    }
    return n;
}

char *df_read_text_file(const char *path, size_t max_bytes, const char *what) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        df_fail(DF_ERR_IO, "%s: cannot open %s (%s)", path, what, strerror(errno));
        return NULL;
    }
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size < 0 || (size_t)size > max_bytes || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        df_fail(DF_ERR_FORMAT, "%s: not a %s (size %ld bytes, at most %zu expected)", path, what, size, max_bytes);
        return NULL;
    }
    char *text = DF_MALLOC((size_t)size + 1, what);
    size_t got = fread(text, 1, (size_t)size, f);
    fclose(f);
    text[got] = '\0';
    return text;
}
