/* trace_test: the clock estimate from a heartbeat round trip, and a written trace's text. */
#include "trace.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    test_file();
    if (check_failures) {
        fprintf(stderr, "trace_test: %d failures\n", check_failures);
        return 1;
    }
    printf("trace_test: ok\n");
    return 0;
}
