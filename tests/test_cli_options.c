// test_cli_options.c — the option-table parser every verb uses: values of each type, --name=value,
// positionals, unknown options, missing and malformed values, --help.
#include <string.h>

#include "cli.h"
#include "harness.h"

static const char *device;
static int steps;
static double eta;
static bool png;

static OptionTable make_table(Option *opts) {
    opts[0] = (Option){"device", OPT_STRING, &device, "device"};
    opts[1] = (Option){"steps", OPT_INT, &steps, "steps"};
    opts[2] = (Option){"eta", OPT_FLOAT, &eta, "eta"};
    opts[3] = (Option){"png", OPT_FLAG, &png, "write png"};
    return (OptionTable){"testverb", "a test verb", "FILE", opts, 4};
}

static int parse(int argc, char **argv, const char **pos, int max_pos) {
    device = "cpu";
    steps = 20;
    eta = 1.0;
    png = false;
    Option opts[4];
    OptionTable table = make_table(opts);
    return parse_options(&table, argc, argv, pos, max_pos);
}

int main(void) {
    const char *pos[2] = {0};
    char *a1[] = {"testverb", "--device", "cuda:1", "--steps=50", "in.st", "--eta", "0.5", "--png"};
    int n = parse(8, a1, pos, 2);
    CHECK(n == 1 && !strcmp(pos[0], "in.st"), "one positional (got %d)", n);
    CHECK(!strcmp(device, "cuda:1") && steps == 50 && eta == 0.5 && png, "values parsed");

    char *a2[] = {"testverb", "--bogus", "1"};
    CHECK(parse(3, a2, pos, 2) == -1, "unknown option refused");
    char *a3[] = {"testverb", "--steps"};
    CHECK(parse(2, a3, pos, 2) == -1, "missing value refused");
    char *a4[] = {"testverb", "--steps", "12x"};
    CHECK(parse(3, a4, pos, 2) == -1, "malformed integer refused");
    char *a5[] = {"testverb", "--eta", "abc"};
    CHECK(parse(3, a5, pos, 2) == -1, "malformed number refused");
    char *a6[] = {"testverb", "a", "b", "c"};
    CHECK(parse(4, a6, pos, 2) == -1, "too many positionals refused");
    char *a7[] = {"testverb", "--png=false", "--help"};
    CHECK(parse(3, a7, pos, 2) == -2 && !png, "--help reported");
    char *a8[] = {"testverb", "--png=maybe"};
    CHECK(parse(2, a8, pos, 2) == -1, "malformed flag refused");
    return test_finish("cli_options");
}
