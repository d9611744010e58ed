/* worker_net: the worker daemon's I/O. Owns the ZeroMQ sockets and the zmq_poll loop:
 *   control  DEALER -> coordinator ROUTER (CURVE client; trusts only the coordinator's key)
 *   act_in   PULL bound on --listen (CURVE server, ZAP domain "activation": only the upstream
 *            peer of the current Assign may connect)
 *   act_out  PUSH -> next stage's act_in (CURVE client with the next stage's key), or none on
 *            the last stage, which returns Results over `control`.
 * Frames go through the codec, then worker.c; the actions come back here. */
#pragma once
#include "transport.h"
#include "worker.h"

struct worker_net_config {
    const char *coordinator;     /* tcp://HOST:PORT of the coordinator's control socket */
    const char *coordinator_key; /* its public key, Z85 (NULL when insecure) */
    const char *listen;          /* activation bind endpoint, e.g. tcp://0.0.0.0:7001 or :0 */
    const char *advertise;       /* activation endpoint others connect to; NULL = as bound */
    int join_timeout_ms;         /* exit 1 when no JoinAck within this (first join only) */
    int reconnect_max_ms;        /* after the coordinator went silent, re-join with backoff for
                                    this long, then exit 1; 0 = keep trying */
    int coordinator_timeout_ms;  /* the coordinator counts as gone after this silence (at
                                    least the JoinAck's timeout) */
    int drain_timeout_ms;        /* SIGTERM: wait this long for the layers to move, then exit */
    int run_ms;                  /* stop after this long (tests); 0 = until a signal */
    int spin_ms;                 /* after a computation, poll for the next up to this long
                                    (worker_net_spin_until); 0 = sleep at once */
    const char *status_file;     /* "joined NODE" appended at each join; NULL = none */
};

/* Runs until SIGINT, a Drain, or a fatal refusal. SIGTERM drains: the worker asks the
 * coordinator to move its layers, keeps computing until told to go, and exits 0 (a second
 * SIGTERM, or --drain-timeout, exits at once). wcfg->data_endpoint is filled in
 * here (from the bound socket). Returns the process exit status; logs the reason. */
int worker_net_run(transport_t *t, struct worker_config *wcfg,
                   const struct worker_net_config *ncfg);

/* Until when the loop polls for the next Forward instead of sleeping, after a computation that
 * ended at end_ms and began gap_ms after the one before it ended (UINT64_MAX: none before); 0
 * means sleep at once. A stage of a pipeline waits for the other stages between its turns: on
 * the VMs measured (bench/RESULTS.md, bench_handoff), a thread that blocks through that wait
 * computes the next turn slower (keeping its vCPU busy otherwise does not help), and polling
 * (yielding the core to any other runnable thread) kept bench_handoff's two stages as fast as one
 * process (a cluster there: 2 workers 0.94-0.98x, 3 workers on two vCPUs 0.94x of one worker,
 * over fresh instances, in two runs). It pays only
 * while the turns come back within spin_ms: after a longer gap the worker sleeps, so an idle or
 * slow pipeline costs no CPU. */
uint64_t worker_net_spin_until(uint64_t end_ms, uint64_t gap_ms, int spin_ms);

/* Resident memory of this process (/proc/self/statm), 0 when unknown. */
uint64_t worker_net_rss_bytes(void);
