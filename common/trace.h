/* trace: Chrome trace-event JSON (opens in Perfetto, ui.perfetto.dev) written by a daemon as
 * it runs, one file per process; `caravan trace merge` joins one run's files onto the
 * coordinator's clock.
 *
 * Every span is a complete event ("ph":"X") with ts/dur in microseconds of the process's
 * CLOCK_REALTIME, pid = the node id (0 = coordinator), tid = a track (TRACE_TRACK_*), and
 * args {"batch": id, "tokens": n} so spans of one pipeline step can be matched across files.
 * Tracing is off when the trace_t pointer is NULL: callers test it before reading clocks, so
 * a disabled trace costs one branch.
 *
 * File layout: {"traceEvents":[...], "otherData":{"caravan_role":"coordinator"|"worker",
 * "node_id":N, "name":..., "clocks":[{"node_id","offset_us","rtt_us"}...]}}. "clocks" (the
 * coordinator's file only) holds each worker's clock minus the coordinator's, estimated from
 * heartbeat round trips (the sample with the smallest round trip wins; offset and round trip 0
 * for a worker that reads the coordinator's clock, Capabilities.clock); `caravan trace merge`
 * narrows it with the run's own messages (cli/cmd_trace.c). */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "status.h"

enum trace_track {
    TRACE_TRACK_LOOP = 1, /* the daemon's event loop: recv, queue, compute, serialize, send */
    TRACE_TRACK_STEP = 2, /* coordinator: a step's whole round trip, request queueing */
    TRACE_TRACK_COUNT
};

typedef struct trace trace_t;

/* Opens (truncates) path. NULL and an error log when it cannot be written. */
trace_t *trace_open(const char *path, const char *role, const char *name);
/* Writes the tail (otherData with node_id and clocks) and closes; NULL-safe. */
void trace_close(trace_t **self_p);

/* The node id the spans are written under (a worker learns it at JoinAck). */
void trace_set_node(trace_t *t, uint32_t node_id);
/* One span [start_us, end_us) named `name` (a static string) on a track; batch/tokens go to
 * args (batch 0 = none). */
void trace_span(trace_t *t, enum trace_track track, const char *name, uint64_t start_us,
                uint64_t end_us, uint64_t batch, int32_t tokens);
/* trace_span with the layers [layer_first, layer_end) in args too: a worker's compute span,
 * from which `caravan trace merge` learns the order of the stages a batch went through. */
void trace_span_layers(trace_t *t, enum trace_track track, const char *name, uint64_t start_us,
                       uint64_t end_us, uint64_t batch, int32_t tokens, int32_t layer_first,
                       int32_t layer_end);
/* An instant with a text argument (e.g. "plan"). */
void trace_instant(trace_t *t, const char *name, uint64_t ts_us, const char *text);
/* Records a worker's clock offset (its clock minus ours) and the round trip it came from;
 * kept when rtt_us is the smallest seen for that node. */
void trace_clock(trace_t *t, uint32_t node_id, int64_t offset_us, int64_t rtt_us);

/* A key naming the clock this process's timestamps come from (Capabilities.clock): the running
 * kernel's boot id, 16 bytes (read from boot_id_path, a UUID as Linux writes it; trace_clock_id:
 * /proc/sys/kernel/random/boot_id, new at every boot and different on every machine). Two
 * processes with the same key read one CLOCK_REALTIME, so the offset between their timestamps is
 * exactly 0, where an estimate from round trips is off by up to half of one. false, out all zero,
 * when the boot id cannot be read or is not 32 hex digits. */
#define TRACE_CLOCK_ID_BYTES 16
bool trace_clock_id_from(const char *boot_id_path, uint8_t out[TRACE_CLOCK_ID_BYTES]);
bool trace_clock_id(uint8_t out[TRACE_CLOCK_ID_BYTES]);

/* NTP-style estimate from one heartbeat round trip: t0 our send, t1 peer receive, t2 peer
 * send, t3 our receive (t1, t2 on the peer's clock). Returns false when the samples are
 * inconsistent (a zero, or a negative round trip). */
bool trace_clock_estimate(uint64_t t0, uint64_t t1, uint64_t t2, uint64_t t3, int64_t *offset_us,
                          int64_t *rtt_us);
