// common.h — error reporting and checked-call macros shared by every module.
//
// Two kinds of failure:
//  - fatal: a broken invariant or a failed system/library call in the middle of compute (CUDA, cuBLAS,
//    malloc). The CHECK_* macros print the statement, file, line and a hint, then exit(1).
//  - recoverable: bad user input (a malformed file, an unknown option). Functions return a negative
//    DfStatus and leave a message in df_error_message(); the caller decides (the CLI prints and exits
//    non-zero, the fuzz target moves on).
#ifndef DIFFURL_COMMON_H
#define DIFFURL_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DIFFURL_VERSION "0.1.0"

typedef enum {
    DF_OK = 0,
    DF_ERR_IO = -1,      // a file could not be opened, read or written
    DF_ERR_FORMAT = -2,  // a file's contents are malformed
    DF_ERR_ARG = -3,     // a caller passed a bad value (shape, option, key)
    DF_ERR_MEMORY = -4,  // an allocation failed
} DfStatus;

// Records a recoverable error (printf-style) and returns `status`, so callers can write
// `return df_fail(DF_ERR_FORMAT, "%s: tensor '%s' ...", path, name);`.
int df_fail(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// The message of the last df_fail on this thread ("" if none).
const char *df_error_message(void);

// Prints "diffurl: fatal: <message>" and the location, then exits(1).
void df_fatal_at(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));
#define DF_FATAL(...) df_fatal_at(__FILE__, __LINE__, __VA_ARGS__)

// Invariant check: if `cond` is false, report it with a hint on how to fix it and exit.
#define DF_CHECK(cond, hint)                                                                   \
    do {                                                                                        \
        if (!(cond)) df_fatal_at(__FILE__, __LINE__, "check failed: %s\n  hint: %s", #cond, hint); \
    } while (0)

// Checked allocation: never returns NULL.
void *df_malloc_at(size_t bytes, const char *what, const char *file, int line);
void *df_calloc_at(size_t count, size_t size, const char *what, const char *file, int line);
#define DF_MALLOC(bytes, what) df_malloc_at((bytes), (what), __FILE__, __LINE__)
#define DF_CALLOC(count, size, what) df_calloc_at((count), (size), (what), __FILE__, __LINE__)

// Checked stdio: fopen that names the file and the reason, and fwrite that must write it all.
FILE *df_fopen_at(const char *path, const char *mode, const char *file, int line);
void df_fwrite_at(const void *data, size_t bytes, FILE *f, const char *path, const char *file, int line);
void df_fclose_at(FILE *f, const char *path, const char *file, int line);
#define DF_FOPEN(path, mode) df_fopen_at((path), (mode), __FILE__, __LINE__)
#define DF_FWRITE(data, bytes, f, path) df_fwrite_at((data), (bytes), (f), (path), __FILE__, __LINE__)
#define DF_FCLOSE(f, path) df_fclose_at((f), (path), __FILE__, __LINE__)

// Reads a whole text file (at most max_bytes) into a NUL-terminated malloc'd buffer; NULL with a message
// naming the file (df_error_message) when it cannot be opened or is too large. `what` names the kind of file.
char *df_read_text_file(const char *path, size_t max_bytes, const char *what);

// Monotonic wall clock in seconds.
double df_time_seconds(void);

// Number of elements of a shape; returns -1 when the product overflows int64 or a dim is negative.
int64_t df_shape_numel(const int64_t *shape, int ndim);

#ifdef __cplusplus
}
#endif

#endif  // DIFFURL_COMMON_H
