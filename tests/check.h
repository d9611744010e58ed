/* check.h: the C unit tests' checks, written once for every test program.
 *
 * CHECK(cond) or CHECK(cond, "format", ...) prints "FAIL file:line: cond: message" to stderr
 * and counts a failure in check_failures; the test goes on, so one run shows every case that
 * fails. REQUIRE(...) prints the same and ends the program with status 1: for a test whose
 * later steps would crash or mean nothing once a step failed. Each test's main ends by turning
 * check_failures into its exit status. The format, when given, is a string literal. */
#ifndef CARAVAN_TESTS_CHECK_H
#define CARAVAN_TESTS_CHECK_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

static _Atomic int check_failures; /* checks may fail on several threads at once */

/* fmt is " " followed by the caller's format (or " " alone), so it is never an empty format */
__attribute__((format(printf, 4, 5), unused)) static void
check_fail(const char *file, int line, const char *cond, const char *fmt, ...) {
    fprintf(stderr, "FAIL %s:%d: %s", file, line, cond);
    if (fmt[1]) {
        va_list ap;
        va_start(ap, fmt);
        fputs(":", stderr);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
    }
    fputc('\n', stderr);
    fflush(stderr);
    check_failures++;
}

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) check_fail(__FILE__, __LINE__, #cond, " " __VA_ARGS__);                       \
    } while (0)

#define REQUIRE(cond, ...)                                                                         \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            check_fail(__FILE__, __LINE__, #cond, " " __VA_ARGS__);                                \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#endif
