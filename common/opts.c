#include "opts.h"

#include <ctype.h>
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

/* Writes o's default into field (the option's own type there). */
static void default_into(const struct opt *o, void *field) {
    switch (o->type) {
    case OPT_FLAG: *(int *)field = 0; break;
    case OPT_STRING: *(const char **)field = o->def; break;
    case OPT_INT: *(int *)field = o->def ? (int)strtoll(o->def, NULL, 0) : 0; break;
    case OPT_INT64: *(long long *)field = o->def ? strtoll(o->def, NULL, 0) : 0; break;
    case OPT_FLOAT: *(double *)field = o->def ? strtod(o->def, NULL) : 0.0; break;
    case OPT_TYPE_COUNT: break;
    }
}

static void set_defaults(const struct opt *t, void *cfg) {
    for (; t->name; t++) default_into(t, (char *)cfg + t->offset);
}

bool opts_is_default(const struct opt *o, const void *cfg) {
    const char *field = (const char *)cfg + o->offset;
    union {
        int i;
        long long ll;
        double d;
        const char *s;
    } def;
    default_into(o, &def);
    switch (o->type) {
    case OPT_FLAG:
    case OPT_INT: return *(const int *)field == def.i;
    case OPT_INT64: return *(const long long *)field == def.ll;
    case OPT_FLOAT: return *(const double *)field == def.d;
    case OPT_STRING: {
        const char *v = *(const char *const *)field;
        return v == def.s || (v && def.s && strcmp(v, def.s) == 0);
    }
    case OPT_TYPE_COUNT: break;
    }
    return true;
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
    fprintf(f, "  %-28s %s\n", "    --config FILE",
            "read 'name = value' lines (long option names) first; flags override them");
    fprintf(f, "  %-28s %s\n", "-h, --help", "show this help and exit");
}

bool opts_format_value(const struct opt *o, const void *cfg, char *buf, size_t cap) {
    const char *field = (const char *)cfg + o->offset;
    switch (o->type) {
    case OPT_FLAG: snprintf(buf, cap, "%s", *(const int *)field ? "true" : "false"); return true;
    case OPT_INT: snprintf(buf, cap, "%d", *(const int *)field); return true;
    case OPT_INT64: snprintf(buf, cap, "%lld", *(const long long *)field); return true;
    case OPT_FLOAT: {
        const double v = *(const double *)field;
        snprintf(buf, cap, "%g", v);
        if (strtod(buf, NULL) != v) snprintf(buf, cap, "%.17g", v);
        return true;
    }
    case OPT_STRING: {
        const char *str = *(const char *const *)field;
        snprintf(buf, cap, "%s", str ? str : "");
        return str != NULL;
    }
    case OPT_TYPE_COUNT: break;
    }
    if (cap) buf[0] = '\0';
    return false;
}

void opts_dump(FILE *f, const struct opt *table, const void *cfg) {
    for (const struct opt *o = table; o->name; o++) {
        char v[64];
        if (o->type == OPT_STRING) {
            const char *s = *(const char *const *)((const char *)cfg + o->offset);
            if (s)
                fprintf(f, "%s = %s\n", o->name, s);
            else
                fprintf(f, "# %s =\n", o->name); /* unset: a comment, so the dump loads back */
        } else if (opts_format_value(o, cfg, v, sizeof v)) {
            fprintf(f, "%s = %s\n", o->name, v);
        }
    }
}

/* Strings read from config files: kept reachable for the life of the process (options point
 * into them), so leak checkers do not report them. */
struct opts_string {
    struct opts_string *next;
    char text[];
};
static struct opts_string *opts_strings;

static const char *keep_string(const char *s) {
    size_t n = strlen(s);
    struct opts_string *k = malloc(sizeof *k + n + 1);
    if (!k) return NULL;
    memcpy(k->text, s, n + 1);
    k->next = opts_strings;
    opts_strings = k;
    return k->text;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1])) s[--n] = '\0';
    return s;
}

static int parse_bool(const char *v, int *out) {
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(v, yes[i]) == 0) return *out = 1, 0;
        if (strcasecmp(v, no[i]) == 0) return *out = 0, 0;
    }
    return -1;
}

int opts_load_file(const struct opt *table, void *cfg, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "error: cannot read the config file %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[4096];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n' && !feof(f)) {
            fprintf(stderr, "error: %s:%d: line too long\n", path, lineno);
            rc = -1;
            break;
        }
        char *l = trim(line);
        if (*l == '\0' || *l == '#') continue;
        char *eq = strchr(l, '=');
        if (!eq) {
            fprintf(stderr, "error: %s:%d: expected 'name = value'\n", path, lineno);
            rc = -1;
            break;
        }
        *eq = '\0';
        char *name = trim(l), *val = trim(eq + 1);
        if (strncmp(name, "--", 2) == 0) name += 2;
        size_t vn = strlen(val);
        if (vn >= 2 && val[0] == '"' && val[vn - 1] == '"') {
            val[vn - 1] = '\0';
            val++;
        }
        const struct opt *o = find_long(table, name, strlen(name));
        if (!o) {
            fprintf(stderr, "error: %s:%d: unknown option '%s'\n", path, lineno, name);
            rc = -1;
            break;
        }
        if (o->type == OPT_FLAG) {
            int b;
            if (parse_bool(val, &b) != 0) {
                fprintf(stderr, "error: %s:%d: %s expects true or false, got '%s'\n", path, lineno,
                        o->name, val);
                rc = -1;
                break;
            }
            *(int *)((char *)cfg + o->offset) = b;
            continue;
        }
        const char *v = o->type == OPT_STRING ? keep_string(val) : val;
        if (!v || set_value(o, cfg, v) != 0) {
            fprintf(stderr, "error: in %s:%d\n", path, lineno);
            rc = -1;
            break;
        }
    }
    fclose(f);
    return rc;
}

/* The value of the last --config in argv[1..] (before any "--"), or NULL; -1 if it lacks one. */
static int find_config(int argc, char **argv, const char **path) {
    *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) break;
        if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "error: --config needs a value\n");
                return -1;
            }
            *path = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            *path = argv[i] + 9;
        }
    }
    return 0;
}

enum opts_result opts_parse(const struct opt *table, void *cfg, int argc, char **argv,
                            const char *usage, int *n_pos) {
    set_defaults(table, cfg);
    const char *config = NULL;
    if (find_config(argc, argv, &config) != 0) return OPTS_ERROR;
    if (config && opts_load_file(table, cfg, config) != 0) return OPTS_ERROR;
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
        if (strcmp(a, "--config") == 0) { /* read before the loop */
            i++;
            continue;
        }
        if (strncmp(a, "--config=", 9) == 0) continue;
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
