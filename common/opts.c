#include "opts.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const struct opt *find_long(const struct opt *t, const char *name, size_t len) {
    for (; t->name; t++)
        if (strlen(t->name) == len && strncmp(t->name, name, len) == 0) return t;
    return NULL;
}

static const struct opt *find_short(const struct opt *t, char c) {
    for (; t->name; t++)
        if (t->short_name && t->short_name == c) return t;
    return NULL;
}

static int set_value(const struct opt *o, void *cfg, const char *val) {
    char *field = (char *)cfg + o->offset;
    char *end = NULL;
    errno = 0;
    switch (o->type) {
    case OPT_FLAG: *(int *)field = 1; return 0;
    case OPT_STRING: *(const char **)field = val; return 0;
    case OPT_INT:
    case OPT_INT64: {
        long long v = strtoll(val, &end, 0);
        if (errno || end == val || *end) {
            fprintf(stderr, "error: --%s expects an integer, got '%s'\n", o->name, val);
            return -1;
        }
        if (o->min <= o->max && (v < o->min || v > o->max)) {
            fprintf(stderr, "error: --%s must be between %.0f and %.0f, got %lld\n", o->name,
                    o->min, o->max, v);
            return -1;
        }
        if (o->type == OPT_INT)
            *(int *)field = (int)v;
        else
            *(long long *)field = v;
        return 0;
    }
    case OPT_FLOAT: {
        double v = strtod(val, &end);
        if (errno || end == val || *end || !isfinite(v)) {
            fprintf(stderr, "error: --%s expects a number, got '%s'\n", o->name, val);
            return -1;
        }
        if (o->min <= o->max && (v < o->min || v > o->max)) {
            fprintf(stderr, "error: --%s must be between %g and %g, got %g\n", o->name, o->min,
                    o->max, v);
            return -1;
        }
        *(double *)field = v;
        return 0;
    }
    case OPT_TYPE_COUNT: break;
    }
    return -1;
}

static void set_defaults(const struct opt *t, void *cfg) {
    for (; t->name; t++) {
        char *field = (char *)cfg + t->offset;
        switch (t->type) {
        case OPT_FLAG: *(int *)field = 0; break;
        case OPT_STRING: *(const char **)field = t->def; break;
        case OPT_INT: *(int *)field = t->def ? (int)strtoll(t->def, NULL, 0) : 0; break;
        case OPT_INT64: *(long long *)field = t->def ? strtoll(t->def, NULL, 0) : 0; break;
        case OPT_FLOAT: *(double *)field = t->def ? strtod(t->def, NULL) : 0.0; break;
        case OPT_TYPE_COUNT: break;
        }
    }
}

void opts_print_help(FILE *f, const struct opt *table, const char *usage) {
    fprintf(f, "%s\n\noptions:\n", usage);
    for (const struct opt *o = table; o->name; o++) {
        char left[64];
        const char *mv = o->type == OPT_FLAG ? "" : (o->metavar ? o->metavar : "X");
        if (o->short_name)
            snprintf(left, sizeof left, "-%c, --%s %s", o->short_name, o->name, mv);
        else
            snprintf(left, sizeof left, "    --%s %s", o->name, mv);
        fprintf(f, "  %-28s %s", left, o->help ? o->help : "");
        if (o->def && o->type != OPT_FLAG) fprintf(f, " (default: %s)", o->def);
        fputc('\n', f);
    }
    fprintf(f, "  %-28s %s\n", "-h, --help", "show this help and exit");
}

void opts_dump(FILE *f, const struct opt *table, const void *cfg) {
    for (const struct opt *o = table; o->name; o++) {
        const char *field = (const char *)cfg + o->offset;
        switch (o->type) {
        case OPT_FLAG:
            fprintf(f, "%s = %s\n", o->name, *(const int *)field ? "true" : "false");
            break;
        case OPT_INT: fprintf(f, "%s = %d\n", o->name, *(const int *)field); break;
        case OPT_INT64: fprintf(f, "%s = %lld\n", o->name, *(const long long *)field); break;
        case OPT_FLOAT: fprintf(f, "%s = %g\n", o->name, *(const double *)field); break;
        case OPT_STRING: {
            const char *s = *(const char *const *)field;
            fprintf(f, "%s = %s\n", o->name, s ? s : "(none)");
            break;
        }
        case OPT_TYPE_COUNT: break;
        }
    }
}

enum opts_result opts_parse(const struct opt *table, void *cfg, int argc, char **argv,
                            const char *usage, int *n_pos) {
    set_defaults(table, cfg);
    int npos = 0;
    int only_pos = 0;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (only_pos || a[0] != '-' || a[1] == '\0') {
            argv[npos++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_pos = 1;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            opts_print_help(stdout, table, usage);
            return OPTS_HELP;
        }
        const struct opt *o;
        const char *val = NULL;
        if (a[1] == '-') {
            const char *name = a + 2;
            const char *eq = strchr(name, '=');
            o = find_long(table, name, eq ? (size_t)(eq - name) : strlen(name));
            if (eq) val = eq + 1;
        } else {
            o = a[2] == '\0' ? find_short(table, a[1]) : NULL;
        }
        if (!o) {
            fprintf(stderr, "error: unknown option '%s' (see --help)\n", a);
            return OPTS_ERROR;
        }
        if (o->type == OPT_FLAG) {
            if (val) {
                fprintf(stderr, "error: --%s takes no value\n", o->name);
                return OPTS_ERROR;
            }
        } else if (!val) {
            if (i + 1 >= argc) {
                fprintf(stderr, "error: --%s needs a value\n", o->name);
                return OPTS_ERROR;
            }
            val = argv[++i];
        }
        if (set_value(o, cfg, val) != 0) return OPTS_ERROR;
    }
    if (n_pos) *n_pos = npos;
    return OPTS_OK;
}
