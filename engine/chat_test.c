/* chat_test: every chat format renders a two-turn conversation (system, user, assistant, user,
 * then the generation prompt) to exactly the string llama.cpp's llm_chat_apply_template gives;
 * template detection on real templates (the shared Phi-3 vocabulary's, and well-known ones);
 * name parsing and the ChatML fallback. */
#undef NDEBUG
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "gguf.h"

#include "check.h"

/* The assistant's reply has spaces around it so the formats that trim show it. */
static const struct chat_message conv[] = {
    {"system", "You are a helpful assistant"},
    {"user", "Hello"},
    {"assistant", " Hi there "},
    {"user", "Who are you"},
};

#define FULLWIDTH_BAR "\xef\xbd\x9c"
#define EOS_DEEPSEEK "<" FULLWIDTH_BAR "end\xe2\x96\x81of\xe2\x96\x81sentence" FULLWIDTH_BAR ">"

static const struct {
    enum chat_format f;
    const char *want;
} expected[] = {
    {CHAT_FORMAT_CHATML,
     "<|im_start|>system\nYou are a helpful "
     "assistant<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
     "<|im_start|>assistant\n Hi there <|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n"
     "<|im_start|>assistant\n"},
    {CHAT_FORMAT_LLAMA2,
     "[INST] You are a helpful assistant\nHello [/INST] Hi there </s>[INST] Who are you [/INST]"},
    {CHAT_FORMAT_LLAMA2_SYS,
     "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST] Hi there </s>"
     "[INST] Who are you [/INST]"},
    {CHAT_FORMAT_LLAMA2_SYS_BOS,
     "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST] Hi there </s>"
     "<s>[INST] Who are you [/INST]"},
    {CHAT_FORMAT_LLAMA2_SYS_STRIP,
     "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST]Hi there</s>"
     "[INST] Who are you [/INST]"},
    {CHAT_FORMAT_MISTRAL_V1, " [INST] You are a helpful assistant\n\nHello [/INST]  Hi there </s> "
                             "[INST] Who are you [/INST]"},
    {CHAT_FORMAT_MISTRAL_V3,
     "[INST] You are a helpful assistant\n\nHello[/INST] Hi there</s>[INST] Who are you[/INST]"},
    {CHAT_FORMAT_MISTRAL_V3_TEKKEN,
     "[INST]You are a helpful assistant\n\nHello[/INST] Hi there </s>[INST]Who are you[/INST]"},
    {CHAT_FORMAT_MISTRAL_V7,
     "[SYSTEM_PROMPT] You are a helpful assistant[/SYSTEM_PROMPT][INST] Hello[/INST]  Hi there </s>"
     "[INST] Who are you[/INST]"},
    {CHAT_FORMAT_MISTRAL_V7_TEKKEN,
     "[SYSTEM_PROMPT]You are a helpful assistant[/SYSTEM_PROMPT][INST]Hello[/INST] Hi there </s>"
     "[INST]Who are you[/INST]"},
    {CHAT_FORMAT_PHI3,
     "<|system|>\nYou are a helpful assistant<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\n"
     " Hi there <|end|>\n<|user|>\nWho are you<|end|>\n<|assistant|>\n"},
    {CHAT_FORMAT_PHI4,
     "<|im_start|>system<|im_sep|>You are a helpful assistant<|im_end|><|im_start|>user<|im_sep|>"
     "Hello<|im_end|><|im_start|>assistant<|im_sep|> Hi there <|im_end|><|im_start|>user<|im_sep|>"
     "Who are you<|im_end|><|im_start|>assistant<|im_sep|>"},
    {CHAT_FORMAT_FALCON3,
     "<|system|>\nYou are a helpful assistant\n<|user|>\nHello\n<|assistant|>\n Hi there \n"
     "<|user|>\nWho are you\n<|assistant|>\n"},
    {CHAT_FORMAT_ZEPHYR,
     "<|system|>\nYou are a helpful assistant<|endoftext|>\n<|user|>\nHello<|endoftext|>\n"
     "<|assistant|>\n Hi there <|endoftext|>\n<|user|>\nWho are you<|endoftext|>\n<|assistant|>\n"},
    {CHAT_FORMAT_TINYLLAMA, "<|system|>\nYou are a helpful "
                            "assistant</s>\n<|user|>\nHello</s>\n<|assistant|>\n Hi there </s>\n"
                            "<|user|>\nWho are you</s>\n<|assistant|>\n"},
    {CHAT_FORMAT_MONARCH,
     "system\nYou are a helpful assistant</s>\n<s>user\nHello</s>\n<s>assistant\n Hi there </s>\n"
     "<s>user\nWho are you</s>\n<s>assistant\n"},
    {CHAT_FORMAT_GEMMA, "<start_of_turn>user\nYou are a helpful "
                        "assistant\n\nHello<end_of_turn>\n<start_of_turn>model\n"
                        "Hi there<end_of_turn>\n<start_of_turn>user\nWho are "
                        "you<end_of_turn>\n<start_of_turn>model\n"},
    {CHAT_FORMAT_LLAMA3,
     "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant<|eot_id|>"
     "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
     "<|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|>"
     "<|start_header_id|>user<|end_header_id|>\n\nWho are you<|eot_id|>"
     "<|start_header_id|>assistant<|end_header_id|>\n\n"},
    {CHAT_FORMAT_DEEPSEEK,
     "You are a helpful assistant### Instruction:\nHello\n### Response:\n Hi there \n<|EOT|>\n"
     "### Instruction:\nWho are you\n### Response:\n"},
    {CHAT_FORMAT_DEEPSEEK2,
     "You are a helpful assistant\n\nUser: Hello\n\nAssistant:  Hi there " EOS_DEEPSEEK
     "User: Who are you\n\nAssistant:"},
    {CHAT_FORMAT_DEEPSEEK3,
     "You are a helpful assistant\n\n<" FULLWIDTH_BAR "User" FULLWIDTH_BAR ">Hello<" FULLWIDTH_BAR
     "Assistant" FULLWIDTH_BAR "> Hi there " EOS_DEEPSEEK "<" FULLWIDTH_BAR "User" FULLWIDTH_BAR
     ">Who are you<" FULLWIDTH_BAR "Assistant" FULLWIDTH_BAR ">"},
    {CHAT_FORMAT_COMMAND_R,
     "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>You are a helpful assistant<|END_OF_TURN_TOKEN|>"
     "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>Hello<|END_OF_TURN_TOKEN|>"
     "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>Hi there<|END_OF_TURN_TOKEN|>"
     "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>Who are you<|END_OF_TURN_TOKEN|>"
     "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"},
    {CHAT_FORMAT_VICUNA,
     "You are a helpful assistant\n\nUSER: Hello\nASSISTANT:  Hi there </s>\nUSER: Who are you\n"
     "ASSISTANT:"},
    {CHAT_FORMAT_VICUNA_ORCA,
     "SYSTEM: You are a helpful assistant\nUSER: Hello\nASSISTANT:  Hi there </s>\n"
     "USER: Who are you\nASSISTANT:"},
    {CHAT_FORMAT_OPENCHAT,
     "You are a helpful assistant<|end_of_turn|>GPT4 Correct User: Hello<|end_of_turn|>"
     "GPT4 Correct Assistant:  Hi there <|end_of_turn|>GPT4 Correct User: Who are you"
     "<|end_of_turn|>GPT4 Correct Assistant:"},
};

static void test_render(void) {
    bool covered[CHAT_FORMAT_COUNT] = {0};
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        char *got = NULL;
        size_t len = 0;
        enum status rc = chat_render(expected[i].f, conv, 4, true, NULL, NULL, &got, &len);
        CHECK(rc == STATUS_OK, "%s: %s", chat_format_name(expected[i].f), status_str(rc));
        if (rc != STATUS_OK) continue;
        covered[expected[i].f] = true;
        CHECK(len == strlen(got) && strcmp(got, expected[i].want) == 0,
              "%s:\n  got  [%s]\n  want [%s]", chat_format_name(expected[i].f), got,
              expected[i].want);
        /* Names round-trip. */
        CHECK(chat_format_parse(chat_format_name(expected[i].f)) == expected[i].f, "name of %d",
              (int)expected[i].f);
        free(got);
    }
    for (int f = 0; f < CHAT_FORMAT_COUNT; f++)
        CHECK(covered[f], "format %s has no expected-output case", chat_format_name(f));

    /* Without the generation prompt the trailing assistant header goes away. */
    char *got = NULL;
    size_t len;
    CHECK(chat_render(CHAT_FORMAT_CHATML, conv, 2, false, NULL, NULL, &got, &len) == STATUS_OK,
          "chatml no-gen");
    CHECK(got && strcmp(got, "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n"
                             "<|im_start|>user\nHello<|im_end|>\n") == 0,
          "chatml without generation prompt: %s", got);
    free(got);
    /* The vocabulary's own BOS/EOS text where the format repeats them. */
    CHECK(chat_render(CHAT_FORMAT_LLAMA2_SYS_BOS, conv, 4, true, "<BOS>", NULL, &got, &len) ==
              STATUS_OK,
          "bos text");
    CHECK(got && strstr(got, "</s><BOS>[INST] Who") != NULL, "bos text used: %s", got);
    free(got);
    CHECK(chat_render(CHAT_FORMAT_TINYLLAMA, conv, 2, true, NULL, "<|eos|>", &got, &len) ==
              STATUS_OK,
          "eos text");
    CHECK(got &&
              strcmp(got, "<|system|>\nYou are a helpful assistant<|eos|>\n<|user|>\nHello<|eos|>\n"
                          "<|assistant|>\n") == 0,
          "eos text used: %s", got);
    free(got);
    CHECK(chat_render(CHAT_FORMAT_COUNT, conv, 4, true, NULL, NULL, &got, &len) == STATUS_FORMAT &&
              got == NULL,
          "bad format rejected");
    CHECK(chat_render(CHAT_FORMAT_LLAMA3, conv, 0, true, NULL, NULL, &got, &len) == STATUS_OK &&
              got && strcmp(got, "<|start_header_id|>assistant<|end_header_id|>\n\n") == 0,
          "empty conversation");
    free(got);
}

static void test_detect(void) {
    static const struct {
        const char *tmpl;
        enum chat_format want;
    } cases[] = {
        /* Qwen2.5 (abridged) */
        {"{%- if tools %}{{- '<|im_start|>system\\n' }}{%- endif %}{%- for message in messages %}"
         "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
         "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif "
         "%}",
         CHAT_FORMAT_CHATML},
        /* Llama 3 / 3.1 (abridged) */
        {"{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + "
         "message['role'] + "
         "'<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}{%- endfor %}",
         CHAT_FORMAT_LLAMA3},
        /* Llama 2 chat */
        {"{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set "
         "system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% "
         "set system_message = false %}{% endif %}{% for message in loop_messages %}{% if "
         "loop.index0 "
         "== 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
         "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] "
         "%}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + "
         "content.strip() "
         "+ ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' "
         "+ "
         "eos_token }}{% endif %}{% endfor %}",
         CHAT_FORMAT_LLAMA2_SYS_STRIP},
        /* Mistral 7B Instruct v0.1/0.2 */
        {"{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] "
         "' + "
         "message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ "
         "message['content'] + eos_token}}{% endif %}{% endfor %}",
         CHAT_FORMAT_LLAMA2},
        /* TinyLlama 1.1B chat / zephyr-7b */
        {"{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\\n' + "
         "message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ "
         "'<|system|>\\n' + message['content'] + eos_token }}\n{% elif message['role'] == "
         "'assistant' %}\n{{ '<|assistant|>\\n'  + message['content'] + eos_token }}\n{% endif "
         "%}\n{% "
         "if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor "
         "%}",
         CHAT_FORMAT_TINYLLAMA},
        {"{{ '<|user|>\\n' + message['content'] + '<|endoftext|>' }}", CHAT_FORMAT_ZEPHYR},
        {"{{ '[SYSTEM_PROMPT]' + system_message + '[/SYSTEM_PROMPT]' }}{{ '[INST]' }}",
         CHAT_FORMAT_MISTRAL_V7},
        {"llama3", CHAT_FORMAT_LLAMA3},
        {"{{ messages }}", CHAT_FORMAT_UNKNOWN},
        {NULL, CHAT_FORMAT_UNKNOWN},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        enum chat_format f = chat_format_detect(cases[i].tmpl);
        CHECK(f == cases[i].want, "detect case %zu: got %s want %s", i, chat_format_name(f),
              chat_format_name(cases[i].want));
    }
    CHECK(chat_format_choose(NULL, "{{ messages }}") == CHAT_FORMAT_CHATML, "fallback to chatml");
    CHECK(chat_format_choose(NULL, NULL) == CHAT_FORMAT_CHATML, "no template: chatml");
    CHECK(chat_format_choose("llama2", "<|im_start|>") == CHAT_FORMAT_LLAMA2, "override wins");
    CHECK(chat_format_choose("no-such-format", NULL) == CHAT_FORMAT_UNKNOWN, "bad override");
    CHECK(chat_format_parse("qwen2") == CHAT_FORMAT_CHATML, "alias");
    for (int f = 0; f < CHAT_FORMAT_COUNT; f++) {
        const char *name = chat_format_name((enum chat_format)f);
        const char *at = strstr(chat_format_list(), name);
        size_t n = strlen(name);
        /* whole entries only ("llama2" must not be found inside "llama2-sys") */
        bool whole = false;
        for (; at && !whole; at = strstr(at + 1, name))
            whole = (at == chat_format_list() || at[-1] == ' ') && (at[n] == ',' || at[n] == 0);
        CHECK(whole, "chat_format_list lacks %s", name);
    }

    /* The template stored in a real GGUF file. */
    const char *shared = getenv("CARAVAN_SHARED");
    char path[4096];
    snprintf(path, sizeof path, "%s/vocab/ggml-vocab-phi-3.gguf", shared ? shared : "../shared");
    gguf_t *g = NULL;
    if (gguf_open(path, &g) == STATUS_OK) {
        enum chat_format f = chat_format_detect(gguf_get_str(g, "tokenizer.chat_template"));
        CHECK(f == CHAT_FORMAT_PHI3, "phi-3 vocabulary's template: %s", chat_format_name(f));
        gguf_close(&g);
    } else {
        CHECK(0, "cannot open %s", path);
    }
}

int main(void) {
    test_render();
    test_detect();
    if (check_failures) {
        fprintf(stderr, "%d failure(s)\n", check_failures);
        return 1;
    }
    fprintf(stderr, "chat_test: %d formats ok\n", CHAT_FORMAT_COUNT);
    return 0;
}
