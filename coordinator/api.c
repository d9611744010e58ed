/* api: the OpenAI-compatible HTTP API (api.h). libmicrohttpd runs one thread per connection,
 * so a request simply blocks in serve_req_wait (100 ms at a time, to notice a client that
 * hung up or an api_stop) while the serving loop pushes its tokens. Streamed answers are a
 * callback response whose reader does the same waiting. JSON is read and written with cJSON.
 *
 * Text: the generated ids go through a tokenizer_decoder (split UTF-8 is held back), then
 * through the stop-string matcher, which holds back a tail that could still become a stop
 * string; what is left is final and goes to the client. */
#include "api.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include "api_internal.h"
#include "log.h"

#define API_MAX_BODY (8u << 20)
#define API_MAX_STOP 16
#define API_MAX_PROMPTS 16 /* completions: prompts in one request (each is a request to serve) */
#define API_MAX_BIAS 300   /* logit_bias entries (OpenAI's limit) */
#define API_WAIT_MS 100
#define API_CONNECTIONS 512u       /* HTTP connections at once, one thread each */
#define API_CONNECTIONS_PER_IP 64u /* ... from one address (at least twice --max-seqs + queue) */

/* --cors: the origins whose pages may read the answers (scheme://host[:port] each), or any. */
#define API_CORS_MAX 16
struct cors {
    int n;    /* 0: no CORS headers */
    bool any; /* "*" */
    char origin[API_CORS_MAX][256];
};

struct api {
    struct api_config cfg;
    struct cors cors;
    bool local_open; /* loopback without a key: only localhost (and under) or IP literals as Host */
    char key[512];
    size_t key_len; /* 0: no key required */
    char bos_text[128], eos_text[128];
    struct MHD_Daemon *mhd;
    char url[320];
    atomic_bool stopping;
};

/* One HTTP request: its body as it arrives. */
struct conn {
    char *body;
    size_t len, cap;
    bool too_big;
};

/* An OpenAI-style error about to be sent. */
struct api_err {
    unsigned status;
    const char *type;
    const char *param;
    const char *code;
    char message[320];
};

/* ==== Small helpers =============================================================== */

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) abort();
    return p;
}

static void set_err(struct api_err *e, unsigned status, const char *param, const char *code,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void set_err(struct api_err *e, unsigned status, const char *param, const char *code,
                    const char *fmt, ...) {
    e->status = status;
    e->param = param;
    e->code = code;
    e->type = status == 401   ? "authentication_error"
              : status == 429 ? "rate_limit_error"
              : status >= 500 ? "server_error"
                              : "invalid_request_error";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

/* A copy of s[0..n) that is valid UTF-8 for JSON: invalid or NUL bytes become U+FFFD. */
static char *utf8_clean(const char *s, size_t n) {
    char *out = xmalloc(n * 3 + 1);
    size_t o = 0;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        bool ok = len > 0 && c != 0 && i + len <= n;
        for (size_t k = 1; ok && k < len; k++) ok = (u[i + k] & 0xC0) == 0x80;
        if (ok && len == 2) ok = c >= 0xC2;
        if (ok && len == 3) {
            unsigned cp = ((c & 0x0F) << 12) | ((u[i + 1] & 0x3Fu) << 6) | (u[i + 2] & 0x3Fu);
            ok = cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF);
        }
        if (ok && len == 4) {
            unsigned cp = ((c & 0x07) << 18) | ((u[i + 1] & 0x3Fu) << 12) |
                          ((u[i + 2] & 0x3Fu) << 6) | (u[i + 3] & 0x3Fu);
            ok = cp >= 0x10000 && cp <= 0x10FFFF;
        }
        if (ok) {
            memcpy(out + o, s + i, len);
            o += len;
            i += len;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    out[o] = 0;
    return out;
}

static cJSON *json_text(const char *s, size_t n) {
    char *clean = utf8_clean(s, n);
    cJSON *j = cJSON_CreateString(clean);
    free(clean);
    return j;
}

/* Constant time in the length of the expected key. */
static bool key_equal(const char *expected, size_t n, const char *given, size_t given_len) {
    volatile unsigned char diff = (unsigned char)(given_len != n);
    for (size_t i = 0; i < n; i++) {
        unsigned char g = i < given_len ? (unsigned char)given[i] : 0;
        diff |= (unsigned char)(g ^ (unsigned char)expected[i]);
    }
    return diff == 0;
}

/* The client closed its end (or the socket failed). */
static bool client_gone(int fd) {
    if (fd < 0) return false;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return false;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

static int connection_fd(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

static void count_rejected(api_t *api) {
    struct serve_metrics *m = serve_queue_metrics(api->cfg.queue);
    m->requests_rejected++;
    serve_queue_metrics_done(api->cfg.queue);
}

/* ==== Responses ===================================================================== */

static bool cors_allows(const struct cors *cors, const char *origin) {
    if (!origin || !cors->n) return false;
    if (cors->any) return true;
    for (int i = 0; i < cors->n; i++)
        if (!strcasecmp(origin, cors->origin[i])) return true;
    return false;
}

/* Queues resp (and lets it go): every response goes out here, so a page of an origin --cors
 * allows may read each of them, errors and streams included. */
static enum MHD_Result queue(api_t *api, struct MHD_Connection *c, unsigned status,
                             struct MHD_Response *resp) {
    const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    if (cors_allows(&api->cors, origin)) {
        /* origin equals a listed one (no control characters): safe to echo */
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", api->cors.any ? "*" : origin);
        MHD_add_response_header(resp, "Access-Control-Expose-Headers", "Retry-After");
    }
    if (api->cors.n && !api->cors.any) MHD_add_response_header(resp, "Vary", "Origin");
    enum MHD_Result ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result send_body(api_t *api, struct MHD_Connection *c, unsigned status, char *body,
                                 const char *content_type, const char *allow) {
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (allow) MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    /* busy or not serving yet: clients that retry (the openai npm client does, twice by
     * default) wait this long first instead of their own backoff (0.5 s, then 1 s) */
    if (status == 429 || status == 503)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    return queue(api, c, status, resp);
}

static enum MHD_Result send_json(api_t *api, struct MHD_Connection *c, unsigned status, cJSON *j) {
    char *body = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!body) return MHD_NO;
    return send_body(api, c, status, body, "application/json", NULL);
}

static cJSON *error_json(const struct api_err *e) {
    cJSON *root = cJSON_CreateObject();
    cJSON *err = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(err, "message", e->message);
    cJSON_AddStringToObject(err, "type", e->type);
    if (e->param)
        cJSON_AddStringToObject(err, "param", e->param);
    else
        cJSON_AddNullToObject(err, "param");
    if (e->code)
        cJSON_AddStringToObject(err, "code", e->code);
    else
        cJSON_AddNullToObject(err, "code");
    return root;
}

static enum MHD_Result send_error(api_t *api, struct MHD_Connection *c, const struct api_err *e,
                                  const char *allow) {
    cJSON *j = error_json(e);
    char *body = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!body) return MHD_NO;
    return send_body(api, c, e->status, body, "application/json", allow);
}

/* A 403 (origin or Host): counted, so a page that --cors should name shows up in /metrics. */
static enum MHD_Result forbid(api_t *api, struct MHD_Connection *c, const struct api_err *e) {
    struct serve_metrics *m = serve_queue_metrics(api->cfg.queue);
    m->requests_forbidden++;
    serve_queue_metrics_done(api->cfg.queue);
    return send_error(api, c, e, NULL);
}

/* ==== Parsing a generation request ==================================================== */

struct gen {
    bool chat, stream, include_usage;
    bool echo; /* completions: the prompt's text (and log-probabilities) before the answer */
    struct serve_req_params params; /* what every prompt shares (params.prompt unused) */
    int n_prompts;                  /* 1 .. API_MAX_PROMPTS (chat: 1) */
    int n_choices;                  /* 'n': choices a prompt, n_prompts * n_choices requests */
    int n_bias;                     /* logit_bias */
    int32_t bias_token[API_MAX_BIAS];
    float bias[API_MAX_BIAS];
    int32_t *prompt[API_MAX_PROMPTS]; /* token ids, owned until submitted */
    int32_t n_prompt[API_MAX_PROMPTS];
    int32_t max_tokens[API_MAX_PROMPTS]; /* the request's, clamped to each prompt's room */
    char *stop[API_MAX_STOP];            /* borrowed from the cJSON tree */
    size_t stop_len[API_MAX_STOP];
    int n_stop;
};

/* A number field: false + error when present with the wrong type or outside [lo, hi]. */
static bool get_num(const cJSON *root, const char *name, double lo, double hi, bool integer,
                    double *out, bool *present, struct api_err *e) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, name);
    *present = false;
    if (!j || cJSON_IsNull(j)) return true;
    if (!cJSON_IsNumber(j)) {
        set_err(e, 400, name, "invalid_type", "'%s' must be a number", name);
        return false;
    }
    double v = j->valuedouble;
    if (!(v >= lo && v <= hi)) { /* first: the integer test below needs v in int64 range */
        set_err(e, 400, name, "invalid_value", "'%s' must be between %g and %g", name, lo, hi);
        return false;
    }
    if (integer && (v != (double)(int64_t)v)) {
        set_err(e, 400, name, "invalid_type", "'%s' must be an integer", name);
        return false;
    }
    *out = v;
    *present = true;
    return true;
}

static bool get_bool(const cJSON *root, const char *name, bool *out, struct api_err *e) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, name);
    if (!j || cJSON_IsNull(j)) return true;
    if (!cJSON_IsBool(j)) {
        set_err(e, 400, name, "invalid_type", "'%s' must be a boolean", name);
        return false;
    }
    *out = cJSON_IsTrue(j);
    return true;
}

/* Tokenizes text into a malloc'd array. */
static bool tokenize(const api_t *api, const char *text, size_t len, bool parse_special,
                     int32_t **ids, int32_t *n, struct api_err *e) {
    int64_t need = tokenizer_encode(api->cfg.tokenizer, text, len, true, parse_special, NULL, 0);
    if (need < 0) {
        set_err(e, 400, "prompt", NULL, "the prompt could not be tokenized");
        return false;
    }
    if (need >= api->cfg.n_ctx) {
        set_err(e, 400, "prompt", "context_length_exceeded",
                "the prompt is too long: %lld tokens, the context holds %d", (long long)need,
                (int)api->cfg.n_ctx);
        return false;
    }
    int32_t *out = xmalloc(sizeof *out * (size_t)(need ? need : 1));
    int64_t got = tokenizer_encode(api->cfg.tokenizer, text, len, true, parse_special, out, need);
    if (got != need) {
        free(out);
        set_err(e, 400, "prompt", NULL, "the prompt could not be tokenized");
        return false;
    }
    *ids = out;
    *n = (int32_t)need;
    return true;
}

/* Token ids (a JSON array of numbers): a prompt (limit n_ctx), else up to 8 Mi of them. */
static bool parse_ids(const api_t *api, const cJSON *p, bool prompt, int32_t **ids_out,
                      int32_t *n_out, struct api_err *e) {
    int n = cJSON_GetArraySize(p);
    if (n >= (prompt ? api->cfg.n_ctx : 8 << 20)) {
        set_err(e, 400, "prompt", "context_length_exceeded",
                "the prompt is too long: %d tokens, the context holds %d", n, (int)api->cfg.n_ctx);
        return false;
    }
    int32_t *ids = xmalloc(sizeof *ids * (size_t)(n ? n : 1));
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, p) {
        double v = cJSON_IsNumber(it) ? it->valuedouble : -1;
        if (v < 0 || v >= tokenizer_n_tokens(api->cfg.tokenizer) || v != (double)(int32_t)v) {
            free(ids);
            set_err(e, 400, "prompt", "invalid_value", "token ids must be integers 0..%d",
                    (int)tokenizer_n_tokens(api->cfg.tokenizer) - 1);
            return false;
        }
        ids[i++] = (int32_t)v;
    }
    *ids_out = ids;
    *n_out = n;
    return true;
}

/* 'prompt': a string, a list of token ids, or a list of up to API_MAX_PROMPTS of either (each
 * answered as its own choice, with its own index). */
static bool parse_prompt(const api_t *api, const cJSON *root, struct gen *g, struct api_err *e) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "prompt");
    g->n_prompts = 0;
    if (cJSON_IsString(p)) {
        if (!tokenize(api, p->valuestring, strlen(p->valuestring), false, &g->prompt[0],
                      &g->n_prompt[0], e))
            return false;
        g->n_prompts = 1;
        return true;
    }
    int n = cJSON_IsArray(p) ? cJSON_GetArraySize(p) : 0;
    if (n > 0 && cJSON_IsNumber(p->child)) { /* one prompt of token ids */
        if (!parse_ids(api, p, true, &g->prompt[0], &g->n_prompt[0], e)) return false;
        g->n_prompts = 1;
        return true;
    }
    if (n < 1 || n > API_MAX_PROMPTS) {
        set_err(e, 400, "prompt", p ? "invalid_value" : "missing_required_parameter",
                "'prompt' must be a non-empty string or list of token ids, or a list of 1 to %d "
                "of them",
                API_MAX_PROMPTS);
        return false;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, p) {
        int32_t **ids = &g->prompt[g->n_prompts], *len = &g->n_prompt[g->n_prompts];
        bool ok = false;
        if (cJSON_IsString(it))
            ok = tokenize(api, it->valuestring, strlen(it->valuestring), false, ids, len, e);
        else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) > 0)
            ok = parse_ids(api, it, true, ids, len, e);
        else
            set_err(e, 400, "prompt", "invalid_type",
                    "each of the prompts must be a non-empty string or list of token ids");
        if (!ok) return false;
        g->n_prompts++;
    }
    return true;
}

static void gen_free_prompts(struct gen *g) {
    for (int i = 0; i < g->n_prompts; i++) {
        free(g->prompt[i]);
        g->prompt[i] = NULL;
    }
}

/* A message's content: a string, null, or an array of {"type":"text","text":...} parts. */
static char *message_content(const cJSON *content, struct api_err *e) {
    if (!content || cJSON_IsNull(content)) return strdup("");
    if (cJSON_IsString(content)) return strdup(content->valuestring);
    if (!cJSON_IsArray(content)) goto bad;
    size_t len = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, content) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") || !cJSON_IsString(text))
            goto bad;
        len += strlen(text->valuestring);
    }
    char *out = xmalloc(len + 1);
    out[0] = 0;
    cJSON_ArrayForEach(part, content) {
        strcat(out, cJSON_GetObjectItemCaseSensitive(part, "text")->valuestring);
    }
    return out;
bad:
    set_err(e, 400, "messages", "invalid_type",
            "a message's 'content' must be a string or a list of text parts");
    return NULL;
}

static bool parse_messages(const api_t *api, const cJSON *root, struct gen *g, struct api_err *e) {
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
    int n = cJSON_IsArray(msgs) ? cJSON_GetArraySize(msgs) : 0;
    if (n <= 0) {
        set_err(e, 400, "messages", msgs ? "invalid_type" : "missing_required_parameter",
                "'messages' must be a non-empty list of {role, content}");
        return false;
    }
    struct chat_message *cm = calloc((size_t)n, sizeof *cm);
    char **contents = calloc((size_t)n, sizeof *contents);
    if (!cm || !contents) abort();
    bool ok = false;
    char *text = NULL;
    size_t text_len = 0;
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsString(role)) {
            set_err(e, 400, "messages", "invalid_type", "messages[%d].role must be a string", i);
            goto done;
        }
        contents[i] = message_content(cJSON_GetObjectItemCaseSensitive(m, "content"), e);
        if (!contents[i]) goto done;
        cm[i].role = role->valuestring;
        cm[i].content = contents[i];
        i++;
    }
    if (chat_render(api->cfg.chat_format, cm, (size_t)n, true, api->bos_text, api->eos_text, &text,
                    &text_len) != STATUS_OK) {
        set_err(e, 500, NULL, NULL, "the chat template could not be applied");
        goto done;
    }
    ok = tokenize(api, text, text_len, true, &g->prompt[0], &g->n_prompt[0], e);
    if (ok) g->n_prompts = 1;
    if (!ok) e->param = "messages";
done:
    for (int k = 0; k < n; k++) free(contents[k]);
    free(contents);
    free(cm);
    free(text);
    return ok;
}

/* Log-probabilities of the generated tokens (the raw logits' log-softmax, before temperature,
 * penalties and filters). Chat: 'logprobs': true, and 'top_logprobs': N (0-20) most likely
 * tokens at each place. Completions (OpenAI's older form): 'logprobs': N (0-20; OpenAI allows
 * 5), where each place lists the N most likely and the sampled token. */
static bool parse_logprobs(const cJSON *root, struct gen *g, struct api_err *e) {
    double top = 0, n = 0;
    bool have_top = false, have_n = false, on = false;
    if (!get_num(root, "top_logprobs", 0, SERVE_TOP_MAX, true, &top, &have_top, e)) return false;
    if (g->chat) {
        if (!get_bool(root, "logprobs", &on, e)) return false;
        if (top > 0 && !on) {
            set_err(e, 400, "top_logprobs", "invalid_value",
                    "'top_logprobs' needs 'logprobs': true");
            return false;
        }
    } else {
        if (top > 0) {
            set_err(e, 400, "top_logprobs", "invalid_value",
                    "completions take the number of most likely tokens as 'logprobs' (0-%d)",
                    SERVE_TOP_MAX);
            return false;
        }
        const cJSON *lp = cJSON_GetObjectItemCaseSensitive(root, "logprobs");
        if (cJSON_IsBool(lp)) { /* not OpenAI's form for completions, but unambiguous */
            on = cJSON_IsTrue(lp);
        } else {
            if (!get_num(root, "logprobs", 0, SERVE_TOP_MAX, true, &n, &have_n, e)) return false;
            on = have_n;
            top = n;
        }
    }
    g->params.logprobs = on;
    g->params.top_logprobs = on ? (int32_t)top : 0;
    return true;
}

/* 'logit_bias': {"TOKEN_ID": bias, ...}, at most API_MAX_BIAS entries, each id a token of the
 * vocabulary and each bias -100..100, added to the token's logit before sampling (-100 bans
 * it). */
static bool parse_bias(const api_t *api, const cJSON *root, struct gen *g, struct api_err *e) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, "logit_bias");
    g->n_bias = 0;
    if (!j || cJSON_IsNull(j)) return true;
    if (!cJSON_IsObject(j)) {
        set_err(e, 400, "logit_bias", "invalid_type",
                "'logit_bias' must be an object of token ids and biases");
        return false;
    }
    const int32_t n_vocab = tokenizer_n_tokens(api->cfg.tokenizer);
    const cJSON *it;
    cJSON_ArrayForEach(it, j) {
        char *end = NULL;
        errno = 0;
        long id = strtol(it->string, &end, 10);
        if (!it->string[0] || *end || errno || id < 0 || id >= n_vocab) {
            set_err(e, 400, "logit_bias", "invalid_value",
                    "'logit_bias' keys must be token ids 0..%d, not '%.32s'", (int)n_vocab - 1,
                    it->string);
            return false;
        }
        if (!cJSON_IsNumber(it) || !(it->valuedouble >= -100 && it->valuedouble <= 100)) {
            set_err(e, 400, "logit_bias", "invalid_value",
                    "'logit_bias' values must be numbers from -100 to 100");
            return false;
        }
        if (g->n_bias == API_MAX_BIAS) {
            set_err(e, 400, "logit_bias", "invalid_value", "'logit_bias' holds more than %d tokens",
                    API_MAX_BIAS);
            return false;
        }
        g->bias_token[g->n_bias] = (int32_t)id;
        g->bias[g->n_bias++] = (float)it->valuedouble;
    }
    return true;
}

/* Everything but the prompt. */
static bool parse_options(const api_t *api, const cJSON *root, struct gen *g, struct api_err *e) {
    struct sampler_params *sp = &g->params.sampling;
    sampler_params_default(sp);
    double v;
    bool have;
    if (!get_bool(root, "stream", &g->stream, e)) return false;
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    if (so && !cJSON_IsNull(so)) {
        if (!cJSON_IsObject(so)) {
            set_err(e, 400, "stream_options", "invalid_type", "'stream_options' must be an object");
            return false;
        }
        if (!get_bool(so, "include_usage", &g->include_usage, e)) return false;
    }
    if (!get_bool(root, "ignore_eos", &g->params.ignore_eos, e)) return false;
    if (!get_num(root, "n", 1, API_MAX_PROMPTS, true, &v, &have, e)) return false;
    g->n_choices = have ? (int)v : 1;
    if (g->n_prompts * g->n_choices > API_MAX_PROMPTS) {
        set_err(e, 400, "n", "invalid_value",
                "%d prompts x n %d is %d choices; at most %d in one request", g->n_prompts,
                g->n_choices, g->n_prompts * g->n_choices, API_MAX_PROMPTS);
        return false;
    }

    int32_t max = api->cfg.default_max_tokens > 0 ? api->cfg.default_max_tokens : api->cfg.n_ctx;
    const char *mt = g->chat && cJSON_GetObjectItemCaseSensitive(root, "max_completion_tokens")
                         ? "max_completion_tokens"
                         : "max_tokens";
    /* echo: 0 asks for the prompt alone (its log-probabilities: a model's score of a text) */
    if (!get_num(root, mt, g->echo ? 0 : 1, 1e9, true, &v, &have, e)) return false;
    if (have) max = (int32_t)v;
    for (int i = 0; i < g->n_prompts; i++) {
        int32_t room = api->cfg.n_ctx - g->n_prompt[i]; /* >= 1: checked when tokenizing */
        g->max_tokens[i] = max < room ? max : room;
    }

    if (!get_num(root, "temperature", 0, 100, false, &v, &have, e)) return false;
    if (have) sp->temp = (float)v;
    if (!get_num(root, "top_p", 0, 1, false, &v, &have, e)) return false;
    if (have) sp->top_p = v <= 0 ? 1e-9f : (float)v;
    if (!get_num(root, "top_k", 0, 1e9, true, &v, &have, e)) return false;
    if (have) sp->top_k = (int32_t)v;
    if (!get_num(root, "min_p", 0, 1, false, &v, &have, e)) return false;
    if (have) sp->min_p = (float)v;
    if (!get_num(root, "repeat_last_n", -1, 1e9, true, &v, &have, e)) return false;
    if (have) sp->repeat_last_n = (int32_t)v;
    if (!get_num(root, "presence_penalty", -2, 2, false, &v, &have, e)) return false;
    if (have) sp->presence_penalty = (float)v;
    if (!get_num(root, "frequency_penalty", -2, 2, false, &v, &have, e)) return false;
    if (have) sp->frequency_penalty = (float)v;
    if (!get_num(root, "repeat_penalty", 1e-6, 100, false, &v, &have, e)) return false;
    if (have) sp->repeat_penalty = (float)v;
    if (!get_num(root, "seed", 0, (double)SAMPLER_SEED_MAX, true, &v, &have, e)) return false;
    sp->seed = have ? (uint64_t)v : sampler_seed_random();

    const cJSON *stop = cJSON_GetObjectItemCaseSensitive(root, "stop");
    if (cJSON_IsString(stop)) {
        if (stop->valuestring[0]) {
            g->stop[0] = stop->valuestring;
            g->stop_len[0] = strlen(stop->valuestring);
            g->n_stop = 1;
        }
    } else if (cJSON_IsArray(stop)) {
        const cJSON *s;
        cJSON_ArrayForEach(s, stop) {
            if (!cJSON_IsString(s) || g->n_stop == API_MAX_STOP) {
                set_err(e, 400, "stop", "invalid_value",
                        "'stop' must be a string or a list of at most %d strings", API_MAX_STOP);
                return false;
            }
            if (!s->valuestring[0]) continue;
            g->stop[g->n_stop] = s->valuestring;
            g->stop_len[g->n_stop++] = strlen(s->valuestring);
        }
    } else if (stop && !cJSON_IsNull(stop)) {
        set_err(e, 400, "stop", "invalid_type", "'stop' must be a string or a list of strings");
        return false;
    }
    return true;
}

/* 'echo' (completions only), and what is asked for but not done: an error, checked before the
 * prompt is tokenized, rather than a silent answer without it. */
static bool parse_unsupported(const cJSON *root, struct gen *g, struct api_err *e) {
    if (!get_bool(root, "echo", &g->echo, e)) return false;
    if (g->echo && g->chat) {
        set_err(e, 400, "echo", "unsupported_value", "'echo' is for /v1/completions");
        return false;
    }
    /* Fields that, honoured, would change what comes back: refused when they ask for
     * something, so a client never gets free text where it asked for a constraint. */
    const cJSON *j;
    const char *const tool_fields[] = {"tools", "functions"};
    for (size_t i = 0; i < sizeof tool_fields / sizeof tool_fields[0]; i++) {
        j = cJSON_GetObjectItemCaseSensitive(root, tool_fields[i]);
        if (j && !cJSON_IsNull(j) && !(cJSON_IsArray(j) && !j->child)) {
            set_err(e, 400, tool_fields[i], "unsupported_value",
                    "tool and function calling are not supported");
            return false;
        }
    }
    j = cJSON_GetObjectItemCaseSensitive(root, "response_format");
    if (j && !cJSON_IsNull(j)) {
        const cJSON *type = cJSON_IsObject(j) ? cJSON_GetObjectItemCaseSensitive(j, "type") : NULL;
        if (!cJSON_IsString(type)) {
            set_err(e, 400, "response_format", "invalid_type",
                    "'response_format' must be an object with a string 'type'");
            return false;
        }
        if (strcmp(type->valuestring, "text") != 0) {
            set_err(e, 400, "response_format", "unsupported_value",
                    "'response_format' type '%.64s' is not supported (only 'text')",
                    type->valuestring);
            return false;
        }
    }
    j = cJSON_GetObjectItemCaseSensitive(root, "suffix");
    if (j && !cJSON_IsNull(j) && !(cJSON_IsString(j) && !j->valuestring[0])) {
        set_err(e, 400, "suffix", "unsupported_value", "'suffix' is not supported");
        return false;
    }
    double best_of = 1;
    bool have_best_of = false;
    return get_num(root, "best_of", 1, 1, true, &best_of, &have_best_of, e);
}

/* ==== Decoded text and stop strings ==================================================== */

/* One generated token as the log-probabilities show it: where its bytes went in the text. */
struct tg_tok {
    int32_t id;
    float logprob;
    size_t start, end; /* its bytes: text[start, end) (before any cut at a stop string) */
    struct serve_top top;
};

struct textgen {
    tokenizer_decoder_t *dec;
    const struct gen *g;
    struct tg_tok *toks; /* when log-probabilities are asked for: every token fed */
    size_t n_toks, toks_cap;
    size_t lp_sent; /* of toks, how many were given to the client */
    char *text;     /* generated text so far (cut at a stop string) */
    size_t len, cap;
    size_t sent;         /* bytes already given to the client */
    size_t n_completion; /* tokens consumed */
    /* echo: the prompt's text and tokens (their log-probabilities once scored), put before the
     * answer's; the answer's text offsets count from the start of echo_text */
    bool echo_ready, echo_sent;
    char *echo_text;
    size_t echo_len;
    struct tg_tok *echo_toks;
    bool *echo_scored; /* [n_echo]: a log-probability (not the first token, and scored) */
    size_t n_echo;
    bool done;
    bool stopped;             /* a stop string matched */
    bool finish_sent;         /* streaming: its last chunk (or the error) is out */
    enum serve_finish finish; /* how it ended (when done) */
    char error[256];
};

/* Appends b[0..n) to the growing buffer *buf (*len bytes of *cap), kept NUL-terminated. */
static void text_append(char **buf, size_t *len, size_t *cap, const char *b, size_t n) {
    if (*len + n + 1 > *cap) {
        size_t c = (*len + n + 1) * 2;
        char *t = realloc(*buf, c);
        if (!t) abort();
        *buf = t;
        *cap = c;
    }
    if (n) memcpy(*buf + *len, b, n);
    *len += n;
    (*buf)[*len] = 0;
}

static void tg_init(struct textgen *tg, const api_t *api, const struct gen *g) {
    memset(tg, 0, sizeof *tg);
    tg->dec = tokenizer_decoder_new(api->cfg.tokenizer, false);
    tokenizer_decoder_set_midstream(tg->dec); /* the generated text continues the prompt */
    tg->g = g;
}

static void tg_free(struct textgen *tg) {
    tokenizer_decoder_free(&tg->dec);
    free(tg->text);
    free(tg->toks);
    free(tg->echo_text);
    free(tg->echo_toks);
    free(tg->echo_scored);
}

/* echo: the prompt of r decoded (where each token's bytes went) with the log-probabilities
 * the loop scored; once the prompt is scored, i.e. at the first token or the end. */
static void tg_take_echo(struct textgen *tg, const api_t *api, serve_req_t *r) {
    if (!tg->g->echo || tg->echo_ready) return;
    tg->echo_ready = true;
    const struct serve_req_params *p = serve_req_params(r);
    size_t n = (size_t)p->n_prompt;
    tg->n_echo = n;
    tg->echo_toks = xmalloc((n + 1) * sizeof *tg->echo_toks);
    tg->echo_scored = xmalloc((n + 1) * sizeof *tg->echo_scored);
    tokenizer_decoder_t *dec = tokenizer_decoder_new(api->cfg.tokenizer, false);
    size_t cap = 0, len = 0;
    char *text = NULL;
    text_append(&text, &len, &cap, "", 0);
    for (size_t i = 0; i <= n; i++) {
        const char *b;
        size_t nb = i < n ? tokenizer_decoder_feed(dec, p->prompt[i], &b)
                          : tokenizer_decoder_flush(dec, &b);
        if (i < n) {
            struct tg_tok *t = &tg->echo_toks[i];
            t->id = p->prompt[i];
            t->start = len;
            t->end = len + nb;
            t->top.n = 0;
            tg->echo_scored[i] = serve_req_prompt_logprob(r, (int32_t)i, &t->logprob, &t->top);
        }
        text_append(&text, &len, &cap, b, nb);
    }
    tokenizer_decoder_free(&dec);
    tg->echo_text = text;
    tg->echo_len = len;
}

/* text[0..n) as a JSON string, after the echoed prompt's text when that is ready and not sent. */
static cJSON *echo_json_text(const struct textgen *tg, const char *text, size_t n) {
    if (!tg->echo_ready || tg->echo_sent) return json_text(text, n);
    char *both = xmalloc(tg->echo_len + n + 1);
    memcpy(both, tg->echo_text, tg->echo_len);
    if (n) memcpy(both + tg->echo_len, text, n);
    cJSON *j = json_text(both, tg->echo_len + n);
    free(both);
    return j;
}

static void tg_append(struct textgen *tg, const char *b, size_t n) {
    text_append(&tg->text, &tg->len, &tg->cap, b, n);
}

/* Cuts the text at the earliest stop string that starts at or after `sent` (earlier text
 * was sent because no stop string could start there). */
static void tg_check_stop(struct textgen *tg) {
    size_t best = SIZE_MAX;
    for (int i = 0; i < tg->g->n_stop; i++) {
        const char *hit =
            memmem(tg->text + tg->sent, tg->len - tg->sent, tg->g->stop[i], tg->g->stop_len[i]);
        if (hit && (size_t)(hit - tg->text) < best) best = (size_t)(hit - tg->text);
    }
    if (best != SIZE_MAX) {
        tg->len = best;
        tg->done = tg->stopped = true;
        tg->finish = SERVE_FINISH_STOP;
    }
}

/* top: the most likely tokens at this place, or NULL. */
static void tg_feed(struct textgen *tg, int32_t id, float logprob, const struct serve_top *top) {
    if (tg->done) return;
    tg->n_completion++;
    const char *b;
    size_t n = tokenizer_decoder_feed(tg->dec, id, &b);
    size_t start = tg->len;
    tg_append(tg, b, n);
    if (tg->g->params.logprobs) {
        if (tg->n_toks == tg->toks_cap) {
            size_t cap = tg->toks_cap ? tg->toks_cap * 2 : 16;
            struct tg_tok *t = realloc(tg->toks, cap * sizeof *t);
            if (!t) abort();
            tg->toks = t;
            tg->toks_cap = cap;
        }
        struct tg_tok *t = &tg->toks[tg->n_toks++];
        t->id = id;
        t->logprob = logprob;
        t->start = start;
        t->end = tg->len;
        t->top.n = 0;
        if (top) t->top = *top;
    }
    tg_check_stop(tg);
}

static void tg_finish(struct textgen *tg, enum serve_finish f, const char *error) {
    if (tg->done) return;
    const char *b;
    size_t n = tokenizer_decoder_flush(tg->dec, &b);
    tg_append(tg, b, n);
    tg_check_stop(tg);
    if (tg->done) return;
    tg->done = true;
    tg->finish = f;
    snprintf(tg->error, sizeof tg->error, "%s", error ? error : "");
}

/* How many bytes are final: all when done, else all but the longest tail that is a proper
 * prefix of a stop string. */
static size_t tg_final(const struct textgen *tg) {
    if (tg->done) return tg->len;
    size_t hold = 0;
    for (int i = 0; i < tg->g->n_stop; i++) {
        size_t k = tg->g->stop_len[i] - 1;
        if (k > tg->len - tg->sent) k = tg->len - tg->sent;
        for (; k > hold; k--) {
            if (!memcmp(tg->text + tg->len - k, tg->g->stop[i], k)) {
                hold = k;
                break;
            }
        }
    }
    return tg->len - hold;
}

/* How many tokens' log-probabilities can go to the client, when `fin` bytes of text are final:
 * before the end, those whose bytes are all final (and not empty at the end of it: a byte of
 * a split character may yet be cut); at the end, every token unless a stop string cut the text,
 * then those whose bytes begin before the cut. Never fewer than were given. */
static size_t tg_lp_ready(const struct textgen *tg, size_t fin) {
    if (tg->done && !tg->stopped) return tg->n_toks;
    size_t k = tg->lp_sent;
    while (k < tg->n_toks && (tg->done ? tg->toks[k].start < tg->len
                                       : tg->toks[k].end <= fin && tg->toks[k].start < fin))
        k++;
    return k;
}

static const char *finish_reason(const struct textgen *tg) {
    return tg->finish == SERVE_FINISH_LENGTH ? "length" : "stop";
}

/* Waits up to timeout_ms for tokens and feeds them; *got: whether anything came (tokens or
 * the end). false: the client went away or the api is stopping (the request was cancelled). */
static bool tg_pump(api_t *api, serve_req_t *r, size_t *next, struct textgen *tg, int fd,
                    int timeout_ms, bool *got) {
    struct serve_token toks[64];
    enum serve_finish fin;
    const size_t first = *next;
    size_t n = serve_req_wait(r, next, toks, 64, timeout_ms, &fin);
    *got = n > 0 || fin != SERVE_FINISH_NONE;
    for (size_t i = 0; i < n && !tg->done; i++) {
        struct serve_top top = {0};
        if (tg->g->params.top_logprobs > 0) serve_req_top(r, first + i, &top);
        tg_feed(tg, toks[i].id, toks[i].logprob, &top);
    }
    if (tg->done) {
        serve_req_cancel(r); /* stop string: the loop frees the slot */
        return true;
    }
    if (fin != SERVE_FINISH_NONE) {
        tg_finish(tg, fin,
                  fin == SERVE_FINISH_CANCELLED ? "the request was cancelled" : serve_req_error(r));
        return true;
    }
    if (atomic_load(&api->stopping) || client_gone(fd)) {
        serve_req_cancel(r);
        return false;
    }
    return true;
}

/* ==== Without a server (api_internal.h) ================================================ */

static void api_init_text(api_t *api) {
    int32_t id = tokenizer_bos(api->cfg.tokenizer);
    size_t n;
    const char *t = id >= 0 ? tokenizer_token_text(api->cfg.tokenizer, id, &n) : NULL;
    if (t && n < sizeof api->bos_text)
        memcpy(api->bos_text, t, n);
    else
        strcpy(api->bos_text, "<s>");
    id = tokenizer_eos(api->cfg.tokenizer);
    t = id >= 0 ? tokenizer_token_text(api->cfg.tokenizer, id, &n) : NULL;
    if (t && n < sizeof api->eos_text)
        memcpy(api->eos_text, t, n);
    else
        strcpy(api->eos_text, "</s>");
}

/* Whether a JSON text escapes U+0000 in a string ("\u0000"; a raw NUL is no JSON). cJSON ends
 * its strings there, which would cut a prompt short without a word. */
static bool has_escaped_nul(const char *s, size_t n) {
    for (size_t i = 0; i + 1 < n; i++) {
        if (s[i] != '\\') continue;
        if (s[i + 1] == 'u' && i + 6 <= n && memcmp(s + i + 2, "0000", 4) == 0) return true;
        i++; /* the escaped character (a backslash too) */
    }
    return false;
}

/* The request body as a JSON object, or NULL with e set (400). */
static cJSON *parse_body(const char *body, size_t len, struct api_err *e) {
    if (body && has_escaped_nul(body, len)) {
        set_err(e, 400, NULL, "invalid_value",
                "a string holds U+0000 (\\u0000), which caravan cannot pass on");
        return NULL;
    }
    if (!body || len == 0) {
        set_err(e, 400, NULL, NULL, "the body is empty; send a JSON object");
        return NULL;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, false);
    if (!root) {
        /* cJSON points end at (or just before) the byte it could not go past; counted from 1 */
        size_t at = end && end >= body && end < body + len ? (size_t)(end - body) + 1 : len;
        set_err(e, 400, NULL, NULL, "the body is not valid JSON (near byte %zu of %zu)", at, len);
        return NULL;
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        set_err(e, 400, NULL, NULL, "the body must be a JSON object, not %s",
                cJSON_IsArray(root)    ? "an array"
                : cJSON_IsString(root) ? "a string"
                : cJSON_IsNumber(root) ? "a number"
                                       : "null or a boolean");
        return NULL;
    }
    return root;
}

unsigned api_parse_request(const struct api_config *cfg, const char *body, size_t len, bool chat,
                           int32_t *n_prompt, int32_t *max_tokens, bool *echo) {
    api_t api = {.cfg = *cfg};
    api_init_text(&api);
    struct api_err e = {0};
    struct gen g = {.chat = chat};
    cJSON *root = parse_body(body, len, &e);
    unsigned status = 0;
    if (!root)
        status = e.status;
    else if (!parse_unsupported(root, &g, &e) || !parse_logprobs(root, &g, &e) ||
             !parse_bias(&api, root, &g, &e) ||
             !(chat ? parse_messages(&api, root, &g, &e) : parse_prompt(&api, root, &g, &e)) ||
             !parse_options(&api, root, &g, &e))
        status = e.status;
    if (!status) {
        *n_prompt = g.n_prompt[0];
        *max_tokens = g.max_tokens[0];
        *echo = g.echo;
    }
    gen_free_prompts(&g);
    cJSON_Delete(root);
    return status;
}

void api_text_run(const tokenizer_t *t, const int32_t *ids, size_t n, const char *const *stops,
                  size_t n_stops, char **plain, char **streamed, bool *stopped, size_t *lp_plain,
                  size_t *lp_streamed) {
    api_t api = {.cfg = {.tokenizer = t}};
    struct gen g = {.params = {.logprobs = true}};
    for (size_t i = 0; i < n_stops && g.n_stop < API_MAX_STOP; i++) {
        if (!stops[i][0]) continue;
        g.stop[g.n_stop] = (char *)stops[i];
        g.stop_len[g.n_stop++] = strlen(stops[i]);
    }
    struct textgen a, b;
    tg_init(&a, &api, &g);
    tg_init(&b, &api, &g);
    for (size_t i = 0; i < n; i++) tg_feed(&a, ids[i], 0.0f, NULL);
    tg_finish(&a, SERVE_FINISH_LENGTH, NULL);
    *lp_plain = tg_lp_ready(&a, a.len);
    char *s = xmalloc(1);
    size_t slen = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n)
            tg_feed(&b, ids[i], 0.0f, NULL);
        else
            tg_finish(&b, SERVE_FINISH_LENGTH, NULL);
        size_t fin = tg_final(&b);
        b.lp_sent = tg_lp_ready(&b, fin);
        s = realloc(s, slen + (fin - b.sent) + 1);
        if (!s) abort();
        memcpy(s + slen, b.text + b.sent, fin - b.sent);
        slen += fin - b.sent;
        b.sent = fin;
        if (b.done) break;
    }
    s[slen] = 0;
    *streamed = s;
    *lp_streamed = b.lp_sent;
    *plain = xmalloc(a.len + 1);
    memcpy(*plain, a.text ? a.text : "", a.len);
    (*plain)[a.len] = 0;
    *stopped = a.stopped;
    tg_free(&a);
    tg_free(&b);
}

/* ==== Generation responses ============================================================ */

static cJSON *usage_json(int32_t n_prompt, size_t n_completion) {
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", n_prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)n_completion);
    cJSON_AddNumberToObject(u, "total_tokens", (double)n_prompt + (double)n_completion);
    return u;
}

/* A log-probability as JSON has it: a token the logits masked (-infinity) as -9999, as OpenAI
 * writes an impossible token. */
static double lp_value(float lp) {
    return lp >= -9999.0f ? (double)lp : -9999.0;
}

/* A token's own text (a lone fragment of a UTF-8 character shows as U+FFFD) and its bytes. */
static void add_token(const api_t *api, cJSON *o, int32_t id, float lp) {
    size_t n = 0;
    const char *b = tokenizer_token_piece(api->cfg.tokenizer, id, &n);
    if (!b) n = 0;
    cJSON_AddItemToObject(o, "token", json_text(b ? b : "", n));
    cJSON_AddNumberToObject(o, "logprob", lp_value(lp));
    cJSON *bytes = cJSON_AddArrayToObject(o, "bytes");
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(bytes, cJSON_CreateNumber((double)(unsigned char)b[i]));
}

/* One completions entry: the token's text, its log-probability and most likely tokens (null
 * when it has none: an echoed prompt's first token), its offset. */
static void add_cmpl_entry(const api_t *api, cJSON *tokens, cJSON *lps, cJSON *tops, cJSON *offsets,
                           const struct tg_tok *t, bool has_lp, size_t offset) {
    size_t n = 0;
    const char *b = tokenizer_token_piece(api->cfg.tokenizer, t->id, &n);
    cJSON_AddItemToArray(tokens, json_text(b ? b : "", b ? n : 0));
    cJSON_AddItemToArray(offsets, cJSON_CreateNumber((double)offset));
    if (!has_lp) {
        cJSON_AddItemToArray(lps, cJSON_CreateNull());
        cJSON_AddItemToArray(tops, cJSON_CreateNull());
        return;
    }
    cJSON_AddItemToArray(lps, cJSON_CreateNumber(lp_value(t->logprob)));
    /* the most likely and the sampled token, by text (the first of equal texts counts) */
    cJSON *top = cJSON_CreateObject();
    for (int32_t j = 0; j <= t->top.n; j++) {
        const int32_t id = j < t->top.n ? t->top.id[j] : t->id;
        const float lp = j < t->top.n ? t->top.logprob[j] : t->logprob;
        b = tokenizer_token_piece(api->cfg.tokenizer, id, &n);
        char *key = utf8_clean(b ? b : "", b ? n : 0);
        if (!cJSON_GetObjectItemCaseSensitive(top, key))
            cJSON_AddNumberToObject(top, key, lp_value(lp));
        free(key);
    }
    cJSON_AddItemToArray(tops, top);
}

/* The "logprobs" of a choice for tokens [from, to) of tg: chat's {"content": [...]}, or the
 * completions' {"tokens", "token_logprobs", "top_logprobs", "text_offset"} (with_echo: the
 * echoed prompt's entries first). */
static cJSON *logprobs_json(const api_t *api, const struct textgen *tg, size_t from, size_t to,
                            bool with_echo) {
    cJSON *o = cJSON_CreateObject();
    if (tg->g->chat) {
        cJSON *content = cJSON_AddArrayToObject(o, "content");
        for (size_t i = from; i < to; i++) {
            const struct tg_tok *t = &tg->toks[i];
            cJSON *c = cJSON_CreateObject();
            add_token(api, c, t->id, t->logprob);
            cJSON *top = cJSON_AddArrayToObject(c, "top_logprobs");
            for (int32_t j = 0; j < t->top.n; j++) {
                cJSON *x = cJSON_CreateObject();
                add_token(api, x, t->top.id[j], t->top.logprob[j]);
                cJSON_AddItemToArray(top, x);
            }
            cJSON_AddItemToArray(content, c);
        }
        cJSON_AddNullToObject(o, "refusal");
        return o;
    }
    cJSON *tokens = cJSON_AddArrayToObject(o, "tokens");
    cJSON *lps = cJSON_AddArrayToObject(o, "token_logprobs");
    cJSON *tops = cJSON_AddArrayToObject(o, "top_logprobs");
    cJSON *offsets = cJSON_AddArrayToObject(o, "text_offset");
    for (size_t i = 0; with_echo && i < tg->n_echo; i++)
        add_cmpl_entry(api, tokens, lps, tops, offsets, &tg->echo_toks[i], tg->echo_scored[i],
                       tg->echo_toks[i].start);
    for (size_t i = from; i < to; i++)
        add_cmpl_entry(api, tokens, lps, tops, offsets, &tg->toks[i], true,
                       tg->echo_len + tg->toks[i].start);
    return o;
}

/* A choice's "logprobs": tokens [tg->lp_sent, to) when asked for and there are any (after the
 * echoed prompt's when with_echo), else null; marks them given. */
static void add_logprobs(const api_t *api, cJSON *choice, struct textgen *tg, size_t to,
                         bool with_echo) {
    if (tg->g->params.logprobs && (to > tg->lp_sent || (with_echo && tg->n_echo)))
        cJSON_AddItemToObject(choice, "logprobs",
                              logprobs_json(api, tg, tg->lp_sent, to, with_echo));
    else
        cJSON_AddNullToObject(choice, "logprobs");
    if (to > tg->lp_sent) tg->lp_sent = to;
}

static const char *model_id(const api_t *api) {
    return api->cfg.model_name ? api->cfg.model_name : "caravan";
}

static cJSON *answer_head(const api_t *api, const struct gen *g, uint64_t id, time_t created,
                          bool chunk) {
    char ids[48];
    snprintf(ids, sizeof ids, "%s-%llu", g->chat ? "chatcmpl" : "cmpl", (unsigned long long)id);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "id", ids);
    cJSON_AddStringToObject(root, "object",
                            g->chat ? (chunk ? "chat.completion.chunk" : "chat.completion")
                                    : "text_completion");
    cJSON_AddNumberToObject(root, "created", (double)created);
    cJSON_AddStringToObject(root, "model", model_id(api));
    /* the seed, drawn when the request named none, so that a sampled answer can be had again;
     * written as an integer (cJSON writes a double such as 1796672278099250
     * as 1.79667227809925e+15, which some clients read back as a float) */
    char seed[24];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)g->params.sampling.seed);
    cJSON_AddRawToObject(root, "seed", seed);
    return root;
}

/* The requests of one generation call: one a prompt (completions may send several), each
 * with its text pipeline. */
struct reqs {
    int n;
    serve_req_t *r[API_MAX_PROMPTS];
    struct textgen tg[API_MAX_PROMPTS];
    size_t next[API_MAX_PROMPTS];
};

static void reqs_free(struct reqs *q) {
    for (int i = 0; i < q->n; i++) {
        if (!q->tg[i].done) serve_req_cancel(q->r[i]); /* the client went away */
        serve_req_unref(&q->r[i]);
        tg_free(&q->tg[i]);
    }
    q->n = 0;
}

/* Feeds every unfinished request what it has; when none had anything, waits on the first
 * unfinished one (API_WAIT_MS alone, a tenth of it beside others, whose tokens the next call
 * sees). false: the client went away or the api is stopping (all were cancelled). */
static bool reqs_pump(api_t *api, struct reqs *q, int fd) {
    bool any = false;
    int first = -1;
    for (int i = 0; i < q->n; i++) {
        if (q->tg[i].done) continue;
        if (first < 0) first = i;
        bool got = false;
        if (!tg_pump(api, q->r[i], &q->next[i], &q->tg[i], fd, 0, &got)) goto gone;
        any |= got;
    }
    if (!any && first >= 0) {
        bool got;
        int wait_ms = q->n == 1 ? API_WAIT_MS : API_WAIT_MS / 10;
        if (!tg_pump(api, q->r[first], &q->next[first], &q->tg[first], fd, wait_ms, &got))
            goto gone;
    }
    return true;
gone:
    for (int k = 0; k < q->n; k++) serve_req_cancel(q->r[k]);
    return false;
}

static bool reqs_done(const struct reqs *q) {
    for (int i = 0; i < q->n; i++)
        if (!q->tg[i].done) return false;
    return true;
}

/* The first request that failed (error or cancelled), or -1. */
static int reqs_failed(const struct reqs *q) {
    for (int i = 0; i < q->n; i++)
        if (q->tg[i].done &&
            (q->tg[i].finish == SERVE_FINISH_ERROR || q->tg[i].finish == SERVE_FINISH_CANCELLED))
            return i;
    return -1;
}

/* Usage: each prompt counted once (however many choices it has), every choice's tokens. */
static cJSON *reqs_usage(const struct reqs *q, const struct gen *g) {
    int32_t n_prompt = 0;
    size_t n_completion = 0;
    for (int i = 0; i < g->n_prompts; i++) n_prompt += g->n_prompt[i];
    for (int i = 0; i < q->n; i++) n_completion += q->tg[i].n_completion;
    return usage_json(n_prompt, n_completion);
}

/* The server-sent events of one streamed request. */
struct stream {
    api_t *api;
    struct gen g;
    struct reqs q;
    int fd;
    time_t created;
    char *out; /* bytes ready for the client: out[pos..len) */
    size_t len, pos, cap;
    bool ended; /* the last event is in out */
};

static void stream_put(struct stream *st, const char *b, size_t n) {
    text_append(&st->out, &st->len, &st->cap, b, n);
}

static void stream_event(struct stream *st, cJSON *j) {
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!s) abort();
    stream_put(st, "data: ", 6);
    stream_put(st, s, strlen(s));
    stream_put(st, "\n\n", 2);
    free(s);
}

/* One chunk of choice i: delta text (n bytes; role on the chat's first), the log-probabilities
 * of its tokens up to lp_to not given yet, and finish_reason when given. */
static void stream_chunk(struct stream *st, int i, const char *text, size_t n, bool role,
                         const char *finish, size_t lp_to) {
    cJSON *root = answer_head(st->api, &st->g, serve_req_id(st->q.r[0]), st->created, true);
    cJSON *choices = cJSON_AddArrayToObject(root, "choices");
    cJSON *c = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, c);
    cJSON_AddNumberToObject(c, "index", i);
    if (st->g.chat) {
        cJSON *d = cJSON_AddObjectToObject(c, "delta");
        if (role) cJSON_AddStringToObject(d, "role", "assistant");
        if (role || n || !finish) cJSON_AddItemToObject(d, "content", json_text(text, n));
    } else {
        /* the echoed prompt leads the first chunk */
        cJSON_AddItemToObject(c, "text", echo_json_text(&st->q.tg[i], text, n));
    }
    struct textgen *tg = &st->q.tg[i];
    add_logprobs(st->api, c, tg, lp_to, tg->echo_ready && !tg->echo_sent);
    if (tg->echo_ready) tg->echo_sent = true;
    if (finish)
        cJSON_AddStringToObject(c, "finish_reason", finish);
    else
        cJSON_AddNullToObject(c, "finish_reason");
    stream_event(st, root);
}

/* Turns choice i's newly final text (and its end) into events. */
static void stream_emit(struct stream *st, int i) {
    struct textgen *tg = &st->q.tg[i];
    if (tg->finish_sent) return;
    if (tg->n_completion > 0 || tg->done) tg_take_echo(tg, st->api, st->q.r[i]);
    size_t fin = tg_final(tg);
    const size_t lp_to = tg_lp_ready(tg, fin);
    if (tg->done) {
        if (tg->finish == SERVE_FINISH_ERROR || tg->finish == SERVE_FINISH_CANCELLED) {
            if (fin > tg->sent)
                stream_chunk(st, i, tg->text + tg->sent, fin - tg->sent, false, NULL, tg->lp_sent);
        } else {
            stream_chunk(st, i, tg->text + tg->sent, fin - tg->sent, false, finish_reason(tg),
                         lp_to);
        }
        tg->sent = fin;
        tg->finish_sent = true;
    } else if (fin > tg->sent || lp_to > tg->lp_sent || (tg->echo_ready && !tg->echo_sent)) {
        stream_chunk(st, i, tg->text + tg->sent, fin - tg->sent, false, NULL, lp_to);
        tg->sent = fin;
    }
}

/* Every choice's new events; then, when one failed, an error event (and the rest are
 * cancelled), or when all are done, usage (if asked) and [DONE]. */
static void stream_emit_all(struct stream *st) {
    for (int i = 0; i < st->q.n; i++) stream_emit(st, i);
    int bad = reqs_failed(&st->q);
    if (bad >= 0) {
        const struct textgen *tg = &st->q.tg[bad];
        for (int k = 0; k < st->q.n; k++) serve_req_cancel(st->q.r[k]);
        struct api_err e;
        set_err(&e, 500, NULL, NULL, "%s", tg->error[0] ? tg->error : "generation failed");
        stream_event(st, error_json(&e));
        st->ended = true;
        return;
    }
    if (!reqs_done(&st->q)) return;
    if (st->g.include_usage) {
        cJSON *root = answer_head(st->api, &st->g, serve_req_id(st->q.r[0]), st->created, true);
        cJSON_AddArrayToObject(root, "choices");
        cJSON_AddItemToObject(root, "usage", reqs_usage(&st->q, &st->g));
        stream_event(st, root);
    }
    stream_put(st, "data: [DONE]\n\n", 14);
    st->ended = true;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    struct stream *st = cls;
    while (st->pos == st->len) {
        if (st->ended) return MHD_CONTENT_READER_END_OF_STREAM;
        st->pos = st->len = 0;
        if (!reqs_pump(st->api, &st->q, st->fd)) return MHD_CONTENT_READER_END_WITH_ERROR;
        stream_emit_all(st);
    }
    size_t n = st->len - st->pos < max ? st->len - st->pos : max;
    memcpy(buf, st->out + st->pos, n);
    st->pos += n;
    return (ssize_t)n;
}

static void stream_free(void *cls) {
    struct stream *st = cls;
    reqs_free(&st->q);
    for (int i = 0; i < st->g.n_stop; i++) free(st->g.stop[i]);
    free(st->out);
    free(st);
}

static enum MHD_Result answer_plain(api_t *api, struct MHD_Connection *c, struct reqs *q,
                                    const struct gen *g) {
    int fd = connection_fd(c);
    time_t created = time(NULL);
    while (!reqs_done(q) && reqs_failed(q) < 0)
        if (!reqs_pump(api, q, fd)) return MHD_NO; /* nobody to answer */
    int bad = reqs_failed(q);
    if (bad >= 0) {
        for (int k = 0; k < q->n; k++) serve_req_cancel(q->r[k]);
        struct api_err e;
        set_err(&e, 500, NULL, NULL, "%s",
                q->tg[bad].error[0] ? q->tg[bad].error : "generation failed");
        return send_error(api, c, &e, NULL);
    }
    cJSON *root = answer_head(api, g, serve_req_id(q->r[0]), created, false);
    cJSON *choices = cJSON_AddArrayToObject(root, "choices");
    for (int i = 0; i < q->n; i++) {
        struct textgen *tg = &q->tg[i];
        cJSON *ch = cJSON_CreateObject();
        cJSON_AddItemToArray(choices, ch);
        cJSON_AddNumberToObject(ch, "index", i);
        if (g->chat) {
            cJSON *m = cJSON_AddObjectToObject(ch, "message");
            cJSON_AddStringToObject(m, "role", "assistant");
            cJSON_AddItemToObject(m, "content", json_text(tg->text, tg->len));
        } else {
            tg_take_echo(tg, api, q->r[i]);
            cJSON_AddItemToObject(ch, "text", echo_json_text(tg, tg->text, tg->len));
        }
        add_logprobs(api, ch, tg, tg_lp_ready(tg, tg->len), tg->echo_ready);
        cJSON_AddStringToObject(ch, "finish_reason", finish_reason(tg));
    }
    cJSON_AddItemToObject(root, "usage", reqs_usage(q, g));
    return send_json(api, c, 200, root);
}

static enum MHD_Result handle_generate(api_t *api, struct MHD_Connection *c, struct conn *cn,
                                       bool chat) {
    struct api_err e = {0};
    struct gen g = {.chat = chat};
    cJSON *root = parse_body(cn->body, cn->len, &e);
    if (!root) goto fail;
    if (!parse_unsupported(root, &g, &e) || !parse_logprobs(root, &g, &e) ||
        !parse_bias(api, root, &g, &e))
        goto fail;
    if (!(chat ? parse_messages(api, root, &g, &e) : parse_prompt(api, root, &g, &e))) goto fail;
    if (!parse_options(api, root, &g, &e)) goto fail;

    const int n_reqs = g.n_prompts * g.n_choices;
    if (n_reqs > serve_queue_max_open(api->cfg.queue)) {
        set_err(&e, 400, g.n_choices > 1 ? "n" : "prompt", "invalid_value",
                "%d choices in one request, but this server serves at most %d requests at once",
                n_reqs, serve_queue_max_open(api->cfg.queue));
        goto fail;
    }
    /* One request a choice: choice k is prompt k / n's (k % n)-th, with seed + k % n (so the
     * first is what n = 1 gives); all are submitted or none. */
    struct reqs q = {.n = n_reqs};
    for (int k = 0; k < q.n; k++) {
        const int i = k / g.n_choices;
        struct serve_req_params p = g.params;
        p.prompt = xmalloc(sizeof *p.prompt * (size_t)g.n_prompt[i]);
        memcpy(p.prompt, g.prompt[i], sizeof *p.prompt * (size_t)g.n_prompt[i]);
        p.n_prompt = g.n_prompt[i];
        p.max_tokens = g.max_tokens[i];
        /* echo scores the prompt when its log-probabilities are asked for, or when there is
         * nothing else to compute */
        p.prompt_logprobs = g.echo && (g.params.logprobs || p.max_tokens == 0);
        p.sampling.seed += (uint64_t)(k % g.n_choices);
        if (g.n_bias) {
            p.n_bias = g.n_bias;
            p.bias_token = xmalloc(sizeof *p.bias_token * (size_t)g.n_bias);
            p.bias = xmalloc(sizeof *p.bias * (size_t)g.n_bias);
            memcpy(p.bias_token, g.bias_token, sizeof *p.bias_token * (size_t)g.n_bias);
            memcpy(p.bias, g.bias, sizeof *p.bias * (size_t)g.n_bias);
        }
        q.r[k] = serve_req_new(&p);
        tg_init(&q.tg[k], api, &g);
    }
    gen_free_prompts(&g); /* the requests have their copies */
    if (!serve_queue_submit_all(api->cfg.queue, q.r, (size_t)q.n)) {
        for (int i = 0; i < q.n; i++) q.tg[i].done = true; /* nothing to cancel */
        reqs_free(&q);
        bool serving;
        char reason[200];
        serve_queue_get_status(api->cfg.queue, &serving, reason, sizeof reason, NULL);
        if (serving)
            set_err(&e, 429, NULL, "busy",
                    "too many requests at once (%d open, running or queued, is this server's "
                    "most: --max-seqs + --max-queue); retry later",
                    serve_queue_max_open(api->cfg.queue));
        else
            set_err(&e, 503, NULL, "unavailable", "not serving: %s", reason);
        cJSON_Delete(root);
        return send_error(api, c, &e, NULL);
    }

    enum MHD_Result ret;
    if (!g.stream) {
        ret = answer_plain(api, c, &q, &g);
        reqs_free(&q);
    } else {
        struct stream *st = calloc(1, sizeof *st);
        if (!st) abort();
        st->api = api;
        st->g = g;
        st->q = q;
        st->fd = connection_fd(c);
        st->created = time(NULL);
        /* The text pipelines and stop strings point into g and the cJSON tree: repoint them at
         * the stream's copies, for its lifetime. */
        for (int i = 0; i < st->q.n; i++) st->q.tg[i].g = &st->g;
        for (int i = 0; i < st->g.n_stop; i++) {
            char *s = xmalloc(st->g.stop_len[i] + 1);
            memcpy(s, g.stop[i], g.stop_len[i] + 1);
            st->g.stop[i] = s;
        }
        for (int i = 0; chat && i < st->q.n; i++) stream_chunk(st, i, "", 0, true, NULL, 0);
        struct MHD_Response *resp =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, st, stream_free);
        if (!resp) {
            stream_free(st);
            cJSON_Delete(root);
            return MHD_NO;
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        ret = queue(api, c, 200, resp); /* st is freed with the response (stream_free) */
    }
    cJSON_Delete(root);
    return ret;
fail:
    cJSON_Delete(root);
    gen_free_prompts(&g);
    count_rejected(api);
    return send_error(api, c, &e, NULL);
}

/* ==== Status, metrics, models ============================================================ */

static enum MHD_Result handle_health(api_t *api, struct MHD_Connection *c) {
    bool serving;
    char reason[256];
    serve_queue_get_status(api->cfg.queue, &serving, reason, sizeof reason, NULL);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "status", serving ? "ok" : "unavailable");
    if (!serving) cJSON_AddStringToObject(j, "reason", reason);
    return send_json(api, c, serving ? 200 : 503, j);
}

static enum MHD_Result handle_cluster(api_t *api, struct MHD_Connection *c) {
    bool serving;
    char reason[256];
    char *json = NULL;
    serve_queue_get_status(api->cfg.queue, &serving, reason, sizeof reason, &json);
    if (!json) {
        struct api_err e;
        set_err(&e, 503, NULL, "unavailable", "no cluster state yet: %s", reason);
        return send_error(api, c, &e, NULL);
    }
    return send_body(api, c, 200, json, "application/json", NULL);
}

/* The one model this server serves, as OpenAI's model object. */
static cJSON *model_object(const api_t *api) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", model_id(api));
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", 0);
    cJSON_AddStringToObject(m, "owned_by", "caravan");
    cJSON_AddNumberToObject(m, "context_length", api->cfg.n_ctx);
    return m;
}

/* GET /v1/models: the list; GET /v1/models/ID (id != NULL): that model, or 404. */
static enum MHD_Result handle_models(api_t *api, struct MHD_Connection *c, const char *id) {
    if (id) {
        if (strcmp(id, model_id(api))) {
            struct api_err e;
            set_err(&e, 404, "model", "model_not_found",
                    "the model '%s' does not exist; this server serves '%s'", id, model_id(api));
            return send_error(api, c, &e, NULL);
        }
        return send_json(api, c, 200, model_object(api));
    }
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON_AddItemToArray(cJSON_AddArrayToObject(root, "data"), model_object(api));
    return send_json(api, c, 200, root);
}

/* POST /tokenize {"content", "add_special", "parse_special", "with_pieces"} -> {"tokens": [ids]}
 * (with_pieces: [{"id", "piece"}]), llama.cpp's server's form: the ids logit_bias takes. */
static enum MHD_Result handle_tokenize(api_t *api, struct MHD_Connection *c, struct conn *cn) {
    struct api_err e = {0};
    cJSON *root = parse_body(cn->body, cn->len, &e);
    const cJSON *text = root ? cJSON_GetObjectItemCaseSensitive(root, "content") : NULL;
    bool add_special = false, parse_special = false, with_pieces = false;
    if (root && !cJSON_IsString(text))
        set_err(&e, 400, "content", "invalid_type", "'content' must be a string");
    if (!root || e.status || !get_bool(root, "add_special", &add_special, &e) ||
        !get_bool(root, "parse_special", &parse_special, &e) ||
        !get_bool(root, "with_pieces", &with_pieces, &e)) {
        cJSON_Delete(root);
        return send_error(api, c, &e, NULL);
    }
    const tokenizer_t *t = api->cfg.tokenizer;
    size_t len = strlen(text->valuestring);
    int64_t n = tokenizer_encode(t, text->valuestring, len, add_special, parse_special, NULL, 0);
    int32_t *ids = n >= 0 ? xmalloc(sizeof *ids * (size_t)(n ? n : 1)) : NULL;
    if (n < 0 ||
        tokenizer_encode(t, text->valuestring, len, add_special, parse_special, ids, n) != n) {
        free(ids);
        cJSON_Delete(root);
        set_err(&e, 400, "content", NULL, "the text could not be tokenized");
        return send_error(api, c, &e, NULL);
    }
    cJSON *out = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(out, "tokens");
    for (int64_t i = 0; i < n; i++) {
        if (!with_pieces) {
            cJSON_AddItemToArray(arr, cJSON_CreateNumber(ids[i]));
            continue;
        }
        size_t pl = 0;
        const char *piece = tokenizer_token_piece(t, ids[i], &pl);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "id", ids[i]);
        cJSON_AddItemToObject(o, "piece", json_text(piece ? piece : "", piece ? pl : 0));
        cJSON_AddItemToArray(arr, o);
    }
    free(ids);
    cJSON_Delete(root);
    return send_json(api, c, 200, out);
}

/* POST /detokenize {"tokens": [ids]} -> {"content": text} (invalid UTF-8 as U+FFFD). */
static enum MHD_Result handle_detokenize(api_t *api, struct MHD_Connection *c, struct conn *cn) {
    struct api_err e = {0};
    cJSON *root = parse_body(cn->body, cn->len, &e);
    const cJSON *toks = root ? cJSON_GetObjectItemCaseSensitive(root, "tokens") : NULL;
    int32_t *ids = NULL, n = 0;
    if (root && !cJSON_IsArray(toks))
        set_err(&e, 400, "tokens", "invalid_type", "'tokens' must be a list of token ids");
    else if (root && cJSON_GetArraySize(toks) > 0 && !parse_ids(api, toks, false, &ids, &n, &e))
        e.param = "tokens";
    if (!root || e.status) {
        cJSON_Delete(root);
        return send_error(api, c, &e, NULL);
    }
    size_t need = tokenizer_decode(api->cfg.tokenizer, ids, n, false, NULL, 0);
    char *buf = xmalloc(need + 1);
    tokenizer_decode(api->cfg.tokenizer, ids, n, false, buf, need);
    cJSON *out = cJSON_CreateObject();
    cJSON_AddItemToObject(out, "content", json_text(buf, need));
    free(buf);
    free(ids);
    cJSON_Delete(root);
    return send_json(api, c, 200, out);
}

static void prom_label(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '\\' || *s == '"') fputc('\\', f);
        if (*s == '\n')
            fputs("\\n", f);
        else
            fputc(*s, f);
    }
}

static void prom_metric(FILE *f, const char *name, const char *type, const char *help, double v) {
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n%s %.10g\n", name, help, name, type, name, v);
}

/* Prometheus text exposition (version 0.0.4) of struct serve_metrics. */
static char *metrics_text(api_t *api) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) abort();
    size_t pending = serve_queue_pending(api->cfg.queue);
    struct serve_metrics *m = serve_queue_metrics(api->cfg.queue);
    prom_metric(f, "caravan_requests_total", "counter", "Generation requests accepted.",
                (double)m->requests_total);
    prom_metric(f, "caravan_requests_rejected_total", "counter",
                "Generation requests refused (400 bad request or too long, 429 busy).",
                (double)m->requests_rejected);
    prom_metric(f, "caravan_requests_forbidden_total", "counter",
                "Requests refused with 403: a web page of an origin --cors does not name, or a "
                "Host that is not this server's.",
                (double)m->requests_forbidden);
    prom_metric(f, "caravan_requests_failed_total", "counter", "Requests that ended with an error.",
                (double)m->requests_failed);
    prom_metric(f, "caravan_prompt_tokens_total", "counter", "Prompt tokens processed.",
                (double)m->prompt_tokens_total);
    prom_metric(f, "caravan_generated_tokens_total", "counter", "Tokens generated.",
                (double)m->generated_tokens_total);
    prom_metric(f, "caravan_steps_total", "counter",
                "Micro-batches that went through the pipeline.", (double)m->steps_total);
    prom_metric(f, "caravan_active_sequences", "gauge", "Requests holding a KV slot.",
                (double)m->active_seqs);
    prom_metric(f, "caravan_queue_depth", "gauge", "Requests waiting for a slot.",
                (double)m->queued + (double)pending);
    prom_metric(f, "caravan_epochs_total", "counter", "Plan changes.", (double)m->epochs_total);

    const char *h = "caravan_time_to_first_token_seconds";
    fprintf(f, "# HELP %s Time from submit to the first generated token.\n# TYPE %s histogram\n", h,
            h);
    uint64_t cum = 0;
    for (int b = 0; b < SERVE_TTFT_BUCKETS; b++) {
        cum += m->ttft_bucket[b];
        if (b < SERVE_TTFT_BUCKETS - 1)
            fprintf(f, "%s_bucket{le=\"%g\"} %llu\n", h, serve_ttft_bounds[b],
                    (unsigned long long)cum);
        else
            fprintf(f, "%s_bucket{le=\"+Inf\"} %llu\n", h, (unsigned long long)m->ttft_count);
    }
    fprintf(f, "%s_sum %.10g\n%s_count %llu\n", h, m->ttft_sum_s, h,
            (unsigned long long)m->ttft_count);

    static const struct {
        const char *name, *help;
        size_t off;
        bool count;
    } stage_fields[] = {
        {"caravan_stage_compute_seconds_total", "Time each stage spent computing.",
         offsetof(struct serve_stage_metrics, compute_s), false},
        {"caravan_stage_network_seconds_total",
         "Send to next receive per stage, incl. serialization and encryption, while the "
         "stage was free to read.",
         offsetof(struct serve_stage_metrics, network_s), false},
        {"caravan_stage_wait_seconds_total",
         "Waiting for the stage, busy with earlier work, or received and not yet computing.",
         offsetof(struct serve_stage_metrics, wait_s), false},
        {"caravan_stage_forwards_total", "Forwards each stage computed.",
         offsetof(struct serve_stage_metrics, forwards), true},
    };
    int n_stages = m->n_stages < 0                  ? 0
                   : m->n_stages > SERVE_MAX_STAGES ? SERVE_MAX_STAGES
                                                    : m->n_stages;
    for (size_t k = 0; k < sizeof stage_fields / sizeof stage_fields[0]; k++) {
        fprintf(f, "# HELP %s %s\n# TYPE %s counter\n", stage_fields[k].name, stage_fields[k].help,
                stage_fields[k].name);
        for (int s = 0; s < n_stages; s++) {
            const struct serve_stage_metrics *sm = &m->stage[s];
            const char *p = (const char *)sm + stage_fields[k].off;
            double v = stage_fields[k].count ? (double)*(const uint64_t *)(const void *)p
                                             : *(const double *)(const void *)p;
            char name[sizeof sm->name + 1];
            memcpy(name, sm->name, sizeof sm->name);
            name[sizeof sm->name] = 0;
            fprintf(f, "%s{stage=\"%d\",name=\"", stage_fields[k].name, s);
            prom_label(f, name);
            fprintf(f, "\"} %.10g\n", v);
        }
    }
    serve_queue_metrics_done(api->cfg.queue);
    fclose(f);
    return buf;
}

/* ==== Routing ============================================================================ */

static bool authorized(const api_t *api, struct MHD_Connection *c) {
    if (!api->key_len) return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7)) return false;
    h += 7;
    while (*h == ' ') h++;
    size_t n = strlen(h);
    while (n && (h[n - 1] == ' ' || h[n - 1] == '\t')) n--;
    return key_equal(api->key, api->key_len, h, n);
}

/* The watch page (coordinator/web/index.html, embedded at build time by web/embed.cmake). */
extern const unsigned char api_web_page[];
extern const unsigned long api_web_page_len;

static enum MHD_Result send_page(api_t *api, struct MHD_Connection *c) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        (size_t)api_web_page_len, (void *)api_web_page, MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/html; charset=utf-8");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    return queue(api, c, 200, resp);
}

/* The methods a route takes, for 405's Allow and a preflight's answer: OPTIONS too when --cors
 * has the server answer preflights. */
static const char *route_methods(const api_t *api, bool post) {
    if (post) return api->cors.n ? "POST, OPTIONS" : "POST";
    return api->cors.n ? "GET, HEAD, OPTIONS" : "GET, HEAD";
}

/* A browser's preflight (OPTIONS) before a cross-origin request that sends Authorization or
 * a JSON body: which methods and headers the page may use. No key is asked: the browser sends
 * none with it. */
static enum MHD_Result preflight(api_t *api, struct MHD_Connection *c, const char *url, bool post) {
    const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    if (!cors_allows(&api->cors, origin)) {
        struct api_err e;
        set_err(&e, 403, NULL, "origin_not_allowed", "%s: the origin %s is not one --cors names",
                url, origin ? origin : "(none)");
        return forbid(api, c, &e);
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, "Access-Control-Allow-Methods", route_methods(api, post));
    /* the headers the page asks for (the openai SDK sends a dozen of its own): no cookie or
     * other ambient credential is honoured here, so naming any of them grants nothing */
    const char *asked =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Access-Control-Request-Headers");
    bool plain = asked && strlen(asked) <= 2048;
    for (const char *p = asked; plain && *p; p++)
        plain = isalnum((unsigned char)*p) || strchr("-_, ", *p);
    MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                            plain ? asked : "Authorization, Content-Type");
    MHD_add_response_header(resp, "Access-Control-Max-Age", "600");
    return queue(api, c, 204, resp);
}

/* A Host header that names this machine as no DNS answer can: "localhost", a name under it
 * (browsers resolve those to loopback themselves, RFC 6761) or an IP literal (any port). A web
 * page that points a name of its own at 127.0.0.1 (DNS rebinding) sends its name here, and is
 * the same origin as this server in the browser's eyes. */
static bool host_is_local(const char *host) {
    char name[64];
    unsigned char addr[16];
    size_t len = host[0] == '[' ? strcspn(host + 1, "]") : strcspn(host, ":");
    if (len >= sizeof name) return false;
    memcpy(name, host + (host[0] == '['), len);
    name[len] = 0;
    if (host[0] == '[') return host[len + 1] == ']' && inet_pton(AF_INET6, name, addr) == 1;
    const size_t sub = sizeof ".localhost" - 1;
    return !strcasecmp(name, "localhost") ||
           (len > sub && name[0] != '.' && !strcasecmp(name + len - sub, ".localhost")) ||
           inet_pton(AF_INET, name, addr) == 1;
}

/* The page that sent the request is one of this server's own (the watch page at /). */
static bool same_origin(const char *origin, const char *host) {
    const char *rest = !strncasecmp(origin, "http://", 7)    ? origin + 7
                       : !strncasecmp(origin, "https://", 8) ? origin + 8
                                                             : NULL;
    return rest && host && !strcasecmp(rest, host);
}

static enum MHD_Result route(api_t *api, struct MHD_Connection *c, const char *url,
                             const char *method, struct conn *cn) {
    struct api_err e;
    /* Browsers only: other clients send no Origin, and their Host is what they were told. */
    const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host");
    const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    if (api->local_open && host && !host_is_local(host)) {
        set_err(&e, 403, NULL, "host_not_allowed",
                "Host %.100s: this server listens on loopback without an API key, so it answers "
                "only localhost, names under it and IP addresses (any web page can point a name "
                "of its own at 127.0.0.1); give --api-key to serve other names",
                host);
        return forbid(api, c, &e);
    }
    if (origin && !same_origin(origin, host) && !cors_allows(&api->cors, origin)) {
        set_err(&e, 403, NULL, "origin_not_allowed",
                "a page of %.100s may not call this server: only its own pages and those of the "
                "origins --cors names may",
                origin);
        return forbid(api, c, &e);
    }
    bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    bool post = !strcmp(method, "POST");
    bool options = !strcmp(method, "OPTIONS") && api->cors.n;
    bool v1 = !strncmp(url, "/v1/", 4) || !strcmp(url, "/tokenize") || !strcmp(url, "/detokenize");
    if (v1 && !options && !authorized(api, c)) {
        set_err(&e, 401, NULL, "invalid_api_key",
                "missing or wrong API key (send Authorization: Bearer KEY)");
        return send_error(api, c, &e, NULL);
    }
    static const struct {
        const char *path;
        bool post;   /* else GET */
        bool prefix; /* path then one more segment (its argument), as /v1/models/ID */
    } routes[] = {{"/v1/completions", true, false},
                  {"/v1/chat/completions", true, false},
                  {"/v1/models", false, false},
                  {"/health", false, false},
                  {"/metrics", false, false},
                  {"/cluster", false, false},
                  {"/tokenize", true, false},
                  {"/detokenize", true, false},
                  {"/", false, false},
                  {"/v1/models/", false, true}};
    size_t i = 0, n = sizeof routes / sizeof routes[0];
    const char *arg = NULL;
    for (; i < n; i++) {
        size_t len = strlen(routes[i].path);
        if (!routes[i].prefix ? !strcmp(url, routes[i].path)
                              : !strncmp(url, routes[i].path, len) && url[len]) {
            arg = routes[i].prefix ? url + len : NULL;
            break;
        }
    }
    if (i == n) {
        set_err(&e, 404, NULL, "not_found", "no such endpoint: %s %s", method, url);
        return send_error(api, c, &e, NULL);
    }
    if (options) return preflight(api, c, url, routes[i].post);
    if (routes[i].post ? !post : !get) {
        set_err(&e, 405, NULL, "method_not_allowed", "%s does not take %s", url, method);
        return send_error(api, c, &e, route_methods(api, routes[i].post));
    }
    if (cn->too_big) {
        set_err(&e, 413, NULL, "too_large", "the body is larger than %u bytes", API_MAX_BODY);
        return send_error(api, c, &e, NULL);
    }
    switch (i) {
    case 0: return handle_generate(api, c, cn, false);
    case 1: return handle_generate(api, c, cn, true);
    case 2: return handle_models(api, c, NULL);
    case 3: return handle_health(api, c);
    case 4: return send_body(api, c, 200, metrics_text(api), "text/plain; version=0.0.4", NULL);
    case 5: return handle_cluster(api, c);
    case 6: return handle_tokenize(api, c, cn);
    case 7: return handle_detokenize(api, c, cn);
    case 8: return send_page(api, c);
    default: return handle_models(api, c, arg);
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
    (void)version;
    api_t *api = cls;
    struct conn *cn = *con_cls;
    if (!cn) {
        cn = calloc(1, sizeof *cn);
        if (!cn) return MHD_NO;
        *con_cls = cn;
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (cn->too_big || cn->len + n > API_MAX_BODY) {
            cn->too_big = true;
            return MHD_YES;
        }
        if (cn->len + n + 1 > cn->cap) {
            size_t cap = (cn->len + n + 1) * 2;
            char *b = realloc(cn->body, cap);
            if (!b) return MHD_NO;
            cn->body = b;
            cn->cap = cap;
        }
        memcpy(cn->body + cn->len, upload_data, n);
        cn->len += n;
        cn->body[cn->len] = 0;
        return MHD_YES;
    }
    return route(api, c, url, method, cn);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)c;
    (void)toe;
    struct conn *cn = *con_cls;
    if (!cn) return;
    free(cn->body);
    free(cn);
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n') msg[--n] = 0;
    LOG(LOG_INFO, "http: %s", msg); /* clients that leave, mostly */
}

/* ==== Start and stop ===================================================================== */

enum status api_key_resolve(const char *arg, char *out, size_t cap, char *err, size_t errcap) {
    struct stat st;
    const char *key = arg;
    char line[1024];
    const int st_rc = arg ? stat(arg, &st) : -1, st_errno = errno;
    if (st_rc == 0 && S_ISREG(st.st_mode)) {
        FILE *f = fopen(arg, "r");
        if (!f) {
            snprintf(err, errcap, "api key file %s: %s", arg, strerror(errno));
            return STATUS_IO;
        }
        if (!fgets(line, sizeof line, f)) line[0] = 0;
        fclose(f);
        key = line;
    } else if (arg && (arg[0] == '/' || arg[0] == '.' || arg[0] == '~')) {
        /* a mistyped file name must not become the key itself */
        snprintf(err, errcap,
                 "api key file %s: %s (a key that starts with '/', '.' or '~' is read from a "
                 "file; put such a key in one)",
                 arg, st_rc == 0 ? "not a regular file" : strerror(st_errno));
        return STATUS_IO;
    }
    if (!key) key = "";
    while (isspace((unsigned char)*key)) key++;
    size_t n = strlen(key);
    while (n && isspace((unsigned char)key[n - 1])) n--;
    if (!n || n >= cap) {
        snprintf(err, errcap, "api key%s%s is %s", key == line ? " file " : "",
                 key == line ? arg : "", n ? "too long" : "empty");
        return STATUS_FORMAT;
    }
    memcpy(out, key, n);
    out[n] = 0;
    return STATUS_OK;
}

static bool is_loopback(const struct sockaddr *sa) {
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr)) return true;
        return IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && in6->sin6_addr.s6_addr[12] == 127;
    }
    return false;
}

/* What --http, --api-key and --no-api-key say, checked without binding. */
struct listen_spec {
    const char *listen; /* as given, or the default */
    char host[256];     /* without brackets; "" for any address */
    long port;          /* 0: any free port */
    struct addrinfo *ai;
    char key[512];
    size_t key_len;
};

static bool listen_resolve(const struct api_config *cfg, struct listen_spec *ls, char *err,
                           size_t errcap) {
    memset(ls, 0, sizeof *ls);
    /* HOST:PORT, [V6]:PORT */
    const char *listen = ls->listen = cfg->listen ? cfg->listen : "127.0.0.1:8080";
    const char *colon = strrchr(listen, ':');
    size_t hl = colon ? (size_t)(colon - listen) : 0;
    if (!colon || hl >= sizeof ls->host) {
        snprintf(err, errcap, "--http %s: expected HOST:PORT", listen);
        return false;
    }
    memcpy(ls->host, listen, hl);
    ls->host[hl] = 0;
    if (hl >= 2 && ls->host[0] == '[' && ls->host[hl - 1] == ']') {
        memmove(ls->host, ls->host + 1, hl - 2);
        ls->host[hl - 2] = 0;
    }
    char *end;
    ls->port = strtol(colon + 1, &end, 10);
    if (!colon[1] || *end || ls->port < 0 || ls->port > 65535) {
        snprintf(err, errcap, "--http %s: bad port", listen);
        return false;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    int gai = getaddrinfo(ls->host[0] ? ls->host : NULL, colon + 1, &hints, &ls->ai);
    if (gai) {
        snprintf(err, errcap, "--http %s: %s", listen, gai_strerror(gai));
        ls->ai = NULL;
        return false;
    }
    if (cfg->api_key) {
        char kerr[300];
        if (api_key_resolve(cfg->api_key, ls->key, sizeof ls->key, kerr, sizeof kerr) !=
            STATUS_OK) {
            snprintf(err, errcap, "--api-key: %s", kerr);
            goto fail;
        }
        ls->key_len = strlen(ls->key);
    }
    if (!ls->key_len && !cfg->no_api_key && !is_loopback(ls->ai->ai_addr)) {
        snprintf(err, errcap,
                 "refusing to serve %s without an API key: it is not a loopback address "
                 "(give --api-key KEY|FILE, or --no-api-key to allow anyone)",
                 listen);
        goto fail;
    }
    return true;
fail:
    freeaddrinfo(ls->ai);
    ls->ai = NULL;
    memset(ls->key, 0, sizeof ls->key);
    return false;
}

/* --cors "*" or "ORIGIN[,ORIGIN...]", each ORIGIN as a browser sends it: http:// or https://,
 * a host, an optional :PORT, nothing after. */
static bool cors_parse(const char *spec, struct cors *cors, char *err, size_t errcap) {
    memset(cors, 0, sizeof *cors);
    if (!spec) return true;
    if (!strcmp(spec, "*")) {
        cors->any = true;
        cors->n = 1;
        return true;
    }
    const char *p = spec;
    for (;;) {
        while (*p == ' ') p++;
        size_t len = strcspn(p, ",");
        while (len && p[len - 1] == ' ') len--;
        const char *why = NULL;
        /* as same_origin and cors_allows compare: without regard to case */
        size_t scheme = !strncasecmp(p, "http://", 7) ? 7 : !strncasecmp(p, "https://", 8) ? 8 : 0;
        if (!len)
            why = "an empty origin";
        else if (len == 1 && *p == '*')
            why = "'*' stands alone (it allows every origin)";
        else if (!scheme)
            why = "an origin starts with http:// or https://";
        else if (len == scheme || len >= sizeof cors->origin[0])
            why = len == scheme ? "no host after the scheme" : "an origin that long";
        else if (cors->n == API_CORS_MAX)
            why = "more than 16 origins";
        for (size_t k = scheme; !why && k < len; k++)
            if (p[k] == '/' || p[k] == '?' || p[k] == '#' || (unsigned char)p[k] <= ' ' ||
                (unsigned char)p[k] >= 0x7f)
                why = p[k] == '/' ? "an origin has no path (no '/' after the host)"
                                  : "a character an origin does not have";
        if (why) {
            snprintf(err, errcap, "--cors %s: %s (expected '*' or http[s]://HOST[:PORT],...)", spec,
                     why);
            return false;
        }
        memcpy(cors->origin[cors->n], p, len);
        cors->origin[cors->n++][len] = 0;
        p += strcspn(p, ",");
        if (!*p) return true;
        p++;
    }
}

bool api_check_listen(const struct api_config *cfg, char *err, size_t errcap) {
    struct cors cors;
    if (!cors_parse(cfg->cors, &cors, err, errcap)) return false;
    struct listen_spec ls;
    if (!listen_resolve(cfg, &ls, err, errcap)) return false;
    freeaddrinfo(ls.ai);
    memset(ls.key, 0, sizeof ls.key);
    return true;
}

api_t *api_start(const struct api_config *cfg, char *err, size_t errcap) {
    api_t *api = calloc(1, sizeof *api);
    struct listen_spec ls = {0};
    if (!api) abort();
    api->cfg = *cfg;
    if (!cfg->queue || !cfg->tokenizer || cfg->n_ctx < 2) {
        snprintf(err, errcap, "api: queue, tokenizer and n_ctx >= 2 are required");
        goto fail;
    }
    if (!cors_parse(cfg->cors, &api->cors, err, errcap)) goto fail;
    if (!listen_resolve(cfg, &ls, err, errcap)) goto fail;
    memcpy(api->key, ls.key, sizeof api->key);
    api->key_len = ls.key_len;
    api->local_open = !api->key_len && is_loopback(ls.ai->ai_addr);
    memset(ls.key, 0, sizeof ls.key);
    api_init_text(api);

    /* one address holding every connection (a client that opens and never sends, or sends a
     * byte a minute) would lock out everyone else: it gets API_CONNECTIONS_PER_IP, or twice what
     * the queue takes when that is more; past that MHD closes the new connection at once */
    unsigned max_open = (unsigned)serve_queue_max_open(cfg->queue);
    unsigned per_ip =
        max_open > API_CONNECTIONS_PER_IP / 2 ? 2u * max_open : API_CONNECTIONS_PER_IP;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_ERROR_LOG | (ls.ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    /* the address is MHD_OPTION_SOCK_ADDR's; the port argument only names it in MHD's messages */
    api->mhd = MHD_start_daemon(flags, (uint16_t)ls.port, NULL, NULL, on_request, api,
                                MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, api, MHD_OPTION_SOCK_ADDR,
                                ls.ai->ai_addr, MHD_OPTION_NOTIFY_COMPLETED, on_completed, api,
                                MHD_OPTION_CONNECTION_LIMIT, API_CONNECTIONS,
                                MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_ip,
                                MHD_OPTION_CONNECTION_TIMEOUT, 600u, MHD_OPTION_END);
    if (!api->mhd) {
        snprintf(err, errcap, "--http %s: cannot listen there (address in use or not local?)",
                 ls.listen);
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(api->mhd, MHD_DAEMON_INFO_BIND_PORT);
    unsigned bound = di ? di->port : (unsigned)ls.port;
    bool v6 = strchr(ls.host, ':') != NULL;
    snprintf(api->url, sizeof api->url, "http://%s%s%s:%u", v6 ? "[" : "",
             ls.host[0] ? ls.host : "0.0.0.0", v6 ? "]" : "", bound);
    freeaddrinfo(ls.ai);
    LOG(LOG_INFO, "http: serving the OpenAI API on %s (%s; %s)", api->url,
        api->key_len ? "API key required" : "no API key",
        api->cors.any ? "pages of any origin may read the answers (--cors *)"
        : api->cors.n ? "pages of the --cors origins may read the answers"
                      : "no cross-origin pages");
    return api;
fail:
    if (ls.ai) freeaddrinfo(ls.ai);
    memset(api->key, 0, sizeof api->key);
    free(api);
    return NULL;
}

void api_stop(api_t **self_p) {
    if (!self_p || !*self_p) return;
    api_t *api = *self_p;
    atomic_store(&api->stopping, true); /* waits see it within API_WAIT_MS and cancel */
    if (api->mhd) MHD_stop_daemon(api->mhd);
    memset(api->key, 0, sizeof api->key);
    free(api);
    *self_p = NULL;
}

const char *api_url(const api_t *self) {
    return self->url;
}
