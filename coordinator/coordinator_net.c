/* coordinator_net: sockets, poll loop and actions of the coordinator daemon
 * (see coordinator_net.h). */
#include "coordinator_net.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "log.h"
#include "mono.h"
#include "status_file.h"

static volatile sig_atomic_t stop_requested, reload_requested;

static void on_signal(int sig) {
    if (sig == SIGHUP)
        reload_requested = 1;
    else
        stop_requested = 1;
}

/* How long requests may wait for the first stage without a connection to it before it is taken
 * for unreachable (the workers wait as long for their next stage). */
#define FIRST_UNREACHABLE_MS 3000

struct net {
    transport_t *t;
    coordinator_t *c;
    void *ctl, *ctl_mon;
    struct transport_link first; /* to the first stage */
    bool first_reported;         /* its outage was reported (coordinator_on_first_unreachable) */
    trace_t *trace;              /* --trace, or NULL */
    bool done;
    int exit_code;
    char exit_text[600];
};

static void finish(struct net *n, int code, const char *text) {
    if (n->done) return;
    n->done = true;
    n->exit_code = code;
    snprintf(n->exit_text, sizeof n->exit_text, "%s", text);
}

static void run_actions(struct net *n, struct coordinator_actions *acts) {
    for (int i = 0; i < acts->n && !n->done; i++) {
        struct coordinator_action *a = &acts->a[i];
        switch (a->kind) {
        case COORDINATOR_ACTION_SEND_WORKER: {
            enum status rc =
                transport_send_bytes(n->ctl, a->rid, a->rid_len, &a->buf, a->len, ZMQ_DONTWAIT);
            if (rc != STATUS_OK)
                LOG(LOG_WARN, "coordinator: message to a worker not sent: %s", status_str(rc));
            break;
        }
        case COORDINATOR_ACTION_CONNECT_FIRST:
            transport_link_set(n->t, &n->first, a->key, a->endpoint);
            break;
        case COORDINATOR_ACTION_SEND_FIRST: {
            trace_t *tr = n->trace;
            uint64_t t0 = tr ? transport_now_us() : 0;
            enum status rc = transport_link_send(n->t, &n->first, &a->buf, a->len);
            if (tr)
                trace_span(tr, TRACE_TRACK_LOOP, "send", t0, transport_now_us(), a->batch_id,
                           a->n_tokens);
            if (rc != STATUS_OK)
                LOG(LOG_WARN, "coordinator: request to the first stage not sent: %s",
                    status_str(rc));
            break;
        }
        case COORDINATOR_ACTION_RESULT:
            printf("%s\n", a->text);
            fflush(stdout);
            LOG(LOG_INFO, "coordinator: %s", a->text);
            if (a->exit_code) finish(n, a->exit_code, a->text);
            break;
        case COORDINATOR_ACTION_EXIT: finish(n, a->exit_code, a->text); break;
        case COORDINATOR_ACTION_COUNT: break;
        }
    }
    coordinator_actions_clear(acts);
}

static void drain(struct net *n, struct coordinator_actions *acts) {
    for (int i = 0; i < 256 && !n->done; i++) {
        Caravan__Envelope *msg = NULL;
        struct transport_peer peer;
        char err[CODEC_ERR_LEN];
        uint64_t t0 = n->trace ? transport_now_us() : 0;
        enum status rc = transport_recv(n->t, n->ctl, ZMQ_DONTWAIT, &msg, &peer, err, sizeof err);
        if (rc == STATUS_TIMEOUT || rc == STATUS_IO) return;
        if (n->trace && rc == STATUS_OK && msg->body_case == CARAVAN__ENVELOPE__BODY_RESULT)
            trace_span(n->trace, TRACE_TRACK_LOOP, "receive", t0, transport_now_us(),
                       msg->result->batch_id, msg->result->n_rows);
        struct coordinator_peer p = {
            .rid = peer.rid,
            .rid_len = peer.rid_len,
            .key = peer.key_z85[0] ? peer.key : NULL,
            .address = peer.address[0] ? peer.address : "?",
            .fd = peer.fd,
        };
        if (rc != STATUS_OK)
            coordinator_on_bad_msg(n->c, &p, rc, err, acts);
        else
            coordinator_on_msg(n->c, &p, msg, mono_ms(), acts);
        codec_free(&msg);
        run_actions(n, acts);
    }
}

static void on_monitor(struct net *n, void *mon, const char *what,
                       struct coordinator_actions *acts) {
    struct transport_event ev;
    while (transport_monitor_read(mon, &ev) == STATUS_OK) {
        if (mon == n->first.mon) transport_link_note(&n->first, &ev);
        if (mon == n->ctl_mon && ev.event == ZMQ_EVENT_DISCONNECTED) {
            coordinator_on_disconnect(n->c, (int)ev.value, mono_ms(), acts);
            run_actions(n, acts);
            continue;
        }
        /* A refused key on our server socket was logged by the ZAP handler, with the key. */
        if (ev.event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED || ev.event == ZMQ_EVENT_DISCONNECTED ||
            (mon == n->ctl_mon && ev.event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH))
            continue;
        LOG(LOG_WARN, "coordinator: %s (%s): %s", what, ev.endpoint,
            transport_event_explain(&ev, transport_insecure(n->t)));
        if (mon == n->first.mon) {
            transport_link_reset(&n->first); /* refused handshakes are final: redo at next send */
            return;
        }
    }
}

int coordinator_net_run(transport_t *t, const struct coordinator_config *ccfg,
                        const struct coordinator_net_config *cfg) {
    struct net n = {.t = t, .trace = ccfg->trace};
    stop_requested = reload_requested = 0;
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);

    if (!transport_insecure(t)) {
        size_t n_keys = 0;
        if (!cfg->allow_file) {
            LOG(LOG_ERROR, "coordinator: --allow FILE is required (the workers' public keys)");
            return 2;
        }
        if (transport_allow_load_file(t, TRANSPORT_DOMAIN_CONTROL, cfg->allow_file, &n_keys) !=
            STATUS_OK)
            return 1;
        LOG(LOG_INFO, "coordinator: %zu worker keys allowed (%s)", n_keys, cfg->allow_file);
    }
    char bound[256] = "";
    n.ctl = transport_server(t, ZMQ_ROUTER, TRANSPORT_ROLE_CONTROL_SERVER, TRANSPORT_DOMAIN_CONTROL,
                             cfg->listen, bound, sizeof bound, &n.ctl_mon);
    if (!n.ctl) return 1;
    LOG(LOG_INFO, "coordinator: listening on %s (%s)", bound,
        transport_insecure(t) ? "plaintext, --insecure" : "CURVE");
    status_file_append(cfg->status_file, "control", bound);
    bool serving_noted = false, stall_noted = false;
    n.c = coordinator_new(ccfg);
    uint64_t start = mono_ms();
    struct coordinator_actions *acts = calloc(1, sizeof *acts);
    if (!acts) abort();

    while (!n.done && !stop_requested) {
        if (reload_requested && !transport_insecure(t)) {
            reload_requested = 0;
            size_t n_keys = 0;
            if (transport_allow_load_file(t, TRANSPORT_DOMAIN_CONTROL, cfg->allow_file, &n_keys) ==
                STATUS_OK)
                LOG(LOG_INFO, "coordinator: allow-list reloaded: %zu keys", n_keys);
            else
                LOG(LOG_ERROR, "coordinator: allow-list reload failed; keeping the old one");
        }
        zmq_pollitem_t items[4] = {
            {n.ctl, 0, ZMQ_POLLIN, 0},
            {n.ctl_mon, 0, ZMQ_POLLIN, 0},
            {NULL, ccfg->queue ? serve_queue_fd(ccfg->queue) : -1, ZMQ_POLLIN, 0},
            {n.first.mon, 0, ZMQ_POLLIN, 0},
        };
        int n_items = n.first.mon ? 4 : 3;
        int rc = zmq_poll(items, n_items, transport_link_queued(&n.first) ? 2 : 20);
        if (rc < 0 && zmq_errno() != EINTR) {
            finish(&n, 1, "zmq_poll failed");
            break;
        }
        if (rc > 0) {
            if (items[1].revents & ZMQ_POLLIN) on_monitor(&n, n.ctl_mon, "control socket", acts);
            if (n_items > 3 && (items[3].revents & ZMQ_POLLIN))
                on_monitor(&n, n.first.mon, "connection to the first stage", acts);
            if (items[0].revents & ZMQ_POLLIN) drain(&n, acts);
        }
        if (!serving_noted && coordinator_state(n.c) == COORDINATOR_STATE_READY) {
            serving_noted = true;
            status_file_append(cfg->status_file, "serving", "");
        }
        char why[400];
        if (!stall_noted && coordinator_stalled(n.c, why, sizeof why)) {
            stall_noted = true;
            status_file_append(cfg->status_file, "stalled", why);
        }
        transport_link_flush(t, &n.first);
        uint64_t now = mono_ms();
        /* No connection to the first stage while requests are owed to it (as a worker watches
         * its next stage: worker_net.c) */
        const uint64_t out_ms = transport_link_outage_ms(&n.first, now);
        if (!out_ms) n.first_reported = false;
        if (!n.done && !n.first_reported && out_ms >= FIRST_UNREACHABLE_MS) {
            n.first_reported = true;
            coordinator_on_first_unreachable(n.c, now, out_ms, acts);
            run_actions(&n, acts);
        }
        if (!n.done) {
            coordinator_on_tick(n.c, now, acts);
            run_actions(&n, acts);
        }
        if (!n.done && cfg->run_ms > 0 && now - start > (uint64_t)cfg->run_ms)
            finish(&n, 0, "run time over");
    }
    if (!n.done) finish(&n, 0, "stopped by a signal");
    if (n.exit_code != 0)
        LOG(LOG_ERROR, "coordinator: %s", n.exit_text);
    else
        LOG(LOG_INFO, "coordinator: exiting: %s", n.exit_text);
    free(acts);
    coordinator_destroy(&n.c);
    transport_link_clear(&n.first);
    transport_close(&n.ctl_mon);
    transport_close(&n.ctl);
    return n.exit_code;
}
