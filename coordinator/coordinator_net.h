/* coordinator_net: the coordinator daemon's I/O. Owns the ZeroMQ sockets and the zmq_poll loop:
 *   control  ROUTER bound on --listen (CURVE server, ZAP domain "control": only keys in the
 *            --allow file; SIGHUP re-reads it). Joins, Assigns, weights, heartbeats, Results.
 *   first    PUSH -> the first stage's activation socket (CURVE client with its key).
 * Frames go through the codec, then coordinator.c; the actions come back here. */
#pragma once
#include "coordinator.h"
#include "transport.h"

struct coordinator_net_config {
    const char *listen;      /* e.g. tcp://0.0.0.0:7000, or tcp://127.0.0.1:0 for any port */
    const char *allow_file;  /* public keys admitted (not read when insecure) */
    int run_ms;              /* stop after this long (tests); 0 = until a signal or done */
    const char *status_file; /* appended: "control ENDPOINT" once bound, "serving" once READY */
};

/* Runs until SIGINT/SIGTERM or the state machine exits. Returns the process exit status. */
int coordinator_net_run(transport_t *t, const struct coordinator_config *ccfg,
                        const struct coordinator_net_config *ncfg);
