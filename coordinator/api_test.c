/* api_test: the HTTP API (api.c) over the fake serving loop (serve_fake.c) on a free loopback
 * port, spoken to with plain HTTP/1.0 over sockets: answers, streaming, stop strings, limits,
 * errors, auth, 429, client disconnects and 8 concurrent streams. */
#include "api.h"
#include "api_internal.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "gguf.h"
#include "serve_fake.h"

#include "check.h"

static tokenizer_t *tok;

struct server {
    serve_queue_t *q;
    serve_fake_t *fake;
    api_t *api;
    int port;
};

static void server_open(struct server *s, int n_ctx, int max_open, int delay_ms, const char *key,
                        const char *cors) {
    s->q = serve_queue_new(max_open);
    struct serve_fake_config fc = {.tokenizer = tok, .token_delay_ms = delay_ms};
    s->fake = serve_fake_start(s->q, &fc);
    struct api_config cfg = {.listen = "127.0.0.1:0",
                             .api_key = key,
                             .cors = cors,
                             .model_name = "m",
                             .tokenizer = tok,
                             .chat_format = CHAT_FORMAT_CHATML,
                             .n_ctx = n_ctx,
                             .queue = s->q};
    char err[256];
    s->api = api_start(&cfg, err, sizeof err);
    REQUIRE(s->api, "%s", err);
    const char *colon = strrchr(api_url(s->api), ':');
    s->port = atoi(colon + 1);
    REQUIRE(s->port > 0, "bound port in the url");
}

static void server_start(struct server *s, int n_ctx, int max_open, int delay_ms, const char *key) {
    server_open(s, n_ctx, max_open, delay_ms, key, NULL);
}

static void server_stop(struct server *s) {
    api_stop(&s->api);
    serve_fake_stop(&s->fake);
    serve_queue_destroy(&s->q);
}

static int connect_to(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "connect");
    return fd;
}

static void send_request(int fd, const char *method, const char *path, const char *headers,
                         const char *body) {
    char head[1024];
    size_t blen = body ? strlen(body) : 0;
    /* Host: 127.0.0.1 unless headers name one */
    bool host = headers && strstr(headers, "Host:");
    int n = snprintf(head, sizeof head, "%s %s HTTP/1.0\r\n%sContent-Length: %zu\r\n%s\r\n", method,
                     path, host ? "" : "Host: 127.0.0.1\r\n", blen, headers ? headers : "");
    REQUIRE(write(fd, head, (size_t)n) == n, "write head");
    if (blen) REQUIRE(write(fd, body, blen) == (ssize_t)blen, "write body");
}

struct resp {
    int status;
    char *all;  /* whole response, NUL-terminated */
    char *body; /* into all */
};

static void read_response(int fd, struct resp *r) {
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 1024 > cap) buf = realloc(buf, cap *= 2);
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n <= 0) break;
        len += (size_t)n;
    }
    buf[len] = 0;
    close(fd);
    r->all = buf;
    r->status = 0;
    sscanf(buf, "HTTP/1.%*d %d", &r->status);
    char *b = strstr(buf, "\r\n\r\n");
    r->body = b ? b + 4 : buf + len;
}

/* The value of response header name (its first line), "" when it has none. */
static const char *header(const struct resp *r, const char *name) {
    static char v[512];
    v[0] = 0;
    size_t n = strlen(name);
    for (const char *l = strstr(r->all, "\r\n"); l && l + 2 < r->body; l = strstr(l + 2, "\r\n"))
        if (!strncasecmp(l + 2, name, n) && l[2 + n] == ':') {
            const char *p = l + 3 + n;
            while (*p == ' ') p++;
            size_t len = strcspn(p, "\r");
            snprintf(v, sizeof v, "%.*s", (int)(len < sizeof v ? len : sizeof v - 1), p);
            break;
        }
    return v;
}

static struct resp http(int port, const char *method, const char *path, const char *headers,
                        const char *body) {
    struct resp r;
    int fd = connect_to(port);
    send_request(fd, method, path, headers, body);
    read_response(fd, &r);
    return r;
}

/* What the fake loop answers for prompt text: its ids again after BOS, decoded. */
static char *echo_of(const char *prompt, int max_tokens) {
    int32_t ids[512];
    int64_t n = tokenizer_encode(tok, prompt, strlen(prompt), true, false, ids, 512);
    REQUIRE(n > 1 && n < 512, "encode");
    tokenizer_decoder_t *d = tokenizer_decoder_new(tok, false);
    tokenizer_decoder_set_midstream(d);
    char *out = calloc(1, 4096);
    for (int64_t i = 1; i < n && (max_tokens <= 0 || i <= max_tokens); i++) {
        const char *b;
        size_t k = tokenizer_decoder_feed(d, ids[i], &b);
        strncat(out, b, k);
    }
    tokenizer_decoder_free(&d);
    return out;
}

/* The JSON body of a 4xx must be an OpenAI error. */
static void check_error(struct resp *r, int status, const char *param) {
    if (r->status != status) fprintf(stderr, "got: %s\n", r->all);
    REQUIRE(r->status == status, "status");
    cJSON *j = cJSON_Parse(r->body);
    REQUIRE(j, "error body is JSON");
    cJSON *e = cJSON_GetObjectItem(j, "error");
    REQUIRE(cJSON_IsString(cJSON_GetObjectItem(e, "message")), "error.message");
    REQUIRE(cJSON_IsString(cJSON_GetObjectItem(e, "type")), "error.type");
    cJSON *p = cJSON_GetObjectItem(e, "param");
    REQUIRE(p, "error.param present");
    if (param) REQUIRE(cJSON_IsString(p) && !strcmp(p->valuestring, param), "error.param");
    cJSON_Delete(j);
    free(r->all);
}

/* Completion text, finish reason and usage of a plain answer. */
static char *plain_text(struct resp *r, const char **finish, int *n_completion, bool chat) {
    if (r->status != 200) fprintf(stderr, "got: %s\n", r->all);
    REQUIRE(r->status == 200, "200");
    cJSON *j = cJSON_Parse(r->body);
    REQUIRE(j, "JSON answer");
    cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    cJSON *t = chat ? cJSON_GetObjectItem(cJSON_GetObjectItem(c, "message"), "content")
                    : cJSON_GetObjectItem(c, "text");
    REQUIRE(cJSON_IsString(t), "text");
    char *text = strdup(t->valuestring);
    static _Thread_local char fin[16]; /* per client thread */
    snprintf(fin, sizeof fin, "%s", cJSON_GetObjectItem(c, "finish_reason")->valuestring);
    *finish = fin;
    cJSON *u = cJSON_GetObjectItem(j, "usage");
    *n_completion = cJSON_GetObjectItem(u, "completion_tokens")->valueint;
    REQUIRE(cJSON_GetObjectItem(u, "total_tokens")->valueint ==
                *n_completion + cJSON_GetObjectItem(u, "prompt_tokens")->valueint,
            "total = prompt + completion");
    cJSON_Delete(j);
    free(r->all);
    return text;
}

/* Concatenated deltas of an SSE answer; checks the framing and the final [DONE]. */
static char *stream_text(struct resp *r, const char **finish, bool chat) {
    REQUIRE(r->status == 200, "200");
    REQUIRE(strstr(r->all, "text/event-stream"), "SSE content type");
    char *text = calloc(1, 8192);
    static _Thread_local char fin[16]; /* per client thread */
    fin[0] = 0;
    bool done = false;
    char *save = NULL;
    for (char *line = strtok_r(r->body, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        REQUIRE(!done, "nothing after [DONE]");
        REQUIRE(!strncmp(line, "data: ", 6), "data: lines only");
        if (!strcmp(line + 6, "[DONE]")) {
            done = true;
            continue;
        }
        cJSON *j = cJSON_Parse(line + 6);
        REQUIRE(j, "event is JSON");
        cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
        if (c) {
            cJSON *t = chat ? cJSON_GetObjectItem(cJSON_GetObjectItem(c, "delta"), "content")
                            : cJSON_GetObjectItem(c, "text");
            if (cJSON_IsString(t)) strcat(text, t->valuestring);
            cJSON *f = cJSON_GetObjectItem(c, "finish_reason");
            if (cJSON_IsString(f)) {
                REQUIRE(!fin[0], "one finish_reason");
                snprintf(fin, sizeof fin, "%s", f->valuestring);
            }
        }
        cJSON_Delete(j);
    }
    REQUIRE(done && fin[0], "ends with a finish_reason and [DONE]");
    *finish = fin;
    free(r->all);
    return text;
}

static void wait_for(serve_fake_t *f, uint64_t cancelled) {
    for (int i = 0; i < 300 && serve_fake_cancelled(f) < cancelled; i++) usleep(10000);
    REQUIRE(serve_fake_cancelled(f) >= cancelled, "the loop saw the cancel");
}

static void test_answers(void) {
    struct server s;
    server_start(&s, 128, 8, 1, NULL);
    int p = s.port;
    const char *fin;
    int n;
    char *want = echo_of("Once upon a time", 0);

    struct resp r = http(p, "GET", "/health", NULL, NULL);
    REQUIRE(r.status == 200 && strstr(r.body, "\"ok\""), "health");
    free(r.all);

    r = http(p, "POST", "/v1/completions", NULL,
             "{\"prompt\":\"Once upon a time\",\"temperature\":0,\"seed\":3,\"top_k\":1}");
    char *plain = plain_text(&r, &fin, &n, false);
    REQUIRE(!strcmp(plain, want) && !strcmp(fin, "stop") && n == 4,
            "plain = echo; the unpushed EOS is not counted");

    r = http(p, "POST", "/v1/completions", NULL,
             "{\"prompt\":\"Once upon a time\",\"temperature\":0,\"stream\":true}");
    char *streamed = stream_text(&r, &fin, false);
    REQUIRE(!strcmp(streamed, plain) && !strcmp(fin, "stop"), "streamed = plain");
    free(streamed);

    r = http(p, "POST", "/v1/completions", NULL,
             "{\"prompt\":[\"Once upon a time\"],\"max_tokens\":2}");
    char *two = plain_text(&r, &fin, &n, false);
    char *want2 = echo_of("Once upon a time", 2);
    REQUIRE(!strcmp(two, want2) && !strcmp(fin, "length") && n == 2, "max_tokens");
    free(two);
    free(want2);

    /* Token ids as the prompt. */
    r = http(p, "POST", "/v1/completions", NULL, "{\"prompt\":[1,403,407],\"max_tokens\":9}");
    char *ids = plain_text(&r, &fin, &n, false);
    REQUIRE(!strcmp(fin, "stop") && n == 2 && strstr(want, ids) == want, "id prompt");
    free(ids);

    /* max_tokens is clamped to the context: ignore_eos echoes until n_ctx. */
    r = http(p, "POST", "/v1/completions", NULL,
             "{\"prompt\":\"Once upon a time\",\"ignore_eos\":true,\"max_tokens\":1000}");
    char *again = plain_text(&r, &fin, &n, false);
    REQUIRE(!strcmp(fin, "length") && n == 128 - 5, "clamped to n_ctx - n_prompt");
    char twice[256];
    snprintf(twice, sizeof twice, "%s%s", want, want);
    REQUIRE(!strncmp(again, twice, strlen(twice)) && !strstr(again, "</s>"),
            "a pushed EOS decodes to nothing");
    free(again);

    /* A stop string across tokens, plain and streamed: cut before it, the loop is told. */
    uint64_t c0 = serve_fake_cancelled(s.fake);
    r = http(p, "POST", "/v1/completions", NULL,
             "{\"prompt\":\"Once upon a time\",\"stop\":[\"zzz\",\"on a t\"],\"ignore_eos\":true}");
    char *cut = plain_text(&r, &fin, &n, false);
    REQUIRE(!strcmp(cut, " Once up") && !strcmp(fin, "stop") && n == 4, "stop string");
    wait_for(s.fake, c0 + 1);
    r = http(p, "POST", "/v1/completions", NULL,
             "{\"prompt\":\"Once upon a time\",\"stop\":\"on a t\",\"stream\":true}");
    char *scut = stream_text(&r, &fin, false);
    REQUIRE(!strcmp(scut, cut) && !strcmp(fin, "stop"), "streamed stop holds back the match");
    free(scut);
    free(cut);
    /* A partial match at the end is released when generation ends. */
    r = http(p, "POST", "/v1/completions", NULL,
             "{\"prompt\":\"Once upon a time\",\"stop\":\"time!\",\"stream\":true}");
    scut = stream_text(&r, &fin, false);
    REQUIRE(!strcmp(scut, want), "held-back tail released at the end");
    free(scut);

    /* A character split over byte tokens is held back until whole (no U+FFFD). */
    char *utf8 = echo_of("Caf\xC3\xA9 \xE2\x98\x95 ok", 0);
    REQUIRE(strstr(utf8, "\xE2\x98\x95"), "the echo has the cup");
    r = http(p, "POST", "/v1/completions", NULL,
             "{\"prompt\":\"Caf\xC3\xA9 \xE2\x98\x95 ok\",\"stream\":true}");
    char *su = stream_text(&r, &fin, false);
    REQUIRE(!strcmp(su, utf8) && !strstr(su, "\xEF\xBF\xBD"), "split UTF-8 streamed whole");
    free(su);
    free(utf8);

    /* Chat, plain and streamed. */
    const char *chat = "{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
                       "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hi \"},"
                       "{\"type\":\"text\",\"text\":\"there\"}]}],\"max_tokens\":100%s}";
    char body[512];
    snprintf(body, sizeof body, chat, "");
    r = http(p, "POST", "/v1/chat/completions", NULL, body);
    char *cp = plain_text(&r, &fin, &n, true);
    REQUIRE(strstr(cp, "Hi there") && strstr(cp, "Be brief."), "chat echo of the rendered prompt");
    snprintf(body, sizeof body, chat, ",\"stream\":true");
    r = http(p, "POST", "/v1/chat/completions", NULL, body);
    char *cs = stream_text(&r, &fin, true);
    REQUIRE(!strcmp(cs, cp), "chat streamed = plain");
    free(cs);
    free(cp);

    r = http(p, "GET", "/v1/models", NULL, NULL);
    REQUIRE(r.status == 200 && strstr(r.body, "\"id\":\"m\""), "models");
    free(r.all);
    r = http(p, "GET", "/v1/models/m", NULL, NULL); /* openai's models.retrieve */
    REQUIRE(r.status == 200 && strstr(r.body, "\"id\":\"m\"") &&
                strstr(r.body, "\"object\":\"model\"") && !strstr(r.body, "\"list\""),
            "one model");
    free(r.all);
    r = http(p, "GET", "/v1/models/gpt-4", NULL, NULL);
    REQUIRE(strstr(r.body, "model_not_found") && strstr(r.body, "'gpt-4'"),
            "another model: says so");
    check_error(&r, 404, "model");
    r = http(p, "POST", "/v1/models/m", NULL, "{}");
    check_error(&r, 405, NULL);
    r = http(p, "GET", "/v1/models/", NULL, NULL);
    check_error(&r, 404, NULL);
    r = http(p, "GET", "/cluster", NULL, NULL);
    cJSON *cl = cJSON_Parse(r.body);
    REQUIRE(r.status == 200 && cJSON_GetObjectItem(cl, "workers"), "cluster JSON");
    cJSON_Delete(cl);
    free(r.all);
    r = http(p, "GET", "/metrics", NULL, NULL);
    REQUIRE(r.status == 200 && strstr(r.body, "\ncaravan_requests_total 11\n"), "requests counted");
    REQUIRE(strstr(r.body, "caravan_time_to_first_token_seconds_bucket{le=\"+Inf\"} 11\n"),
            "ttft histogram");
    REQUIRE(
        strstr(r.body, "caravan_stage_compute_seconds_total{stage=\"0\",name=\"fake \\\"0\\\"\"}"),
        "stage label escaped");
    free(r.all);

    /* The seed comes back as the integer it is, in the answer and in every chunk: written as a
     * double, this one would read 1.79667227809925e+15. */
    r = http(p, "POST", "/v1/completions", NULL,
             "{\"prompt\":\"Once upon a time\",\"max_tokens\":2,\"seed\":1796672278099250}");
    REQUIRE(r.status == 200 && strstr(r.body, "\"seed\":1796672278099250,"), "seed: %s", r.body);
    free(r.all);
    /* (tokens ready together go out as one chunk: under ASan a 2-token answer came in one; so at
     * least one chunk, each with the seed) */
    r = http(p, "POST", "/v1/completions", NULL,
             "{\"prompt\":\"Once upon a time\",\"max_tokens\":8,\"seed\":1796672278099250,"
             "\"stream\":true}");
    int chunks = 0, seeded = 0;
    for (const char *c = strstr(r.body, "data: {"); c; c = strstr(c + 1, "data: {")) {
        chunks++;
        const char *end = strstr(c, "\n\n");
        const char *sd = strstr(c, "\"seed\":1796672278099250,");
        seeded += sd && (!end || sd < end);
    }
    REQUIRE(r.status == 200 && chunks >= 1 && seeded == chunks, "seed in %d of %d chunks: %s",
            seeded, chunks, r.body);
    free(r.all);

    free(plain);
    free(want);
    server_stop(&s);
}

/* The JSON documents of a 200 answer in order: the body, or each event of a stream (without
 * [DONE]); the next one each call, NULL at the end (the caller deletes each). */
struct answer_iter {
    char *next, *save;
    bool stream, started;
};
static cJSON *answer_next(struct resp *r, struct answer_iter *it) {
    REQUIRE(r->status == 200, "200");
    for (;;) {
        char *line;
        if (!it->stream)
            line = it->started ? NULL : r->body;
        else
            line = strtok_r(it->started ? NULL : r->body, "\n", &it->save);
        it->started = true;
        if (!line) return NULL;
        if (it->stream && !strcmp(line, "data: [DONE]")) continue;
        cJSON *j = cJSON_Parse(it->stream ? line + 6 : line);
        REQUIRE(j, "JSON");
        return j;
    }
}

/* The log-probability entries of an answer, plain or streamed, as one array of objects (chat's
 * entries as they are; a completion's parallel arrays zipped into {token, logprob, top,
 * offset}); *n_chunks: how many choices carried some. */
static cJSON *lp_entries(struct resp *r, bool chat, bool stream, int *n_chunks) {
    cJSON *all = cJSON_CreateArray();
    *n_chunks = 0;
    struct answer_iter it = {.stream = stream};
    cJSON *j;
    while ((j = answer_next(r, &it))) {
        cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
        cJSON *lp = cJSON_GetObjectItem(c, "logprobs");
        REQUIRE(!c || lp, "every choice has logprobs (null or not)");
        if (cJSON_IsObject(lp)) {
            (*n_chunks)++;
            if (chat) {
                cJSON *e;
                cJSON_ArrayForEach(e, cJSON_GetObjectItem(lp, "content"))
                    cJSON_AddItemToArray(all, cJSON_Duplicate(e, true));
            } else {
                cJSON *toks = cJSON_GetObjectItem(lp, "tokens");
                int n = cJSON_GetArraySize(toks);
                REQUIRE(cJSON_GetArraySize(cJSON_GetObjectItem(lp, "token_logprobs")) == n &&
                            cJSON_GetArraySize(cJSON_GetObjectItem(lp, "top_logprobs")) == n &&
                            cJSON_GetArraySize(cJSON_GetObjectItem(lp, "text_offset")) == n,
                        "parallel arrays");
                for (int i = 0; i < n; i++) {
                    cJSON *e = cJSON_CreateObject();
                    cJSON_AddItemToObject(e, "token",
                                          cJSON_Duplicate(cJSON_GetArrayItem(toks, i), true));
                    const char *k[3] = {"token_logprobs", "top_logprobs", "text_offset"};
                    const char *as[3] = {"logprob", "top", "offset"};
                    for (int f = 0; f < 3; f++)
                        cJSON_AddItemToObject(
                            e, as[f],
                            cJSON_Duplicate(cJSON_GetArrayItem(cJSON_GetObjectItem(lp, k[f]), i),
                                            true));
                    cJSON_AddItemToArray(all, e);
                }
            }
        }
        cJSON_Delete(j);
    }
    free(r->all);
    return all;
}

/* echo: the prompt's text and tokens lead the answer (text, and with logprobs its entries: the
 * first without a log-probability, token k with the fake's -k / 16, offsets over prompt and
 * answer), max_tokens 0 gives the prompt alone, and streamed = plain. */
static void test_echo(int p) {
    const char *prompt = "Once upon a time";
    const size_t plen = strlen(prompt);
    int32_t ids[64];
    const int64_t n_prompt = tokenizer_encode(tok, prompt, plen, true, false, ids, 64);
    const char *body = "{\"prompt\":\"Once upon a time\",\"echo\":true,\"logprobs\":1,"
                       "\"max_tokens\":%d%s}";
    char b[512];
    const char *fin;
    int n, chunks;
    for (int max = 0; max <= 2; max += 2) {
        char *answer = echo_of(prompt, max);
        char want[512];
        snprintf(want, sizeof want, "%s%s", prompt, max ? answer : "");
        free(answer);
        snprintf(b, sizeof b, body, max, "");
        struct resp r = http(p, "POST", "/v1/completions", NULL, b);
        char *text = plain_text(&r, &fin, &n, false);
        REQUIRE(!strcmp(text, want) && n == max && !strcmp(fin, "length"),
                "echo: the prompt, then the answer");
        free(text);
        snprintf(b, sizeof b, body, max, ",\"stream\":true");
        r = http(p, "POST", "/v1/completions", NULL, b);
        text = stream_text(&r, &fin, false);
        REQUIRE(!strcmp(text, want) && !strcmp(fin, "length"), "echo streamed = plain");
        free(text);

        snprintf(b, sizeof b, body, max, "");
        r = http(p, "POST", "/v1/completions", NULL, b);
        cJSON *plain = lp_entries(&r, false, false, &chunks);
        REQUIRE(cJSON_GetArraySize(plain) == n_prompt + max && chunks == 1,
                "an entry a prompt token and a generated one");
        double last_offset = 0;
        for (int i = 0; i < n_prompt + max; i++) {
            cJSON *e = cJSON_GetArrayItem(plain, i);
            cJSON *lp = cJSON_GetObjectItem(e, "logprob"), *top = cJSON_GetObjectItem(e, "top");
            double off = cJSON_GetObjectItem(e, "offset")->valuedouble;
            REQUIRE(off >= last_offset, "offsets do not go back");
            last_offset = off;
            if (i == 0) {
                REQUIRE(cJSON_IsNull(lp) && cJSON_IsNull(top) && off == 0,
                        "the prompt's first token has no log-probability");
            } else if (i < n_prompt) {
                REQUIRE(lp->valuedouble == -i / 16.0 && cJSON_GetArraySize(top) == 1,
                        "a prompt token's score");
            } else {
                REQUIRE(lp->valuedouble == -(i - n_prompt + 1) / 8.0, "a generated token's");
                if (i == n_prompt) REQUIRE(off >= (double)plen, "the answer's offsets follow");
            }
        }
        snprintf(b, sizeof b, body, max, ",\"stream\":true");
        r = http(p, "POST", "/v1/completions", NULL, b);
        cJSON *streamed = lp_entries(&r, false, true, &chunks);
        REQUIRE(cJSON_Compare(plain, streamed, true), "echo's entries streamed = plain");
        cJSON_Delete(streamed);
        cJSON_Delete(plain);
    }
    /* echo without logprobs: the text, and "logprobs" null */
    struct resp r = http(p, "POST", "/v1/completions", NULL,
                         "{\"prompt\":\"Once upon a time\",\"echo\":true,\"max_tokens\":1}");
    REQUIRE(r.status == 200 && strstr(r.body, "\"text\":\"Once upon a time") &&
                strstr(r.body, "\"logprobs\":null"),
            "echo alone");
    free(r.all);
}

/* Log-probabilities (the fake's made-up ones: the n-th token's -(n + 1) / 8, the most likely
 * being the token itself and the ids after it): one entry a token, cut where a stop string cut
 * the text, the same streamed as plain, and bytes that add up to the text. */
static void test_logprobs(void) {
    struct server s;
    server_start(&s, 128, 8, 1, NULL);
    int p = s.port;
    char *want = echo_of("Once upon a time", 0);
    int chunks;

    /* completions: logprobs N */
    const char *body = "{\"prompt\":\"Once upon a time\",\"logprobs\":2%s}";
    char b[512];
    snprintf(b, sizeof b, body, "");
    struct resp r = http(p, "POST", "/v1/completions", NULL, b);
    cJSON *plain = lp_entries(&r, false, false, &chunks);
    REQUIRE(cJSON_GetArraySize(plain) == 4 && chunks == 1, "one entry a token");
    char joined[256] = "";
    for (int i = 0; i < 4; i++) {
        cJSON *e = cJSON_GetArrayItem(plain, i);
        REQUIRE(cJSON_GetObjectItem(e, "logprob")->valuedouble == -(i + 1) / 8.0, "its logprob");
        const char *t = cJSON_GetObjectItem(e, "token")->valuestring;
        REQUIRE(cJSON_GetObjectItem(e, "offset")->valueint == (int)strlen(joined), "offset");
        strcat(joined, t);
        cJSON *top = cJSON_GetObjectItem(e, "top");
        REQUIRE(cJSON_GetArraySize(top) == 2 &&
                    cJSON_GetObjectItem(top, t)->valuedouble == -(i + 1) / 8.0,
                "the top 2, the sampled token among them");
    }
    REQUIRE(!strcmp(joined, want), "the tokens spell the text");
    snprintf(b, sizeof b, body, ",\"stream\":true");
    r = http(p, "POST", "/v1/completions", NULL, b);
    cJSON *streamed = lp_entries(&r, false, true, &chunks);
    REQUIRE(cJSON_Compare(plain, streamed, true), "streamed = plain"); /* however it was cut */
    cJSON_Delete(streamed);
    cJSON_Delete(plain);

    /* a stop string: the tokens whose text begins before the cut (" Once up": 2 of 4) */
    snprintf(b, sizeof b, body, ",\"stop\":\"on a t\"");
    r = http(p, "POST", "/v1/completions", NULL, b);
    plain = lp_entries(&r, false, false, &chunks);
    REQUIRE(cJSON_GetArraySize(plain) == 2, "cut with the text");
    snprintf(b, sizeof b, body, ",\"stop\":\"on a t\",\"stream\":true");
    r = http(p, "POST", "/v1/completions", NULL, b);
    streamed = lp_entries(&r, false, true, &chunks);
    REQUIRE(cJSON_Compare(plain, streamed, true), "cut the same when streamed");
    cJSON_Delete(streamed);
    cJSON_Delete(plain);

    /* logprobs 0: the sampled token alone; not asked: null */
    r = http(p, "POST", "/v1/completions", NULL, "{\"prompt\":\"Once\",\"logprobs\":0}");
    plain = lp_entries(&r, false, false, &chunks);
    REQUIRE(cJSON_GetArraySize(plain) == 1 &&
                cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetArrayItem(plain, 0), "top")) == 1,
            "logprobs 0");
    cJSON_Delete(plain);
    r = http(p, "POST", "/v1/chat/completions", NULL,
             "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"logprobs\":false}");
    plain = lp_entries(&r, true, false, &chunks);
    REQUIRE(cJSON_GetArraySize(plain) == 0 && chunks == 0, "not asked: null");
    cJSON_Delete(plain);

    /* chat: logprobs true, top_logprobs 3; a character split over byte tokens */
    body = "{\"messages\":[{\"role\":\"user\",\"content\":\"Caf\xC3\xA9 \xE2\x98\x95\"}],"
           "\"logprobs\":true,\"top_logprobs\":3%s}";
    snprintf(b, sizeof b, body, "");
    r = http(p, "POST", "/v1/chat/completions", NULL, b);
    char *text = NULL;
    {
        cJSON *j = cJSON_Parse(r.body);
        text = strdup(cJSON_GetObjectItem(
                          cJSON_GetObjectItem(
                              cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "message"),
                          "content")
                          ->valuestring);
        cJSON_Delete(j);
    }
    plain = lp_entries(&r, true, false, &chunks);
    int n = cJSON_GetArraySize(plain);
    REQUIRE(n > 4 && strstr(text, "\xE2\x98\x95"), "chat entries, the cup in the text");
    char bytes[1024];
    size_t nb = 0;
    bool fragment = false;
    for (int i = 0; i < n; i++) {
        cJSON *e = cJSON_GetArrayItem(plain, i);
        cJSON *top = cJSON_GetObjectItem(e, "top_logprobs");
        REQUIRE(cJSON_GetArraySize(top) == 3, "top_logprobs 3");
        REQUIRE(!strcmp(cJSON_GetObjectItem(cJSON_GetArrayItem(top, 0), "token")->valuestring,
                        cJSON_GetObjectItem(e, "token")->valuestring),
                "the fake's most likely is the token");
        cJSON *x;
        cJSON_ArrayForEach(x, cJSON_GetObjectItem(e, "bytes")) bytes[nb++] = (char)x->valueint;
        fragment |= !strcmp(cJSON_GetObjectItem(e, "token")->valuestring, "\xEF\xBF\xBD");
    }
    bytes[nb] = 0;
    REQUIRE(fragment, "a lone byte of a character shows as U+FFFD");
    REQUIRE(strstr(bytes, text) != NULL, "the bytes add up to the text");
    snprintf(b, sizeof b, body, ",\"stream\":true");
    r = http(p, "POST", "/v1/chat/completions", NULL, b);
    streamed = lp_entries(&r, true, true, &chunks);
    REQUIRE(cJSON_Compare(plain, streamed, true), "chat streamed = plain");
    cJSON_Delete(streamed);
    cJSON_Delete(plain);
    free(text);
    test_echo(p);
    free(want);
    server_stop(&s);
}

/* The texts of an answer's choices by index (plain or streamed, the deltas concatenated). */
static int choice_texts(struct resp *r, bool stream, char texts[][256], int cap, int *n_usage) {
    int n = 0;
    *n_usage = -1;
    for (int i = 0; i < cap; i++) texts[i][0] = 0;
    struct answer_iter it = {.stream = stream};
    cJSON *j;
    while ((j = answer_next(r, &it))) {
        cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItem(j, "choices")) {
            int i = cJSON_GetObjectItem(c, "index")->valueint;
            REQUIRE(i >= 0 && i < cap, "index in range");
            strcat(texts[i], cJSON_GetObjectItem(c, "text")->valuestring);
            if (i + 1 > n) n = i + 1;
        }
        cJSON *u = cJSON_GetObjectItem(j, "usage");
        if (u) *n_usage = cJSON_GetObjectItem(u, "completion_tokens")->valueint;
        cJSON_Delete(j);
    }
    free(r->all);
    return n;
}

/* Several prompts in one completions request: one choice each, by index, each the text it
 * gets alone, streamed as plain; usage sums them; more prompts than the server holds at once
 * is a 400, not an endless 429. */
static void test_prompts(void) {
    struct server s;
    server_start(&s, 128, 8, 1, NULL);
    int p = s.port;
    const char *ps[3] = {"Once upon a time", "The cat sat", "Lily went to the park"};
    char texts[8][256];
    int usage;
    struct resp r = http(p, "POST", "/v1/completions", NULL,
                         "{\"prompt\":[\"Once upon a time\",\"The cat sat\",\"Lily went to the "
                         "park\"],\"max_tokens\":3}");
    REQUIRE(choice_texts(&r, false, texts, 4, &usage) == 3 && usage == 9, "3 choices, usage sums");
    for (int i = 0; i < 3; i++) {
        char *want = echo_of(ps[i], 3);
        REQUIRE(!strcmp(texts[i], want), "choice i is prompt i's");
        free(want);
    }
    char streamed[4][256];
    r = http(p, "POST", "/v1/completions", NULL,
             "{\"prompt\":[\"Once upon a time\",\"The cat sat\",\"Lily went to the park\"],"
             "\"max_tokens\":3,\"stream\":true,\"stream_options\":{\"include_usage\":true}}");
    REQUIRE(choice_texts(&r, true, streamed, 4, &usage) == 3 && usage == 9, "streamed: 3 choices");
    for (int i = 0; i < 3; i++) REQUIRE(!strcmp(streamed[i], texts[i]), "streamed = plain");
    /* n: choices a prompt, prompt after prompt; each prompt's tokens counted once */
    r = http(p, "POST", "/v1/completions", NULL,
             "{\"prompt\":[\"Once upon a time\",\"The cat sat\"],\"max_tokens\":3,\"n\":3}");
    const char *pt = strstr(r.body, "\"prompt_tokens\":");
    int n_pt = pt ? atoi(pt + 16) : -1;
    REQUIRE(choice_texts(&r, false, texts, 8, &usage) == 6 && usage == 18, "2 prompts x n 3");
    r = http(p, "POST", "/v1/completions", NULL,
             "{\"prompt\":[\"Once upon a time\",\"The cat sat\"],\"max_tokens\":3}");
    pt = strstr(r.body, "\"prompt_tokens\":");
    REQUIRE(pt && atoi(pt + 16) == n_pt && n_pt > 0, "each prompt's tokens counted once");
    free(r.all);
    for (int i = 0; i < 6; i++) {
        char *want = echo_of(ps[i / 3], 3);
        REQUIRE(!strcmp(texts[i], want), "choice k is prompt k / n's");
        free(want);
    }
    /* token-id prompts too, and one of them stopped early by its end of generation */
    r = http(p, "POST", "/v1/completions", NULL,
             "{\"prompt\":[[1,403,407],[1,403]],\"max_tokens\":9}");
    REQUIRE(choice_texts(&r, false, texts, 4, &usage) == 2 && usage == 3, "id prompts");
    r = http(p, "POST", "/v1/completions", NULL, "{\"prompt\":\"Once\",\"n\":9}"); /* 9 > 8 */
    check_error(&r, 400, "n");
    const char *bad[] = {
        "{\"prompt\":[]}",
        "{\"prompt\":[\"a\",5]}",
        "{\"prompt\":[[1,2],[]]}",
        "{\"prompt\":[[1,2],[1,-2]]}",
        "{\"prompt\":[\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\"]}", /* 9 > 8 */
        "{\"prompt\":[\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\","
        "\"a\","
        "\"a\",\"a\",\"a\",\"a\"]}", /* 17 */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = http(p, "POST", "/v1/completions", NULL, bad[i]);
        check_error(&r, 400, "prompt");
    }
    server_stop(&s);
}

/* /tokenize and /detokenize: the ids the model's tokenizer gives (BOS with add_special),
 * pieces on request, and back to the text. */
static void test_tokenize(void) {
    struct server s;
    server_start(&s, 64, 8, 1, NULL);
    const char *text = "Once upon a time, Caf\xC3\xA9";
    int32_t want[64];
    int64_t n = tokenizer_encode(tok, text, strlen(text), false, false, want, 64);
    REQUIRE(n > 3 && n < 64, "encode");
    char body[256];
    snprintf(body, sizeof body, "{\"content\":\"%s\"}", text);
    struct resp r = http(s.port, "POST", "/tokenize", NULL, body);
    REQUIRE(r.status == 200, "tokenize");
    cJSON *j = cJSON_Parse(r.body);
    cJSON *ids = cJSON_GetObjectItem(j, "tokens");
    REQUIRE(cJSON_GetArraySize(ids) == n, "as many ids as the tokenizer gives");
    char list[512] = "";
    for (int i = 0; i < n; i++) {
        REQUIRE(cJSON_GetArrayItem(ids, i)->valueint == want[i], "the tokenizer's ids");
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%d", i ? "," : "", want[i]);
    }
    cJSON_Delete(j);
    free(r.all);
    snprintf(body, sizeof body, "{\"content\":\"%s\",\"add_special\":true,\"with_pieces\":true}",
             text);
    r = http(s.port, "POST", "/tokenize", NULL, body);
    j = cJSON_Parse(r.body);
    ids = cJSON_GetObjectItem(j, "tokens");
    REQUIRE(cJSON_GetArraySize(ids) == n + 1 &&
                cJSON_GetObjectItem(cJSON_GetArrayItem(ids, 0), "id")->valueint ==
                    tokenizer_bos(tok) &&
                cJSON_IsString(cJSON_GetObjectItem(cJSON_GetArrayItem(ids, 1), "piece")),
            "BOS first, with pieces");
    cJSON_Delete(j);
    free(r.all);
    snprintf(body, sizeof body, "{\"tokens\":[%s]}", list);
    r = http(s.port, "POST", "/detokenize", NULL, body);
    j = cJSON_Parse(r.body);
    REQUIRE(r.status == 200 && !strcmp(cJSON_GetObjectItem(j, "content")->valuestring, text),
            "detokenize(tokenize(text)) = text");
    cJSON_Delete(j);
    free(r.all);
    r = http(s.port, "POST", "/tokenize", NULL, "{\"text\":\"x\"}");
    check_error(&r, 400, "content");
    r = http(s.port, "POST", "/detokenize", NULL, "{\"tokens\":[1,99999]}");
    check_error(&r, 400, "tokens");
    r = http(s.port, "POST", "/detokenize", NULL, "{\"tokens\":\"1 2\"}");
    check_error(&r, 400, "tokens");
    r = http(s.port, "GET", "/tokenize", NULL, NULL);
    check_error(&r, 405, NULL);
    server_stop(&s);
}

static void test_errors(void) {
    struct server s;
    server_start(&s, 16, 8, 1, NULL);
    int p = s.port;
    struct resp r;
    static const struct {
        const char *path, *body, *param;
    } bad[] = {
        {"/v1/completions", "{\"prompt\":", NULL},
        {"/v1/completions", "[1,2]", NULL},
        {"/v1/completions", "{}", "prompt"},
        {"/v1/completions", "{\"prompt\":5}", "prompt"},
        {"/v1/completions", "{\"prompt\":[1,-3]}", "prompt"},
        {"/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":-1}", "max_tokens"},
        {"/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":0}", "max_tokens"},
        {"/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":2.5}", "max_tokens"},
        {"/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":1e30}", "max_tokens"},
        {"/v1/completions", "{\"prompt\":\"x\",\"seed\":-1e300}", "seed"},
        {"/v1/completions", "{\"prompt\":\"x\",\"temperature\":\"hot\"}", "temperature"},
        {"/v1/completions", "{\"prompt\":\"x\",\"temperature\":-1}", "temperature"},
        {"/v1/completions", "{\"prompt\":\"x\",\"top_p\":1.5}", "top_p"},
        {"/v1/completions", "{\"prompt\":\"x\",\"frequency_penalty\":2.5}", "frequency_penalty"},
        {"/v1/completions", "{\"prompt\":\"x\",\"repeat_last_n\":-2}", "repeat_last_n"},
        {"/v1/completions", "{\"prompt\":\"x\",\"presence_penalty\":\"some\"}", "presence_penalty"},
        {"/v1/completions", "{\"prompt\":\"x\",\"stream\":1}", "stream"},
        {"/v1/completions", "{\"prompt\":\"x\",\"stop\":3}", "stop"},
        {"/v1/completions", "{\"prompt\":\"x\",\"stop\":[\"a\",3]}", "stop"},
        {"/v1/completions", "{\"prompt\":\"x\",\"seed\":-4}", "seed"},
        {"/v1/completions", "{\"prompt\":\"x\",\"n\":0}", "n"},
        {"/v1/completions", "{\"prompt\":\"x\",\"n\":17}", "n"},
        {"/v1/completions", "{\"prompt\":[\"x\",\"y\"],\"n\":9}", "n"},
        {"/v1/completions",
         "{\"prompt\":\"Once upon a time there was a little girl named Lily who liked\"}",
         "prompt"},
        {"/v1/chat/completions", "{\"messages\":\"hi\"}", "messages"},
        {"/v1/chat/completions", "{\"messages\":[]}", "messages"},
        {"/v1/chat/completions", "{\"messages\":[{\"content\":\"hi\"}]}", "messages"},
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":7}]}", "messages"},
        {"/v1/completions", "{\"prompt\":\"x\",\"logprobs\":21}", "logprobs"},
        {"/v1/completions", "{\"prompt\":\"x\",\"logprobs\":\"all\"}", "logprobs"},
        {"/v1/completions", "{\"prompt\":\"x\",\"top_logprobs\":2}", "top_logprobs"},
        {"/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"logprobs\":1}", "logprobs"},
        {"/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"top_logprobs\":3}",
         "top_logprobs"},
        {"/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"logprobs\":true,"
         "\"top_logprobs\":21}",
         "top_logprobs"},
        {"/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"echo\":true}", "echo"},
        {"/v1/completions", "{\"prompt\":\"x\",\"echo\":1}", "echo"},
        {"/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":0}", "max_tokens"},
        {"/v1/completions", "{\"prompt\":\"x\",\"logit_bias\":{\"50\":-101}}", "logit_bias"},
        {"/v1/completions", "{\"prompt\":\"x\",\"logit_bias\":{\"50\":\"ban\"}}", "logit_bias"},
        {"/v1/completions", "{\"prompt\":\"x\",\"logit_bias\":{\"5x\":1}}", "logit_bias"},
        {"/v1/completions", "{\"prompt\":\"x\",\"logit_bias\":{\"\":1}}", "logit_bias"},
        {"/v1/completions", "{\"prompt\":\"x\",\"logit_bias\":{\"-1\":1}}", "logit_bias"},
        {"/v1/completions", "{\"prompt\":\"x\",\"logit_bias\":{\"512\":1}}", "logit_bias"},
        {"/v1/completions", "{\"prompt\":\"x\",\"logit_bias\":7}", "logit_bias"},
        {"/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"tools\":[{\"type\":"
         "\"function\",\"function\":{\"name\":\"f\"}}]}",
         "tools"},
        {"/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"functions\":[{\"name\":"
         "\"f\"}]}",
         "functions"},
        {"/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"response_format\":{"
         "\"type\":\"json_object\"}}",
         "response_format"},
        {"/v1/chat/completions",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"response_format\":"
         "\"json\"}",
         "response_format"},
        {"/v1/completions", "{\"prompt\":\"x\",\"suffix\":\" the end\"}", "suffix"},
        {"/v1/completions", "{\"prompt\":\"x\",\"best_of\":3}", "best_of"},
        /* U+0000 would end the string early (cJSON's strings are C strings) */
        {"/v1/completions", "{\"prompt\":\"Once\\u0000upon\"}", NULL},
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"\\u0000\"}]}",
         NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = http(p, "POST", bad[i].path, NULL, bad[i].body);
        if (r.status != 400 || (bad[i].param && !strstr(r.body, bad[i].param)))
            fprintf(stderr, "case %zu: %s -> %s\n", i, bad[i].body, r.body);
        check_error(&r, 400, bad[i].param);
        /* ... and the server serves on. */
        r = http(p, "POST", "/v1/completions", NULL, "{\"prompt\":\"Once\"}");
        REQUIRE(r.status == 200, "serves on after a bad request");
        free(r.all);
    }
    /* the message says what is wrong with a body that is no JSON object */
    static const struct {
        const char *body, *says;
    } shapes[] = {
        {"{\"prompt\":", "not valid JSON (near byte 10 of 10)"},
        {"{\"prompt\":\"x\",}", "not valid JSON (near byte 15 of 15)"},
        {"{\"prompt\":\"\\ud800\"}", "not valid JSON"},
        {"", "the body is empty"},
        {"[1,2]", "JSON object, not an array"},
        {"\"x\"", "JSON object, not a string"},
        {"7", "JSON object, not a number"},
        {"null", "JSON object, not null"},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        r = http(p, "POST", "/v1/completions", NULL, shapes[i].body);
        if (!strstr(r.body, shapes[i].says))
            fprintf(stderr, "shape %zu: %s -> %s\n", i, shapes[i].body, r.body);
        REQUIRE(r.status == 400 && strstr(r.body, shapes[i].says), "the body's shape is named");
        free(r.all);
    }
    r = http(p, "POST", "/v1/completions", NULL,
             "{\"prompt\":\"Once upon a time there was a little girl named Lily who liked\"}");
    REQUIRE(strstr(r.body, "context_length_exceeded"), "too long: code");
    free(r.all);
    /* log-probabilities not asked for (false, null) are no error */
    r = http(p, "POST", "/v1/completions", NULL,
             "{\"prompt\":\"Once\",\"logprobs\":false,\"top_logprobs\":0}");
    REQUIRE(r.status == 200 && strstr(r.body, "\"logprobs\":null"), "logprobs false serves");
    free(r.all);
    /* ... nor are those fields when they ask for nothing */
    r = http(p, "POST", "/v1/completions", NULL,
             "{\"prompt\":\"Once\",\"logit_bias\":{\"50\":-100,\"511\":2.5},\"tools\":[],"
             "\"functions\":null,"
             "\"response_format\":{\"type\":\"text\"},\"best_of\":1}");
    REQUIRE(r.status == 200, "logit_bias, empty tools, text format, best_of 1 serve");
    free(r.all);
    r = http(p, "POST", "/v1/completions", NULL, "{\"prompt\":\"Once\",\"suffix\":\"\"}");
    REQUIRE(r.status == 200, "an empty suffix serves");
    free(r.all);
    /* an escaped backslash before "u0000" is text, not U+0000 */
    r = http(p, "POST", "/v1/completions", NULL, "{\"prompt\":\"Once \\\\u0000\"}");
    REQUIRE(r.status == 200, "a backslash and 'u0000' serve");
    free(r.all);
    r = http(p, "GET", "/v1/nothing", NULL, NULL);
    check_error(&r, 404, NULL);
    r = http(p, "GET", "/v1/completions", NULL, NULL);
    REQUIRE(!strcmp(header(&r, "Allow"), "POST"), "405 names the method");
    check_error(&r, 405, NULL);
    r = http(p, "POST", "/health", NULL, "{}");
    check_error(&r, 405, NULL);
    r = http(p, "GET", "/metrics", NULL, NULL);
    char rejected[64]; /* each bad request above, each shape, and the too-long prompt again */
    snprintf(rejected, sizeof rejected, "\ncaravan_requests_rejected_total %zu\n",
             sizeof bad / sizeof bad[0] + sizeof shapes / sizeof shapes[0] + 1);
    REQUIRE(strstr(r.body, rejected), "400s counted: want%s", rejected);
    free(r.all);
    server_stop(&s);
}

static void test_auth(void) {
    char path[] = "/tmp/api_test_key_XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0 && write(fd, " s3cret\nignored\n", 16) == 16, "key file");
    close(fd);
    char key[64], err[256];
    REQUIRE(api_key_resolve(path, key, sizeof key, err, sizeof err) == STATUS_OK &&
                !strcmp(key, "s3cret"),
            "first line of the file, trimmed");
    REQUIRE(api_key_resolve("plain-key", key, sizeof key, err, sizeof err) == STATUS_OK &&
                !strcmp(key, "plain-key"),
            "the value itself");
    REQUIRE(api_key_resolve("  ", key, sizeof key, err, sizeof err) == STATUS_FORMAT, "empty");
    /* a mistyped file name is refused, not taken for the key */
    static const char *not_files[] = {"/etc/caravan/no-such-key", "./api-key", "~/key", "/tmp"};
    for (size_t i = 0; i < sizeof not_files / sizeof not_files[0]; i++) {
        err[0] = 0;
        REQUIRE(api_key_resolve(not_files[i], key, sizeof key, err, sizeof err) != STATUS_OK &&
                    strstr(err, not_files[i]),
                "%s is no key: %s", not_files[i], err);
    }
    REQUIRE(api_key_resolve("a/b+c=", key, sizeof key, err, sizeof err) == STATUS_OK &&
                !strcmp(key, "a/b+c="),
            "a key with '/' inside is the key");

    struct server s;
    server_start(&s, 64, 8, 1, path);
    const char *body = "{\"prompt\":\"Once\"}";
    struct resp r = http(s.port, "POST", "/v1/completions", NULL, body);
    check_error(&r, 401, NULL);
    r = http(s.port, "POST", "/v1/completions", "Authorization: Bearer s3cre\r\n", body);
    check_error(&r, 401, NULL);
    r = http(s.port, "POST", "/v1/completions", "Authorization: Bearer s3cret!\r\n", body);
    check_error(&r, 401, NULL);
    r = http(s.port, "GET", "/v1/models", "Authorization: Basic s3cret\r\n", NULL);
    check_error(&r, 401, NULL);
    r = http(s.port, "POST", "/v1/completions", "Authorization: Bearer s3cret\r\n", body);
    REQUIRE(r.status == 200, "right key");
    free(r.all);
    r = http(s.port, "POST", "/tokenize", NULL, "{\"content\":\"Once\"}");
    check_error(&r, 401, NULL);
    r = http(s.port, "POST", "/detokenize", "Authorization: Bearer s3cret\r\n",
             "{\"tokens\":[403]}");
    REQUIRE(r.status == 200, "detokenize with the key");
    free(r.all);
    r = http(s.port, "GET", "/health", NULL, NULL);
    REQUIRE(r.status == 200, "health needs no key");
    free(r.all);
    server_stop(&s);
    unlink(path);

    /* Listening beyond loopback without a key is refused unless asked for. */
    serve_queue_t *q = serve_queue_new(1);
    struct api_config cfg = {.listen = "0.0.0.0:0", .tokenizer = tok, .n_ctx = 64, .queue = q};
    api_t *api = api_start(&cfg, err, sizeof err);
    REQUIRE(!api && strstr(err, "API key") && strstr(err, "--no-api-key"), "refused without key");
    cfg.no_api_key = true;
    api = api_start(&cfg, err, sizeof err);
    REQUIRE(api, "--no-api-key allows it");
    api_stop(&api);
    cfg.no_api_key = false;
    cfg.api_key = "k";
    api = api_start(&cfg, err, sizeof err);
    REQUIRE(api, "a key allows it");
    api_stop(&api);
    cfg.listen = "127.0.0.1";
    REQUIRE(!api_start(&cfg, err, sizeof err) && strstr(err, "HOST:PORT"), "no port");
    cfg.listen = "127.0.0.1:99999";
    REQUIRE(!api_start(&cfg, err, sizeof err), "bad port");
    cfg.listen = "[::1]:0";
    api = api_start(&cfg, err, sizeof err);
    if (api) { /* hosts without IPv6 may refuse; the URL keeps the brackets */
        REQUIRE(!strncmp(api_url(api), "http://[::1]:", 13), "v6 url");
        api_stop(&api);
    }
    /* api_check_listen refuses what api_start refuses, binding nothing */
    static const struct {
        const char *listen, *key;
        bool no_key, ok;
        const char *says;
    } listens[] = {
        {"0.0.0.0:0", NULL, false, false, "--no-api-key"},
        {"0.0.0.0:0", NULL, true, true, NULL},
        {"0.0.0.0:0", "k", false, true, NULL},
        {"127.0.0.1", NULL, false, false, "HOST:PORT"},
        {"127.0.0.1:99999", NULL, false, false, "bad port"},
        {"127.0.0.1:", NULL, false, false, "bad port"},
        {"no.such.host.invalid:80", NULL, false, false, "no.such.host.invalid"},
        {"127.0.0.1:1", NULL, false, true, NULL}, /* a port no test can bind: not bound */
    };
    for (size_t i = 0; i < sizeof listens / sizeof listens[0]; i++) {
        struct api_config c = {.listen = listens[i].listen,
                               .api_key = listens[i].key,
                               .no_api_key = listens[i].no_key};
        err[0] = 0;
        bool ok = api_check_listen(&c, err, sizeof err);
        if (ok != listens[i].ok) fprintf(stderr, "listen %zu: %s: %s\n", i, c.listen, err);
        REQUIRE(ok == listens[i].ok, "api_check_listen");
        if (listens[i].says) REQUIRE(strstr(err, listens[i].says), "its reason: %s", err);
    }
    serve_queue_destroy(&q);
}

/* --cors: which pages of other origins a browser lets read the answers. */
static void test_cors(void) {
    static const char *origins = "http://a.example:3000, https://b.example";
    struct server s;
    server_open(&s, 64, 8, 1, "k", origins);
    const char *pre = "Origin: http://a.example:3000\r\nAccess-Control-Request-Method: POST\r\n"
                      "Access-Control-Request-Headers: authorization,content-type,x-stainless-os"
                      "\r\n";
    /* a preflight needs no key (the browser sends none) and names what the page may send */
    struct resp r = http(s.port, "OPTIONS", "/v1/chat/completions", pre, NULL);
    REQUIRE(r.status == 204, "preflight: %d", r.status);
    REQUIRE(!strcmp(header(&r, "Access-Control-Allow-Origin"), "http://a.example:3000"), "origin");
    REQUIRE(!strcmp(header(&r, "Access-Control-Allow-Methods"), "POST, OPTIONS"), "methods");
    REQUIRE(!strcmp(header(&r, "Access-Control-Allow-Headers"),
                    "authorization,content-type,x-stainless-os"),
            "headers asked for");
    REQUIRE(!strcmp(header(&r, "Vary"), "Origin"), "vary");
    free(r.all);
    r = http(s.port, "OPTIONS", "/v1/models", "Origin: https://b.example\r\n", NULL);
    REQUIRE(r.status == 204 &&
                !strcmp(header(&r, "Access-Control-Allow-Origin"), "https://b.example") &&
                !strcmp(header(&r, "Access-Control-Allow-Methods"), "GET, HEAD, OPTIONS") &&
                !strcmp(header(&r, "Access-Control-Allow-Headers"), "Authorization, Content-Type"),
            "the second origin, a GET route, no headers asked");
    free(r.all);
    /* asked headers that are not header names are not echoed */
    r = http(s.port, "OPTIONS", "/v1/models",
             "Origin: https://b.example\r\nAccess-Control-Request-Headers: a;b\r\n", NULL);
    REQUIRE(!strcmp(header(&r, "Access-Control-Allow-Headers"), "Authorization, Content-Type"),
            "not echoed: %s", header(&r, "Access-Control-Allow-Headers"));
    free(r.all);
    /* another origin (or a path that differs: http vs https, another port) is refused */
    static const char *others[] = {"Origin: https://a.example:3000\r\n",
                                   "Origin: http://a.example\r\n", "Origin: http://evil\r\n", NULL};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        r = http(s.port, "OPTIONS", "/v1/completions", others[i], NULL);
        check_error(&r, 403, NULL);
        r = http(s.port, "GET", "/health", others[i], NULL);
        REQUIRE(r.status == (others[i] ? 403 : 200) &&
                    !header(&r, "Access-Control-Allow-Origin")[0],
                "%s: %d", others[i] ? others[i] : "no origin", r.status);
        free(r.all);
    }
    r = http(s.port, "OPTIONS", "/v2/nothing", pre, NULL);
    check_error(&r, 404, NULL);
    /* every answer to an allowed origin carries it: JSON, errors, the stream, the page */
    const char *ok = "Origin: http://a.example:3000\r\nAuthorization: Bearer k\r\n";
    static const struct {
        const char *method, *path, *body;
        int status;
    } answers[] = {
        {"GET", "/health", NULL, 200},
        {"GET", "/", NULL, 200},
        {"GET", "/v1/models", NULL, 200},
        {"POST", "/v1/completions", "{\"prompt\":\"Once\",\"max_tokens\":2}", 200},
        {"POST", "/v1/completions", "{\"prompt\":\"Once\",\"max_tokens\":2,\"stream\":true}", 200},
        {"POST", "/v1/completions", "{\"prompt\":\"Once\",\"max_tokens\":-1}", 400},
        {"DELETE", "/v1/models", NULL, 405},
    };
    for (size_t i = 0; i < sizeof answers / sizeof answers[0]; i++) {
        r = http(s.port, answers[i].method, answers[i].path, ok, answers[i].body);
        REQUIRE(r.status == answers[i].status, "%s %s: %d", answers[i].method, answers[i].path,
                r.status);
        REQUIRE(!strcmp(header(&r, "Access-Control-Allow-Origin"), "http://a.example:3000"),
                "%s %s carries the origin", answers[i].method, answers[i].path);
        if (answers[i].status == 405)
            REQUIRE(!strcmp(header(&r, "Allow"), "GET, HEAD, OPTIONS"), "allow names OPTIONS");
        free(r.all);
    }
    r = http(s.port, "GET", "/v1/models", "Origin: http://a.example:3000\r\n", NULL);
    REQUIRE(r.status == 401 && header(&r, "Access-Control-Allow-Origin")[0],
            "a page can read that its key is wrong");
    free(r.all);
    server_stop(&s);

    /* '*': any origin, no Vary */
    server_open(&s, 64, 8, 1, NULL, "*");
    r = http(s.port, "OPTIONS", "/v1/completions", "Origin: http://anything:1\r\n", NULL);
    REQUIRE(r.status == 204 && !strcmp(header(&r, "Access-Control-Allow-Origin"), "*") &&
                !header(&r, "Vary")[0],
            "any origin");
    free(r.all);
    server_stop(&s);

    /* without --cors: no CORS headers; a page of another origin is refused, the server's own
     * page is served, and OPTIONS is a method like any other */
    server_start(&s, 64, 8, 1, NULL);
    r = http(s.port, "OPTIONS", "/v1/completions", pre, NULL);
    check_error(&r, 403, NULL);
    r = http(s.port, "POST", "/v1/completions", "Origin: http://evil.example\r\n",
             "{\"prompt\":\"Once\",\"max_tokens\":2}");
    check_error(&r, 403, NULL);
    char own[160];
    snprintf(own, sizeof own, "Host: 127.0.0.1:%d\r\nOrigin: http://127.0.0.1:%d\r\n", s.port,
             s.port);
    r = http(s.port, "POST", "/v1/completions", own, "{\"prompt\":\"Once\",\"max_tokens\":2}");
    REQUIRE(r.status == 200 && !header(&r, "Access-Control-Allow-Origin")[0], "own page: %d",
            r.status);
    free(r.all);
    snprintf(own, sizeof own, "Host: 127.0.0.1:%d\r\nOrigin: http://127.0.0.1:%d\r\n", s.port,
             s.port + 1);
    r = http(s.port, "POST", "/v1/completions", own, "{\"prompt\":\"Once\",\"max_tokens\":2}");
    check_error(&r, 403, NULL); /* another port is another origin */
    snprintf(own, sizeof own, "Host: 127.0.0.1:%d\r\n", s.port);
    r = http(s.port, "OPTIONS", "/v1/completions", own, NULL);
    REQUIRE(r.status == 405 && !strcmp(header(&r, "Allow"), "POST"), "OPTIONS: %d", r.status);
    free(r.all);
    server_stop(&s);

    /* loopback without a key: a Host that DNS could point here (rebinding) is refused */
    server_start(&s, 64, 8, 1, NULL);
    static const struct {
        const char *host;
        int status;
    } hosts[] = {
        {"Host: evil.example\r\n", 403},     {"Host: evil.example:8080\r\n", 403},
        {"Host: 127.0.0.1.nip.io\r\n", 403}, {"Host: localhost.evil\r\n", 403},
        {"Host: evillocalhost\r\n", 403},    {"Host: .localhost\r\n", 403},
        {"Host: ..localhost\r\n", 403},      {"Host: app.localhost:5173\r\n", 200},
        {"Host: A.B.LocalHost\r\n", 200},    {"Host: [::1\r\n", 403},
        {"Host: localhost:8080\r\n", 200},   {"Host: LOCALHOST\r\n", 200},
        {"Host: 127.0.0.1\r\n", 200},        {"Host: 127.9.9.9:1\r\n", 200},
        {"Host: 10.1.2.3:8080\r\n", 200},    {"Host: [::1]:8080\r\n", 200},
    };
    for (size_t i = 0; i < sizeof hosts / sizeof hosts[0]; i++) {
        r = http(s.port, "GET", "/health", hosts[i].host, NULL);
        REQUIRE(r.status == hosts[i].status, "%.*s: %d", (int)strcspn(hosts[i].host, "\r"),
                hosts[i].host, r.status);
        if (r.status == 403) REQUIRE(strstr(r.body, "host_not_allowed"), "%s", r.body);
        free(r.all);
    }
    r = http(s.port, "POST", "/v1/completions", "Origin: http://evil.example\r\n", "{}");
    check_error(&r, 403, NULL);
    r = http(s.port, "GET", "/metrics", NULL, NULL); /* 8 names, 1 origin */
    REQUIRE(r.status == 200 && strstr(r.body, "\ncaravan_requests_forbidden_total 9\n") &&
                strstr(r.body, "\ncaravan_requests_rejected_total 0\n"),
            "403s counted as such: %s", r.body);
    free(r.all);
    server_stop(&s);
    /* with a key any name is served: a page cannot send the key it does not know */
    server_start(&s, 64, 8, 1, "k");
    r = http(s.port, "GET", "/health", "Host: caravan.example.org\r\n", NULL);
    REQUIRE(r.status == 200, "a named host with a key: %d", r.status);
    free(r.all);
    server_stop(&s);

    /* what --cors takes, checked before anything starts */
    static const struct {
        const char *cors;
        bool ok;
        const char *says;
    } specs[] = {
        {"*", true, NULL},
        {"http://localhost:5173", true, NULL},
        {"https://a.example,http://[::1]:8000", true, NULL},
        {"HTTPS://App.Example", true, NULL}, /* compared without regard to case, as sent */
        {"", false, "empty origin"},
        {"http://a,", false, "empty origin"},
        {"*,http://a", false, "stands alone"},
        {"localhost:5173", false, "http:// or https://"},
        {"ftp://a", false, "http:// or https://"},
        {"http://", false, "no host"},
        {"http://a.example/", false, "no path"},
        {"http://a.example/app", false, "no path"},
        {"http://a b", false, "character"},
        {"http://a,http://b,http://c,http://d,http://e,http://f,http://g,http://h,http://i,"
         "http://j,http://k,http://l,http://m,http://n,http://o,http://p,http://q",
         false, "more than 16"},
    };
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        struct api_config c = {.listen = "127.0.0.1:0", .cors = specs[i].cors};
        char err[256] = "";
        bool okay = api_check_listen(&c, err, sizeof err);
        REQUIRE(okay == specs[i].ok, "--cors '%s': %s", specs[i].cors, err);
        if (specs[i].says)
            REQUIRE(strstr(err, specs[i].says), "--cors '%s': %s", specs[i].cors, err);
    }
}

/* A connection to port from the loopback address 127.0.0.last (-1 when refused). */
static int connect_from(int port, int last) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0, "socket");
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl((127u << 24) | (unsigned)last);
    REQUIRE(bind(fd, (struct sockaddr *)&src, sizeof src) == 0, "bind 127.0.0.%d", last);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "connect");
    return fd;
}

/* One address opening connections and sending nothing (slowloris) gets 64 of them (twice the
 * queue's size when that is more); the 65th is closed at once, and another address is served. */
static void test_per_address_limit(void) {
    struct server s;
    server_start(&s, 64, 8, 1, NULL);
    enum { N = 64 };
    int idle[N];
    for (int i = 0; i < N; i++) idle[i] = connect_from(s.port, 7);
    usleep(100000); /* MHD accepts them */
    int extra = connect_from(s.port, 7);
    char b;
    struct timeval tv = {.tv_sec = 5};
    setsockopt(extra, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ssize_t got = read(extra, &b, 1); /* the server closes it: 0 (or a reset), not a timeout */
    REQUIRE(got == 0 || (got < 0 && errno == ECONNRESET), "the 65th from one address is closed");
    close(extra);
    int other = connect_from(s.port, 8);
    send_request(other, "GET", "/health", NULL, NULL);
    struct resp r;
    read_response(other, &r);
    close(other);
    REQUIRE(r.status == 200, "another address is served beside them");
    free(r.all);
    for (int i = 0; i < N; i++) close(idle[i]);
    server_stop(&s);
}

/* Busy (429), and clients that hang up while waiting or streaming. */
static void test_busy_and_disconnect(void) {
    struct server s;
    server_start(&s, 64, 2, 1, NULL);
    serve_fake_hold(s.fake, true);
    int a = connect_to(s.port), b = connect_to(s.port);
    send_request(a, "POST", "/v1/completions", NULL, "{\"prompt\":\"Once upon\"}");
    send_request(b, "POST", "/v1/completions", NULL, "{\"prompt\":\"Once upon\",\"stream\":true}");
    struct resp r;
    for (int i = 0; i < 200; i++) { /* until both are submitted */
        r = http(s.port, "GET", "/metrics", NULL, NULL);
        bool both = strstr(r.body, "\ncaravan_requests_total 2\n") != NULL;
        free(r.all);
        if (both) break;
        usleep(10000);
    }
    r = http(s.port, "POST", "/v1/completions", NULL, "{\"prompt\":\"Once\"}");
    REQUIRE(!strcmp(header(&r, "Retry-After"), "1") && strstr(r.body, "(2 open"),
            "429 says when to retry and how many are open: %s", r.all);
    check_error(&r, 429, NULL);
    close(a); /* waiting for a plain answer */
    wait_for(s.fake, 1);
    close(b); /* waiting inside a stream */
    wait_for(s.fake, 2);
    serve_fake_hold(s.fake, false);
    r = http(s.port, "POST", "/v1/completions", NULL, "{\"prompt\":\"Once\"}");
    REQUIRE(r.status == 200, "slots came back");
    free(r.all);

    /* A client that leaves in the middle of a stream that is producing tokens. */
    int c = connect_to(s.port);
    send_request(c, "POST", "/v1/completions", NULL,
                 "{\"prompt\":\"Once upon a time\",\"stream\":true,\"ignore_eos\":true}");
    char buf[256];
    REQUIRE(read(c, buf, sizeof buf) > 0, "stream started");
    close(c);
    wait_for(s.fake, 3);
    server_stop(&s);
}

/* 8 streaming clients at once, each gets its own tokens. */
#define N_CLIENTS 8
static int conc_port;
static const char *conc_prompts[N_CLIENTS] = {
    "Once upon a time", "The cat sat",   "Lily went to the park", "Tim had a red ball",
    "One day",          "She was happy", "The sun was hot",       "A big dog ran"};

static void *client(void *arg) {
    int i = (int)(intptr_t)arg;
    char body[256];
    snprintf(body, sizeof body, "{\"prompt\":\"%s\",\"stream\":true,\"max_tokens\":200}",
             conc_prompts[i]);
    for (int round = 0; round < 3; round++) {
        struct resp r = http(conc_port, "POST", "/v1/completions", NULL, body);
        const char *fin;
        char *got = stream_text(&r, &fin, false);
        char *want = echo_of(conc_prompts[i], 0);
        REQUIRE(!strcmp(got, want) && !strcmp(fin, "stop"), "each stream gets its own tokens");
        free(got);
        free(want);
    }
    return NULL;
}

static void test_concurrent(void) {
    struct server s;
    server_start(&s, 64, 16, 3, NULL);
    conc_port = s.port;
    pthread_t t[N_CLIENTS];
    for (int i = 0; i < N_CLIENTS; i++) pthread_create(&t[i], NULL, client, (void *)(intptr_t)i);
    for (int i = 0; i < N_CLIENTS; i++) pthread_join(t[i], NULL);
    server_stop(&s);
}

/* api_stop while a request waits and a stream runs: both end, nothing leaks or hangs. */
static void test_stop_while_busy(void) {
    struct server s;
    server_start(&s, 64, 8, 1, NULL);
    serve_fake_hold(s.fake, true);
    int a = connect_to(s.port), b = connect_to(s.port);
    send_request(a, "POST", "/v1/completions", NULL, "{\"prompt\":\"Once\"}");
    send_request(b, "POST", "/v1/completions", NULL, "{\"prompt\":\"Once\",\"stream\":true}");
    usleep(100000);
    api_stop(&s.api);
    serve_fake_stop(&s.fake);
    serve_queue_destroy(&s.q);
    close(a);
    close(b);
}

/* Stop strings and held-back text: the streamed deltas always add up to the plain answer,
 * for random token sequences (byte tokens included) and stop strings cut from their text. */
static void test_text_property(void) {
    uint64_t rng = 42;
    int n_vocab = tokenizer_n_tokens(tok), n_stopped = 0, n_lp_cut = 0;
    for (int iter = 0; iter < 2000; iter++) {
        int32_t ids[24];
        size_t n = 0;
        for (; n < 1 + (size_t)(iter % 24); n++) {
            rng = rng * 6364136223846793005u + 1442695040888963407u;
            ids[n] = (int32_t)((rng >> 33) % (uint64_t)n_vocab);
        }
        char *full, *full_s;
        bool stopped;
        size_t lp_plain, lp_streamed;
        api_text_run(tok, ids, n, NULL, 0, &full, &full_s, &stopped, &lp_plain, &lp_streamed);
        REQUIRE(!strcmp(full, full_s) && !stopped, "no stop strings: same text");
        REQUIRE(lp_plain == n && lp_streamed == n, "no stop strings: every token's logprobs");
        char stop[2][8] = {"", ""};
        size_t len = strlen(full);
        for (int k = 0; k < 2 && len; k++) {
            rng = rng * 6364136223846793005u + 1442695040888963407u;
            size_t at = (rng >> 33) % len, sl = 1 + (rng >> 20) % 6;
            if (at + sl > len) sl = len - at;
            memcpy(stop[k], full + at, sl);
            stop[k][sl] = 0;
        }
        const char *stops[3] = {stop[0], stop[1], "\x01never"};
        char *plain, *streamed;
        api_text_run(tok, ids, n, stops, 3, &plain, &streamed, &stopped, &lp_plain, &lp_streamed);
        if (strcmp(plain, streamed)) fprintf(stderr, "plain '%s' streamed '%s'\n", plain, streamed);
        REQUIRE(!strcmp(plain, streamed), "streamed deltas add up to the plain answer");
        REQUIRE(lp_plain == lp_streamed && lp_plain <= n,
                "the stream gives the plain answer's log-probabilities");
        if (stopped) n_lp_cut += lp_plain < n;
        if (len) {
            /* Generation stops when a stop string first appears: the answer is a prefix of
             * the full text that holds no whole stop string and is followed by one. (Not
             * always the earliest match in the full text: "b" stops "ab" before "abc" could.) */
            size_t cut = strlen(plain);
            bool before = false;
            for (int k = 0; k < 2; k++) {
                REQUIRE(!strstr(plain, stop[k]), "no whole stop string in the answer");
                before |= !strncmp(full + cut, stop[k], strlen(stop[k]));
            }
            REQUIRE(stopped && !strncmp(plain, full, cut) && before, "cut before a stop string");
            n_stopped++;
        }
        free(plain);
        free(streamed);
        free(full);
        free(full_s);
    }
    REQUIRE(n_stopped > 1000, "the stop path was exercised");
    REQUIRE(n_lp_cut > 500, "stop strings cut the log-probabilities too");
}

/* The parser alone: what a request would carry. */
static void test_parse(void) {
    serve_queue_t *q = serve_queue_new(1);
    struct api_config cfg = {.tokenizer = tok,
                             .chat_format = CHAT_FORMAT_CHATML,
                             .n_ctx = 32,
                             .default_max_tokens = 10,
                             .queue = q};
    int32_t np = 0, mt = 0;
    bool echo = true;
    const char *b = "{\"prompt\":\"Once upon a time\"}";
    REQUIRE(api_parse_request(&cfg, b, strlen(b), false, &np, &mt, &echo) == 0 && np == 5 &&
                mt == 10,
            "default max_tokens");
    b = "{\"prompt\":\"Once upon a time\",\"max_tokens\":100}";
    REQUIRE(api_parse_request(&cfg, b, strlen(b), false, &np, &mt, &echo) == 0 && mt == 32 - 5,
            "clamped to the context");
    b = "{\"prompt\":\"Once upon a time\",\"max_tokens\":100}";
    REQUIRE(api_parse_request(&cfg, b, strlen(b), true, &np, &mt, &echo) == 400,
            "chat needs messages");
    b = "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
    REQUIRE(api_parse_request(&cfg, b, strlen(b), true, &np, &mt, &echo) == 400,
            "chatml is too long here");
    cfg.n_ctx = 4096;
    REQUIRE(api_parse_request(&cfg, b, strlen(b), true, &np, &mt, &echo) == 0 && np > 10, "chat");
    REQUIRE(api_parse_request(&cfg, b, 5, true, &np, &mt, &echo) == 400, "truncated JSON");
    /* no tokens to generate: only a prompt scored (echo) */
    b = "{\"prompt\":\"Once upon a time\",\"max_tokens\":0,\"echo\":true}";
    REQUIRE(api_parse_request(&cfg, b, strlen(b), false, &np, &mt, &echo) == 0 && mt == 0 && echo,
            "echo, max_tokens 0");
    b = "{\"prompt\":\"Once upon a time\",\"max_tokens\":0}";
    REQUIRE(api_parse_request(&cfg, b, strlen(b), false, &np, &mt, &echo) == 400,
            "max_tokens 0 without echo");
    serve_queue_destroy(&q);
}

int main(void) {
    const char *shared = getenv("CARAVAN_SHARED");
    char path[4096];
    snprintf(path, sizeof path, "%s/models/stories260K.gguf", shared ? shared : "../shared");
    gguf_t *g = NULL;
    REQUIRE(gguf_open(path, &g) == STATUS_OK, "%s", path);
    REQUIRE(tokenizer_load(g, &tok) == STATUS_OK, "tokenizer");
    gguf_close(&g);
    test_parse();
    test_text_property();
    test_answers();
    test_logprobs();
    test_prompts();
    test_tokenize();
    test_errors();
    test_auth();
    test_cors();
    test_busy_and_disconnect();
    test_per_address_limit();
    test_concurrent();
    test_stop_while_busy();
    tokenizer_free(&tok);
    printf("api_test: ok\n");
    return 0;
}
