// options.c — the option-table parser shared by every verb (see cli.h).
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *type_hint(OptionType type) {
    switch (type) {
    case OPT_STRING: return "STR";
    case OPT_INT: return "INT";
    case OPT_FLOAT: return "NUM";
    case OPT_FLAG: return "";
    }
    return "";
}

static void print_value(const Option *o) {
    switch (o->type) {
    case OPT_STRING: {
        const char *s = *(const char **)o->dest;
        printf("%s", s ? s : "(none)");
        break;
    }
    case OPT_INT: printf("%d", *(int *)o->dest); break;
    case OPT_FLOAT: printf("%g", *(double *)o->dest); break;
    case OPT_FLAG: printf("%s", *(bool *)o->dest ? "true" : "false"); break;
    }
}

void print_usage(const OptionTable *table) {
    printf("usage: diffurl %s [options] %s\n\n%s\n\noptions:\n", table->verb, table->usage ? table->usage : "",
           table->summary);
    for (int i = 0; i < table->count; i++) {
        const Option *o = &table->options[i];
        char left[64];
        snprintf(left, sizeof left, "--%s %s", o->name, type_hint(o->type));
        printf("  %-26s %s (default: ", left, o->help);
        print_value(o);
        printf(")\n");
    }
    printf("  %-26s %s\n", "--help", "print this help");
}

void print_options(const OptionTable *table) {
    printf("%s:", table->verb);
    for (int i = 0; i < table->count; i++) {
        printf(" %s=", table->options[i].name);
        print_value(&table->options[i]);
    }
    printf("\n");
}

static int set_value(const OptionTable *table, const Option *o, const char *value) {
    char *end = NULL;
    errno = 0;
    switch (o->type) {
    case OPT_STRING: *(const char **)o->dest = value; return 0;
    case OPT_INT: {
        long v = strtol(value, &end, 10);
        if (errno || !*value || *end || v < -2147483647L || v > 2147483647L) break;
        *(int *)o->dest = (int)v;
        return 0;
    }
    case OPT_FLOAT: {
        double v = strtod(value, &end);
        if (errno || !*value || *end) break;
        *(double *)o->dest = v;
        return 0;
    }
    case OPT_FLAG:
        if (!strcmp(value, "true") || !strcmp(value, "1")) *(bool *)o->dest = true;
        else if (!strcmp(value, "false") || !strcmp(value, "0")) *(bool *)o->dest = false;
        else break;
        return 0;
    }
    fprintf(stderr, "diffurl %s: --%s expects %s, got '%s'\n", table->verb, o->name,
            o->type == OPT_INT ? "an integer" : o->type == OPT_FLOAT ? "a number" : "true or false", value);
    return -1;
}

int parse_options(const OptionTable *table, int argc, char **argv, const char **positional, int max_positional) {
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            print_usage(table);
            return -2;
        }
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            if (npos >= max_positional) {
                fprintf(stderr, "diffurl %s: unexpected argument '%s' (see diffurl %s --help)\n", table->verb,
                        arg, table->verb);
                return -1;
            }
            positional[npos++] = arg;
            continue;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
        const Option *o = NULL;
        for (int j = 0; j < table->count; j++)
            if (strlen(table->options[j].name) == name_len && !strncmp(table->options[j].name, name, name_len))
                o = &table->options[j];
        if (!o) {
            fprintf(stderr, "diffurl %s: unknown option '--%.*s' (see diffurl %s --help)\n", table->verb,
                    (int)name_len, name, table->verb);
            return -1;
        }
        const char *value = eq ? eq + 1 : NULL;
        if (!value && o->type == OPT_FLAG) value = "true";
        if (!value) {
            if (i + 1 >= argc) {
                fprintf(stderr, "diffurl %s: --%s needs a value\n", table->verb, o->name);
                return -1;
            }
            value = argv[++i];
        }
        if (set_value(table, o, value) != 0) return -1;
    }
    return npos;
}
