/* trace_test: the clock estimate from a heartbeat round trip, the key naming a clock, and a
 * written trace's text. */
#include "trace.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

static void test_estimate(void) {
    int64_t off = 0, rtt = 0;
    /* peer clock 5000 us ahead, 100 us each way, held 300 us */
    CHECK(trace_clock_estimate(1000, 6100, 6400, 1500, &off, &rtt));
    CHECK(off == 5000);
    CHECK(rtt == 200);
    /* peer clock 700 us behind, asymmetric 50/150: error is half the asymmetry */
    CHECK(trace_clock_estimate(10000, 9350, 9400, 10250, &off, &rtt));
    CHECK(off == -750);
    CHECK(rtt == 200);
    CHECK(!trace_clock_estimate(0, 1, 2, 3, &off, &rtt));
    CHECK(!trace_clock_estimate(100, 200, 150, 300, &off, &rtt)); /* peer sent before receiving */
    CHECK(!trace_clock_estimate(100, 200, 900, 300, &off, &rtt)); /* held longer than the trip */
}

/* The clock key: a boot id's 16 bytes; the same boot id gives the same key, another another, an
 * unreadable or malformed one none (all zero). */
static void test_clock_id(void) {
    char path[] = "/tmp/trace_test.XXXXXX";
    const int fd = mkstemp(path);
    CHECK(fd >= 0);
    static const struct {
        const char *text;
        bool ok;
    } cases[] = {
        {"3f9d2c71-6a0e-4b8e-9a51-0c2d7e4b1a66\n", true},
        {"3F9D2C71-6A0E-4B8E-9A51-0C2D7E4B1A67", true}, /* another boot */
        {"", false},
        {"3f9d2c71-6a0e-4b8e-9a51-0c2d7e4b1a6\n", false},   /* a digit short */
        {"3f9d2c71-6a0e-4b8e-9a51-0c2d7e4b1a660\n", false}, /* one too many */
        {"3f9d2c71-6a0e-4b8e-9a51-0c2d7e4b1a6g\n", false},
    };
    const uint8_t zero[TRACE_CLOCK_ID_BYTES] = {0};
    uint8_t first[TRACE_CLOCK_ID_BYTES] = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        FILE *f = fopen(path, "w");
        CHECK(f != NULL);
        fputs(cases[i].text, f);
        fclose(f);
        uint8_t a[TRACE_CLOCK_ID_BYTES], b[TRACE_CLOCK_ID_BYTES];
        CHECK(trace_clock_id_from(path, a) == cases[i].ok);
        CHECK((memcmp(a, zero, sizeof a) != 0) == cases[i].ok);
        if (i == 0) {
            memcpy(first, a, sizeof a);
            CHECK(a[0] == 0x3f && a[1] == 0x9d && a[15] == 0x66);
            CHECK(trace_clock_id_from(path, b) && !memcmp(a, b, sizeof a)); /* the same */
        }
        if (i == 1) CHECK(a[15] == 0x67 && memcmp(a, first, sizeof a)); /* another */
    }
    close(fd);
    remove(path);
    uint8_t c[TRACE_CLOCK_ID_BYTES];
    CHECK(!trace_clock_id_from(path, c) && !memcmp(c, zero, sizeof c)); /* no file */
    uint8_t a[TRACE_CLOCK_ID_BYTES], b[TRACE_CLOCK_ID_BYTES];
    CHECK(trace_clock_id(a) && trace_clock_id(b) && !memcmp(a, b, sizeof a)); /* this machine */
}

static void test_file(void) {
    char path[] = "/tmp/trace_test.XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    trace_t *t = trace_open(path, "coordinator", "c \"1\"");
    CHECK(t != NULL);
    trace_span(t, TRACE_TRACK_LOOP, "send", 100, 250, 7, 3);
    trace_span_layers(t, TRACE_TRACK_LOOP, "compute", 300, 900, 7, 3, 8, 15);
    trace_clock(t, 2, 40, 900);
    trace_clock(t, 2, 10, 300); /* smaller round trip wins */
    trace_clock(t, 2, 99, 400);
    trace_instant(t, "plan", 50, "0-3\n");
    trace_close(&t);
    CHECK(t == NULL);
    trace_span(NULL, TRACE_TRACK_LOOP, "x", 0, 1, 1, 1); /* disabled: a no-op */
    FILE *f = fopen(path, "r");
    char buf[2048] = {0};
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    CHECK(n > 0);
    CHECK(strstr(buf, "\"name\":\"send\"") && strstr(buf, "\"ts\":100,\"dur\":150"));
    CHECK(strstr(buf, "\"batch\":7,\"tokens\":3"));
    CHECK(strstr(buf, "\"batch\":7,\"tokens\":3,\"layer_first\":8,\"layer_end\":15}"));
    CHECK(strstr(buf, "{\"node_id\":2,\"offset_us\":10,\"rtt_us\":300}"));
    CHECK(strstr(buf, "\"name\":\"c \\\"1\\\"\""));
    CHECK(strstr(buf, "0-3\\u000a"));
    CHECK(strstr(buf, "]}}"));
    remove(path);
}

int main(void) {
    test_estimate();
    test_clock_id();
    test_file();
    if (check_failures) {
        fprintf(stderr, "trace_test: %d failures\n", check_failures);
        return 1;
    }
    printf("trace_test: ok\n");
    return 0;
}
