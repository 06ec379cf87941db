// safetensors.c — the safetensors reader (mmap + strict validation) and the atomic writer.
//
// Reading treats the file as untrusted: every length and offset is checked before use, arithmetic is
// overflow-safe, and any violation returns DF_ERR_FORMAT with a message that names the file, the tensor
// and the offending value. The rules are those of the reference implementation (huggingface/safetensors):
// header ≤ 100 MB of UTF-8 JSON, one object, "__metadata__" a string→string map, each tensor
// {"dtype", "shape", "data_offsets"} and nothing else, and the data block fully covered by the tensors
// with no overlaps and no holes. safetensors_parse() works on memory and is what the fuzz target drives.
//
// Writing produces what the reference writer produces for the same tensors in the same order: compact
// JSON, "__metadata__" first, the header padded with spaces to a multiple of 8 bytes (so the data block
// starts 8-byte aligned), tensors stored contiguously in the given order.
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER 100000000ull        // the reference implementation's limit (100 MB)
#define ST_MAX_EXACT 9007199254740992.0   // 2^53: beyond it a JSON number is no longer an exact integer
#define ST_NAME_SHOWN 200                 // longest tensor name/key echoed into a message

// ---- helpers -----------------------------------------------------------------------------------------

static uint64_t read_u64_le(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static void write_u64_le(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static char *dup_string(const char *s) {
    size_t n = strlen(s);
    char *d = DF_MALLOC(n + 1, "safetensors string");
    memcpy(d, s, n + 1);
    return d;
}

// Offset of the first byte that is not valid UTF-8 (overlongs, surrogates and > U+10FFFF refused), or
// `n` when all of it is valid. JSON text must be UTF-8 and the reference reader checks it.
static size_t utf8_invalid_at(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) len = 2, cp = c & 0x1fu;
        else if (c >= 0xe0 && c <= 0xef) len = 3, cp = c & 0x0fu;
        else if (c >= 0xf0 && c <= 0xf4) len = 4, cp = c & 0x07u;
        else return i;
        if (n - i < len) return i;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return i;
            cp = (cp << 6) | (s[i + k] & 0x3fu);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
            return i;
        i += len;
    }
    return n;
}

// A short printable excerpt of untrusted bytes for a message (non-printable bytes shown as '?').
static const char *excerpt(const char *s, size_t n, char *buf, size_t buf_size) {
    size_t k = 0;
    for (; k < n && k + 1 < buf_size; k++) {
        unsigned char c = (unsigned char)s[k];
        buf[k] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    buf[k] = '\0';
    return buf;
}

static const char *json_type_name(const cJSON *j) {
    if (cJSON_IsObject(j)) return "an object";
    if (cJSON_IsArray(j)) return "an array";
    if (cJSON_IsString(j)) return "a string";
    if (cJSON_IsNumber(j)) return "a number";
    if (cJSON_IsBool(j)) return "a boolean";
    if (cJSON_IsNull(j)) return "null";
    return "an invalid value";
}

// Reads a JSON number that must be a non-negative exact integer ≤ 2^53. Returns false otherwise.
static bool json_exact_uint(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return false;
    double d = j->valuedouble;
    if (!isfinite(d) || d < 0.0 || d > ST_MAX_EXACT || d != floor(d)) return false;
    *out = (uint64_t)d;
    return true;
}

// "[3, 4]" (always NUL-terminated).
static const char *shape_str(const int64_t *shape, int ndim, char *buf, size_t buf_size) {
    size_t used = (size_t)snprintf(buf, buf_size, "[");
    for (int i = 0; i < ndim && used < buf_size; i++)
        used += (size_t)snprintf(buf + used, buf_size - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (used < buf_size) snprintf(buf + used, buf_size - used, "]");
    return buf;
}

// The safetensors dtype names: the four the engine uses, and the rest of the format's (refused by name).
static bool dtype_from_name(const char *s, DType *out) {
    static const struct {
        const char *name;
        DType dtype;
    } known[] = {{"F32", DT_F32}, {"F16", DT_F16}, {"BF16", DT_BF16}, {"I64", DT_I64}};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(s, known[i].name)) {
            *out = known[i].dtype;
            return true;
        }
    return false;
}

static bool dtype_is_other_format_dtype(const char *s) {
    static const char *const other[] = {"BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F6_E2M3", "F6_E3M2",
                                        "F4", "I16", "U16", "I32", "U32", "F64", "U64", "C64"};
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
        if (!strcmp(s, other[i])) return true;
    return false;
}

static bool dtype_valid(DType d) { return d == DT_F32 || d == DT_F16 || d == DT_BF16 || d == DT_I64; }

static int cmp_name_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmp_offset(const void *a, const void *b) {
    const SafeTensorInfo *x = a, *y = b;
    if (x->data_offset != y->data_offset) return x->data_offset < y->data_offset ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return strcmp(x->name, y->name);
}

// Finds the first duplicate among n strings (sorting a copy of the pointers: O(n log n) for big headers).
static const char *first_duplicate(const char **names, size_t n) {
    if (n < 2) return NULL;
    qsort(names, n, sizeof *names, cmp_name_ptr);
    for (size_t i = 1; i < n; i++)
        if (!strcmp(names[i - 1], names[i])) return names[i];
    return NULL;
}

// ---- reading -----------------------------------------------------------------------------------------

void safetensors_close(SafeTensorsFile *f) {
    if (!f) return;
    if (f->tensors)
        for (int i = 0; i < f->count; i++) free(f->tensors[i].name);
    free(f->tensors);
    if (f->meta)
        for (int i = 0; i < f->meta_count; i++) free(f->meta[i].value);
    free(f->meta);
    free(f->path);
    if (f->map) munmap(f->map, f->map_size);
    memset(f, 0, sizeof *f);
}

static int fail_too_short(const char *label, size_t size) {
    return df_fail(DF_ERR_FORMAT, "%s: file is %zu bytes, too short for the 8-byte header length", label, size);
}

// Validates the "__metadata__" object into f->meta.
static int parse_metadata(SafeTensorsFile *f, const cJSON *obj, const char *label) {
    if (!cJSON_IsObject(obj))
        return df_fail(DF_ERR_FORMAT, "%s: \"__metadata__\" is %s, expected an object of strings", label,
                       json_type_name(obj));
    size_t n = 0;
    for (const cJSON *c = obj->child; c; c = c->next) n++;
    if (n > INT_MAX) return df_fail(DF_ERR_FORMAT, "%s: \"__metadata__\" has too many entries", label);
    f->meta = DF_CALLOC(n, sizeof *f->meta, "safetensors metadata");
    for (const cJSON *c = obj->child; c; c = c->next) {
        const char *key = c->string ? c->string : "";
        if (!cJSON_IsString(c))
            return df_fail(DF_ERR_FORMAT, "%s: metadata '%.*s' is %s, but metadata values must be strings", label,
                           ST_NAME_SHOWN, key, json_type_name(c));
        if (strlen(key) >= sizeof f->meta[0].key)
            return df_fail(DF_ERR_FORMAT, "%s: metadata key '%.*s...' is %zu bytes, longer than the %zu supported",
                           label, 40, key, strlen(key), sizeof f->meta[0].key - 1);
        SafeTensorsMeta *m = &f->meta[f->meta_count++];
        memcpy(m->key, key, strlen(key) + 1);
        m->value = dup_string(c->valuestring);
    }
    if (n > 1) {
        const char **keys = DF_MALLOC(n * sizeof *keys, "safetensors metadata keys");
        for (size_t i = 0; i < n; i++) keys[i] = f->meta[i].key;
        const char *dup = first_duplicate(keys, n);
        int rc = dup ? df_fail(DF_ERR_FORMAT, "%s: duplicate metadata key '%.*s'", label, ST_NAME_SHOWN, dup) : DF_OK;
        free(keys);
        if (rc < 0) return rc;
    }
    return DF_OK;
}

// Validates one tensor entry {"dtype", "shape", "data_offsets"} into *t (t->name already set).
static int parse_tensor(SafeTensorInfo *t, const cJSON *obj, const SafeTensorsFile *f, const char *label) {
    const char *name = t->name;
    if (!cJSON_IsObject(obj))
        return df_fail(DF_ERR_FORMAT, "%s: tensor '%.*s' is %s, expected an object with dtype, shape, data_offsets",
                       label, ST_NAME_SHOWN, name, json_type_name(obj));
    const cJSON *jdtype = NULL, *jshape = NULL, *joffsets = NULL;
    for (const cJSON *c = obj->child; c; c = c->next) {
        const char *key = c->string ? c->string : "";
        const cJSON **slot = !strcmp(key, "dtype") ? &jdtype
                             : !strcmp(key, "shape") ? &jshape
                             : !strcmp(key, "data_offsets") ? &joffsets
                                                            : NULL;
        if (!slot)
            return df_fail(DF_ERR_FORMAT, "%s: tensor '%.*s': unknown key '%.*s' (expected dtype, shape, data_offsets)",
                           label, ST_NAME_SHOWN, name, ST_NAME_SHOWN, key);
        if (*slot) return df_fail(DF_ERR_FORMAT, "%s: tensor '%.*s': duplicate key '%s'", label, ST_NAME_SHOWN, name, key);
        *slot = c;
    }
    if (!jdtype) return df_fail(DF_ERR_FORMAT, "%s: tensor '%.*s': missing \"dtype\"", label, ST_NAME_SHOWN, name);
    if (!jshape) return df_fail(DF_ERR_FORMAT, "%s: tensor '%.*s': missing \"shape\"", label, ST_NAME_SHOWN, name);
    if (!joffsets)
        return df_fail(DF_ERR_FORMAT, "%s: tensor '%.*s': missing \"data_offsets\"", label, ST_NAME_SHOWN, name);

    // dtype
    if (!cJSON_IsString(jdtype))
        return df_fail(DF_ERR_FORMAT, "%s: tensor '%.*s': dtype is %s, expected a string such as \"F32\"", label,
                       ST_NAME_SHOWN, name, json_type_name(jdtype));
    const char *dname = jdtype->valuestring;
    if (!dtype_from_name(dname, &t->dtype)) {
        if (dtype_is_other_format_dtype(dname))
            return df_fail(DF_ERR_FORMAT, "%s: tensor '%.*s': dtype %s is not supported (supported: F32, F16, BF16, I64)",
                           label, ST_NAME_SHOWN, name, dname);
        return df_fail(DF_ERR_FORMAT, "%s: tensor '%.*s': unknown dtype '%.*s'", label, ST_NAME_SHOWN, name, 40, dname);
    }

    // shape
    if (!cJSON_IsArray(jshape))
        return df_fail(DF_ERR_FORMAT, "%s: tensor '%.*s': shape is %s, expected an array of integers", label,
                       ST_NAME_SHOWN, name, json_type_name(jshape));
    int ndim = 0;
    for (const cJSON *c = jshape->child; c; c = c->next, ndim++) {
        if (ndim >= DF_MAX_DIMS) {
            int total = ndim;
            for (const cJSON *r = c; r; r = r->next) total++;
            return df_fail(DF_ERR_FORMAT, "%s: tensor '%.*s': shape has %d dims, more than the %d supported", label,
                           ST_NAME_SHOWN, name, total, DF_MAX_DIMS);
        }
        uint64_t dim;
        if (!cJSON_IsNumber(c))
            return df_fail(DF_ERR_FORMAT, "%s: tensor '%.*s': shape dim %d is %s, expected a non-negative integer",
                           label, ST_NAME_SHOWN, name, ndim, json_type_name(c));
        if (!json_exact_uint(c, &dim))
            return df_fail(DF_ERR_FORMAT, "%s: tensor '%.*s': shape dim %d is %.17g, expected a non-negative integer",
                           label, ST_NAME_SHOWN, name, ndim, c->valuedouble);
        t->shape[ndim] = (int64_t)dim;
    }
    t->ndim = ndim;

    // data_offsets
    uint64_t off[2];
    int noff = 0;
    if (cJSON_IsArray(joffsets))
        for (const cJSON *c = joffsets->child; c; c = c->next) noff++;
    if (!cJSON_IsArray(joffsets) || noff != 2)
        return df_fail(DF_ERR_FORMAT, "%s: tensor '%.*s': data_offsets must be an array [begin, end] (got %s%s)", label,
                       ST_NAME_SHOWN, name, json_type_name(joffsets), cJSON_IsArray(joffsets) ? " of the wrong length" : "");
    const cJSON *jo = joffsets->child;
    for (int k = 0; k < 2; k++, jo = jo->next) {
        if (!json_exact_uint(jo, &off[k])) {
            if (cJSON_IsNumber(jo))
                return df_fail(DF_ERR_FORMAT, "%s: tensor '%.*s': data_offsets[%d] is %.17g, expected a non-negative integer",
                               label, ST_NAME_SHOWN, name, k, jo->valuedouble);
            return df_fail(DF_ERR_FORMAT, "%s: tensor '%.*s': data_offsets[%d] is %s, expected a non-negative integer",
                           label, ST_NAME_SHOWN, name, k, json_type_name(jo));
        }
    }
    if (off[0] > off[1])
        return df_fail(DF_ERR_FORMAT, "%s: tensor '%.*s': data_offsets [%llu, %llu] has begin > end", label, ST_NAME_SHOWN,
                       name, (unsigned long long)off[0], (unsigned long long)off[1]);
    if (off[1] > (uint64_t)f->data_size)
        return df_fail(DF_ERR_FORMAT,
                       "%s: tensor '%.*s': data_offsets [%llu, %llu] end past the data block of %zu bytes "
                       "(file truncated?)",
                       label, ST_NAME_SHOWN, name, (unsigned long long)off[0], (unsigned long long)off[1], f->data_size);

    // size: numel × dtype size must be exactly the span
    char sbuf[160];
    int64_t numel = df_shape_numel(t->shape, t->ndim);
    size_t esize = dtype_size(t->dtype);
    size_t span = (size_t)(off[1] - off[0]);
    if (numel < 0 || (uint64_t)numel > SIZE_MAX / esize)
        return df_fail(DF_ERR_FORMAT, "%s: tensor '%.*s': shape %s × %s overflows", label, ST_NAME_SHOWN, name,
                       shape_str(t->shape, t->ndim, sbuf, sizeof sbuf), dname);
    size_t bytes = (size_t)numel * esize;
    if (bytes != span)
        return df_fail(DF_ERR_FORMAT, "%s: tensor '%.*s': shape %s × %s = %zu bytes but data_offsets span %zu", label,
                       ST_NAME_SHOWN, name, shape_str(t->shape, t->ndim, sbuf, sizeof sbuf), dname, bytes, span);
    t->data_offset = (size_t)off[0];
    t->nbytes = bytes;
    t->data = f->data + t->data_offset;
    return DF_OK;
}

// Everything after the JSON is parsed: entries, names unique, the data block exactly covered.
static int parse_header_object(SafeTensorsFile *f, const cJSON *root, const char *label) {
    size_t ntensors = 0;
    const cJSON *meta = NULL;
    for (const cJSON *c = root->child; c; c = c->next) {
        if (c->string && !strcmp(c->string, "__metadata__")) {
            if (meta) return df_fail(DF_ERR_FORMAT, "%s: duplicate \"__metadata__\" entry", label);
            meta = c;
        } else {
            ntensors++;
        }
    }
    if (ntensors > INT_MAX) return df_fail(DF_ERR_FORMAT, "%s: too many tensors", label);
    if (meta) {
        int rc = parse_metadata(f, meta, label);
        if (rc < 0) return rc;
    }

    f->tensors = DF_CALLOC(ntensors, sizeof *f->tensors, "safetensors tensor table");
    for (const cJSON *c = root->child; c; c = c->next) {
        if (c == meta) continue;
        SafeTensorInfo *t = &f->tensors[f->count++];
        t->name = dup_string(c->string ? c->string : "");
        int rc = parse_tensor(t, c, f, label);
        if (rc < 0) return rc;
    }

    if (ntensors > 1) {
        const char **names = DF_MALLOC(ntensors * sizeof *names, "safetensors names");
        for (size_t i = 0; i < ntensors; i++) names[i] = f->tensors[i].name;
        const char *dup = first_duplicate(names, ntensors);
        int rc = dup ? df_fail(DF_ERR_FORMAT, "%s: duplicate tensor name '%.*s'", label, ST_NAME_SHOWN, dup) : DF_OK;
        free(names);
        if (rc < 0) return rc;
    }

    // Sorted by offset, each tensor must start exactly where the previous one ended: an overlap would alias
    // two tensors, a hole would hide bytes (the format forbids both), and the last must end the block.
    if (ntensors > 1) qsort(f->tensors, ntensors, sizeof *f->tensors, cmp_offset);
    size_t pos = 0;
    const SafeTensorInfo *prev = NULL;
    for (size_t i = 0; i < ntensors; i++) {
        const SafeTensorInfo *t = &f->tensors[i];
        if (t->data_offset < pos)
            return df_fail(DF_ERR_FORMAT, "%s: tensors '%.*s' [%zu, %zu] and '%.*s' [%zu, %zu] overlap", label,
                           ST_NAME_SHOWN, prev->name, prev->data_offset, prev->data_offset + prev->nbytes, ST_NAME_SHOWN,
                           t->name, t->data_offset, t->data_offset + t->nbytes);
        if (t->data_offset > pos)
            return df_fail(DF_ERR_FORMAT, "%s: hole in the data block: bytes [%zu, %zu) before tensor '%.*s' belong to no "
                           "tensor", label, pos, t->data_offset, ST_NAME_SHOWN, t->name);
        pos = t->data_offset + t->nbytes;
        prev = t;
    }
    if (pos != f->data_size)
        return df_fail(DF_ERR_FORMAT, "%s: the tensors cover %zu bytes but the data block has %zu (trailing bytes)", label,
                       pos, f->data_size);
    return DF_OK;
}

int safetensors_parse(SafeTensorsFile *f, const void *buf, size_t size, const char *label) {
    if (!f) return df_fail(DF_ERR_ARG, "safetensors_parse: no SafeTensorsFile given");
    memset(f, 0, sizeof *f);
    if (!label) label = "(memory)";
    if (!buf && size) return df_fail(DF_ERR_ARG, "%s: no buffer given", label);
    if (size < 8) return fail_too_short(label, size);
    const uint8_t *bytes = buf;
    uint64_t n = read_u64_le(bytes);
    if (n > (uint64_t)(size - 8))
        return df_fail(DF_ERR_FORMAT, "%s: header length %llu runs past the end of the file (%zu bytes; truncated?)",
                       label, (unsigned long long)n, size);
    if (n > ST_MAX_HEADER)
        return df_fail(DF_ERR_FORMAT, "%s: header length %llu exceeds the %llu-byte limit", label, (unsigned long long)n,
                       ST_MAX_HEADER);
    if (n == 0) return df_fail(DF_ERR_FORMAT, "%s: header is empty (length 0), expected a JSON object", label);
    const char *header = (const char *)bytes + 8;
    size_t bad = utf8_invalid_at((const uint8_t *)header, (size_t)n);
    if (bad < n) return df_fail(DF_ERR_FORMAT, "%s: header is not valid UTF-8 (byte %zu)", label, bad);

    f->path = dup_string(label);
    f->data = bytes + 8 + n;
    f->data_size = size - 8 - (size_t)n;

    // cJSON gets a private NUL-terminated copy: the header in the file is not terminated, and a copy
    // guarantees no parser path can read past it.
    char *copy = DF_MALLOC((size_t)n + 1, "safetensors header");
    memcpy(copy, header, (size_t)n);
    copy[n] = '\0';
    const char *end = NULL;
    // cJSON silently skips a UTF-8 byte-order mark, which JSON (and the reference reader) does not allow.
    bool bom = n >= 3 && !memcmp(copy, "\xef\xbb\xbf", 3);
    cJSON *root = bom ? NULL : cJSON_ParseWithLengthOpts(copy, (size_t)n, &end, 0);
    char ex[32];
    int rc = DF_OK;
    if (bom) {
        rc = df_fail(DF_ERR_FORMAT, "%s: header is not valid JSON (it starts with a UTF-8 byte-order mark)", label);
    } else if (!root) {
        size_t at = (end && end >= copy && end <= copy + n) ? (size_t)(end - copy) : 0;
        rc = df_fail(DF_ERR_FORMAT, "%s: header is not valid JSON (at byte %zu: '%s')", label, at,
                     excerpt(copy + at, (size_t)n - at, ex, 24));
    } else {
        // Only whitespace (the writer's space padding) may follow the object.
        size_t at = (end && end >= copy && end <= copy + n) ? (size_t)(end - copy) : (size_t)n;
        while (at < n && (copy[at] == ' ' || copy[at] == '\t' || copy[at] == '\n' || copy[at] == '\r')) at++;
        if (at < n)
            rc = df_fail(DF_ERR_FORMAT, "%s: unexpected data after the header's JSON object (at byte %zu: '%s')", label,
                         at, excerpt(copy + at, (size_t)n - at, ex, 24));
        else if (!cJSON_IsObject(root))
            rc = df_fail(DF_ERR_FORMAT, "%s: header is %s, expected a JSON object", label, json_type_name(root));
        else
            rc = parse_header_object(f, root, label);
    }
    cJSON_Delete(root);
    free(copy);
    if (rc < 0) {
        safetensors_close(f);  // f->map is NULL here: only the tables are freed
        return rc;
    }
    return DF_OK;
}

int safetensors_open(SafeTensorsFile *f, const char *path) {
    if (!f || !path) return df_fail(DF_ERR_ARG, "safetensors_open: no file or path given");
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return df_fail(DF_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return df_fail(DF_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return df_fail(DF_ERR_IO, "%s: not a regular file", path);
    }
    if (st.st_size < 0 || (uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        return df_fail(DF_ERR_IO, "%s: file too large to map", path);
    }
    size_t size = (size_t)st.st_size;
    if (size < 8) {  // mmap of an empty file fails: report the format error directly
        close(fd);
        return fail_too_short(path, size);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);  // the mapping stays valid
    if (map == MAP_FAILED) return df_fail(DF_ERR_IO, "%s: cannot mmap %zu bytes: %s", path, size, strerror(map_errno));
    int rc = safetensors_parse(f, map, size, path);
    if (rc < 0) {
        munmap(map, size);
        return rc;
    }
    f->map = map;
    f->map_size = size;
    return DF_OK;
}

const SafeTensorInfo *safetensors_find(const SafeTensorsFile *f, const char *name) {
    if (!f || !name) return NULL;
    for (int i = 0; i < f->count; i++)
        if (!strcmp(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

const char *safetensors_meta(const SafeTensorsFile *f, const char *key) {
    if (!f || !key) return NULL;
    for (int i = 0; i < f->meta_count; i++)
        if (!strcmp(f->meta[i].key, key)) return f->meta[i].value;
    return NULL;
}

int safetensors_read_f32(const SafeTensorsFile *f, const SafeTensorInfo *t, float *dst) {
    if (!f || !t) return df_fail(DF_ERR_ARG, "safetensors_read_f32: no file or tensor given");
    const char *label = f->path ? f->path : "(memory)";
    const uint8_t *src = t->data;
    if (!dtype_valid(t->dtype) || (t->nbytes && !src) || t->nbytes % dtype_size(t->dtype) != 0 ||
        (t->nbytes && (src < f->data || t->nbytes > f->data_size || (size_t)(src - f->data) > f->data_size - t->nbytes)))
        return df_fail(DF_ERR_ARG, "%s: tensor '%.*s' does not describe data of this file", label, ST_NAME_SHOWN,
                       t->name ? t->name : "?");
    size_t n = t->nbytes / dtype_size(t->dtype);
    if (n && !dst) return df_fail(DF_ERR_ARG, "%s: tensor '%.*s': no destination", label, ST_NAME_SHOWN, t->name);
    // The data may be unaligned (offsets are byte offsets): every element goes through memcpy.
    switch (t->dtype) {
    case DT_F32:
        if (n) memcpy(dst, src, n * sizeof(float));
        break;
    case DT_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = f16_to_f32(h);
        }
        break;
    case DT_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = bf16_to_f32(h);
        }
        break;
    case DT_I64:
        for (size_t i = 0; i < n; i++) {
            int64_t v;
            memcpy(&v, src + 8 * i, 8);
            dst[i] = (float)v;  // round to nearest
        }
        break;
    }
    return DF_OK;
}

int safetensors_load_f32(const SafeTensorsFile *f, const char *name, int ndim, const int64_t *shape, float *dst) {
    if (!f || !name || ndim < 0 || ndim > DF_MAX_DIMS || (ndim && !shape))
        return df_fail(DF_ERR_ARG, "safetensors_load_f32: bad arguments");
    const char *label = f->path ? f->path : "(memory)";
    const SafeTensorInfo *t = safetensors_find(f, name);
    if (!t) return df_fail(DF_ERR_FORMAT, "%s: no tensor named '%s'", label, name);
    bool same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char want[160], got[160];
        return df_fail(DF_ERR_FORMAT, "%s: tensor '%s' has shape %s, expected %s", label, name,
                       shape_str(t->shape, t->ndim, got, sizeof got), shape_str(shape, ndim, want, sizeof want));
    }
    return safetensors_read_f32(f, t, dst);
}

// ---- writing -----------------------------------------------------------------------------------------

typedef struct {
    char *p;
    size_t len, cap;
} StrBuf;

static void sb_put(StrBuf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) DF_FATAL("out of host memory building a safetensors header of %zu bytes", cap);
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(StrBuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_printf(StrBuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(StrBuf *b, const char *fmt, ...) {
    char tmp[128];
    va_list args;
    va_start(args, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, args);
    va_end(args);
    sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

// A JSON string literal, escaped the way serde_json does (so headers match the reference byte for byte).
static void sb_json_string(StrBuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': sb_put(b, "\\\"", 2); break;
        case '\\': sb_put(b, "\\\\", 2); break;
        case '\b': sb_put(b, "\\b", 2); break;
        case '\f': sb_put(b, "\\f", 2); break;
        case '\n': sb_put(b, "\\n", 2); break;
        case '\r': sb_put(b, "\\r", 2); break;
        case '\t': sb_put(b, "\\t", 2); break;
        default:
            if (*p < 0x20) sb_printf(b, "\\u%04x", *p);
            else sb_put(b, (const char *)p, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static bool valid_utf8_str(const char *s) {
    size_t n = strlen(s);
    return utf8_invalid_at((const uint8_t *)s, n) == n;
}

// Checks the entries and metadata; fills nbytes[i]. Nothing is written when this fails.
static int check_write_args(const char *path, const SafeTensorsEntry *entries, int count, const char *const *meta_kv,
                            int meta_pairs, size_t *nbytes) {
    if (count < 0 || meta_pairs < 0 || (count && !entries) || (meta_pairs && !meta_kv))
        return df_fail(DF_ERR_ARG, "%s: bad tensor or metadata count (%d tensors, %d metadata pairs)", path, count,
                       meta_pairs);
    for (int i = 0; i < count; i++) {
        const SafeTensorsEntry *e = &entries[i];
        if (!e->name) return df_fail(DF_ERR_ARG, "%s: tensor %d has no name", path, i);
        if (!strcmp(e->name, "__metadata__") || !valid_utf8_str(e->name))
            return df_fail(DF_ERR_ARG, "%s: tensor %d: invalid tensor name '%.*s'", path, i, ST_NAME_SHOWN, e->name);
        if (!dtype_valid(e->dtype))
            return df_fail(DF_ERR_ARG, "%s: tensor '%.*s': bad dtype %d", path, ST_NAME_SHOWN, e->name, (int)e->dtype);
        if (e->ndim < 0 || e->ndim > DF_MAX_DIMS)
            return df_fail(DF_ERR_ARG, "%s: tensor '%.*s': ndim %d outside [0, %d]", path, ST_NAME_SHOWN, e->name, e->ndim,
                           DF_MAX_DIMS);
        int64_t numel = df_shape_numel(e->shape, e->ndim);
        char sbuf[160];
        if (numel < 0 || (uint64_t)numel > (uint64_t)(ST_MAX_EXACT / (double)dtype_size(e->dtype)))
            return df_fail(DF_ERR_ARG, "%s: tensor '%.*s': bad shape %s", path, ST_NAME_SHOWN, e->name,
                           shape_str(e->shape, e->ndim, sbuf, sizeof sbuf));
        nbytes[i] = (size_t)numel * dtype_size(e->dtype);
        if (nbytes[i] && !e->data)
            return df_fail(DF_ERR_ARG, "%s: tensor '%.*s': no data", path, ST_NAME_SHOWN, e->name);
    }
    for (int i = 0; i < meta_pairs; i++) {
        const char *k = meta_kv[2 * i], *v = meta_kv[2 * i + 1];
        if (!k || !v) return df_fail(DF_ERR_ARG, "%s: metadata pair %d has a NULL key or value", path, i);
        if (strlen(k) >= sizeof ((SafeTensorsMeta *)0)->key || !valid_utf8_str(k) || !valid_utf8_str(v))
            return df_fail(DF_ERR_ARG, "%s: metadata key '%.*s' is too long or not UTF-8", path, 40, k);
    }
    int rc = DF_OK;
    if (count > 1 || meta_pairs > 1) {
        int n = count > meta_pairs ? count : meta_pairs;
        const char **names = DF_MALLOC((size_t)n * sizeof *names, "safetensors names");
        for (int i = 0; i < count; i++) names[i] = entries[i].name;
        const char *dup = first_duplicate(names, (size_t)count);
        if (dup) rc = df_fail(DF_ERR_ARG, "%s: duplicate tensor name '%.*s'", path, ST_NAME_SHOWN, dup);
        for (int i = 0; rc == DF_OK && i < meta_pairs; i++) names[i] = meta_kv[2 * i];
        dup = rc == DF_OK ? first_duplicate(names, (size_t)meta_pairs) : NULL;
        if (dup) rc = df_fail(DF_ERR_ARG, "%s: duplicate metadata key '%s'", path, dup);
        free(names);
    }
    return rc;
}

int safetensors_write(const char *path, const SafeTensorsEntry *entries, int count, const char *const *meta_kv,
                      int meta_pairs) {
    if (!path) return df_fail(DF_ERR_ARG, "safetensors_write: no path given");
    size_t *nbytes = DF_CALLOC(count > 0 ? (size_t)count : 1, sizeof *nbytes, "safetensors sizes");
    int rc = check_write_args(path, entries, count, meta_kv, meta_pairs, nbytes);
    if (rc < 0) {
        free(nbytes);
        return rc;
    }

    // Header: {"__metadata__":{...},"name":{"dtype":..,"shape":[..],"data_offsets":[b,e]},...}
    StrBuf h = {0};
    sb_puts(&h, "{");
    if (meta_pairs > 0) {
        sb_puts(&h, "\"__metadata__\":{");
        for (int i = 0; i < meta_pairs; i++) {
            if (i) sb_puts(&h, ",");
            sb_json_string(&h, meta_kv[2 * i]);
            sb_puts(&h, ":");
            sb_json_string(&h, meta_kv[2 * i + 1]);
        }
        sb_puts(&h, "}");
    }
    size_t offset = 0;
    for (int i = 0; i < count; i++) {
        const SafeTensorsEntry *e = &entries[i];
        if (i || meta_pairs > 0) sb_puts(&h, ",");
        sb_json_string(&h, e->name);
        sb_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", dtype_name(e->dtype));
        for (int d = 0; d < e->ndim; d++) sb_printf(&h, "%s%lld", d ? "," : "", (long long)e->shape[d]);
        sb_printf(&h, "],\"data_offsets\":[%zu,%zu]}", offset, offset + nbytes[i]);
        offset += nbytes[i];
    }
    sb_puts(&h, "}");
    while (h.len % 8 != 0) sb_puts(&h, " ");  // the data block starts 8-byte aligned
    uint8_t len_le[8];
    write_u64_le(len_le, (uint64_t)h.len);

    size_t plen = strlen(path);
    char *tmp = DF_MALLOC(plen + 5, "safetensors tmp path");
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);

    const char *step = "open";
    FILE *fp = fopen(tmp, "wb");
    bool created = fp != NULL, ok = created;
    if (ok) {
        step = "write";
        ok = fwrite(len_le, 1, 8, fp) == 8 && fwrite(h.p, 1, h.len, fp) == h.len;
        for (int i = 0; ok && i < count; i++)
            if (nbytes[i]) ok = fwrite(entries[i].data, 1, nbytes[i], fp) == nbytes[i];
        if (ok) step = "flush", ok = fflush(fp) == 0;
        if (ok) step = "fsync", ok = fsync(fileno(fp)) == 0;
        int e = errno;
        if (fclose(fp) != 0 && ok) step = "close", ok = false, e = errno;
        errno = e;
    }
    if (ok) step = "rename", ok = rename(tmp, path) == 0;
    if (!ok) {
        int e = errno;
        if (created) unlink(tmp);
        rc = df_fail(DF_ERR_IO, "%s: writing failed (%s of %s): %s", path, step, tmp, strerror(e));
    } else {
        // Make the rename itself durable (best effort: some file systems refuse fsync on a directory).
        char *dir = dup_string(path);
        char *slash = strrchr(dir, '/');
        const char *dname = slash ? (slash == dir ? "/" : (*slash = '\0', dir)) : ".";
        int dfd = open(dname, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            (void)fsync(dfd);
            close(dfd);
        }
        free(dir);
    }
    free(tmp);
    free(h.p);
    free(nbytes);
    return rc;
}
