// streams.mjs URL N MAX_TOKENS OUT.json: N concurrent streamed greedy completions (different
// prompts, ignore_eos, seeded sampling for odd ones, each token's log-probability and its 2
// most likely; every fourth from the third on echoes its prompt, scored) with Node's fetch; writes each stream's text, token count, finish reason and
// log-probabilities to OUT.json, and fails on a duplicated or missing event (every SSE chunk
// must carry exactly one token's text and entry, counted against usage). Bounded: each stream
// gives up after 180 s.
import { writeFileSync } from 'node:fs';

const [url, nArg, maxArg, out] = process.argv.slice(2);
const n = Number(nArg), maxTokens = Number(maxArg);
const prompts = ['Once upon a time', 'The cat sat', 'Lily went to the park', 'Tim had a red ball',
  'One day', 'She was happy', 'The sun was hot', 'A big dog ran', 'The little bird',
  'Max and Mia', 'In the garden', 'The old tree'];
const headers = { 'Content-Type': 'application/json' };
if (process.env.CARAVAN_API_KEY) headers.Authorization = `Bearer ${process.env.CARAVAN_API_KEY}`;

async function one(i) {
  const body = { prompt: prompts[i % prompts.length], max_tokens: maxTokens, ignore_eos: true,
    stream: true, stream_options: { include_usage: true }, logprobs: 2 };
  if (i % 2) Object.assign(body, { temperature: 0.8, seed: 1000 + i, top_k: 40 });
  else body.temperature = 0;
  if (i % 4 === 2) body.echo = true; /* an entry a prompt token too, the first null */
  const res = await fetch(`${url}/v1/completions`, { method: 'POST', headers,
    body: JSON.stringify(body), signal: AbortSignal.timeout(180000) });
  if (!res.ok) throw new Error(`stream ${i}: HTTP ${res.status} ${await res.text()}`);
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = '', text = '', chunks = 0, usage = null, finish = null, done = false;
  const logprobs = [];
  while (!done) {
    const { value, done: end } = await reader.read();
    if (end) break;
    buf += dec.decode(value, { stream: true });
    let k;
    while ((k = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, k);
      buf = buf.slice(k + 2);
      if (ev === 'data: [DONE]') { done = true; break; }
      if (!ev.startsWith('data: ')) continue;
      const j = JSON.parse(ev.slice(6));
      if (j.error) throw new Error(`stream ${i}: ${JSON.stringify(j.error)}`);
      if (j.usage) usage = j.usage;
      if (j.choices && j.choices.length) {
        text += j.choices[0].text || '';
        if (j.choices[0].finish_reason) finish = j.choices[0].finish_reason;
        const lp = j.choices[0].logprobs;
        if (lp) {
          for (let k = 0; k < lp.tokens.length; k++)
            logprobs.push([lp.tokens[k], lp.token_logprobs[k], lp.top_logprobs[k]]);
        }
        chunks++;
      }
    }
  }
  if (!usage) throw new Error(`stream ${i}: no usage (cut short?)`);
  const entries = usage.completion_tokens + (body.echo ? usage.prompt_tokens : 0);
  if (logprobs.length !== entries)
    throw new Error(`stream ${i}: ${logprobs.length} log-probabilities for ${entries} tokens`);
  if (body.echo && (logprobs[0][1] !== null || !text.startsWith(body.prompt)))
    throw new Error(`stream ${i}: the echo does not lead with the prompt`);
  return { prompt: body.prompt, text, tokens: usage.completion_tokens, finish, logprobs };
}

const results = await Promise.all(Array.from({ length: n }, (_, i) => one(i)));
writeFileSync(out, JSON.stringify(results, null, 1));
for (const r of results)
  if (r.tokens !== maxTokens) {
    console.error(`a stream got ${r.tokens} tokens, not ${maxTokens}`);
    process.exit(1);
  }
console.log(`${n} streams x ${maxTokens} tokens done`);
