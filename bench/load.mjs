// load.mjs: N concurrent streamed completions against a caravan (or any OpenAI-compatible)
// server, using Node's own fetch. Prints one JSON line: streams, wall seconds, generated tokens
// (from each stream's usage), aggregate tokens/s, and time to first token per stream.
//
//   node bench/load.mjs URL STREAMS MAX_TOKENS [PROMPT]
//   (CARAVAN_API_KEY sets the bearer key; CARAVAN_LOGPROBS=N asks each token's log-probability
//   and the N most likely, as `logprobs: N`; LOAD_LATE_PROMPT=TEXT sends one more request,
//   for one token, LOAD_LATE_MS (default 1000) after the streams start, and reports its time to
//   first token as late_ttft_ms: how a long prompt arriving stalls the streams shows in
//   max_gap_ms, the longest wait between two tokens of one stream; LOAD_TIMELINE=FILE appends
//   "bin count" lines, the tokens that arrived in each LOAD_BIN_MS (default 1000) since
//   LOAD_T0, epoch seconds)
import { sseEvents } from './sse.mjs';

const [url, streamsArg, maxArg, promptArg] = process.argv.slice(2);
if (!url || !streamsArg || !maxArg) {
  console.error('usage: node bench/load.mjs URL STREAMS MAX_TOKENS [PROMPT]');
  process.exit(2);
}
const streams = Number(streamsArg);
const maxTokens = Number(maxArg);
const prompt = promptArg || 'Once upon a time there was a little robot who lived in a big city';
const headers = { 'Content-Type': 'application/json' };
if (process.env.CARAVAN_API_KEY) headers.Authorization = `Bearer ${process.env.CARAVAN_API_KEY}`;

async function one(i, text = prompt, max = maxTokens) {
  const t0 = performance.now();
  const res = await fetch(`${url.replace(/\/+$/, '')}/v1/completions`, {
    method: 'POST',
    headers,
    body: JSON.stringify({
      prompt: text, max_tokens: max, temperature: 0, ignore_eos: true, stream: true,
      stream_options: { include_usage: true }, seed: i,
      ...(process.env.CARAVAN_LOGPROBS ? { logprobs: Number(process.env.CARAVAN_LOGPROBS) } : {}),
    }),
  });
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  let ttft = 0, tokens = 0, last = 0, maxGap = 0;
  const mine = []; // this stream's token arrivals
  for await (const j of sseEvents(res)) {
    if (j.choices && j.choices.length && j.choices[0].text) {
      const now = performance.now();
      if (!ttft) ttft = now - t0;
      else if (now - last > maxGap) maxGap = now - last;
      last = now;
      if (i < streams) stamps.push(now); // not the late request's
      mine.push(now);
    }
    if (j.usage) tokens = j.usage.completion_tokens;
  }
  return { ttft_ms: ttft, tokens, ms: performance.now() - t0, max_gap_ms: maxGap, mine };
}

const stamps = []; // every token's arrival, all streams (for LOAD_TIMELINE)
const t0 = performance.now();
const late = process.env.LOAD_LATE_PROMPT
  ? new Promise((r) => setTimeout(r, Number(process.env.LOAD_LATE_MS || 1000)))
    .then(() => one(streams, process.env.LOAD_LATE_PROMPT, 1))
  : null;
const results = await Promise.all(Array.from({ length: streams }, (_, i) => one(i)));
const lateResult = late ? await late : null;
const wall = (performance.now() - t0) / 1000;
const tokens = results.reduce((a, r) => a + r.tokens, 0);
const ttfts = results.map((r) => r.ttft_ms).sort((a, b) => a - b);
// Generation rate while every stream decodes (as llama-batched-bench's S_TG): the tokens that
// arrived between the last stream's first token and the first stream's last, over that time.
const from = Math.max(...results.map((r) => r.mine[0] ?? Infinity));
const to = Math.min(...results.map((r) => r.mine[r.mine.length - 1] ?? -Infinity));
const inWindow = stamps.filter((t) => t > from && t <= to).length;
const genRate = to > from ? inWindow / ((to - from) / 1000) : 0;
console.log(JSON.stringify({
  streams, max_tokens: maxTokens, wall_s: +wall.toFixed(3), tokens,
  tokens_per_s: +(tokens / wall).toFixed(2),
  gen_tokens_per_s: +genRate.toFixed(2),
  ttft_ms_median: +ttfts[Math.floor(ttfts.length / 2)].toFixed(1),
  ttft_ms_max: +ttfts[ttfts.length - 1].toFixed(1),
  max_gap_ms: +Math.max(...results.map((r) => r.max_gap_ms)).toFixed(1),
  ...(lateResult ? { late_ttft_ms: +lateResult.ttft_ms.toFixed(1) } : {}),
}));
if (process.env.LOAD_TIMELINE) {
  // tokens arrived per bin (a second unless LOAD_BIN_MS) since LOAD_T0, as "bin count" lines
  const { appendFileSync } = await import('node:fs');
  const base = Number(process.env.LOAD_T0 || 0) * 1000;
  const binMs = Number(process.env.LOAD_BIN_MS || 1000);
  const per = new Map();
  for (const t of stamps) {
    const bin = Math.floor((performance.timeOrigin + t - base) / binMs);
    per.set(bin, (per.get(bin) || 0) + 1);
  }
  appendFileSync(process.env.LOAD_TIMELINE,
    [...per].map(([k, v]) => `${k} ${v}`).join('\n') + (per.size ? '\n' : ''));
}
