/* netdelay: delays every packet of one NFQUEUE queue by --delay plus up to +-(--jitter),
 * keeping the order of each flow (same addresses, protocol and ports). A stand-in for
 * `tc netem delay` on kernels built without netem; deploy/netns-cluster.sh runs one per
 * network namespace behind `iptables -A OUTPUT -o IF -j NFQUEUE --queue-num Q`.
 * The timing is netdelay_sched.c's; this file only moves packets. On SIGINT/SIGTERM it lets
 * every held packet go and exits 0. */
#include <arpa/inet.h>
#include <errno.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <linux/netfilter.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "netdelay_sched.h"

#define NETDELAY_CAPACITY 65536

struct netdelay {
    netdelay_sched_t *sched;
    struct nfq_q_handle *qh;
    unsigned long long passed, dropped;
};

static volatile sig_atomic_t stop_signal;
static void on_signal(int sig) {
    stop_signal = sig;
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* FNV-1a over the IPv4 addresses, protocol and (TCP/UDP/SCTP) ports: one key per flow. */
static uint64_t flow_key(const unsigned char *p, int len) {
    uint64_t h = 1469598103934665603ull;
    if (len < 20 || (p[0] >> 4) != 4) return h;
    int ihl = (p[0] & 15) * 4;
    unsigned char proto = p[9];
    unsigned char key[13];
    memcpy(key, p + 12, 8);
    key[8] = proto;
    memset(key + 9, 0, 4);
    if ((proto == 6 || proto == 17 || proto == 132) && len >= ihl + 4) memcpy(key + 9, p + ihl, 4);
    for (size_t i = 0; i < sizeof key; i++) h = (h ^ key[i]) * 1099511628211ull;
    return h;
}

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa,
                     void *arg) {
    (void)msg;
    struct netdelay *nd = arg;
    struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
    if (!ph) return 0;
    uint32_t id = ntohl(ph->packet_id);
    unsigned char *payload = NULL;
    int len = nfq_get_payload(nfa, &payload);
    int64_t rel;
    if (netdelay_sched_push(nd->sched, id, flow_key(payload, len), now_ns(), &rel) != 0) {
        nd->dropped++;
        return nfq_set_verdict(qh, id, NF_DROP, 0, NULL);
    }
    return 0;
}

static void release_due(struct netdelay *nd, int64_t t) {
    uint32_t id;
    while (netdelay_sched_pop(nd->sched, t, &id)) {
        nfq_set_verdict(nd->qh, id, NF_ACCEPT, 0, NULL);
        nd->passed++;
    }
}

static void usage(FILE *f) {
    fprintf(f, "usage: netdelay --queue N --delay DUR [--jitter DUR] [--seed S]\n"
               "  delays the packets of NFQUEUE queue N by DUR +- jitter (uniform), keeping each\n"
               "  flow's order. DUR: 5ms, 1.5ms, 200us, 0.\n");
}

int main(int argc, char **argv) {
    int queue = -1;
    int64_t delay = -1, jitter = 0;
    unsigned long long seed = (unsigned long long)getpid();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        if (strcmp(a, "--queue") == 0)
            queue = atoi(v);
        else if (strcmp(a, "--delay") == 0)
            delay = netdelay_parse_duration(v);
        else if (strcmp(a, "--jitter") == 0)
            jitter = netdelay_parse_duration(v);
        else if (strcmp(a, "--seed") == 0)
            seed = strtoull(v, NULL, 0);
        else {
            fprintf(stderr, "netdelay: unknown option '%s'\n", a);
            return 2;
        }
    }
    if (queue < 0 || queue > 65535 || delay < 0 || jitter < 0) {
        usage(stderr);
        return 2;
    }

    int rc = 1;
    struct netdelay nd = {0};
    struct nfq_handle *h = NULL;
    nd.sched = netdelay_sched_new(delay, jitter, seed, NETDELAY_CAPACITY);
    if (!nd.sched) goto fail;
    h = nfq_open();
    if (!h) {
        fprintf(stderr, "netdelay: nfq_open: %s\n", strerror(errno));
        goto fail;
    }
    nd.qh = nfq_create_queue(h, (uint16_t)queue, on_packet, &nd);
    if (!nd.qh) {
        fprintf(stderr, "netdelay: cannot bind queue %d: %s\n", queue, strerror(errno));
        goto fail;
    }
    if (nfq_set_mode(nd.qh, NFQNL_COPY_PACKET, 64) < 0 ||
        nfq_set_queue_maxlen(nd.qh, NETDELAY_CAPACITY) < 0) {
        fprintf(stderr, "netdelay: cannot configure queue %d\n", queue);
        goto fail;
    }
    int fd = nfq_fd(h);
    nfnl_rcvbufsiz(nfq_nfnlh(h), 16 << 20);
    int one = 1;
    setsockopt(fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof one);
    prctl(PR_SET_TIMERSLACK, 1UL); /* wake up on time, not up to 50 us late */

    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    fprintf(stderr, "netdelay: queue %d, delay %lld ns, jitter %lld ns\n", queue, (long long)delay,
            (long long)jitter);

    static char buf[65536 + 4096];
    while (!stop_signal) {
        int64_t next = netdelay_sched_next_ns(nd.sched), t = now_ns();
        struct timespec to = {1, 0}; /* wake now and then to notice signals */
        if (next != INT64_MAX) {
            int64_t wait = next > t ? next - t : 0;
            if (wait < 1000000000) to.tv_sec = 0, to.tv_nsec = wait;
        }
        struct pollfd pfd = {fd, POLLIN, 0};
        int n = ppoll(&pfd, 1, &to, NULL);
        if (n < 0 && errno != EINTR) {
            fprintf(stderr, "netdelay: ppoll: %s\n", strerror(errno));
            goto fail;
        }
        if (n > 0) {
            for (;;) {
                ssize_t got = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
                if (got <= 0) break;
                nfq_handle_packet(h, buf, (int)got);
            }
        }
        release_due(&nd, now_ns());
    }
    rc = 0;
fail:
    if (nd.sched) release_due(&nd, INT64_MAX); /* let everything held go */
    if (rc == 0)
        fprintf(stderr, "netdelay: %llu packets passed, %llu dropped (queue full)\n", nd.passed,
                nd.dropped);
    if (nd.qh) nfq_destroy_queue(nd.qh);
    if (h) nfq_close(h);
    netdelay_sched_destroy(&nd.sched);
    return rc;
}
