#include "status.h"

const char *status_str(enum status s) {
    switch (s) {
    case STATUS_OK: return "ok";
    case STATUS_IO: return "i/o error";
    case STATUS_FORMAT: return "malformed input";
    case STATUS_NOMEM: return "out of memory or over a size limit";
    case STATUS_PROTOCOL: return "protocol error";
    case STATUS_TIMEOUT: return "timed out";
    case STATUS_UNSUPPORTED: return "unsupported";
    }
    return "unknown status";
}
