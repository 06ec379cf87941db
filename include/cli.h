// cli.h — the command-line verbs and the one option-table parser they all use.
//
// Every verb declares its options as a table of Option; parse_options() fills the destinations, handles
// --help (usage printed from the same table), refuses unknown options and missing values by name, and
// print_options() echoes the resolved configuration.
#ifndef DIFFURL_CLI_H
#define DIFFURL_CLI_H

#include <stdbool.h>

typedef enum { OPT_STRING, OPT_INT, OPT_FLOAT, OPT_FLAG } OptionType;

typedef struct {
    const char *name;  // without the leading "--"
    OptionType type;
    void *dest;        // const char **, int *, double *, bool *
    const char *help;
} Option;

typedef struct {
    const char *verb;
    const char *summary;
    const char *usage;  // positional arguments, e.g. "FILE.safetensors"
    const Option *options;
    int count;
} OptionTable;

// Parses argv[1..] (argv[0] is the verb). Positional arguments are collected in order into
// positional[0..max_positional). Returns the number of positionals, or -1 on error (message printed),
// or -2 when --help was printed (the verb should exit 0).
int parse_options(const OptionTable *table, int argc, char **argv, const char **positional, int max_positional);
void print_usage(const OptionTable *table);
void print_options(const OptionTable *table);

// Verbs: each returns the process exit code.
int cmd_inspect(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_unet(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_pretrain(int argc, char **argv);
int cmd_eval(int argc, char **argv);

#endif  // DIFFURL_CLI_H
