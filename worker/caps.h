/* caps: what a worker reports about itself at join beyond its host name and cores: the memory
 * it may use, the kernel variants its CPU runs, and a measured matmul speed per weight type.
 * Gathered once by the I/O side (cli/cmd_worker.c) before the state machine starts; the
 * coordinator plans with them (common/plan.h) and pins one kernel variant every worker has. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define CAPS_MAX_TYPES 16
#define CAPS_MAX_KERNELS 8
#define CAPS_MACHINE_BYTES 16

struct caps_type_speed {
    uint32_t type; /* enum dtype (GGUF ggml_type number) */
    float gflops;  /* 2 x n_in x n_out x rows / s / 1e9 */
};

struct caps_probe {
    struct caps_type_speed speeds[CAPS_MAX_TYPES];
    size_t n_speeds;
};

/* "8G", "512M", "1.5G", "4096K", "123456" (bytes); K/M/G/T are powers of 1024, an optional
 * trailing "B" or "iB" is accepted. STATUS_FORMAT when it is not a positive size. */
CARAVAN_NODISCARD enum status caps_parse_size(const char *text, uint64_t *bytes);

/* MemAvailable from /proc/meminfo (0 when it cannot be read). */
uint64_t caps_mem_available(void);
/* MemTotal from /proc/meminfo (0 when it cannot be read). */
uint64_t caps_mem_total(void);
/* --max-memory TEXT into bytes (caps_parse_size). STATUS_FORMAT with the error in msg, or
 * STATUS_OK with msg a warning when the size looks like a mistake (under 1 MiB: a bare number
 * is bytes; over total, the machine's memory, 0 when unknown) and empty otherwise. */
CARAVAN_NODISCARD enum status caps_max_memory(const char *text, uint64_t total, uint64_t *bytes,
                                              char *msg, size_t cap);

/* A key naming the CPUs this process computes on (Capabilities.machine): a digest of the running
 * kernel's boot id (read from boot_id_path; caps_machine: /proc/sys/kernel/random/boot_id, new
 * at every boot and different on every machine) and this thread's CPU affinity. Two workers
 * with the same key share those CPUs, so their speeds are one speed: the coordinator plans them
 * with the fastest of their probes, not with whatever a busy moment did to each (two equal
 * workers started one after the other on one VM probed q4_0 at 88.3 and 51.3 GFLOP/s and were
 * given 15 and 7 layers; bench/RESULTS.md, Zen 3). false, out all zero, when the boot id cannot
 * be read (trace_clock_id_from, which reads it for the clock key too). */
bool caps_machine_from(const char *boot_id_path, uint8_t out[CAPS_MACHINE_BYTES]);
bool caps_machine(uint8_t out[CAPS_MACHINE_BYTES]);

/* The kernel variants (engine/quant.h) this CPU runs, in quant_variants() order (best last).
 * Returns the count; names are static strings. */
size_t caps_kernels(const char *names[CAPS_MAX_KERNELS]);

/* Times a matmul of one activation row by a random (n_out x n_in) weight in each weight type
 * the engine computes with (F32, F16, BF16, Q4_0, Q8_0, Q4_K, Q5_K, Q6_K, Q4_1, Q5_0, Q5_1,
 * Q2_K, Q3_K),
 * for about budget_ms each (in sweeps over all types), on n_threads threads (<= 0: every core),
 * with the kernel variant chosen now: each type's fastest run. */
CARAVAN_NODISCARD enum status caps_probe_speeds(int n_threads, int budget_ms,
                                                struct caps_probe *out);

/* The same, timed by read_clock(clock_ctx) (seconds; caps_probe_speeds: CLOCK_MONOTONIC): a
 * test makes some runs look slow. */
CARAVAN_NODISCARD enum status caps_probe_speeds_clock(int n_threads, int budget_ms,
                                                      double (*read_clock)(void *), void *clock_ctx,
                                                      struct caps_probe *out);

/* caps_probe_speeds under an exclusive flock(2) of lock_path (created 0600 when absent; NULL:
 * no lock), waited for as long as another holder keeps it: workers of one machine given the same
 * file probe one after the other, not on each other's cores and memory bandwidth (two probes run at
 * once on identical cores read 75 and 59 GFLOP/s, and the plan gave 14 and 8 layers;
 * bench/RESULTS.md, Zen 4).
 * STATUS_IO when the file cannot be opened or locked. */
CARAVAN_NODISCARD enum status caps_probe_speeds_locked(const char *lock_path, int n_threads,
                                                       int budget_ms, struct caps_probe *out);
