/* transport_test: the endpoint a person types becomes the one ZeroMQ takes, or a reason. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "transport.h"

int main(void) {
    static const struct {
        const char *in, *out; /* out NULL: refused */
    } cases[] = {
        {"tcp://10.0.0.1:7000", "tcp://10.0.0.1:7000"},
        {"10.0.0.1:7000", "tcp://10.0.0.1:7000"},
        {"host.lan:7100", "tcp://host.lan:7100"},
        {"[::1]:7000", "tcp://[::1]:7000"},
        {"tcp://127.0.0.1:0", "tcp://127.0.0.1:0"},
        {"tcp://0.0.0.0:*", "tcp://0.0.0.0:*"},
        {"*:7000", "tcp://*:7000"},
        {"127.0.0.1:65535", "tcp://127.0.0.1:65535"},
        {"127.0.0.1:65536", NULL},
        {"127.0.0.1:123456", NULL},
        {"127.0.0.1", NULL},
        {"127.0.0.1:", NULL},
        {":7000", NULL},
        {"tcp://:7000", NULL},
        {"127.0.0.1:70x", NULL},
        {"udp://10.0.0.1:7000", NULL},
        {"ipc:///tmp/x", NULL},
        {"", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[64] = "", err[128] = "";
        enum status st = transport_endpoint(cases[i].in, out, sizeof out, err, sizeof err);
        if (cases[i].out) {
            CHECK(st == STATUS_OK && !strcmp(out, cases[i].out), "'%s' -> '%s' (%s)", cases[i].in,
                  out, err);
        } else {
            CHECK(st != STATUS_OK && err[0], "'%s' refused", cases[i].in);
        }
    }
    char small[8], err[128];
    CHECK(transport_endpoint("10.0.0.1:7000", small, sizeof small, err, sizeof err) != STATUS_OK &&
              strstr(err, "too long"),
          "an out buffer too small is refused");
    CHECK(transport_endpoint(NULL, small, sizeof small, err, sizeof err) != STATUS_OK, "NULL");
    if (check_failures) {
        fprintf(stderr, "transport_test: %d failed\n", check_failures);
        return 1;
    }
    printf("transport_test: ok\n");
    return 0;
}
