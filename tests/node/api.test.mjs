// The HTTP API through the official `openai` npm client. Runs against any caravan API:
//   CARAVAN_URL=http://127.0.0.1:8080 [CARAVAN_API_KEY=KEY] node --test tests/node/
// ctest runs it against api_testserver (the API over a fake serving loop); the same file
// checks a real `caravan cluster`. Greedy requests must be deterministic; nothing here
// depends on what the model says.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const base = (process.env.CARAVAN_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const key = process.env.CARAVAN_API_KEY || '';
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: key || 'none', maxRetries: 0,
                            timeout: 120_000 });
const models = await client.models.list();
const model = models.data[0].id;
const nCtx = Number(process.env.CARAVAN_CTX || models.data[0].context_length || 2048);
const prompt = 'Once upon a time';
const greedy = { model, max_tokens: 16, temperature: 0, seed: 1 };

async function collect(stream, chat) {
  let text = '';
  let finish = null;
  let role = null;
  for await (const chunk of stream) {
    for (const c of chunk.choices) {
      if (chat) {
        if (c.delta.role) role = c.delta.role;
        text += c.delta.content ?? '';
      } else {
        text += c.text ?? '';
      }
      if (c.finish_reason) {
        assert.equal(finish, null, 'one finish_reason');
        finish = c.finish_reason;
      }
    }
  }
  return { text, finish, role };
}

function checkUsage(u, max) {
  assert.ok(u.prompt_tokens > 0);
  assert.ok(u.completion_tokens > 0 && u.completion_tokens <= max);
  assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens);
}

// A raw request, for what the client will not send (bad JSON, no key).
async function raw(path, body, headers = {}) {
  const h = { 'Content-Type': 'application/json', ...headers };
  if (key && !('Authorization' in headers)) h.Authorization = `Bearer ${key}`;
  const r = await fetch(`${base}${path}`, { method: 'POST', body, headers: h });
  return { status: r.status, body: await r.json() };
}

async function servesOn() {
  const r = await client.completions.create({ ...greedy, prompt, max_tokens: 2 });
  assert.equal(r.choices.length, 1);
}

test('models and health', async () => {
  assert.equal(models.data.length, 1);
  assert.equal(typeof model, 'string');
  const one = await client.models.retrieve(model);
  assert.equal(one.id, model);
  assert.equal(one.object, 'model');
  await expectApiError(client.models.retrieve('no-such-model'), 404);
  const h = await fetch(`${base}/health`);
  assert.equal(h.status, 200);
  assert.equal((await h.json()).status, 'ok');
  const m = await (await fetch(`${base}/metrics`)).text();
  assert.match(m, /^caravan_requests_total \d+$/m);
  assert.match(m, /^caravan_time_to_first_token_seconds_bucket\{le="\+Inf"\} \d+$/m);
});

test('plain completion, and the streamed one is the same', async () => {
  const plain = await client.completions.create({ ...greedy, prompt });
  assert.equal(plain.object, 'text_completion');
  const c = plain.choices[0];
  assert.equal(typeof c.text, 'string');
  assert.ok(['stop', 'length'].includes(c.finish_reason));
  checkUsage(plain.usage, 16);
  const s = await collect(await client.completions.create({ ...greedy, prompt, stream: true }));
  assert.equal(s.text, c.text);
  assert.equal(s.finish, c.finish_reason);
});

test('streamed chat completion equals the plain one', async () => {
  const req = { ...greedy, messages: [{ role: 'system', content: 'You tell stories.' },
                                      { role: 'user', content: 'Tell me about a cat.' }] };
  const plain = await client.chat.completions.create(req);
  assert.equal(plain.object, 'chat.completion');
  assert.equal(plain.choices[0].message.role, 'assistant');
  checkUsage(plain.usage, 16);
  const s = await collect(await client.chat.completions.create({ ...req, stream: true }), true);
  assert.equal(s.role, 'assistant');
  assert.equal(s.text, plain.choices[0].message.content);
  assert.equal(s.finish, plain.choices[0].finish_reason);
});

test('stream_options.include_usage sends usage last', async () => {
  const stream = await client.completions.create({ ...greedy, prompt, stream: true,
                                                   stream_options: { include_usage: true } });
  let usage = null;
  for await (const chunk of stream) if (chunk.usage) usage = chunk.usage;
  assert.ok(usage);
  checkUsage(usage, 16);
});

test('stop strings cut the text, plain and streamed', async () => {
  const full = (await client.completions.create({ ...greedy, prompt, max_tokens: 24 }))
    .choices[0].text;
  if (full.length < 8) return; // nothing to cut
  const stop = full.slice(4, 7);
  const want = full.slice(0, full.indexOf(stop));
  const plain = await client.completions.create({ ...greedy, prompt, max_tokens: 24,
                                                  stop: ['\u0001never', stop] });
  assert.equal(plain.choices[0].text, want);
  assert.equal(plain.choices[0].finish_reason, 'stop');
  const s = await collect(await client.completions.create({ ...greedy, prompt, max_tokens: 24,
                                                            stop, stream: true }));
  assert.equal(s.text, want);
  assert.equal(s.finish, 'stop');
});

// Log-probabilities: one entry a token, each at most 0, the most likely sorted; greedy picks the
// most likely (its entry is the first of its top list); the streamed entries are the plain ones.
test('chat log-probabilities, plain and streamed', async () => {
  const req = { ...greedy, messages: [{ role: 'user', content: 'Tell me about a dog.' }],
                logprobs: true, top_logprobs: 3 };
  const plain = await client.chat.completions.create(req);
  const entries = plain.choices[0].logprobs.content;
  assert.equal(entries.length, plain.usage.completion_tokens);
  for (const e of entries) {
    assert.equal(typeof e.token, 'string');
    assert.ok(e.logprob <= 0);
    assert.ok(Array.isArray(e.bytes));
    assert.equal(e.top_logprobs.length, 3);
    for (let i = 1; i < 3; i++) assert.ok(e.top_logprobs[i].logprob <= e.top_logprobs[i - 1].logprob);
    assert.equal(e.top_logprobs[0].token, e.token);
    assert.equal(e.top_logprobs[0].logprob, e.logprob);
  }
  const streamed = [];
  for await (const chunk of await client.chat.completions.create({ ...req, stream: true })) {
    for (const c of chunk.choices) if (c.logprobs?.content) streamed.push(...c.logprobs.content);
  }
  assert.deepEqual(streamed, entries);
  const none = await client.chat.completions.create({ ...req, logprobs: false, top_logprobs: 0 });
  assert.equal(none.choices[0].logprobs, null);
  await expectApiError(client.chat.completions.create({ ...req, logprobs: false }), 400);
});

test('completion log-probabilities (logprobs: N)', async () => {
  const r = await client.completions.create({ ...greedy, prompt, logprobs: 2 });
  const c = r.choices[0];
  const lp = c.logprobs;
  assert.equal(lp.tokens.length, r.usage.completion_tokens);
  assert.equal(lp.token_logprobs.length, lp.tokens.length);
  assert.equal(lp.text_offset[0], 0);
  for (let i = 0; i < lp.tokens.length; i++) {
    assert.ok(lp.token_logprobs[i] <= 0);
    if (i > 0) assert.ok(lp.text_offset[i] >= lp.text_offset[i - 1]);
    const top = Object.entries(lp.top_logprobs[i]);
    assert.ok(top.length >= 1 && top.length <= 3);
    assert.equal(lp.top_logprobs[i][lp.tokens[i]], lp.token_logprobs[i]);
  }
  if (!lp.tokens.some((t) => t.includes('\uFFFD'))) assert.equal(lp.tokens.join(''), c.text);
});

test('echo: the prompt leads the text and the log-probabilities', async () => {
  const r = await client.completions.create({ ...greedy, prompt, max_tokens: 4, echo: true,
                                              logprobs: 1 });
  const c = r.choices[0];
  const lp = c.logprobs;
  const plain = await client.completions.create({ ...greedy, prompt, max_tokens: 4 });
  assert.equal(c.text, prompt + plain.choices[0].text);
  assert.equal(lp.tokens.length, r.usage.prompt_tokens + r.usage.completion_tokens);
  assert.equal(lp.token_logprobs[0], null, "the prompt's first token has none");
  assert.equal(lp.top_logprobs[0], null);
  for (let i = 1; i < lp.tokens.length; i++) {
    assert.ok(lp.token_logprobs[i] <= 0);
    assert.ok(lp.text_offset[i] >= lp.text_offset[i - 1]);
  }
  // max_tokens 0: the prompt alone, scored
  const z = await client.completions.create({ ...greedy, prompt, max_tokens: 0, echo: true,
                                              logprobs: 0 });
  assert.equal(z.choices[0].text, prompt);
  assert.equal(z.usage.completion_tokens, 0);
  assert.equal(z.choices[0].logprobs.tokens.length, z.usage.prompt_tokens);
});

// A real model scores a text the same whether it generated it or reads it (the kernels are
// batch-invariant): generation's log-probabilities, bit for bit, from an echo of the same
// tokens (lm-evaluation-harness's loglikelihood asks exactly this).
test('echo scores generated tokens as generation did',
     { skip: !process.env.CARAVAN_REAL_MODEL && 'needs a real model (CARAVAN_REAL_MODEL=1)' },
     async () => {
  const g = await client.completions.create({ ...greedy, prompt, max_tokens: 12, logprobs: 2 });
  const glp = g.choices[0].logprobs;
  const full = prompt + g.choices[0].text;
  const t = await raw('/tokenize', JSON.stringify({ content: full, add_special: true }));
  assert.equal(t.status, 200);
  const e = await client.completions.create({ model, prompt: t.body.tokens, max_tokens: 0,
                                              echo: true, logprobs: 2, temperature: 0 });
  const lp = e.choices[0].logprobs;
  assert.equal(e.choices[0].text, full);
  assert.equal(lp.tokens.length, t.body.tokens.length);
  const n = glp.tokens.length;
  assert.deepEqual(lp.tokens.slice(-n), glp.tokens, 'the text tokenizes back as generated');
  assert.deepEqual(lp.token_logprobs.slice(-n), glp.token_logprobs);
  assert.deepEqual(lp.top_logprobs.slice(-n), glp.top_logprobs);
});

test('several prompts in one request: a choice each, each what it gives alone', async () => {
  const prompts = ['Once upon a time', 'The cat sat', 'Lily went to the park'];
  const r = await client.completions.create({ ...greedy, prompt: prompts, max_tokens: 8 });
  assert.equal(r.choices.length, prompts.length);
  let total = 0;
  for (let i = 0; i < prompts.length; i++) {
    const c = r.choices.find((x) => x.index === i);
    const alone = await client.completions.create({ ...greedy, prompt: prompts[i], max_tokens: 8 });
    assert.equal(c.text, alone.choices[0].text, `prompt ${i}`);
    total += alone.usage.completion_tokens;
  }
  assert.equal(r.usage.completion_tokens, total);
  const texts = ['', '', ''];
  for await (const chunk of await client.completions.create({ ...greedy, prompt: prompts,
                                                              max_tokens: 8, stream: true }))
    for (const c of chunk.choices) texts[c.index] += c.text;
  for (let i = 0; i < prompts.length; i++)
    assert.equal(texts[i], r.choices.find((x) => x.index === i).text);
});

test('n choices: choice j is what seed + j gives alone', async () => {
  const req = { model, prompt, max_tokens: 12, temperature: 0.9, top_k: 40, seed: 5 };
  const r = await client.completions.create({ ...req, n: 3 });
  assert.equal(r.choices.length, 3);
  for (let j = 0; j < 3; j++) {
    const alone = await client.completions.create({ ...req, seed: 5 + j });
    assert.equal(r.choices.find((x) => x.index === j).text, alone.choices[0].text, `choice ${j}`);
  }
  const chat = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 8, temperature: 0.9, seed: 5,
    n: 2 });
  assert.equal(chat.choices.length, 2);
  const roles = [null, null], texts = ['', ''];
  for await (const chunk of await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 8, temperature: 0.9, seed: 5,
    n: 2, stream: true })) {
    for (const c of chunk.choices) {
      if (c.delta.role) roles[c.index] = c.delta.role;
      texts[c.index] += c.delta.content ?? '';
    }
  }
  assert.deepEqual(roles, ['assistant', 'assistant']);
  for (let j = 0; j < 2; j++)
    assert.equal(texts[j], chat.choices.find((x) => x.index === j).message.content);
});

test('a request without a seed says the one it drew, which gives the same answer again', async () => {
  const req = { model, prompt, max_tokens: 16, temperature: 0.9, top_k: 40 };
  const a = await client.completions.create(req);
  const b = await client.completions.create(req);
  for (const r of [a, b]) assert.ok(Number.isSafeInteger(r.seed) && r.seed >= 0, `seed ${r.seed}`);
  assert.notEqual(a.seed, b.seed, 'each request draws its own');
  const again = await client.completions.create({ ...req, seed: a.seed });
  assert.equal(again.seed, a.seed);
  assert.equal(again.choices[0].text, a.choices[0].text);
  // streamed chat: every chunk says it, and it gives the plain answer's text
  const chat = { model, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 8,
                 temperature: 0.9 };
  const seeds = new Set();
  let text = '';
  for await (const chunk of await client.chat.completions.create({ ...chat, stream: true })) {
    seeds.add(chunk.seed);
    for (const c of chunk.choices) text += c.delta.content ?? '';
  }
  assert.equal(seeds.size, 1, 'one seed in every chunk');
  const [seed] = seeds;
  assert.ok(Number.isSafeInteger(seed), `seed ${seed}`);
  const plain = await client.chat.completions.create({ ...chat, seed });
  assert.equal(plain.seed, seed);
  assert.equal(plain.choices[0].message.content, text);
});

test('8 concurrent streams each give what they give alone', async () => {
  const prompts = ['Once upon a time', 'The cat sat', 'Lily went to the park',
                   'Tim had a red ball', 'One day', 'She was happy', 'The sun was hot',
                   'A big dog ran'];
  const together = await Promise.all(prompts.map(async (p) =>
    collect(await client.completions.create({ ...greedy, prompt: p, stream: true }))));
  for (let i = 0; i < prompts.length; i++) {
    const alone = await client.completions.create({ ...greedy, prompt: prompts[i] });
    assert.equal(together[i].text, alone.choices[0].text, `prompt ${i}`);
    assert.equal(together[i].finish, alone.choices[0].finish_reason);
  }
});

function assertError(status, body, want) {
  assert.ok(status >= 400 && status < 500, `4xx, got ${status}`);
  if (want) assert.equal(status, want);
  assert.equal(typeof body.error.message, 'string');
  assert.equal(typeof body.error.type, 'string');
}

async function expectApiError(promise, want) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof OpenAI.APIError, `an APIError, got ${e}`);
    assertError(e.status, e.error ? { error: e.error } : {}, want);
    return;
  }
  assert.fail('the request should have failed');
}

test('bad requests get 4xx with an error body, and the server serves on', async () => {
  let r = await raw('/v1/completions', '{"prompt": "x", ');
  assertError(r.status, r.body, 400);
  await servesOn();
  r = await raw('/v1/chat/completions', 'not json');
  assertError(r.status, r.body, 400);
  await servesOn();
  await expectApiError(client.completions.create({ model, prompt: 5 }), 400);
  await servesOn();
  await expectApiError(client.completions.create({ model, prompt, temperature: 'hot' }), 400);
  await servesOn();
  await expectApiError(client.chat.completions.create({ model, messages: 'hello' }), 400);
  await servesOn();
  await expectApiError(client.completions.create({ model, prompt, max_tokens: -5 }), 400);
  await servesOn();
  await expectApiError(client.completions.create({ model, prompt, stop: 7 }), 400);
  await servesOn();
  await expectApiError(client.completions.create({ model, prompt: 'hello '.repeat(nCtx) }), 400);
  await servesOn();
  await expectApiError(client.completions.create({ model, prompt: 'hello '.repeat(nCtx),
                                                   stream: true }), 400);
  await servesOn();
});

test('a key is required when one is set', { skip: !key && 'CARAVAN_API_KEY not set' },
  async () => {
    let r = await raw('/v1/completions', JSON.stringify({ prompt }), { Authorization: '' });
    assertError(r.status, r.body, 401);
    const wrong = new OpenAI({ baseURL: `${base}/v1`, apiKey: `${key}x`, maxRetries: 0 });
    await expectApiError(wrong.completions.create({ model, prompt }), 401);
    await expectApiError(wrong.models.list(), 401);
    await servesOn();
  });
