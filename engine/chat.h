/* chat: renders a list of chat messages into the prompt text a model was trained on, for
 * /v1/chat/completions and `caravan chat`.
 *
 * Not a Jinja engine: like llama.cpp's llm_chat_apply_template, the format is recognised from
 * distinctive substrings of the GGUF `tokenizer.chat_template` and each format is written out
 * in C, with output identical to llama.cpp's for the same messages. The rendered text carries
 * special-token text ("<|im_start|>", "[INST]"): tokenize it with parse_special, and with
 * add_special so the vocabulary's BOS (if any) goes first, as llama.cpp's server does. */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include "status.h"

enum chat_format {
    CHAT_FORMAT_UNKNOWN = -1,
    CHAT_FORMAT_CHATML = 0,       /* ChatML: Qwen, OpenHermes, ... */
    CHAT_FORMAT_LLAMA2,           /* [INST] ... [/INST], system folded into the first turn */
    CHAT_FORMAT_LLAMA2_SYS,       /* Llama 2 chat with <<SYS>> */
    CHAT_FORMAT_LLAMA2_SYS_BOS,   /* ... and <s> before every later [INST] */
    CHAT_FORMAT_LLAMA2_SYS_STRIP, /* ... with message content stripped */
    CHAT_FORMAT_MISTRAL_V1,
    CHAT_FORMAT_MISTRAL_V3,
    CHAT_FORMAT_MISTRAL_V3_TEKKEN,
    CHAT_FORMAT_MISTRAL_V7,
    CHAT_FORMAT_MISTRAL_V7_TEKKEN,
    CHAT_FORMAT_PHI3,
    CHAT_FORMAT_PHI4,
    CHAT_FORMAT_FALCON3,
    CHAT_FORMAT_ZEPHYR,    /* <|user|>\n...<|endoftext|> (StableLM-Zephyr; llama.cpp's) */
    CHAT_FORMAT_TINYLLAMA, /* the same turns ended by EOS (TinyLlama-chat, zephyr-7b) */
    CHAT_FORMAT_MONARCH,
    CHAT_FORMAT_GEMMA,
    CHAT_FORMAT_LLAMA3,
    CHAT_FORMAT_DEEPSEEK, /* deepseek-coder-instruct */
    CHAT_FORMAT_DEEPSEEK2,
    CHAT_FORMAT_DEEPSEEK3,
    CHAT_FORMAT_COMMAND_R,
    CHAT_FORMAT_VICUNA,
    CHAT_FORMAT_VICUNA_ORCA,
    CHAT_FORMAT_OPENCHAT,
    CHAT_FORMAT_COUNT
};

struct chat_message {
    const char *role; /* "system", "user", "assistant" (others pass through where the format
                         writes the role name) */
    const char *content;
};

/* The format named by `name` ("chatml", "llama2", "llama3", "mistral-v7", "phi3", "zephyr",
 * ...: llama.cpp's names), or CHAT_FORMAT_UNKNOWN. */
enum chat_format chat_format_parse(const char *name);
/* The short name of f ("chatml", ...); "unknown" outside the enum. */
const char *chat_format_name(enum chat_format f);
/* Recognises a Jinja chat template (or a format name) by its distinctive substrings, in
 * llama.cpp's order. One deliberate difference: a template with <|user|> and <|assistant|>
 * that writes eos_token (TinyLlama, zephyr-7b) is "tinyllama", where llama.cpp's built-in
 * list would pick GLM-Edge. CHAT_FORMAT_UNKNOWN when nothing matches or tmpl is NULL. */
enum chat_format chat_format_detect(const char *tmpl);
/* What to render with: override_name when given (CHAT_FORMAT_UNKNOWN and one LOG_ERROR line
 * when it is not a known name), else the detected format of tmpl, else ChatML with a LOG_WARN
 * line saying the template was not recognised. */
enum chat_format chat_format_choose(const char *override_name, const char *tmpl);

/* Renders messages[0..n) in format f. add_generation_prompt: end with the assistant's turn
 * header so the model writes the reply. bos_text: the vocabulary's BOS text for the formats
 * that repeat it inside the history (llama2-sys-bos, monarch); NULL means "<s>". eos_text: the
 * EOS text that ends turns in formats whose template writes eos_token (tinyllama); NULL means
 * "</s>". The leading BOS itself is not written (tokenize with add_special).
 * On success *out is a NUL-terminated malloc'd string the caller frees, *len its length.
 * STATUS_FORMAT for f out of range, STATUS_NOMEM on allocation failure. */
CARAVAN_NODISCARD enum status chat_render(enum chat_format f, const struct chat_message *messages,
                                          size_t n, bool add_generation_prompt,
                                          const char *bos_text, const char *eos_text, char **out,
                                          size_t *len);

/* The names chat_format_parse accepts, comma-separated (for --help and error messages). */
const char *chat_format_list(void);
