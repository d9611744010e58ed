/* opts_test: one option table drives defaults, a --config file and flags, in that order of
 * precedence; bad files fail with their line; opts_dump's output loads back, doubles exactly. */
#include "opts.h"

#include <assert.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct cfg {
    const char *model;
    int workers;
    long long bytes;
    double temp;
    int verbose;
    const char *http;
};

#define F(x) offsetof(struct cfg, x)
static const struct opt table[] = {
    {"model", 'm', OPT_STRING, F(model), NULL, 0, -1, "GGUF", "the model"},
    {"workers", 'w', OPT_INT, F(workers), "2", 1, 64, "N", "workers"},
    {"bytes", 0, OPT_INT64, F(bytes), "100", 0, 1e12, "B", "bytes"},
    {"temp", 0, OPT_FLOAT, F(temp), "0.8", 0, 100, "T", "temperature"},
    {"verbose", 'v', OPT_FLAG, F(verbose), NULL, 0, -1, NULL, "talk"},
    {"http", 0, OPT_STRING, F(http), "127.0.0.1:8080", 0, -1, "HOST:PORT", "listen"},
    OPTS_END};

static char dir[] = "/tmp/opts_test.XXXXXX";

static const char *write_file(const char *name, const char *text) {
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* Parses a NULL-terminated argument list (argv[0] is added). */
static enum opts_result parse(struct cfg *c, int *n_pos, char **pos0, const char *first, ...) {
    char *argv[32] = {"prog"};
    int argc = 1;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a; a = va_arg(ap, const char *)) argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    int np = 0;
    enum opts_result r = opts_parse(table, c, argc, argv, "usage: prog", &np);
    if (n_pos) *n_pos = np;
    if (pos0) *pos0 = np > 0 ? argv[0] : NULL;
    return r;
}

int main(void) {
    assert(mkdtemp(dir));
    struct cfg c;

    /* defaults only */
    assert(parse(&c, NULL, NULL, NULL) == OPTS_OK);
    assert(c.workers == 2 && c.bytes == 100 && c.temp == 0.8 && !c.verbose && !c.model);

    /* the file fills the table: every type, comments, blanks, quotes, spaces, --names */
    const char *conf = write_file("a.conf", "# a comment\n"
                                            "\n"
                                            "model = /srv/m.gguf\n"
                                            "  workers=5  \n"
                                            "bytes = 0x1000\n"
                                            "--temp = 0.25\n"
                                            "verbose = yes\n"
                                            "http = \"0.0.0.0:9000\"\n");
    char cbuf[300];
    snprintf(cbuf, sizeof cbuf, "%s", conf);
    assert(parse(&c, NULL, NULL, "--config", cbuf, NULL) == OPTS_OK);
    assert(strcmp(c.model, "/srv/m.gguf") == 0);
    assert(c.workers == 5 && c.bytes == 4096 && c.temp == 0.25 && c.verbose == 1);
    assert(strcmp(c.http, "0.0.0.0:9000") == 0);

    /* flags override the file whatever their order; positionals are kept */
    int np = 0;
    char *p0 = NULL;
    char eqarg[320];
    snprintf(eqarg, sizeof eqarg, "--config=%s", cbuf);
    assert(parse(&c, &np, &p0, "-w", "7", "pos", eqarg, "--temp", "0", NULL) == OPTS_OK);
    assert(c.workers == 7 && c.temp == 0.0 && c.bytes == 4096 && np == 1);
    assert(strcmp(p0, "pos") == 0);

    /* a flag the file turns off stays off; a command-line flag turns it back on */
    const char *off = write_file("off.conf", "verbose = false\n");
    snprintf(cbuf, sizeof cbuf, "%s", off);
    assert(parse(&c, NULL, NULL, "--config", cbuf, NULL) == OPTS_OK && c.verbose == 0);
    assert(parse(&c, NULL, NULL, "--config", cbuf, "-v", NULL) == OPTS_OK && c.verbose == 1);

    /* errors: unknown name, out of range, bad flag value, no '=', missing file, no value */
    const char *bad[] = {"nosuch = 1\n", "workers = 65\n", "verbose = maybe\n", "workers 3\n",
                         "bytes = 12abc\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(cbuf, sizeof cbuf, "%s", write_file("bad.conf", bad[i]));
        assert(parse(&c, NULL, NULL, "--config", cbuf, NULL) == OPTS_ERROR);
    }
    assert(parse(&c, NULL, NULL, "--config", "/nonexistent/x.conf", NULL) == OPTS_ERROR);
    assert(parse(&c, NULL, NULL, "--config", NULL) == OPTS_ERROR);

    /* opts_dump's output loads back to the same configuration (an unset string included) */
    assert(parse(&c, NULL, NULL, "--workers", "9", "--temp", "1.5", "-v", "--bytes", "77", NULL) ==
           OPTS_OK);
    char dpath[256];
    snprintf(dpath, sizeof dpath, "%s/dump.conf", dir);
    FILE *f = fopen(dpath, "w");
    assert(f);
    opts_dump(f, table, &c);
    fclose(f);
    struct cfg d;
    memset(&d, 0xff, sizeof d);
    assert(parse(&d, NULL, NULL, "--config", dpath, NULL) == OPTS_OK);
    assert(d.workers == 9 && d.temp == 1.5 && d.verbose == 1 && d.bytes == 77);
    assert(d.model == NULL && strcmp(d.http, "127.0.0.1:8080") == 0);
    /* a double loads back exactly, in %g's few digits where they do: 1/3 did not at %g */
    const struct opt *temp = &table[3];
    char v[64];
    const double doubles[] = {1.0 / 3, 0.1 + 0.2, 0.8, 1e-300, 85.979412078081651};
    for (size_t i = 0; i < sizeof doubles / sizeof doubles[0]; i++) {
        c.temp = doubles[i];
        assert(opts_format_value(temp, &c, v, sizeof v) && strtod(v, NULL) == c.temp);
        f = fopen(dpath, "w");
        assert(f);
        opts_dump(f, table, &c);
        fclose(f);
        assert(parse(&d, NULL, NULL, "--config", dpath, NULL) == OPTS_OK && d.temp == c.temp);
    }
    c.temp = 0.8;
    assert(opts_format_value(temp, &c, v, sizeof v) && strcmp(v, "0.8") == 0);
    c.model = NULL;
    assert(!opts_format_value(&table[0], &c, v, sizeof v));

    /* opts_is_default: each type, given or not; a given value equal to the default counts */
    assert(parse(&c, NULL, NULL, NULL) == OPTS_OK);
    for (const struct opt *o = table; o->name; o++) assert(opts_is_default(o, &c));
    assert(parse(&c, NULL, NULL, "--workers", "2", "--temp", "0.80", "--http", "127.0.0.1:8080",
                 NULL) == OPTS_OK);
    for (const struct opt *o = table; o->name; o++) assert(opts_is_default(o, &c));
    assert(parse(&c, NULL, NULL, "-m", "x", "-w", "3", "--bytes", "101", "--temp", "0.7", "-v",
                 "--http", "h:1", NULL) == OPTS_OK);
    for (const struct opt *o = table; o->name; o++) assert(!opts_is_default(o, &c));

    /* --help mentions --config */
    char hpath[256];
    snprintf(hpath, sizeof hpath, "%s/help.txt", dir);
    f = fopen(hpath, "w+");
    assert(f);
    opts_print_help(f, table, "usage: prog");
    rewind(f);
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    assert(strstr(buf, "--config FILE"));

    const char *names[] = {"a.conf", "off.conf", "bad.conf", "dump.conf", "help.txt"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char p[300];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        unlink(p);
    }
    rmdir(dir);
    printf("opts_test: ok\n");
    return 0;
}
