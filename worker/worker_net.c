/* worker_net: sockets, poll loop and actions of the worker daemon (see worker_net.h). */
#include "worker_net.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "log.h"
#include "mono.h"
#include "status_file.h"

static volatile sig_atomic_t stop_requested, term_requested;

static void on_signal(int sig) {
    if (sig == SIGTERM)
        term_requested++;
    else
        stop_requested = 1;
}

/* What the heartbeat thread reports, published by the loop after every event. */
struct hb_shared {
    transport_t *t;
    const char *coordinator, *coordinator_key;
    atomic_uint node_id;
    atomic_uint_fast64_t epoch, tokens, start_ms, ahead_used, ahead_unused;
    atomic_uint_fast64_t busy_batch; /* what the loop computes now (worker_config.busy) */
    atomic_int state, layer_first, layer_end, interval_ms;
    /* stop, under mu, wakes the thread from its wait on cv (CLOCK_MONOTONIC) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
};

/* Waits ms or until stopped; true when stopped. One wake-up a heartbeat: polling for stop in
 * short sleeps would wake the vCPU of a stage computing a token many times for nothing. */
static bool hb_wait(struct hb_shared *h, int ms) {
    if (ms < 10) ms = 10;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&h->mu);
    while (!h->stop && pthread_cond_timedwait(&h->cv, &h->mu, &until) != ETIMEDOUT) {
    }
    bool stop = h->stop;
    pthread_mutex_unlock(&h->mu);
    return stop;
}

static void hb_stop(struct hb_shared *h) {
    pthread_mutex_lock(&h->mu);
    h->stop = true;
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

/* Heartbeats from their own thread and socket, so a worker busy computing a long prompt chunk
 * still counts as alive; a stopped or cut-off worker sends none (all threads stop with it). The
 * coordinator knows the sender by its CURVE key (or node id when insecure). */
static void *heartbeat_main(void *arg) {
    struct hb_shared *h = arg;
    void *sock = transport_client(h->t, ZMQ_DEALER, TRANSPORT_ROLE_CONTROL_CLIENT,
                                  h->coordinator_key, h->coordinator, NULL);
    if (!sock) return NULL;
    uint64_t msg_id = 1u << 30; /* apart from the loop's ids */
    static const Caravan__Heartbeat__State states[WORKER_STATE_COUNT] = {
        CARAVAN__HEARTBEAT__STATE__STATE_JOINING, CARAVAN__HEARTBEAT__STATE__STATE_JOINING,
        CARAVAN__HEARTBEAT__STATE__STATE_LOADING, CARAVAN__HEARTBEAT__STATE__STATE_READY};
    while (!hb_wait(h, atomic_load(&h->interval_ms))) {
        uint32_t node = atomic_load(&h->node_id);
        int st = atomic_load(&h->state);
        if (node == 0 || st == WORKER_STATE_JOINING) continue;
        Caravan__Envelope env;
        Caravan__Heartbeat hb = CARAVAN__HEARTBEAT__INIT;
        codec_envelope_init(&env, atomic_load(&h->epoch), msg_id++);
        env.sender = node;
        hb.state = st >= 0 && st < WORKER_STATE_COUNT
                       ? states[st]
                       : CARAVAN__HEARTBEAT__STATE__STATE_UNSPECIFIED;
        hb.tokens_total = atomic_load(&h->tokens);
        hb.ahead_used = atomic_load(&h->ahead_used);
        hb.ahead_unused = atomic_load(&h->ahead_unused);
        hb.uptime_ms = mono_ms() - atomic_load(&h->start_ms);
        hb.layer_first = atomic_load(&h->layer_first);
        hb.layer_end = atomic_load(&h->layer_end);
        hb.mem_used_bytes = worker_net_rss_bytes();
        hb.work_bytes = log_progress_bytes();
        hb.busy_batch_id = atomic_load(&h->busy_batch);
        env.body_case = CARAVAN__ENVELOPE__BODY_HEARTBEAT;
        env.heartbeat = &hb;
        if (transport_send(h->t, sock, NULL, 0, &env, ZMQ_DONTWAIT) != STATUS_OK)
            LOG(LOG_DEBUG, "worker: a heartbeat was not sent");
    }
    transport_close(&sock);
    return NULL;
}

static void hb_busy(void *ctx, uint64_t batch_id) {
    atomic_store(&((struct hb_shared *)ctx)->busy_batch, batch_id);
}

static void hb_publish(struct hb_shared *h, const worker_t *w) {
    atomic_store(&h->interval_ms, (int)worker_heartbeat_ms(w));
    atomic_store(&h->node_id, worker_node_id(w));
    atomic_store(&h->epoch, worker_epoch(w));
    atomic_store(&h->tokens, worker_n_tokens(w));
    atomic_store(&h->ahead_used, worker_ahead_used(w));
    atomic_store(&h->ahead_unused, worker_ahead_unused(w));
    atomic_store(&h->state, (int)worker_state(w));
    int32_t first, end;
    worker_layers(w, &first, &end);
    atomic_store(&h->layer_first, first);
    atomic_store(&h->layer_end, end);
}

#define HOLD_OUTPUT_MS 2000
/* Output waiting this long with no connection to the next stage is reported to the
 * coordinator (worker_on_next_unreachable). A dead stage is found sooner by the coordinator
 * (its control connection closes, or it falls silent), which makes this report stale. */
#define NEXT_UNREACHABLE_MS 3000

struct net {
    transport_t *t;
    worker_t *w;
    const struct worker_net_config *cfg;
    void *ctl, *ctl_mon, *act_in, *act_in_mon;
    struct transport_link next;  /* to the next stage */
    struct transport_link first; /* last stage computing ahead: to the first stage */
    bool next_reported;          /* its outage was reported (worker_on_next_unreachable) */
    uint64_t last_control_ms;    /* last message from the coordinator */
    trace_t *trace;              /* --trace, or NULL */
    uint64_t trace_batch;        /* batch of the Forward being handled (for the send span) */
    int32_t trace_tokens;
    uint64_t lost_since_ms; /* the coordinator went silent (0: it is there) */
    uint64_t next_rejoin_ms, rejoin_backoff_ms;
    uint64_t drain_deadline_ms; /* SIGTERM: exit by then (0: not draining) */
    bool ever_joined;
    bool joined_noted; /* this join is in the status file */
    struct hb_shared *hb;
    uint64_t computed_ms;   /* when the last computation ended (0: none yet) */
    uint64_t spin_until_ms; /* poll instead of sleeping until then (worker_net_spin_until) */
    uint64_t polled;        /* computations after which it polled for the next */
    bool done;
    int exit_code;
    char exit_text[600];
};

uint64_t worker_net_spin_until(uint64_t end_ms, uint64_t gap_ms, int spin_ms) {
    if (spin_ms <= 0 || (gap_ms != UINT64_MAX && gap_ms > (uint64_t)spin_ms)) return 0;
    return end_ms + (uint64_t)spin_ms;
}

/* A computation (a Forward, from upstream or from the coordinator, or a step computed ahead)
 * began at began_ms and has just ended. */
static void computed(struct net *n, uint64_t began_ms) {
    const uint64_t now = mono_ms();
    const uint64_t gap = n->computed_ms ? began_ms - n->computed_ms : UINT64_MAX; /* monotonic */
    n->spin_until_ms = worker_net_spin_until(now, gap, n->cfg->spin_ms);
    n->computed_ms = now;
    if (n->spin_until_ms) n->polled++;
}

static void finish(struct net *n, int code, const char *text) {
    if (n->done) return;
    n->done = true;
    n->exit_code = code;
    snprintf(n->exit_text, sizeof n->exit_text, "%s", text);
}

static void run_actions(struct net *n, struct worker_actions *acts) {
    for (int i = 0; i < acts->n && !n->done; i++) {
        struct worker_action *a = &acts->a[i];
        switch (a->kind) {
        case WORKER_ACTION_SEND_CONTROL: {
            uint64_t t0 = n->trace_batch ? transport_now_us() : 0;
            enum status rc = transport_send_bytes(n->ctl, NULL, 0, &a->buf, a->len, 0);
            if (n->trace_batch)
                trace_span(n->trace, TRACE_TRACK_LOOP, "send", t0, transport_now_us(),
                           n->trace_batch, n->trace_tokens);
            if (rc != STATUS_OK)
                LOG(LOG_WARN, "worker: message to the coordinator not sent: %s", status_str(rc));
            break;
        }
        case WORKER_ACTION_SEND_NEXT: {
            uint64_t t0 = n->trace_batch ? transport_now_us() : 0;
            enum status rc = transport_link_send(n->t, &n->next, &a->buf, a->len);
            if (n->trace_batch)
                trace_span(n->trace, TRACE_TRACK_LOOP, "send", t0, transport_now_us(),
                           n->trace_batch, n->trace_tokens);
            if (rc != STATUS_OK)
                LOG(LOG_WARN, "worker: output to the next stage not sent: %s", status_str(rc));
            break;
        }
        case WORKER_ACTION_ALLOW_UPSTREAM: {
            uint8_t keys[2][CRYPTO_KEY_BYTES];
            memcpy(keys[0], a->key, CRYPTO_KEY_BYTES);
            memcpy(keys[1], a->key2, CRYPTO_KEY_BYTES);
            if (!transport_insecure(n->t) &&
                transport_allow_set(n->t, TRANSPORT_DOMAIN_ACTIVATION,
                                    (const uint8_t(*)[CRYPTO_KEY_BYTES])keys,
                                    a->has_key2 ? 2 : 1) != STATUS_OK)
                finish(n, 1, "cannot update the activation allow-list");
            break;
        }
        case WORKER_ACTION_SEND_FIRST:
            /* only worth anything now: nothing waits behind a slow link */
            if (transport_link_queued(&n->first) == 0 &&
                transport_link_send(n->t, &n->first, &a->buf, a->len) != STATUS_OK)
                LOG(LOG_DEBUG, "worker: a step to compute ahead was not sent to the first stage");
            break;
        case WORKER_ACTION_CONNECT_FIRST:
            transport_link_set(n->t, &n->first, a->key, a->endpoint);
            break;
        case WORKER_ACTION_DISCONNECT_FIRST: transport_link_clear(&n->first); break;
        case WORKER_ACTION_CONNECT_NEXT:
            transport_link_set(n->t, &n->next, a->key, a->endpoint);
            break;
        case WORKER_ACTION_DISCONNECT_NEXT: transport_link_clear(&n->next); break;
        case WORKER_ACTION_EXIT: finish(n, a->exit_code, a->text); break;
        case WORKER_ACTION_COUNT: break;
        }
    }
    worker_actions_clear(acts);
}

/* Reads every waiting message on sock and feeds the state machine. */
static void drain(struct net *n, void *sock, enum worker_source src, int max) {
    for (int i = 0; i < max && !n->done; i++) {
        Caravan__Envelope *msg = NULL;
        struct transport_peer peer;
        char err[CODEC_ERR_LEN];
        uint64_t t0 = n->trace ? transport_now_us() : 0;
        enum status rc = transport_recv(n->t, sock, ZMQ_DONTWAIT, &msg, &peer, err, sizeof err);
        if (rc == STATUS_TIMEOUT) return;
        n->trace_batch = 0;
        if (n->trace && rc == STATUS_OK && msg->body_case == CARAVAN__ENVELOPE__BODY_FORWARD &&
            !msg->forward->ahead) { /* a step to compute ahead is no step's message */
            /* receive = taking the message from ZeroMQ and decoding it (CURVE decryption
             * happened in ZeroMQ's I/O thread before: it is inside the link time) */
            n->trace_batch = msg->forward->batch_id;
            n->trace_tokens = msg->forward->n_tokens;
            trace_span(n->trace, TRACE_TRACK_LOOP, "receive", t0, transport_now_us(),
                       n->trace_batch, n->trace_tokens);
        }
        if (src == WORKER_FROM_CONTROL) n->last_control_ms = mono_ms();
        struct worker_actions acts = {0};
        if (rc == STATUS_IO) return;
        if (rc != STATUS_OK) {
            worker_on_bad_msg(n->w, src, peer.address, rc, err, &acts);
        } else {
            const uint8_t *key = peer.key_z85[0] ? peer.key : NULL;
            /* A Forward computes whichever socket brought it: the first stage's come from the
             * coordinator, on the control connection (one whose step was computed ahead was
             * counted when that ran). */
            const uint64_t began = mono_ms(), before = worker_n_computed(n->w),
                           ahead_before = worker_ahead_used(n->w);
            worker_on_msg(n->w, src, key, peer.address[0] ? peer.address : "?", msg,
                          transport_now_us(), &acts);
            if (worker_n_computed(n->w) != before && worker_ahead_used(n->w) == ahead_before)
                computed(n, began);
        }
        codec_free(&msg);
        run_actions(n, &acts);
        n->trace_batch = 0;
        /* before the next message, which may be an Assign that loads for seconds */
        if (n->hb) hb_publish(n->hb, n->w);
    }
}

static void on_monitor(struct net *n, void *mon, const char *what) {
    struct transport_event ev;
    while (transport_monitor_read(mon, &ev) == STATUS_OK) {
        bool insecure = transport_insecure(n->t);
        if (mon == n->next.mon) transport_link_note(&n->next, &ev);
        if (ev.event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
            LOG(LOG_DEBUG, "worker: %s: %s handshake with %s succeeded", what,
                insecure ? "NULL" : "CURVE", ev.endpoint);
            continue;
        }
        /* A refused key on our server socket was logged by the ZAP handler, with the key. */
        if (ev.event == ZMQ_EVENT_DISCONNECTED ||
            (mon == n->act_in_mon && ev.event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH))
            continue;
        const char *why = transport_event_explain(&ev, insecure);
        if (mon == n->ctl_mon && worker_state(n->w) == WORKER_STATE_JOINING &&
            (ev.event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH ||
             ev.event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)) {
            char text[512];
            snprintf(text, sizeof text, "cannot join the coordinator at %s: %s", ev.endpoint, why);
            finish(n, 1, text);
            return;
        }
        LOG(LOG_WARN, "worker: %s (%s): %s", what, ev.endpoint, why);
        if (mon == n->next.mon || mon == n->first.mon) {
            /* refused handshakes are final: redo at next send */
            transport_link_reset(mon == n->next.mon ? &n->next : &n->first);
            return;
        }
    }
}

int worker_net_run(transport_t *t, struct worker_config *wcfg,
                   const struct worker_net_config *cfg) {
    struct net n = {.t = t, .cfg = cfg, .trace = wcfg->trace};
    char bound[256] = "";
    stop_requested = term_requested = 0;
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    /* Nobody may send activations before an Assign names the upstream peer. */
    if (!transport_insecure(t) &&
        transport_allow_set(t, TRANSPORT_DOMAIN_ACTIVATION, NULL, 0) != STATUS_OK)
        return 1;
    n.act_in =
        transport_server(t, ZMQ_PULL, TRANSPORT_ROLE_ACTIVATION_IN, TRANSPORT_DOMAIN_ACTIVATION,
                         cfg->listen, bound, sizeof bound, &n.act_in_mon);
    if (!n.act_in) return 1;
    wcfg->data_endpoint = cfg->advertise ? cfg->advertise : bound;
    LOG(LOG_INFO, "worker: activation socket listening on %s (%s)", bound,
        transport_insecure(t) ? "plaintext, --insecure" : "CURVE");
    n.ctl = transport_client(t, ZMQ_DEALER, TRANSPORT_ROLE_CONTROL_CLIENT, cfg->coordinator_key,
                             cfg->coordinator, &n.ctl_mon);
    if (!n.ctl) {
        transport_close(&n.act_in_mon);
        transport_close(&n.act_in);
        return 1;
    }
    struct hb_shared *hb = calloc(1, sizeof *hb);
    if (!hb) abort();
    wcfg->busy = hb_busy; /* heartbeats say which batch the loop is computing */
    wcfg->busy_ctx = hb;
    n.w = worker_new(wcfg);
    uint64_t start = mono_ms();
    hb->t = t;
    hb->coordinator = cfg->coordinator;
    hb->coordinator_key = cfg->coordinator_key;
    atomic_store(&hb->start_ms, start);
    atomic_store(&hb->interval_ms, 500);
    pthread_condattr_t ca;
    if (pthread_mutex_init(&hb->mu, NULL) || pthread_condattr_init(&ca) ||
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) || pthread_cond_init(&hb->cv, &ca))
        abort();
    pthread_condattr_destroy(&ca);
    pthread_t hb_thread;
    bool hb_started = pthread_create(&hb_thread, NULL, heartbeat_main, hb) == 0;
    n.hb = hb;
    struct worker_actions acts = {0};
    worker_start(n.w, start, &acts);
    run_actions(&n, &acts);

    while (!n.done && !stop_requested) {
        /* Output the next stage's socket has not taken yet (its handshake is still running
         * after a new plan, or it pushes back): send it before computing the next Forward,
         * which could take seconds, so the stages behind do not idle meanwhile; after
         * HOLD_OUTPUT_MS compute anyway (the coordinator re-plans around a dead stage). */
        const uint64_t loop_ms = mono_ms();
        const bool hold = transport_link_queued(&n.next) &&
                          transport_link_waited_ms(&n.next, loop_ms) < HOLD_OUTPUT_MS;
        /* No connection to the next stage for NEXT_UNREACHABLE_MS while output is owed to it:
         * its activation endpoint cannot be reached from here (a firewall, a partition that
         * spares the control connection). The coordinator is told once per outage. */
        const uint64_t out_ms = transport_link_outage_ms(&n.next, loop_ms);
        if (!out_ms) n.next_reported = false;
        if (!n.next_reported && out_ms >= NEXT_UNREACHABLE_MS) {
            n.next_reported = true;
            struct worker_actions ua = {0};
            worker_on_next_unreachable(n.w, n.next.endpoint, out_ms, transport_link_queued(&n.next),
                                       &ua);
            run_actions(&n, &ua);
        }
        zmq_pollitem_t items[6] = {
            {n.ctl, 0, ZMQ_POLLIN, 0},
            {n.ctl_mon, 0, ZMQ_POLLIN, 0},
            {n.act_in, 0, hold ? 0 : ZMQ_POLLIN, 0},
            {n.act_in_mon, 0, ZMQ_POLLIN, 0},
            {n.next.mon, 0, ZMQ_POLLIN, 0},
            {n.first.mon, 0, ZMQ_POLLIN, 0},
        };
        int n_items = 4;
        if (n.next.mon) items[n_items++] = items[4];
        if (n.first.mon) items[n_items++] = items[5];
        /* a step to compute ahead: only when nothing is waiting to be read */
        const bool ahead = worker_ahead_pending(n.w);
        const bool copy = worker_copy_pending(n.w); /* cached tensors to copy when idle */
        const bool spin = !hold && loop_ms < n.spin_until_ms;
        int rc = zmq_poll(items, n_items,
                          ahead || copy || spin            ? 0
                          : transport_link_queued(&n.next) ? 2
                                                           : 50);
        if (rc < 0 && zmq_errno() != EINTR) {
            finish(&n, 1, "zmq_poll failed");
            break;
        }
        if (rc > 0) {
            if (items[1].revents & ZMQ_POLLIN) on_monitor(&n, n.ctl_mon, "control connection");
            if (!n.done && (items[3].revents & ZMQ_POLLIN))
                on_monitor(&n, n.act_in_mon, "activation socket");
            for (int i = 4; !n.done && i < n_items; i++)
                if (items[i].revents & ZMQ_POLLIN)
                    on_monitor(&n, items[i].socket,
                               items[i].socket == n.next.mon ? "connection to the next stage"
                                                             : "connection to the first stage");
            if (!n.done && (items[0].revents & ZMQ_POLLIN))
                drain(&n, n.ctl, WORKER_FROM_CONTROL, 256);
            /* One Forward at a time, so control messages (heartbeats, a new Assign) are read
             * between computations. */
            if (!n.done && !hold && (items[2].revents & ZMQ_POLLIN))
                drain(&n, n.act_in, WORKER_FROM_UPSTREAM, 1);
        }
        /* After a long computation: what the coordinator sent meanwhile, before judging its
         * silence. */
        if (!n.done) drain(&n, n.ctl, WORKER_FROM_CONTROL, 256);
        if (rc == 0 && ahead && !n.done) {
            const uint64_t began = mono_ms();
            worker_run_ahead(n.w);
            computed(&n, began);
        }
        /* polling for the next turn: any other runnable thread (this process's ZeroMQ I/O
         * thread bringing it, a daemon beside it) gets the core first */
        if (rc == 0 && spin && !ahead && !copy) sched_yield();
        if (rc == 0 && copy && !n.done) {
            worker_run_copy(n.w, &acts);
            run_actions(&n, &acts);
        }
        hb_publish(hb, n.w);
        transport_link_flush(t, &n.next);
        transport_link_flush(t, &n.first);
        uint64_t now = mono_ms();
        if (!n.done) {
            worker_on_tick(n.w, now, &acts);
            run_actions(&n, &acts);
        }
        const bool joined = worker_state(n.w) != WORKER_STATE_JOINING;
        if (joined && !n.joined_noted) { /* each join, once */
            char node[16];
            snprintf(node, sizeof node, "%u", worker_node_id(n.w));
            status_file_append(cfg->status_file, "joined", node);
        }
        n.joined_noted = joined;
        n.ever_joined |= joined;
        if (!n.done && !n.ever_joined && cfg->join_timeout_ms > 0 &&
            now - start > (uint64_t)cfg->join_timeout_ms) {
            char text[512];
            snprintf(text, sizeof text,
                     "no answer from the coordinator at %s within %d ms (is it running, with "
                     "the same --insecure setting, and is --coordinator-key its key?)",
                     cfg->coordinator, cfg->join_timeout_ms);
            finish(&n, 1, text);
        }
        /* At least --coordinator-timeout-ms: a coordinator busy planning a big model (hashing
         * slices) is silent for a while without being gone. */
        uint64_t silence_ms = worker_timeout_ms(n.w);
        if ((uint64_t)cfg->coordinator_timeout_ms > silence_ms)
            silence_ms = (uint64_t)cfg->coordinator_timeout_ms;
        /* The coordinator sends a Heartbeat every heartbeat interval: silence means it is
         * gone (crash, restart, partition). Keep the weights and re-join with backoff; a
         * restarted coordinator gets the loaded slice reported and need ship nothing. */
        if (!n.done && !n.lost_since_ms && n.last_control_ms &&
            now - n.last_control_ms > silence_ms) {
            n.lost_since_ms = now;
            n.rejoin_backoff_ms = 500;
            n.next_rejoin_ms = now;
            LOG(LOG_WARN, "worker: the coordinator at %s has been silent for %u ms; re-joining",
                cfg->coordinator, (unsigned)silence_ms);
        }
        if (!n.done && n.lost_since_ms && n.last_control_ms > n.lost_since_ms)
            n.lost_since_ms = 0; /* it answered */
        if (!n.done && n.lost_since_ms) {
            if (cfg->reconnect_max_ms > 0 &&
                now - n.lost_since_ms > (uint64_t)cfg->reconnect_max_ms) {
                char text[512];
                snprintf(text, sizeof text,
                         "the coordinator at %s has been silent for %llu ms (--reconnect-max-ms)",
                         cfg->coordinator, (unsigned long long)(now - n.last_control_ms));
                finish(&n, 1, text);
            } else if (now >= n.next_rejoin_ms) {
                worker_rejoin(n.w, &acts);
                run_actions(&n, &acts);
                n.next_rejoin_ms = now + n.rejoin_backoff_ms;
                if (n.rejoin_backoff_ms < 8000) n.rejoin_backoff_ms *= 2;
            }
        }
        /* SIGTERM: drain (ask the coordinator to move our layers), unless there is nothing to
         * move or this is the second SIGTERM. */
        if (!n.done && term_requested && !n.drain_deadline_ms) {
            if (worker_state(n.w) == WORKER_STATE_READY && !n.lost_since_ms &&
                term_requested == 1) {
                worker_request_drain(n.w, "SIGTERM", &acts);
                run_actions(&n, &acts);
                n.drain_deadline_ms =
                    now + (uint64_t)(cfg->drain_timeout_ms > 0 ? cfg->drain_timeout_ms : 30000);
            } else {
                finish(&n, 0, "stopped by SIGTERM");
            }
        }
        if (!n.done && n.drain_deadline_ms && now - n.last_control_ms > 2000)
            finish(&n, 0, "the coordinator went silent while this worker drained");
        if (!n.done && n.drain_deadline_ms && (term_requested > 1 || now > n.drain_deadline_ms))
            finish(&n, 0,
                   term_requested > 1 ? "stopped by a second SIGTERM while draining"
                                      : "drain timed out; leaving anyway");
        if (!n.done && cfg->run_ms > 0 && now - start > (uint64_t)cfg->run_ms)
            finish(&n, 0, "run time over");
    }
    if (!n.done) finish(&n, 0, "stopped by a signal");
    if (n.exit_code != 0)
        LOG(LOG_ERROR, "worker: %s", n.exit_text);
    else
        LOG(LOG_INFO,
            "worker: exiting: %s (%llu batches computed, %llu of them ahead; %llu "
            "held ahead and not used; polled for the next turn after %llu of its computations)",
            n.exit_text, (unsigned long long)worker_n_computed(n.w),
            (unsigned long long)worker_ahead_used(n.w),
            (unsigned long long)worker_ahead_unused(n.w), (unsigned long long)n.polled);
    hb_stop(hb);
    if (hb_started) pthread_join(hb_thread, NULL);
    pthread_cond_destroy(&hb->cv);
    pthread_mutex_destroy(&hb->mu);
    free(hb);
    worker_destroy(&n.w);
    transport_link_clear(&n.next);
    transport_link_clear(&n.first);
    transport_close(&n.ctl_mon);
    transport_close(&n.ctl);
    transport_close(&n.act_in_mon);
    transport_close(&n.act_in);
    return n.exit_code;
}

uint64_t worker_net_rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long long size = 0, resident = 0;
    int n = fscanf(f, "%llu %llu", &size, &resident);
    fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    return n == 2 && page > 0 ? (uint64_t)resident * (uint64_t)page : 0;
}
