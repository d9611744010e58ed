// score.mjs: a text's perplexity through an OpenAI-compatible server, computed as
// llama.cpp's llama-perplexity does it, with `echo` and `max_tokens: 0`: the text tokenized
// whole (POST /tokenize, with BOS), cut into chunks of N_CTX tokens (as many as fit, at most
// CHUNKS), each chunk's first token replaced by BOS, and each chunk's second half scored (the
// tokens at positions N_CTX/2 + 1 .. N_CTX - 1, by the logits of the ones before). Every
// chunk is its own request, all sent at once. Prints one JSON line: chunks, scored tokens,
// perplexity, wall seconds, and text tokens processed a second (chunks x N_CTX / seconds).
//
//   node bench/score.mjs URL TEXT_FILE N_CTX [CHUNKS]
//   (CARAVAN_API_KEY sets the bearer key)
import { readFileSync } from 'node:fs';

const [url, file, ctxArg, chunksArg] = process.argv.slice(2);
if (!url || !file || !ctxArg) {
  console.error('usage: node bench/score.mjs URL TEXT_FILE N_CTX [CHUNKS]');
  process.exit(2);
}
const base = url.replace(/\/+$/, '');
const nCtx = Number(ctxArg);
const headers = { 'Content-Type': 'application/json' };
if (process.env.CARAVAN_API_KEY) headers.Authorization = `Bearer ${process.env.CARAVAN_API_KEY}`;

async function post(path, body) {
  const res = await fetch(`${base}${path}`, { method: 'POST', headers, body: JSON.stringify(body),
                                             signal: AbortSignal.timeout(600000) });
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}: ${await res.text()}`);
  return res.json();
}

const text = readFileSync(file, 'utf8');
const { tokens } = await post('/tokenize', { content: text, add_special: true });
const bos = tokens[0];
const maxChunks = Math.floor(tokens.length / nCtx);
const nChunks = Math.min(maxChunks, chunksArg ? Number(chunksArg) : maxChunks);
if (nChunks < 1) {
  console.error(`the text has ${tokens.length} tokens: fewer than one chunk of ${nCtx}`);
  process.exit(1);
}
const first = Math.floor(nCtx / 2);

async function chunk(i) {
  const ids = tokens.slice(i * nCtx, (i + 1) * nCtx);
  ids[0] = bos;
  const r = await post('/v1/completions', { prompt: ids, max_tokens: 0, echo: true, logprobs: 0,
                                            temperature: 0 });
  const lp = r.choices[0].logprobs.token_logprobs;
  if (lp.length !== nCtx) throw new Error(`chunk ${i}: ${lp.length} entries, not ${nCtx}`);
  let nll = 0;
  for (let k = first + 1; k < nCtx; k++) nll -= lp[k];
  return nll;
}

const t0 = performance.now();
const nlls = await Promise.all(Array.from({ length: nChunks }, (_, i) => chunk(i)));
const seconds = (performance.now() - t0) / 1000;
const count = nChunks * (nCtx - first - 1);
const nll = nlls.reduce((a, b) => a + b, 0);
console.log(JSON.stringify({
  chunks: nChunks, n_ctx: nCtx, text_tokens: tokens.length, scored: count,
  ppl: Math.exp(nll / count), seconds: Number(seconds.toFixed(3)),
  tokens_per_s: Number((nChunks * nCtx / seconds).toFixed(2)),
}));
