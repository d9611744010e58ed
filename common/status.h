/* status: the one small error enum every caravan module returns.
 * Zero is success, negatives are failures; a value exists only where a caller branches on it. */
#pragma once

enum status {
    STATUS_OK = 0,
    STATUS_IO = -1,       /* open/read/write/mmap failed */
    STATUS_FORMAT = -2,   /* malformed input: file, message, arguments */
    STATUS_NOMEM = -3,    /* allocation failed or a declared size exceeds a limit */
    STATUS_PROTOCOL = -4, /* peer broke the protocol (version, state, auth) */
    STATUS_TIMEOUT = -5,
    STATUS_UNSUPPORTED = -6, /* well-formed but not something caravan implements */
};

#define CARAVAN_NODISCARD __attribute__((warn_unused_result))

/* A static string naming s ("ok", "i/o error", ...). */
const char *status_str(enum status s);
