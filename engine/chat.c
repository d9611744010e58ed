/* chat: chat-template detection and rendering (see chat.h). Each format is a short loop over
 * the messages; outputs match llama.cpp's llm_chat_apply_template byte for byte. */
#include "chat.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static const char *const format_names[CHAT_FORMAT_COUNT] = {
    [CHAT_FORMAT_CHATML] = "chatml",
    [CHAT_FORMAT_LLAMA2] = "llama2",
    [CHAT_FORMAT_LLAMA2_SYS] = "llama2-sys",
    [CHAT_FORMAT_LLAMA2_SYS_BOS] = "llama2-sys-bos",
    [CHAT_FORMAT_LLAMA2_SYS_STRIP] = "llama2-sys-strip",
    [CHAT_FORMAT_MISTRAL_V1] = "mistral-v1",
    [CHAT_FORMAT_MISTRAL_V3] = "mistral-v3",
    [CHAT_FORMAT_MISTRAL_V3_TEKKEN] = "mistral-v3-tekken",
    [CHAT_FORMAT_MISTRAL_V7] = "mistral-v7",
    [CHAT_FORMAT_MISTRAL_V7_TEKKEN] = "mistral-v7-tekken",
    [CHAT_FORMAT_PHI3] = "phi3",
    [CHAT_FORMAT_PHI4] = "phi4",
    [CHAT_FORMAT_FALCON3] = "falcon3",
    [CHAT_FORMAT_ZEPHYR] = "zephyr",
    [CHAT_FORMAT_TINYLLAMA] = "tinyllama",
    [CHAT_FORMAT_MONARCH] = "monarch",
    [CHAT_FORMAT_GEMMA] = "gemma",
    [CHAT_FORMAT_LLAMA3] = "llama3",
    [CHAT_FORMAT_DEEPSEEK] = "deepseek",
    [CHAT_FORMAT_DEEPSEEK2] = "deepseek2",
    [CHAT_FORMAT_DEEPSEEK3] = "deepseek3",
    [CHAT_FORMAT_COMMAND_R] = "command-r",
    [CHAT_FORMAT_VICUNA] = "vicuna",
    [CHAT_FORMAT_VICUNA_ORCA] = "vicuna-orca",
    [CHAT_FORMAT_OPENCHAT] = "openchat",
};

enum chat_format chat_format_parse(const char *name) {
    if (!name) return CHAT_FORMAT_UNKNOWN;
    for (int f = 0; f < CHAT_FORMAT_COUNT; f++)
        if (strcmp(name, format_names[f]) == 0) return (enum chat_format)f;
    /* A few common aliases. */
    if (strcmp(name, "qwen") == 0 || strcmp(name, "qwen2") == 0) return CHAT_FORMAT_CHATML;
    if (strcmp(name, "mistral") == 0) return CHAT_FORMAT_MISTRAL_V1;
    return CHAT_FORMAT_UNKNOWN;
}

const char *chat_format_name(enum chat_format f) {
    return f >= 0 && f < CHAT_FORMAT_COUNT ? format_names[f] : "unknown";
}

const char *chat_format_list(void) {
    /* A literal, so it is safe from any thread; chat_test checks it names every format. */
    return "chatml, llama2, llama2-sys, llama2-sys-bos, llama2-sys-strip, mistral-v1, mistral-v3, "
           "mistral-v3-tekken, mistral-v7, mistral-v7-tekken, phi3, phi4, falcon3, zephyr, "
           "tinyllama, monarch, gemma, llama3, deepseek, deepseek2, deepseek3, command-r, vicuna, "
           "vicuna-orca, openchat";
}

/* ==== Detection ==== */

enum chat_format chat_format_detect(const char *tmpl) {
    if (!tmpl) return CHAT_FORMAT_UNKNOWN;
    enum chat_format named = chat_format_parse(tmpl);
    if (named != CHAT_FORMAT_UNKNOWN) return named;
#define HAS(s) (strstr(tmpl, (s)) != NULL)
    if (HAS("<|im_start|>")) {
        if (HAS("<|im_sep|>")) return CHAT_FORMAT_PHI4;
        if (HAS("<end_of_utterance>")) return CHAT_FORMAT_UNKNOWN; /* SmolVLM: not ChatML */
        return CHAT_FORMAT_CHATML;
    }
    if (strncmp(tmpl, "mistral", 7) == 0 || HAS("[INST]")) {
        if (HAS("[SYSTEM_PROMPT]")) return CHAT_FORMAT_MISTRAL_V7;
        if (HAS("' [INST] ' + system_message") || HAS("[AVAILABLE_TOOLS]")) {
            if (HAS(" [INST]")) return CHAT_FORMAT_MISTRAL_V1;
            if (HAS("\"[INST]\"")) return CHAT_FORMAT_MISTRAL_V3_TEKKEN;
            return CHAT_FORMAT_MISTRAL_V3;
        }
        if (HAS("content.strip()")) return CHAT_FORMAT_LLAMA2_SYS_STRIP;
        if (HAS("bos_token + '[INST]")) return CHAT_FORMAT_LLAMA2_SYS_BOS;
        if (HAS("<<SYS>>")) return CHAT_FORMAT_LLAMA2_SYS;
        return CHAT_FORMAT_LLAMA2;
    }
    if (HAS("<|assistant|>") && HAS("<|end|>")) return CHAT_FORMAT_PHI3;
    if (HAS("[gMASK]<sop>")) return CHAT_FORMAT_UNKNOWN; /* ChatGLM 4 */
    if (HAS("<|assistant|>") && HAS("<|user|>")) {
        if (HAS("</s>")) return CHAT_FORMAT_FALCON3;
        /* llama.cpp says GLM-Edge here; templates that end turns with eos_token are Zephyr's. */
        return HAS("eos_token") ? CHAT_FORMAT_TINYLLAMA : CHAT_FORMAT_UNKNOWN;
    }
    if (HAS("<|{{ item['role'] }}|>") && HAS("<|begin_of_image|>")) return CHAT_FORMAT_UNKNOWN;
    if (HAS("<|user|>") && HAS("<|endoftext|>")) return CHAT_FORMAT_ZEPHYR;
    if (HAS("bos_token + message['role']")) return CHAT_FORMAT_MONARCH;
    if (HAS("<start_of_turn>")) return CHAT_FORMAT_GEMMA;
    if (HAS("'\\n\\nAssistant: ' + eos_token")) return CHAT_FORMAT_UNKNOWN; /* Orion */
    if (HAS("GPT4 Correct ")) return CHAT_FORMAT_OPENCHAT;
    if (HAS("USER: ") && HAS("ASSISTANT: "))
        return HAS("SYSTEM: ") ? CHAT_FORMAT_VICUNA_ORCA : CHAT_FORMAT_VICUNA;
    if (HAS("### Instruction:") && HAS("<|EOT|>")) return CHAT_FORMAT_DEEPSEEK;
    if (HAS("<|START_OF_TURN_TOKEN|>") && HAS("<|USER_TOKEN|>")) return CHAT_FORMAT_COMMAND_R;
    if (HAS("<|start_header_id|>") && HAS("<|end_header_id|>")) return CHAT_FORMAT_LLAMA3;
    if (HAS("'Assistant: ' + message['content'] + eos_token")) return CHAT_FORMAT_DEEPSEEK2;
    if (HAS("<\xef\xbd\x9c"
            "Assistant\xef\xbd\x9c>") &&
        HAS("<\xef\xbd\x9cUser\xef\xbd\x9c>") &&
        HAS("<\xef\xbd\x9c"
            "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"))
        return CHAT_FORMAT_DEEPSEEK3;
#undef HAS
    return CHAT_FORMAT_UNKNOWN;
}

enum chat_format chat_format_choose(const char *override_name, const char *tmpl) {
    if (override_name && *override_name) {
        enum chat_format f = chat_format_parse(override_name);
        if (f == CHAT_FORMAT_UNKNOWN)
            LOG(LOG_ERROR, "unknown chat format '%s' (known: %s)", override_name,
                chat_format_list());
        return f;
    }
    enum chat_format f = chat_format_detect(tmpl);
    if (f != CHAT_FORMAT_UNKNOWN) return f;
    if (tmpl)
        LOG(LOG_WARN, "chat template not recognised: using chatml (override with --chat-format)");
    else
        LOG(LOG_WARN, "model has no chat template: using chatml (override with --chat-format)");
    return CHAT_FORMAT_CHATML;
}

/* ==== Rendering ==== */

struct sb {
    char *v;
    size_t n, cap;
    bool oom;
};

static void sb_addn(struct sb *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *v = realloc(b->v, cap);
        if (!v) {
            b->oom = true;
            return;
        }
        b->v = v;
        b->cap = cap;
    }
    memcpy(b->v + b->n, s, n);
    b->n += n;
    b->v[b->n] = 0;
}

/* Appends any number of strings, up to a NULL. */
static void sb_add(struct sb *b, ...) {
    va_list ap;
    va_start(ap, b);
    for (const char *s; (s = va_arg(ap, const char *)) != NULL;) sb_addn(b, s, strlen(s));
    va_end(ap);
}

/* s without leading/trailing ASCII whitespace (isspace), as llama.cpp's trim. */
static void sb_add_trimmed(struct sb *b, const char *s) {
    size_t start = 0, end = strlen(s);
    while (start < end && isspace((unsigned char)s[start])) start++;
    while (end > start && isspace((unsigned char)s[end - 1])) end--;
    sb_addn(b, s + start, end - start);
}

static bool is_role(const struct chat_message *m, const char *role) {
    return strcmp(m->role, role) == 0;
}

static void render_mistral(struct sb *b, enum chat_format f, const struct chat_message *m,
                           size_t n) {
    if (f == CHAT_FORMAT_MISTRAL_V7 || f == CHAT_FORMAT_MISTRAL_V7_TEKKEN) {
        const char *sp = f == CHAT_FORMAT_MISTRAL_V7 ? " " : "";
        for (size_t i = 0; i < n; i++) {
            if (is_role(&m[i], "system"))
                sb_add(b, "[SYSTEM_PROMPT]", sp, m[i].content, "[/SYSTEM_PROMPT]", NULL);
            else if (is_role(&m[i], "user"))
                sb_add(b, "[INST]", sp, m[i].content, "[/INST]", NULL);
            else
                sb_add(b, sp, m[i].content, "</s>", NULL);
        }
        return;
    }
    const char *lead = f == CHAT_FORMAT_MISTRAL_V1 ? " " : "";
    const char *trail = f == CHAT_FORMAT_MISTRAL_V3_TEKKEN ? "" : " ";
    bool in_turn = false;
    for (size_t i = 0; i < n; i++) {
        if (!in_turn) {
            sb_add(b, lead, "[INST]", trail, NULL);
            in_turn = true;
        }
        if (is_role(&m[i], "system")) {
            sb_add(b, m[i].content, "\n\n", NULL);
        } else if (is_role(&m[i], "user")) {
            sb_add(b, m[i].content, lead, "[/INST]", NULL);
        } else {
            sb_add(b, trail, NULL);
            if (f == CHAT_FORMAT_MISTRAL_V3)
                sb_add_trimmed(b, m[i].content);
            else
                sb_add(b, m[i].content, NULL);
            sb_add(b, "</s>", NULL);
            in_turn = false;
        }
    }
}

static void render_llama2(struct sb *b, enum chat_format f, const struct chat_message *m, size_t n,
                          const char *bos) {
    bool sys = f != CHAT_FORMAT_LLAMA2;
    bool bos_inside = f == CHAT_FORMAT_LLAMA2_SYS_BOS;
    bool strip = f == CHAT_FORMAT_LLAMA2_SYS_STRIP;
    bool in_turn = true; /* the first [INST] comes without a BOS */
    sb_add(b, "[INST] ", NULL);
    for (size_t i = 0; i < n; i++) {
        if (!in_turn) {
            in_turn = true;
            sb_add(b, bos_inside ? bos : "", "[INST] ", NULL);
        }
        struct sb c = {0};
        if (strip)
            sb_add_trimmed(&c, m[i].content);
        else
            sb_add(&c, m[i].content, NULL);
        const char *content = c.v ? c.v : "";
        if (c.oom) b->oom = true;
        if (is_role(&m[i], "system")) {
            if (sys)
                sb_add(b, "<<SYS>>\n", content, "\n<</SYS>>\n\n", NULL);
            else
                sb_add(b, content, "\n", NULL);
        } else if (is_role(&m[i], "user")) {
            sb_add(b, content, " [/INST]", NULL);
        } else {
            sb_add(b, content, "</s>", NULL);
            in_turn = false;
        }
        free(c.v);
    }
}

static void render_gemma(struct sb *b, const struct chat_message *m, size_t n, bool gen) {
    struct sb sys = {0};
    for (size_t i = 0; i < n; i++) {
        if (is_role(&m[i], "system")) {
            sb_add_trimmed(&sys, m[i].content);
            continue;
        }
        const char *role = is_role(&m[i], "assistant") ? "model" : m[i].role;
        sb_add(b, "<start_of_turn>", role, "\n", NULL);
        if (sys.n > 0 && strcmp(role, "model") != 0) {
            sb_add(b, sys.v, "\n\n", NULL);
            sys.n = 0;
        }
        sb_add_trimmed(b, m[i].content);
        sb_add(b, "<end_of_turn>\n", NULL);
    }
    if (sys.oom) b->oom = true;
    free(sys.v);
    if (gen) sb_add(b, "<start_of_turn>model\n", NULL);
}

enum status chat_render(enum chat_format f, const struct chat_message *m, size_t n, bool gen,
                        const char *bos_text, const char *eos_text, char **out, size_t *len) {
    *out = NULL;
    if (len) *len = 0;
    if (f < 0 || f >= CHAT_FORMAT_COUNT) {
        LOG(LOG_ERROR, "chat format %d is not one caravan renders", (int)f);
        return STATUS_FORMAT;
    }
    const char *bos = bos_text ? bos_text : "<s>";
    const char *eos = eos_text ? eos_text : "</s>";
    struct sb b = {0};
    sb_addn(&b, "", 0);
    switch (f) {
    case CHAT_FORMAT_CHATML:
        for (size_t i = 0; i < n; i++)
            sb_add(&b, "<|im_start|>", m[i].role, "\n", m[i].content, "<|im_end|>\n", NULL);
        if (gen) sb_add(&b, "<|im_start|>assistant\n", NULL);
        break;
    case CHAT_FORMAT_MISTRAL_V1:
    case CHAT_FORMAT_MISTRAL_V3:
    case CHAT_FORMAT_MISTRAL_V3_TEKKEN:
    case CHAT_FORMAT_MISTRAL_V7:
    case CHAT_FORMAT_MISTRAL_V7_TEKKEN: render_mistral(&b, f, m, n); break;
    case CHAT_FORMAT_LLAMA2:
    case CHAT_FORMAT_LLAMA2_SYS:
    case CHAT_FORMAT_LLAMA2_SYS_BOS:
    case CHAT_FORMAT_LLAMA2_SYS_STRIP: render_llama2(&b, f, m, n, bos); break;
    case CHAT_FORMAT_PHI3:
        for (size_t i = 0; i < n; i++)
            sb_add(&b, "<|", m[i].role, "|>\n", m[i].content, "<|end|>\n", NULL);
        if (gen) sb_add(&b, "<|assistant|>\n", NULL);
        break;
    case CHAT_FORMAT_PHI4:
        for (size_t i = 0; i < n; i++)
            sb_add(&b, "<|im_start|>", m[i].role, "<|im_sep|>", m[i].content, "<|im_end|>", NULL);
        if (gen) sb_add(&b, "<|im_start|>assistant<|im_sep|>", NULL);
        break;
    case CHAT_FORMAT_FALCON3:
        for (size_t i = 0; i < n; i++)
            sb_add(&b, "<|", m[i].role, "|>\n", m[i].content, "\n", NULL);
        if (gen) sb_add(&b, "<|assistant|>\n", NULL);
        break;
    case CHAT_FORMAT_ZEPHYR:
        for (size_t i = 0; i < n; i++)
            sb_add(&b, "<|", m[i].role, "|>\n", m[i].content, "<|endoftext|>\n", NULL);
        if (gen) sb_add(&b, "<|assistant|>\n", NULL);
        break;
    case CHAT_FORMAT_TINYLLAMA:
        for (size_t i = 0; i < n; i++)
            sb_add(&b, "<|", m[i].role, "|>\n", m[i].content, eos, "\n", NULL);
        if (gen) sb_add(&b, "<|assistant|>\n", NULL);
        break;
    case CHAT_FORMAT_MONARCH:
        for (size_t i = 0; i < n; i++)
            sb_add(&b, i == 0 ? "" : bos, m[i].role, "\n", m[i].content, "</s>\n", NULL);
        if (gen) sb_add(&b, bos, "assistant\n", NULL);
        break;
    case CHAT_FORMAT_GEMMA: render_gemma(&b, m, n, gen); break;
    case CHAT_FORMAT_LLAMA3:
        for (size_t i = 0; i < n; i++) {
            sb_add(&b, "<|start_header_id|>", m[i].role, "<|end_header_id|>\n\n", NULL);
            sb_add_trimmed(&b, m[i].content);
            sb_add(&b, "<|eot_id|>", NULL);
        }
        if (gen) sb_add(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n", NULL);
        break;
    case CHAT_FORMAT_DEEPSEEK:
        for (size_t i = 0; i < n; i++) {
            if (is_role(&m[i], "system"))
                sb_add(&b, m[i].content, NULL);
            else if (is_role(&m[i], "user"))
                sb_add(&b, "### Instruction:\n", m[i].content, "\n", NULL);
            else if (is_role(&m[i], "assistant"))
                sb_add(&b, "### Response:\n", m[i].content, "\n<|EOT|>\n", NULL);
        }
        if (gen) sb_add(&b, "### Response:\n", NULL);
        break;
    case CHAT_FORMAT_DEEPSEEK2:
        for (size_t i = 0; i < n; i++) {
            if (is_role(&m[i], "system"))
                sb_add(&b, m[i].content, "\n\n", NULL);
            else if (is_role(&m[i], "user"))
                sb_add(&b, "User: ", m[i].content, "\n\n", NULL);
            else if (is_role(&m[i], "assistant"))
                sb_add(&b, "Assistant: ", m[i].content,
                       "<\xef\xbd\x9c"
                       "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
                       NULL);
        }
        if (gen) sb_add(&b, "Assistant:", NULL);
        break;
    case CHAT_FORMAT_DEEPSEEK3:
        for (size_t i = 0; i < n; i++) {
            if (is_role(&m[i], "system"))
                sb_add(&b, m[i].content, "\n\n", NULL);
            else if (is_role(&m[i], "user"))
                sb_add(&b, "<\xef\xbd\x9cUser\xef\xbd\x9c>", m[i].content, NULL);
            else if (is_role(&m[i], "assistant"))
                sb_add(&b,
                       "<\xef\xbd\x9c"
                       "Assistant\xef\xbd\x9c>",
                       m[i].content,
                       "<\xef\xbd\x9c"
                       "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
                       NULL);
        }
        if (gen)
            sb_add(&b,
                   "<\xef\xbd\x9c"
                   "Assistant\xef\xbd\x9c>",
                   NULL);
        break;
    case CHAT_FORMAT_COMMAND_R:
        for (size_t i = 0; i < n; i++) {
            const char *tag = is_role(&m[i], "system")      ? "<|SYSTEM_TOKEN|>"
                              : is_role(&m[i], "user")      ? "<|USER_TOKEN|>"
                              : is_role(&m[i], "assistant") ? "<|CHATBOT_TOKEN|>"
                                                            : NULL;
            if (!tag) continue;
            sb_add(&b, "<|START_OF_TURN_TOKEN|>", tag, NULL);
            sb_add_trimmed(&b, m[i].content);
            sb_add(&b, "<|END_OF_TURN_TOKEN|>", NULL);
        }
        if (gen) sb_add(&b, "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>", NULL);
        break;
    case CHAT_FORMAT_VICUNA:
    case CHAT_FORMAT_VICUNA_ORCA:
        for (size_t i = 0; i < n; i++) {
            if (is_role(&m[i], "system")) {
                if (f == CHAT_FORMAT_VICUNA_ORCA)
                    sb_add(&b, "SYSTEM: ", m[i].content, "\n", NULL);
                else
                    sb_add(&b, m[i].content, "\n\n", NULL);
            } else if (is_role(&m[i], "user")) {
                sb_add(&b, "USER: ", m[i].content, "\n", NULL);
            } else if (is_role(&m[i], "assistant")) {
                sb_add(&b, "ASSISTANT: ", m[i].content, "</s>\n", NULL);
            }
        }
        if (gen) sb_add(&b, "ASSISTANT:", NULL);
        break;
    case CHAT_FORMAT_OPENCHAT:
        for (size_t i = 0; i < n; i++) {
            if (is_role(&m[i], "system")) {
                sb_add(&b, m[i].content, "<|end_of_turn|>", NULL);
            } else {
                char first[2] = {(char)toupper((unsigned char)m[i].role[0]), 0};
                sb_add(&b, "GPT4 Correct ", first, m[i].role[0] ? m[i].role + 1 : "", ": ",
                       m[i].content, "<|end_of_turn|>", NULL);
            }
        }
        if (gen) sb_add(&b, "GPT4 Correct Assistant:", NULL);
        break;
    default: break;
    }
    if (b.oom) {
        free(b.v);
        LOG(LOG_ERROR, "out of memory rendering a chat");
        return STATUS_NOMEM;
    }
    *out = b.v;
    if (len) *len = b.n;
    return STATUS_OK;
}
