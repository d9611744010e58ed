/* codec: bytes <-> caravan.proto envelopes, with limits and validation; no sockets, no I/O.
 *
 * One ZeroMQ frame = one encoded Caravan__Envelope (proto/caravan.proto). codec_decode is the
 * only way untrusted bytes become structs: it refuses an oversized buffer before looking at it,
 * checks the protocol version first (so a newer peer gets a clear refusal even when the rest
 * would not parse), walks the wire bytes against the schema to bound every length, nesting
 * level and repeated-field count before protobuf-c allocates anything, unpacks under a byte
 * budget, and then checks the meaning (one body, tensor bytes == shape x dtype, per-token
 * arrays of equal length, strings bounded UTF-8, fingerprints 32 bytes). It returns a status
 * and a one-line reason; it never aborts on input and logs nothing above LOG_DEBUG. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "caravan.pb-c.h"
#include "status.h"

/* The version every Envelope carries. Bump when a peer of the previous version would misread
 * a message (a new field it may ignore does not count). */
#define CARAVAN_PROTOCOL_VERSION 3u

#define CODEC_FINGERPRINT_BYTES 32 /* BLAKE2b-256 */
#define CODEC_PUBLIC_KEY_BYTES 32  /* CURVE public key, raw */
#define CODEC_MACHINE_BYTES 16     /* Capabilities.machine */
#define CODEC_CLOCK_BYTES 16       /* Capabilities.clock */
#define CODEC_MAX_DIMS 4           /* Tensor.shape entries */
#define CODEC_ERR_LEN 160          /* a comfortable size for the err buffers below */
#define CODEC_MAX_TOP_LOGPROBS 20  /* Sampling.top_logprobs, Result.top_n */
#define CODEC_MAX_BIAS 1024        /* Sampling.bias_token entries */
/* The most an Assign asks a worker to hold, and what the command lines accept: KV positions
 * per sequence, KV slots, tokens in one Forward. The engine sizes its buffers from them. */
#define CODEC_MAX_CTX (1 << 20)
#define CODEC_MAX_SEQS 1024
#define CODEC_MAX_BATCH (1 << 16)

struct codec_limits {
    size_t max_message_bytes; /* whole encoded envelope; default 64 MiB */
    int64_t max_tensor_elems; /* product of a Tensor's shape; default 32 Mi elements */
    size_t max_repeated;      /* entries in any one repeated field (also n_tokens, n_rows);
                                 default 65536 */
    size_t max_string_bytes;  /* any text field; default 4096 */
    size_t max_depth;         /* message nesting; default 8 (the schema needs 4) */
};

/* The defaults above. */
struct codec_limits codec_limits_default(void);

/* ==== Decoding ==== */

/* Decodes and validates one envelope from buf[0..len). lim NULL means the defaults.
 * On success *out is a new envelope the caller frees with codec_free (or
 * caravan__envelope__free_unpacked(msg, NULL)); it points into nothing of buf.
 * On failure *out is NULL, err (if errlen > 0) holds one line saying why, and the status is:
 *   STATUS_NOMEM    len, a length, a count, a tensor's elements or the allocation budget
 *                   exceeds a limit;
 *   STATUS_PROTOCOL version differs from CARAVAN_PROTOCOL_VERSION; err reads
 *                   "protocol version mismatch: peer speaks 2, this node speaks 1";
 *   STATUS_FORMAT   anything else malformed (bad wire bytes, no body, shape/data mismatch,
 *                   per-token arrays disagree, bad UTF-8, fingerprint not 32 bytes, ...). */
CARAVAN_NODISCARD enum status codec_decode(const uint8_t *buf, size_t len,
                                           const struct codec_limits *lim, Caravan__Envelope **out,
                                           char *err, size_t errlen);

/* Frees an envelope from codec_decode; accepts NULL and sets *msg_p to NULL. */
void codec_free(Caravan__Envelope **msg_p);

/* The header fields of an encoded envelope without decoding the body (cheap: walks only the
 * top level), e.g. to drop a stale epoch before decoding megabytes of activations.
 * Returns STATUS_FORMAT when the top level is not well-formed wire bytes; *h then holds the
 * fields read before the malformed part (zero for the rest). Validates nothing else. */
struct codec_header {
    uint32_t version;
    uint64_t epoch;
    uint64_t msg_id;
    uint32_t sender;
    uint32_t body_case; /* Caravan__Envelope__BodyCase; 0 when none */
};
CARAVAN_NODISCARD enum status codec_peek(const uint8_t *buf, size_t len, struct codec_header *h);

/* Validates an already-built envelope (the checks codec_decode makes after unpacking,
 * including the version). lim NULL means the defaults. Same statuses as codec_decode. */
CARAVAN_NODISCARD enum status codec_validate(const Caravan__Envelope *msg,
                                             const struct codec_limits *lim, char *err,
                                             size_t errlen);

/* ==== Encoding ==== */

/* Sets *msg to an empty envelope of this node's version with the given epoch and msg_id.
 * The caller then sets sender/sent_us and one body (msg->body_case and the body pointer). */
void codec_envelope_init(Caravan__Envelope *msg, uint64_t epoch, uint64_t msg_id);

/* Validates msg (default limits) and encodes it into a new malloc'd buffer *out of *len bytes;
 * the caller frees it with free() (fits zmq_msg_init_data with a free callback).
 * Returns STATUS_FORMAT/NOMEM/PROTOCOL as codec_validate (err says why), STATUS_NOMEM when
 * malloc fails. Never sends a message its own decoder would refuse. */
CARAVAN_NODISCARD enum status codec_encode(const Caravan__Envelope *msg, uint8_t **out, size_t *len,
                                           char *err, size_t errlen);

/* As codec_encode, validating against lim (NULL = defaults) instead of the defaults, for a
 * node configured with larger limits (its peers must be configured alike). */
CARAVAN_NODISCARD enum status codec_encode_lim(const Caravan__Envelope *msg,
                                               const struct codec_limits *lim, uint8_t **out,
                                               size_t *len, char *err, size_t errlen);

/* As codec_encode into buf[0..cap). STATUS_NOMEM when cap is too small (*len then holds the
 * size needed). */
CARAVAN_NODISCARD enum status codec_encode_into(const Caravan__Envelope *msg, uint8_t *buf,
                                                size_t cap, size_t *len, char *err, size_t errlen);

/* Encodes an Error envelope (e.g. the refusal after a failed decode) into a new malloc'd
 * buffer. text may be NULL; it is cut at max_string_bytes on a UTF-8 boundary. */
CARAVAN_NODISCARD enum status codec_encode_error(uint64_t epoch, uint64_t msg_id, uint32_t sender,
                                                 Caravan__Error__Code code, const char *text,
                                                 uint64_t ref_msg_id, uint8_t **out, size_t *len);

/* ==== Helpers ==== */

/* Bytes of a tensor of this dtype and shape into *bytes (and elements into *elems, may be
 * NULL). STATUS_FORMAT for an unknown dtype, a bad dim count/value or a Q8_0 last dim not a
 * multiple of 32; STATUS_NOMEM when the element count exceeds max_elems or overflows. */
CARAVAN_NODISCARD enum status codec_tensor_bytes(uint32_t dtype, const int64_t *shape,
                                                 size_t n_dims, int64_t max_elems, int64_t *elems,
                                                 size_t *bytes);

/* "forward", "join", ... for a Caravan__Envelope__BodyCase; "none" / "unknown". */
const char *codec_body_name(uint32_t body_case);

/* The Error.Code that answers a decode failure of this status (CODE_VERSION, CODE_TOO_LARGE,
 * CODE_MALFORMED). */
Caravan__Error__Code codec_error_code(enum status s);
