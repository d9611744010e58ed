/* opts: one options table drives command-line flags, defaults, range checks and --help.
 * Each command declares `static const struct opt table[]` over its own config struct. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

enum opt_type { OPT_FLAG, OPT_INT, OPT_INT64, OPT_FLOAT, OPT_STRING, OPT_TYPE_COUNT };

struct opt {
    const char *name;    /* long name, used as --name */
    char short_name;     /* -x, or 0 */
    enum opt_type type;  /* OPT_FLAG: int set to 1; OPT_INT: int; OPT_INT64: long long;
                            OPT_FLOAT: double; OPT_STRING: const char * */
    size_t offset;       /* offsetof(config, field) */
    const char *def;     /* default, as it would be typed; NULL = 0 / NULL */
    double min, max;     /* inclusive range for numbers (ignored when min > max) */
    const char *metavar; /* shown in --help, e.g. "N" */
    const char *help;
};

#define OPTS_END                                                                                   \
    { 0 }

enum opts_result { OPTS_OK = 0, OPTS_HELP = 1, OPTS_ERROR = 2 };

/* Fills cfg from defaults, then from a config file named by `--config FILE` (any position),
 * then argv[1..], so flags override the file and the file overrides the defaults. The file
 * has "name = value" lines using the long option names (no dashes); '#' starts a comment line;
 * a flag takes true/false (also 1/0, yes/no, on/off); a value may be double-quoted. Unknown
 * names and bad values are errors naming FILE:LINE. String values read from a file stay
 * allocated for the life of the process. Positional arguments are moved to the front of argv
 * in order and counted in *n_pos (argv is reordered in place). "--" ends options.
 * On --help/-h prints usage + table to stdout and returns OPTS_HELP; on a bad flag or value
 * prints one line to stderr and returns OPTS_ERROR. */
enum opts_result opts_parse(const struct opt *table, void *cfg, int argc, char **argv,
                            const char *usage, int *n_pos);

/* Reads a config file (the format above) into cfg over what it holds. 0 on success, -1 after
 * one line on stderr. */
int opts_load_file(const struct opt *table, void *cfg, const char *path);

/* Whether cfg holds o's default (a value given equal to it counts as the default). */
bool opts_is_default(const struct opt *o, const void *cfg);
/* o's value in cfg as it would be typed, so that parsing it gives that very value back: a
 * number exactly (a double in the fewest of %g's and %.17g's digits that read back the same),
 * a flag "true" or "false", a string as it is. Writes at most cap bytes (cap >= 32 holds any
 * number); returns false for an unset string. */
bool opts_format_value(const struct opt *o, const void *cfg, char *buf, size_t cap);
/* Prints "usage" then one line per option with its default. */
void opts_print_help(FILE *f, const struct opt *table, const char *usage);

/* Writes the effective configuration, one "name = value" per line. */
void opts_dump(FILE *f, const struct opt *table, const void *cfg);
