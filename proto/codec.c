/* codec: bytes <-> caravan.proto envelopes (see codec.h).
 *
 * Decoding is layered so that nothing is allocated on the strength of an unchecked number:
 *   1. the buffer length against max_message_bytes;
 *   2. codec_peek over the top level, for the version (refused before anything else);
 *   3. wire_walk over the whole message against the schema's descriptors: every length fits
 *      what is left, nesting is bounded, each repeated field's element count (packed or not)
 *      is within max_repeated, singular fields and the oneof appear at most once, strings are
 *      bounded, groups and reserved wire types are refused;
 *   4. protobuf-c's unpack under an allocator with a byte budget proportional to the input;
 *   5. codec_validate: the meaning of each body. */
#include "codec.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

struct codec_limits codec_limits_default(void) {
    return (struct codec_limits){
        .max_message_bytes = (size_t)64 << 20,
        .max_tensor_elems = (int64_t)32 << 20,
        .max_repeated = 65536,
        .max_string_bytes = 4096,
        .max_depth = 8,
    };
}

/* Writes one line into err and returns s. */
__attribute__((format(printf, 4, 5))) static enum status fail(char *err, size_t errlen,
                                                              enum status s, const char *fmt, ...) {
    if (err && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return s;
}

/* ==== Wire walking ==== */

enum wire_type {
    WIRE_VARINT = 0,
    WIRE_FIXED64 = 1,
    WIRE_LEN = 2,
    WIRE_SGROUP = 3,
    WIRE_EGROUP = 4,
    WIRE_FIXED32 = 5,
};

/* Reads a varint at buf[*pos..len); false when truncated or longer than 10 bytes. */
static bool wire_varint(const uint8_t *buf, size_t len, size_t *pos, uint64_t *v) {
    uint64_t r = 0;
    for (unsigned i = 0; i < 10; i++) {
        if (*pos >= len) return false;
        uint8_t b = buf[(*pos)++];
        if (i == 9 && b > 1) return false; /* would overflow 64 bits */
        r |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *v = r;
            return true;
        }
    }
    return false;
}

/* Reads a tag; false unless the field number is 1..2^29-1 and the tag fits 32 bits. */
static bool wire_tag(const uint8_t *buf, size_t len, size_t *pos, uint32_t *field,
                     unsigned *wtype) {
    uint64_t t;
    if (!wire_varint(buf, len, pos, &t) || t > UINT32_MAX) return false;
    *field = (uint32_t)(t >> 3);
    *wtype = (unsigned)(t & 7);
    return *field != 0;
}

/* Skips a field's value of wire type wtype; lo, n give a LEN payload's place. */
static bool wire_skip(const uint8_t *buf, size_t len, size_t *pos, unsigned wtype, size_t *lo,
                      size_t *n) {
    uint64_t v;
    *lo = *pos;
    *n = 0;
    switch (wtype) {
    case WIRE_VARINT: return wire_varint(buf, len, pos, &v);
    case WIRE_FIXED64:
        if (len - *pos < 8) return false;
        *pos += 8;
        return true;
    case WIRE_FIXED32:
        if (len - *pos < 4) return false;
        *pos += 4;
        return true;
    case WIRE_LEN:
        if (!wire_varint(buf, len, pos, &v) || v > len - *pos) return false;
        *lo = *pos;
        *n = (size_t)v;
        *pos += (size_t)v;
        return true;
    default: return false; /* groups (protobuf-c has none) and reserved wire types */
    }
}

static bool field_is_varint_type(ProtobufCType t) {
    switch (t) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_BOOL:
    case PROTOBUF_C_TYPE_ENUM: return true;
    default: return false;
    }
}

static unsigned field_fixed_size(ProtobufCType t) {
    switch (t) {
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_FLOAT: return 4;
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE: return 8;
    default: return 0;
    }
}

/* The wire type a value of type t is encoded with when not packed. */
static unsigned field_wire_type(ProtobufCType t) {
    if (field_is_varint_type(t)) return WIRE_VARINT;
    unsigned fs = field_fixed_size(t);
    if (fs == 4) return WIRE_FIXED32;
    if (fs == 8) return WIRE_FIXED64;
    return WIRE_LEN; /* string, bytes, message */
}

#define WALK_MAX_FIELDS 32  /* more than any message in caravan.proto has */
#define WALK_MAX_UNKNOWN 64 /* unknown fields tolerated per message (newer minor peers) */

struct walk {
    const struct codec_limits *lim;
    char *err;
    size_t errlen;
};

/* Checks buf[0..len) as an encoding of desc (see the file comment, step 3). */
static enum status wire_walk(struct walk *w, const ProtobufCMessageDescriptor *desc,
                             const uint8_t *buf, size_t len, size_t depth) {
    const struct codec_limits *lim = w->lim;
    size_t counts[WALK_MAX_FIELDS] = {0};
    size_t n_unknown = 0;
    bool oneof_seen[WALK_MAX_FIELDS] = {0}; /* indexed by the first field of a oneof */
    size_t pos = 0;

    if (depth > lim->max_depth)
        return fail(w->err, w->errlen, STATUS_NOMEM, "messages nested deeper than %zu",
                    lim->max_depth);
    if (desc->n_fields > WALK_MAX_FIELDS)
        return fail(w->err, w->errlen, STATUS_FORMAT, "%s has too many fields to check",
                    desc->name);

    while (pos < len) {
        uint32_t id;
        unsigned wtype;
        size_t lo, n;
        size_t at = pos;
        if (!wire_tag(buf, len, &pos, &id, &wtype) || !wire_skip(buf, len, &pos, wtype, &lo, &n))
            return fail(w->err, w->errlen, STATUS_FORMAT,
                        "%s: malformed or truncated field at byte %zu", desc->short_name, at);

        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(desc, id);
        if (!f) {
            if (++n_unknown > WALK_MAX_UNKNOWN)
                return fail(w->err, w->errlen, STATUS_NOMEM, "%s: more than %d unknown fields",
                            desc->short_name, WALK_MAX_UNKNOWN);
            continue;
        }
        size_t fi = (size_t)(f - desc->fields);
        bool packed = f->label == PROTOBUF_C_LABEL_REPEATED && wtype == WIRE_LEN &&
                      field_wire_type(f->type) != WIRE_LEN;
        if (!packed && wtype != field_wire_type(f->type))
            return fail(w->err, w->errlen, STATUS_FORMAT, "%s.%s: wrong wire type %u",
                        desc->short_name, f->name, wtype);

        /* Elements this occurrence adds. */
        size_t add = 1;
        if (packed && n == 0) {
            /* Encoders omit empty repeated fields; protobuf-c 1.4.1 would do arithmetic on the
             * still-NULL array for one (UBSan: "applying zero offset to null pointer"). */
            return fail(w->err, w->errlen, STATUS_FORMAT, "%s.%s: empty packed field",
                        desc->short_name, f->name);
        }
        if (packed) {
            unsigned fs = field_fixed_size(f->type);
            if (fs) {
                if (n % fs)
                    return fail(w->err, w->errlen, STATUS_FORMAT,
                                "%s.%s: packed length %zu not a multiple of %u", desc->short_name,
                                f->name, n, fs);
                add = n / fs;
            } else {
                add = 0;
                for (size_t i = 0; i < n; i++) add += !(buf[lo + i] & 0x80);
                if (n > 0 && (buf[lo + n - 1] & 0x80))
                    return fail(w->err, w->errlen, STATUS_FORMAT, "%s.%s: truncated packed varint",
                                desc->short_name, f->name);
            }
        }
        counts[fi] += add;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            if (counts[fi] > lim->max_repeated)
                return fail(w->err, w->errlen, STATUS_NOMEM, "%s.%s: more than %zu entries",
                            desc->short_name, f->name, lim->max_repeated);
        } else if (counts[fi] > 1) {
            /* Legal protobuf ("last one wins", submessages merge), but caravan's encoder never
             * does it, and refusing it keeps protobuf-c's merge paths out of reach. */
            return fail(w->err, w->errlen, STATUS_FORMAT, "%s.%s appears more than once",
                        desc->short_name, f->name);
        }
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            size_t first = fi;
            while (first > 0 && desc->fields[first - 1].quantifier_offset == f->quantifier_offset)
                first--;
            if (oneof_seen[first])
                return fail(w->err, w->errlen, STATUS_FORMAT, "%s: more than one %s set",
                            desc->short_name, "oneof member");
            oneof_seen[first] = true;
        }

        if (f->type == PROTOBUF_C_TYPE_STRING && n > lim->max_string_bytes)
            return fail(w->err, w->errlen, STATUS_NOMEM, "%s.%s: string of %zu bytes (limit %zu)",
                        desc->short_name, f->name, n, lim->max_string_bytes);
        if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
            enum status s = wire_walk(w, f->descriptor, buf + lo, n, depth + 1);
            if (s != STATUS_OK) return s;
        }
    }
    return STATUS_OK;
}

enum status codec_peek(const uint8_t *buf, size_t len, struct codec_header *h) {
    memset(h, 0, sizeof(*h));
    if (!buf && len) return STATUS_FORMAT;
    size_t pos = 0;
    while (pos < len) {
        uint32_t id;
        unsigned wtype;
        size_t lo, n;
        size_t vpos = pos;
        if (!wire_tag(buf, len, &pos, &id, &wtype)) return STATUS_FORMAT;
        vpos = pos;
        if (!wire_skip(buf, len, &pos, wtype, &lo, &n)) return STATUS_FORMAT;
        if (id >= 1 && id <= 5) {
            uint64_t v;
            if (wtype != WIRE_VARINT) return STATUS_FORMAT;
            (void)wire_varint(buf, len, &vpos, &v);
            /* protobuf-c would keep the low 32 bits: 2^32 + 1 must not pass for version 1 */
            if ((id == 1 || id == 4) && v > UINT32_MAX) return STATUS_FORMAT;
            switch (id) {
            case 1: h->version = (uint32_t)v; break;
            case 2: h->epoch = v; break;
            case 3: h->msg_id = v; break;
            case 4: h->sender = (uint32_t)v; break;
            default: break;
            }
        } else if (id >= CARAVAN__ENVELOPE__BODY_JOIN && id <= CARAVAN__ENVELOPE__BODY_ERROR &&
                   wtype == WIRE_LEN) {
            h->body_case = id;
        }
    }
    return STATUS_OK;
}

/* ==== Allocation budget ==== */

/* Bytes protobuf-c may allocate to unpack a message of len bytes. Wire bytes become at most a
 * few times as many struct bytes for real messages (bytes fields copy 1:1, packed int32 1:4,
 * an empty submessage ~2:100); the fixed part covers small messages with many such fields. */
#define BUDGET_FACTOR 4
#define BUDGET_FIXED ((size_t)8 << 20)

struct budget {
    size_t left;
    bool exceeded;
};

static void *budget_alloc(void *data, size_t size) {
    struct budget *b = data;
    if (size > b->left) {
        b->exceeded = true;
        return NULL;
    }
    b->left -= size;
    return malloc(size ? size : 1);
}

static void budget_free(void *data, void *ptr) {
    (void)data;
    free(ptr);
}

/* ==== Validation ==== */

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF) without NUL bytes,
 * since protobuf-c hands strings over NUL-terminated. */
static bool utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c == 0) return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0) {
            k = 1, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            k = 2, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            k = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (n - i <= k) return false;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
        i += k + 1;
    }
    return true;
}

struct vctx {
    const struct codec_limits *lim;
    char *err;
    size_t errlen;
};

#define VFAIL(v, s, ...) fail((v)->err, (v)->errlen, (s), __VA_ARGS__)
#define VCHECK(expr)                                                                               \
    do {                                                                                           \
        enum status s_ = (expr);                                                                   \
        if (s_ != STATUS_OK) return s_;                                                            \
    } while (0)

static enum status check_text(const struct vctx *v, const char *what, const char *s) {
    if (!s) return STATUS_OK; /* proto3: unset string */
    size_t n = strnlen(s, v->lim->max_string_bytes + 1);
    if (n > v->lim->max_string_bytes)
        return VFAIL(v, STATUS_NOMEM, "%s: longer than %zu bytes", what, v->lim->max_string_bytes);
    if (!utf8_valid((const uint8_t *)s, n)) return VFAIL(v, STATUS_FORMAT, "%s: not UTF-8", what);
    return STATUS_OK;
}

static enum status check_texts(const struct vctx *v, const char *what, char *const *s, size_t n) {
    if (n > v->lim->max_repeated)
        return VFAIL(v, STATUS_NOMEM, "%s: more than %zu entries", what, v->lim->max_repeated);
    if (n && !s) return VFAIL(v, STATUS_FORMAT, "%s: missing array", what);
    for (size_t i = 0; i < n; i++) {
        if (!s[i]) return VFAIL(v, STATUS_FORMAT, "%s[%zu]: missing", what, i);
        VCHECK(check_text(v, what, s[i]));
    }
    return STATUS_OK;
}

/* A fingerprint or key: empty (when allowed) or exactly `want` bytes. */
static enum status check_blob(const struct vctx *v, const char *what, ProtobufCBinaryData b,
                              size_t want, bool may_be_empty) {
    if (b.len == 0 && may_be_empty) return STATUS_OK;
    if (b.len != want || !b.data)
        return VFAIL(v, STATUS_FORMAT, "%s: %zu bytes, want %zu", what, b.len, want);
    return STATUS_OK;
}

static enum status check_count(const struct vctx *v, const char *what, size_t n, const void *arr) {
    if (n > v->lim->max_repeated)
        return VFAIL(v, STATUS_NOMEM, "%s: %zu entries (limit %zu)", what, n, v->lim->max_repeated);
    if (n && !arr) return VFAIL(v, STATUS_FORMAT, "%s: missing array", what);
    return STATUS_OK;
}

/* Each of the n_per arrays has either 0 entries (when optional) or exactly n. */
static enum status check_len(const struct vctx *v, const char *what, size_t got, int64_t n,
                             bool optional) {
    if (optional && got == 0) return STATUS_OK;
    if ((int64_t)got != n)
        return VFAIL(v, STATUS_FORMAT, "%s: %zu entries, want %lld", what, got, (long long)n);
    return STATUS_OK;
}

static enum status check_range(const struct vctx *v, const char *what, int32_t first, int32_t end,
                               bool may_be_empty) {
    if (first < 0 || end < first || (!may_be_empty && end == first))
        return VFAIL(v, STATUS_FORMAT, "%s: bad layer range [%d, %d)", what, (int)first, (int)end);
    return STATUS_OK;
}

static enum status check_float(const struct vctx *v, const char *what, float x, float lo,
                               float hi) {
    if (!isfinite(x) || x < lo || x > hi)
        return VFAIL(v, STATUS_FORMAT, "%s: %g out of [%g, %g]", what, (double)x, (double)lo,
                     (double)hi);
    return STATUS_OK;
}

/* Bytes per element (or per block of block elems) of the dtypes allowed on the wire. */
static bool wire_dtype(uint32_t dtype, int64_t *block, size_t *block_bytes) {
    switch (dtype) {
    case CARAVAN__DTYPE__DTYPE_F32: *block = 1, *block_bytes = 4; return true;
    case CARAVAN__DTYPE__DTYPE_F16: *block = 1, *block_bytes = 2; return true;
    case CARAVAN__DTYPE__DTYPE_BF16: *block = 1, *block_bytes = 2; return true;
    case CARAVAN__DTYPE__DTYPE_I32: *block = 1, *block_bytes = 4; return true;
    case CARAVAN__DTYPE__DTYPE_Q8_0: *block = 32, *block_bytes = 34; return true;
    default: return false;
    }
}

enum status codec_tensor_bytes(uint32_t dtype, const int64_t *shape, size_t n_dims,
                               int64_t max_elems, int64_t *elems, size_t *bytes) {
    int64_t block;
    size_t block_bytes;
    if (!wire_dtype(dtype, &block, &block_bytes)) return STATUS_FORMAT;
    if (n_dims < 1 || n_dims > CODEC_MAX_DIMS || !shape) return STATUS_FORMAT;
    int64_t total = 1;
    for (size_t i = 0; i < n_dims; i++) {
        if (shape[i] < 1) return STATUS_FORMAT;
        if (shape[i] > max_elems || total > max_elems / shape[i]) return STATUS_NOMEM;
        total *= shape[i];
    }
    if (shape[n_dims - 1] % block) return STATUS_FORMAT;
    /* total <= max_elems <= INT64_MAX and block_bytes <= 34: the product fits when total does
     * after the division, but max_elems is the caller's; check anyway. */
    uint64_t blocks = (uint64_t)(total / block);
    if (blocks > SIZE_MAX / block_bytes) return STATUS_NOMEM;
    if (elems) *elems = total;
    *bytes = (size_t)blocks * block_bytes;
    return STATUS_OK;
}

/* A tensor of rank `rank` (0 = any) whose first dim is `rows` (< 0 = any). */
static enum status check_tensor(const struct vctx *v, const char *what, const Caravan__Tensor *t,
                                size_t rank, int64_t rows) {
    VCHECK(check_count(v, what, t->n_shape, t->shape));
    if (t->n_shape < 1 || t->n_shape > CODEC_MAX_DIMS)
        return VFAIL(v, STATUS_FORMAT, "%s: %zu dims (want 1..%d)", what, t->n_shape,
                     CODEC_MAX_DIMS);
    if (rank && t->n_shape != rank)
        return VFAIL(v, STATUS_FORMAT, "%s: %zu dims, want %zu", what, t->n_shape, rank);
    if (rows >= 0 && t->shape[0] != rows)
        return VFAIL(v, STATUS_FORMAT, "%s: %lld rows, want %lld", what, (long long)t->shape[0],
                     (long long)rows);
    int64_t elems = 0;
    size_t bytes = 0;
    enum status s = codec_tensor_bytes((uint32_t)t->dtype, t->shape, t->n_shape,
                                       v->lim->max_tensor_elems, &elems, &bytes);
    if (s == STATUS_NOMEM)
        return VFAIL(v, s, "%s: more than %lld elements", what,
                     (long long)v->lim->max_tensor_elems);
    if (s != STATUS_OK) return VFAIL(v, s, "%s: bad dtype %d or shape", what, (int)t->dtype);
    if (t->data.len != bytes || (bytes && !t->data.data))
        return VFAIL(v, STATUS_FORMAT, "%s: %zu data bytes, shape and dtype say %zu", what,
                     t->data.len, bytes);
    return STATUS_OK;
}

static enum status check_peer(const struct vctx *v, const char *what, const Caravan__Peer *p) {
    VCHECK(check_text(v, what, p->endpoint));
    return check_blob(v, "peer.public_key", p->public_key, CODEC_PUBLIC_KEY_BYTES, true);
}

static enum status check_hops(const struct vctx *v, Caravan__Hop *const *hops, size_t n) {
    VCHECK(check_count(v, "hops", n, hops));
    for (size_t i = 0; i < n; i++) {
        if (!hops[i]) return VFAIL(v, STATUS_FORMAT, "hops[%zu]: missing", i);
        VCHECK(check_range(v, "hop", hops[i]->layer_first, hops[i]->layer_end, true));
    }
    return STATUS_OK;
}

/* ---- one function per body ---- */

static enum status check_join(const struct vctx *v, const Caravan__Join *j, uint32_t version) {
    if (j->protocol_version != version)
        return VFAIL(v, STATUS_PROTOCOL,
                     "protocol version mismatch: join says %u, envelope says %u",
                     (unsigned)j->protocol_version, (unsigned)version);
    if (!j->caps) return VFAIL(v, STATUS_FORMAT, "join: no capabilities");
    const Caravan__Capabilities *c = j->caps;
    VCHECK(check_text(v, "join.caps.hostname", c->hostname));
    VCHECK(check_texts(v, "join.caps.simd", c->simd, c->n_simd));
    VCHECK(check_float(v, "join.caps.gflops", c->gflops, 0, 1e9f));
    VCHECK(check_texts(v, "join.caps.kernels", c->kernels, c->n_kernels));
    VCHECK(check_blob(v, "join.caps.machine", c->machine, CODEC_MACHINE_BYTES, true));
    VCHECK(check_blob(v, "join.caps.clock", c->clock, CODEC_CLOCK_BYTES, true));
    VCHECK(check_count(v, "join.caps.type_speeds", c->n_type_speeds, c->type_speeds));
    for (size_t i = 0; i < c->n_type_speeds; i++) {
        if (!c->type_speeds[i])
            return VFAIL(v, STATUS_FORMAT, "join.caps.type_speeds[%zu]: missing", i);
        VCHECK(check_float(v, "join.caps.type_speeds.gflops", c->type_speeds[i]->gflops, 0, 1e9f));
    }
    VCHECK(check_text(v, "join.node_name", j->node_name));
    VCHECK(check_text(v, "join.data_endpoint", j->data_endpoint));
    VCHECK(check_text(v, "join.software", j->software));
    VCHECK(check_blob(v, "join.public_key", j->public_key, CODEC_PUBLIC_KEY_BYTES, true));
    VCHECK(check_count(v, "join.cached_models", j->n_cached_models, j->cached_models));
    for (size_t i = 0; i < j->n_cached_models; i++)
        VCHECK(check_blob(v, "join.cached_models", j->cached_models[i], CODEC_FINGERPRINT_BYTES,
                          false));
    VCHECK(check_count(v, "join.cached_slices", j->n_cached_slices, j->cached_slices));
    for (size_t i = 0; i < j->n_cached_slices; i++) {
        const Caravan__CachedSlice *cs = j->cached_slices[i];
        if (!cs) return VFAIL(v, STATUS_FORMAT, "join.cached_slices[%zu]: missing", i);
        VCHECK(check_range(v, "join.cached_slices", cs->layer_first, cs->layer_end, false));
        VCHECK(check_blob(v, "join.cached_slices.model_fingerprint", cs->model_fingerprint,
                          CODEC_FINGERPRINT_BYTES, false));
        VCHECK(check_blob(v, "join.cached_slices.slice_fingerprint", cs->slice_fingerprint,
                          CODEC_FINGERPRINT_BYTES, false));
    }
    return STATUS_OK;
}

static enum status check_join_ack(const struct vctx *v, const Caravan__JoinAck *a) {
    if (a->accepted && a->node_id == 0)
        return VFAIL(v, STATUS_FORMAT, "join_ack: accepted with node id 0");
    return check_text(v, "join_ack.reason", a->reason);
}

static enum status check_assign(const struct vctx *v, const Caravan__Assign *a) {
    int64_t block;
    size_t block_bytes;
    if (!a->model) return VFAIL(v, STATUS_FORMAT, "assign: no model");
    const Caravan__ModelRef *m = a->model;
    VCHECK(check_text(v, "assign.model.name", m->name));
    VCHECK(
        check_blob(v, "assign.model.fingerprint", m->fingerprint, CODEC_FINGERPRINT_BYTES, false));
    if (m->n_layers < 0 || m->n_embd < 0 || m->n_vocab < 0)
        return VFAIL(v, STATUS_FORMAT, "assign.model: negative size");
    VCHECK(check_range(v, "assign", a->layer_first, a->layer_end, false));
    if (m->n_layers > 0 && a->layer_end > m->n_layers)
        return VFAIL(v, STATUS_FORMAT, "assign: layer_end %d past n_layers %d", (int)a->layer_end,
                     (int)m->n_layers);
    VCHECK(check_blob(v, "assign.slice_fingerprint", a->slice_fingerprint, CODEC_FINGERPRINT_BYTES,
                      true));
    if (a->next) VCHECK(check_peer(v, "assign.next", a->next));
    if (a->prev) VCHECK(check_peer(v, "assign.prev", a->prev));
    if (a->n_ctx < 0 || a->n_seq < 0 || a->n_batch < 0)
        return VFAIL(v, STATUS_FORMAT, "assign: negative n_ctx/n_seq/n_batch");
    if (a->n_ctx > CODEC_MAX_CTX || a->n_seq > CODEC_MAX_SEQS || a->n_batch > CODEC_MAX_BATCH)
        return VFAIL(v, STATUS_FORMAT,
                     "assign: n_ctx %d / n_seq %d / n_batch %d past the most (%d / %d / %d)",
                     (int)a->n_ctx, (int)a->n_seq, (int)a->n_batch, CODEC_MAX_CTX, CODEC_MAX_SEQS,
                     CODEC_MAX_BATCH);
    if (!wire_dtype((uint32_t)a->act_dtype, &block, &block_bytes))
        return VFAIL(v, STATUS_FORMAT, "assign: bad act_dtype %d", (int)a->act_dtype);
    VCHECK(check_text(v, "assign.kernels", a->kernels));
    VCHECK(check_count(v, "assign.stages", a->n_stages, a->stages));
    for (size_t i = 0; i < a->n_stages; i++) {
        const Caravan__Stage *st = a->stages[i];
        if (!st) return VFAIL(v, STATUS_FORMAT, "assign.stages[%zu]: missing", i);
        VCHECK(check_range(v, "assign.stages", st->layer_first, st->layer_end, false));
        if (st->peer) VCHECK(check_peer(v, "assign.stages.peer", st->peer));
        VCHECK(check_blob(v, "assign.stages.slice_fingerprint", st->slice_fingerprint,
                          CODEC_FINGERPRINT_BYTES, true));
    }
    return STATUS_OK;
}

static enum status check_assign_ack(const struct vctx *v, const Caravan__AssignAck *a) {
    if ((unsigned)a->state > CARAVAN__ASSIGN_ACK__STATE__STATE_FAILED)
        return VFAIL(v, STATUS_FORMAT, "assign_ack: bad state %d", (int)a->state);
    VCHECK(check_range(v, "assign_ack", a->layer_first, a->layer_end, true));
    VCHECK(check_blob(v, "assign_ack.slice_fingerprint", a->slice_fingerprint,
                      CODEC_FINGERPRINT_BYTES, true));
    return check_text(v, "assign_ack.error", a->error);
}

static enum status check_weight_request(const struct vctx *v, const Caravan__WeightRequest *r) {
    VCHECK(check_blob(v, "weight_request.model_fingerprint", r->model_fingerprint,
                      CODEC_FINGERPRINT_BYTES, true));
    VCHECK(check_blob(v, "weight_request.slice_fingerprint", r->slice_fingerprint,
                      CODEC_FINGERPRINT_BYTES, true));
    return check_range(v, "weight_request", r->layer_first, r->layer_end, false);
}

static enum status check_weight_chunk(const struct vctx *v, const Caravan__WeightChunk *c) {
    VCHECK(check_blob(v, "weight_chunk.slice_fingerprint", c->slice_fingerprint,
                      CODEC_FINGERPRINT_BYTES, false));
    if (c->data.len && !c->data.data) return VFAIL(v, STATUS_FORMAT, "weight_chunk: no data");
    if (c->offset > c->total_bytes || c->data.len > c->total_bytes - c->offset)
        return VFAIL(v, STATUS_FORMAT, "weight_chunk: [%llu, +%zu) past total %llu",
                     (unsigned long long)c->offset, c->data.len,
                     (unsigned long long)c->total_bytes);
    bool at_end = c->data.len == c->total_bytes - c->offset;
    if ((bool)c->last != at_end)
        return VFAIL(v, STATUS_FORMAT, "weight_chunk: last=%d but chunk %s at the end",
                     (int)c->last, at_end ? "ends" : "does not end");
    return STATUS_OK;
}

static enum status check_sampling(const struct vctx *v, const Caravan__Sampling *s) {
    VCHECK(check_float(v, "sampling.temperature", s->temperature, 0, 1e6f));
    VCHECK(check_float(v, "sampling.top_p", s->top_p, 0, 1));
    VCHECK(check_float(v, "sampling.min_p", s->min_p, 0, 1));
    VCHECK(check_float(v, "sampling.repeat_penalty", s->repeat_penalty, 0, 1e6f));
    VCHECK(check_float(v, "sampling.frequency_penalty", s->frequency_penalty, -2, 2));
    VCHECK(check_float(v, "sampling.presence_penalty", s->presence_penalty, -2, 2));
    if (s->top_k < 0) return VFAIL(v, STATUS_FORMAT, "sampling.top_k: %d", (int)s->top_k);
    if (s->top_logprobs > CODEC_MAX_TOP_LOGPROBS)
        return VFAIL(v, STATUS_FORMAT, "sampling.top_logprobs: %u (at most %d)",
                     (unsigned)s->top_logprobs, CODEC_MAX_TOP_LOGPROBS);
    VCHECK(check_count(v, "sampling.recent", s->n_recent, s->recent));
    VCHECK(check_count(v, "sampling.bias_token", s->n_bias_token, s->bias_token));
    VCHECK(check_count(v, "sampling.bias", s->n_bias, s->bias));
    if (s->n_bias_token != s->n_bias || s->n_bias > CODEC_MAX_BIAS)
        return VFAIL(v, STATUS_FORMAT, "sampling.bias: %zu tokens, %zu values (at most %d)",
                     s->n_bias_token, s->n_bias, CODEC_MAX_BIAS);
    for (size_t i = 0; i < s->n_bias; i++)
        if (s->bias_token[i] < 0 || !(s->bias[i] >= -100.0f && s->bias[i] <= 100.0f))
            return VFAIL(v, STATUS_FORMAT, "sampling.bias[%zu]: token %d bias %g", i,
                         (int)s->bias_token[i], (double)s->bias[i]);
    for (size_t i = 0; i < s->n_recent; i++)
        if (s->recent[i] < 0)
            return VFAIL(v, STATUS_FORMAT, "sampling.recent[%zu]: %d", i, (int)s->recent[i]);
    return STATUS_OK;
}

static enum status check_forward(const struct vctx *v, const Caravan__Forward *f) {
    int64_t n = f->n_tokens;
    if (n < 1 || (uint64_t)n > v->lim->max_repeated)
        return VFAIL(v, n < 1 ? STATUS_FORMAT : STATUS_NOMEM, "forward: n_tokens %lld (1..%zu)",
                     (long long)n, v->lim->max_repeated);
    if (f->layer < 0) return VFAIL(v, STATUS_FORMAT, "forward: layer %d", (int)f->layer);
    VCHECK(check_count(v, "forward.seq_id", f->n_seq_id, f->seq_id));
    VCHECK(check_count(v, "forward.kv_slot", f->n_kv_slot, f->kv_slot));
    VCHECK(check_count(v, "forward.pos", f->n_pos, f->pos));
    VCHECK(check_count(v, "forward.token", f->n_token, f->token));
    VCHECK(check_count(v, "forward.want", f->n_want, f->want));
    VCHECK(check_len(v, "forward.seq_id", f->n_seq_id, n, false));
    VCHECK(check_len(v, "forward.kv_slot", f->n_kv_slot, n, false));
    VCHECK(check_len(v, "forward.pos", f->n_pos, n, false));
    VCHECK(check_len(v, "forward.want", f->n_want, n, true));
    if (f->n_token > 0 && f->hidden)
        return VFAIL(v, STATUS_FORMAT, "forward: both token ids and hidden states");
    if (f->n_token > 0) {
        VCHECK(check_len(v, "forward.token", f->n_token, n, false));
        for (size_t i = 0; i < f->n_token; i++)
            if (f->token[i] < 0)
                return VFAIL(v, STATUS_FORMAT, "forward.token[%zu]: %d", i, (int)f->token[i]);
    } else if (f->hidden) {
        VCHECK(check_tensor(v, "forward.hidden", f->hidden, 2, n));
    } else {
        return VFAIL(v, STATUS_FORMAT, "forward: neither token ids nor hidden states");
    }
    for (int64_t i = 0; i < n; i++)
        if (f->kv_slot[i] < 0 || f->pos[i] < 0)
            return VFAIL(v, STATUS_FORMAT, "forward: token %lld has kv_slot %d pos %d",
                         (long long)i, (int)f->kv_slot[i], (int)f->pos[i]);
    VCHECK(check_count(v, "forward.enter_layer", f->n_enter_layer, f->enter_layer));
    VCHECK(check_len(v, "forward.enter_layer", f->n_enter_layer, n, true));
    if (f->n_enter_layer > 0 && !f->hidden)
        return VFAIL(v, STATUS_FORMAT, "forward: enter_layer without hidden states");
    for (size_t i = 0; i < f->n_enter_layer; i++)
        if (f->enter_layer[i] < f->layer)
            return VFAIL(v, STATUS_FORMAT, "forward.enter_layer[%zu]: %d below layer %d", i,
                         (int)f->enter_layer[i], (int)f->layer);
    if (f->kv) {
        if (f->n_enter_layer == 0)
            return VFAIL(v, STATUS_FORMAT, "forward: kv without enter_layer");
        VCHECK(check_tensor(v, "forward.kv", f->kv, 1, -1));
        if (f->kv->dtype != CARAVAN__DTYPE__DTYPE_F32)
            return VFAIL(v, STATUS_FORMAT, "forward.kv: dtype %d, want F32", (int)f->kv->dtype);
    }
    VCHECK(check_count(v, "forward.score", f->n_score, f->score));
    VCHECK(check_len(v, "forward.score", f->n_score, n, true));
    for (size_t i = 0; i < f->n_score; i++)
        if (f->score[i] < -1 || (f->score[i] >= 0 && f->n_want && !f->want[i]))
            return VFAIL(v, STATUS_FORMAT, "forward.score[%zu]: %d%s", i, (int)f->score[i],
                         f->score[i] < -1 ? "" : " on a row not wanted");
    if (f->ahead && (f->layer != 0 || f->n_token == 0 || f->n_enter_layer || f->kv))
        return VFAIL(v, STATUS_FORMAT, "forward: computed-ahead step is not token ids at layer 0");
    VCHECK(check_count(v, "forward.sampling", f->n_sampling, f->sampling));
    for (size_t i = 0; i < f->n_sampling; i++) {
        if (!f->sampling[i]) return VFAIL(v, STATUS_FORMAT, "forward.sampling[%zu]: missing", i);
        VCHECK(check_sampling(v, f->sampling[i]));
    }
    return check_hops(v, f->hops, f->n_hops);
}

static enum status check_result(const struct vctx *v, const Caravan__Result *r) {
    int64_t n = r->n_rows;
    if (n < 0 || (uint64_t)n > v->lim->max_repeated)
        return VFAIL(v, n < 0 ? STATUS_FORMAT : STATUS_NOMEM, "result: n_rows %lld (0..%zu)",
                     (long long)n, v->lim->max_repeated);
    VCHECK(check_count(v, "result.seq_id", r->n_seq_id, r->seq_id));
    VCHECK(check_count(v, "result.pos", r->n_pos, r->pos));
    VCHECK(check_count(v, "result.token", r->n_token, r->token));
    VCHECK(check_count(v, "result.logprob", r->n_logprob, r->logprob));
    VCHECK(check_len(v, "result.seq_id", r->n_seq_id, n, false));
    VCHECK(check_len(v, "result.pos", r->n_pos, n, false));
    VCHECK(check_len(v, "result.token", r->n_token, n, true));
    VCHECK(check_len(v, "result.logprob", r->n_logprob, n, true));
    if (r->n_logprob && !r->n_token)
        return VFAIL(v, STATUS_FORMAT, "result: logprobs without tokens");
    for (size_t i = 0; i < r->n_token; i++)
        if (r->token[i] < 0)
            return VFAIL(v, STATUS_FORMAT, "result.token[%zu]: %d", i, (int)r->token[i]);
    for (size_t i = 0; i < r->n_logprob; i++)
        if (isnan(r->logprob[i]) || r->logprob[i] > 0)
            return VFAIL(v, STATUS_FORMAT, "result.logprob[%zu]: %g", i, (double)r->logprob[i]);
    for (int64_t i = 0; i < n; i++)
        if (r->pos[i] < 0) return VFAIL(v, STATUS_FORMAT, "result.pos[%lld] < 0", (long long)i);
    if (r->top_n > CODEC_MAX_TOP_LOGPROBS)
        return VFAIL(v, STATUS_FORMAT, "result.top_n: %u (at most %d)", (unsigned)r->top_n,
                     CODEC_MAX_TOP_LOGPROBS);
    VCHECK(check_count(v, "result.top_token", r->n_top_token, r->top_token));
    VCHECK(check_count(v, "result.top_logprob", r->n_top_logprob, r->top_logprob));
    VCHECK(check_len(v, "result.top_token", r->n_top_token, n * (int64_t)r->top_n, false));
    VCHECK(check_len(v, "result.top_logprob", r->n_top_logprob, n * (int64_t)r->top_n, false));
    if (r->top_n && !r->n_token)
        return VFAIL(v, STATUS_FORMAT, "result: top log-probabilities without tokens");
    for (size_t i = 0; i < r->n_top_token; i++)
        if (r->top_token[i] < 0 || isnan(r->top_logprob[i]) || r->top_logprob[i] > 0)
            return VFAIL(v, STATUS_FORMAT, "result.top_*[%zu]: token %d log-probability %g", i,
                         (int)r->top_token[i], (double)r->top_logprob[i]);
    if (r->logits) VCHECK(check_tensor(v, "result.logits", r->logits, 2, n));
    if (n > 0 && !r->n_token && !r->logits)
        return VFAIL(v, STATUS_FORMAT, "result: %lld rows but neither tokens nor logits",
                     (long long)n);
    return check_hops(v, r->hops, r->n_hops);
}

static enum status check_heartbeat(const struct vctx *v, const Caravan__Heartbeat *h) {
    if ((unsigned)h->state > CARAVAN__HEARTBEAT__STATE__STATE_DRAINING)
        return VFAIL(v, STATUS_FORMAT, "heartbeat: bad state %d", (int)h->state);
    VCHECK(check_float(v, "heartbeat.cpu_load", h->cpu_load, 0, 1e6f));
    VCHECK(check_float(v, "heartbeat.ms_per_token", h->ms_per_token, 0, 1e9f));
    return check_range(v, "heartbeat", h->layer_first, h->layer_end, true);
}

static enum status check_release(const struct vctx *v, const Caravan__Release *r) {
    VCHECK(check_count(v, "release.seqs", r->n_seqs, r->seqs));
    for (size_t i = 0; i < r->n_seqs; i++) {
        const Caravan__SeqRange *s = r->seqs[i];
        if (!s) return VFAIL(v, STATUS_FORMAT, "release.seqs[%zu]: missing", i);
        if (s->kv_slot < 0 || s->from_pos < 0)
            return VFAIL(v, STATUS_FORMAT, "release.seqs[%zu]: kv_slot %d from_pos %d", i,
                         (int)s->kv_slot, (int)s->from_pos);
    }
    return STATUS_OK;
}

static enum status check_drain(const struct vctx *v, const Caravan__Drain *d) {
    return check_text(v, "drain.reason", d->reason);
}

static enum status check_error(const struct vctx *v, const Caravan__Error *e) {
    /* Any code: a newer peer may know more, and an error should get through. */
    return check_text(v, "error.text", e->text);
}

enum status codec_validate(const Caravan__Envelope *msg, const struct codec_limits *lim, char *err,
                           size_t errlen) {
    struct codec_limits def = codec_limits_default();
    struct vctx vc = {.lim = lim ? lim : &def, .err = err, .errlen = errlen};
    struct vctx *v = &vc;
    if (err && errlen) err[0] = '\0';
    if (!msg || msg->base.descriptor != &caravan__envelope__descriptor)
        return VFAIL(v, STATUS_FORMAT, "not an envelope");
    if (msg->version != CARAVAN_PROTOCOL_VERSION)
        return VFAIL(v, STATUS_PROTOCOL,
                     "protocol version mismatch: peer speaks %u, this node speaks %u",
                     (unsigned)msg->version, CARAVAN_PROTOCOL_VERSION);
    /* Every body pointer shares one union slot. */
    if (msg->body_case != CARAVAN__ENVELOPE__BODY__NOT_SET && !msg->join)
        return VFAIL(v, STATUS_FORMAT, "%s body set but missing", codec_body_name(msg->body_case));
    switch (msg->body_case) {
    case CARAVAN__ENVELOPE__BODY_JOIN: return check_join(v, msg->join, msg->version);
    case CARAVAN__ENVELOPE__BODY_JOIN_ACK: return check_join_ack(v, msg->join_ack);
    case CARAVAN__ENVELOPE__BODY_ASSIGN: return check_assign(v, msg->assign);
    case CARAVAN__ENVELOPE__BODY_ASSIGN_ACK: return check_assign_ack(v, msg->assign_ack);
    case CARAVAN__ENVELOPE__BODY_WEIGHT_REQUEST:
        return check_weight_request(v, msg->weight_request);
    case CARAVAN__ENVELOPE__BODY_WEIGHT_CHUNK: return check_weight_chunk(v, msg->weight_chunk);
    case CARAVAN__ENVELOPE__BODY_FORWARD: return check_forward(v, msg->forward);
    case CARAVAN__ENVELOPE__BODY_RESULT: return check_result(v, msg->result);
    case CARAVAN__ENVELOPE__BODY_HEARTBEAT: return check_heartbeat(v, msg->heartbeat);
    case CARAVAN__ENVELOPE__BODY_RELEASE: return check_release(v, msg->release);
    case CARAVAN__ENVELOPE__BODY_DRAIN: return check_drain(v, msg->drain);
    case CARAVAN__ENVELOPE__BODY_ERROR: return check_error(v, msg->error);
    case CARAVAN__ENVELOPE__BODY__NOT_SET: return VFAIL(v, STATUS_FORMAT, "envelope has no body");
    default: return VFAIL(v, STATUS_FORMAT, "unknown body %d", (int)msg->body_case);
    }
}

/* ==== Decoding ==== */

enum status codec_decode(const uint8_t *buf, size_t len, const struct codec_limits *lim,
                         Caravan__Envelope **out, char *err, size_t errlen) {
    struct codec_limits def = codec_limits_default();
    if (!lim) lim = &def;
    *out = NULL;
    if (err && errlen) err[0] = '\0';
    if (len > lim->max_message_bytes)
        return fail(err, errlen, STATUS_NOMEM, "message of %zu bytes (limit %zu)", len,
                    lim->max_message_bytes);
    if (!buf && len) return fail(err, errlen, STATUS_FORMAT, "no buffer");

    /* The version first: a peer of another version gets that answer even when the rest of
     * its message means nothing to this schema (encoders write field 1 first). */
    struct codec_header h;
    enum status ps = codec_peek(buf, len, &h);
    if (h.version != 0 && h.version != CARAVAN_PROTOCOL_VERSION)
        return fail(err, errlen, STATUS_PROTOCOL,
                    "protocol version mismatch: peer speaks %u, this node speaks %u",
                    (unsigned)h.version, CARAVAN_PROTOCOL_VERSION);
    if (ps != STATUS_OK) return fail(err, errlen, STATUS_FORMAT, "malformed envelope header");
    if (h.version == 0) return fail(err, errlen, STATUS_FORMAT, "no protocol version");

    struct walk w = {.lim = lim, .err = err, .errlen = errlen};
    enum status s = wire_walk(&w, &caravan__envelope__descriptor, buf, len, 0);
    if (s != STATUS_OK) return s;

    /* len <= max_message_bytes; the multiplication is checked for absurd limits anyway. */
    size_t budget = len > (SIZE_MAX - BUDGET_FIXED) / BUDGET_FACTOR
                        ? SIZE_MAX
                        : len * BUDGET_FACTOR + BUDGET_FIXED;
    struct budget b = {.left = budget, .exceeded = false};
    ProtobufCAllocator alloc = {.alloc = budget_alloc, .free = budget_free, .allocator_data = &b};
    Caravan__Envelope *msg = caravan__envelope__unpack(&alloc, len, buf);
    if (!msg) {
        if (b.exceeded)
            return fail(err, errlen, STATUS_NOMEM, "unpacking needs more than %zu bytes", budget);
        return fail(err, errlen, STATUS_FORMAT, "protobuf-c could not unpack the envelope");
    }
    s = codec_validate(msg, lim, err, errlen);
    if (s != STATUS_OK) {
        LOG(LOG_DEBUG, "refused %s: %s", codec_body_name(msg->body_case), err ? err : "");
        caravan__envelope__free_unpacked(msg, NULL);
        return s;
    }
    *out = msg;
    return STATUS_OK;
}

void codec_free(Caravan__Envelope **msg_p) {
    if (!msg_p || !*msg_p) return;
    caravan__envelope__free_unpacked(*msg_p, NULL);
    *msg_p = NULL;
}

/* ==== Encoding ==== */

void codec_envelope_init(Caravan__Envelope *msg, uint64_t epoch, uint64_t msg_id) {
    caravan__envelope__init(msg);
    msg->version = CARAVAN_PROTOCOL_VERSION;
    msg->epoch = epoch;
    msg->msg_id = msg_id;
}

/* Validates msg against lim (NULL = defaults) and returns its encoded size in *len. */
static enum status encode_check(const Caravan__Envelope *msg, const struct codec_limits *lim,
                                size_t *len, char *err, size_t errlen) {
    struct codec_limits def = codec_limits_default();
    if (!lim) lim = &def;
    enum status s = codec_validate(msg, lim, err, errlen);
    if (s != STATUS_OK) return s;
    *len = caravan__envelope__get_packed_size(msg);
    if (*len > lim->max_message_bytes)
        return fail(err, errlen, STATUS_NOMEM, "%s message of %zu bytes (limit %zu)",
                    codec_body_name(msg->body_case), *len, lim->max_message_bytes);
    return STATUS_OK;
}

enum status codec_encode(const Caravan__Envelope *msg, uint8_t **out, size_t *len, char *err,
                         size_t errlen) {
    return codec_encode_lim(msg, NULL, out, len, err, errlen);
}

enum status codec_encode_lim(const Caravan__Envelope *msg, const struct codec_limits *lim,
                             uint8_t **out, size_t *len, char *err, size_t errlen) {
    *out = NULL;
    *len = 0;
    size_t n;
    enum status s = encode_check(msg, lim, &n, err, errlen);
    if (s != STATUS_OK) return s;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) return fail(err, errlen, STATUS_NOMEM, "out of memory for %zu bytes", n);
    size_t packed = caravan__envelope__pack(msg, buf);
    if (packed != n) {
        free(buf);
        return fail(err, errlen, STATUS_FORMAT, "packed %zu bytes, expected %zu", packed, n);
    }
    *out = buf;
    *len = n;
    return STATUS_OK;
}

enum status codec_encode_into(const Caravan__Envelope *msg, uint8_t *buf, size_t cap, size_t *len,
                              char *err, size_t errlen) {
    size_t n;
    *len = 0;
    enum status s = encode_check(msg, NULL, &n, err, errlen);
    if (s != STATUS_OK) return s;
    *len = n;
    if (n > cap) return fail(err, errlen, STATUS_NOMEM, "needs %zu bytes, buffer has %zu", n, cap);
    size_t packed = caravan__envelope__pack(msg, buf);
    if (packed != n)
        return fail(err, errlen, STATUS_FORMAT, "packed %zu bytes, expected %zu", packed, n);
    return STATUS_OK;
}

enum status codec_encode_error(uint64_t epoch, uint64_t msg_id, uint32_t sender,
                               Caravan__Error__Code code, const char *text, uint64_t ref_msg_id,
                               uint8_t **out, size_t *len) {
    char buf[4096 + 1];
    struct codec_limits lim = codec_limits_default();
    size_t cap = lim.max_string_bytes < sizeof(buf) - 1 ? lim.max_string_bytes : sizeof(buf) - 1;
    size_t n = 0;
    if (text) {
        /* Keep the longest valid UTF-8 prefix that fits; replace anything invalid by '?'. */
        const uint8_t *t = (const uint8_t *)text;
        size_t tl = strlen(text);
        for (size_t i = 0; i < tl && n < cap;) {
            size_t k = 1;
            if (t[i] >= 0x80) {
                k = (t[i] & 0xe0) == 0xc0   ? 2
                    : (t[i] & 0xf0) == 0xe0 ? 3
                    : (t[i] & 0xf8) == 0xf0 ? 4
                                            : 1;
                if (k > tl - i || !utf8_valid(t + i, k)) k = 0;
            }
            if (k == 0) {
                buf[n++] = '?';
                i++;
                continue;
            }
            if (n + k > cap) break;
            memcpy(buf + n, t + i, k);
            n += k;
            i += k;
        }
    }
    buf[n] = '\0';

    Caravan__Error e = CARAVAN__ERROR__INIT;
    e.code = code;
    e.text = buf;
    e.ref_msg_id = ref_msg_id;
    Caravan__Envelope env;
    codec_envelope_init(&env, epoch, msg_id);
    env.sender = sender;
    env.body_case = CARAVAN__ENVELOPE__BODY_ERROR;
    env.error = &e;
    return codec_encode(&env, out, len, NULL, 0);
}

/* ==== Helpers ==== */

const char *codec_body_name(uint32_t body_case) {
    switch (body_case) {
    case CARAVAN__ENVELOPE__BODY__NOT_SET: return "none";
    case CARAVAN__ENVELOPE__BODY_JOIN: return "join";
    case CARAVAN__ENVELOPE__BODY_JOIN_ACK: return "join_ack";
    case CARAVAN__ENVELOPE__BODY_ASSIGN: return "assign";
    case CARAVAN__ENVELOPE__BODY_ASSIGN_ACK: return "assign_ack";
    case CARAVAN__ENVELOPE__BODY_WEIGHT_REQUEST: return "weight_request";
    case CARAVAN__ENVELOPE__BODY_WEIGHT_CHUNK: return "weight_chunk";
    case CARAVAN__ENVELOPE__BODY_FORWARD: return "forward";
    case CARAVAN__ENVELOPE__BODY_RESULT: return "result";
    case CARAVAN__ENVELOPE__BODY_HEARTBEAT: return "heartbeat";
    case CARAVAN__ENVELOPE__BODY_RELEASE: return "release";
    case CARAVAN__ENVELOPE__BODY_DRAIN: return "drain";
    case CARAVAN__ENVELOPE__BODY_ERROR: return "error";
    default: return "unknown";
    }
}

Caravan__Error__Code codec_error_code(enum status s) {
    switch (s) {
    case STATUS_PROTOCOL: return CARAVAN__ERROR__CODE__CODE_VERSION;
    case STATUS_NOMEM: return CARAVAN__ERROR__CODE__CODE_TOO_LARGE;
    case STATUS_OK: return CARAVAN__ERROR__CODE__CODE_UNSPECIFIED;
    default: return CARAVAN__ERROR__CODE__CODE_MALFORMED;
    }
}
