// token_latency.mjs: per-token latency of a caravan (or any OpenAI-compatible) server, timed
// by the client as the difference between two completion lengths, so the prompt's time and
// the HTTP round trip cancel out:
//     per_token_ms = (T(LONG tokens) - T(SHORT tokens)) / (LONG - SHORT)
// Each length is requested RUNS times (greedy, ignore_eos, not streamed; the server's own
// usage.completion_tokens must equal the length) and the fastest time is kept: noise on a
// shared machine only ever adds time. (Timing the chunks of one stream is not enough: the
// API sends tokens produced faster than they are written in one chunk.)
// Prints one JSON line.
//
//   node tests/integration/token_latency.mjs URL [SHORT LONG RUNS [PROMPT]]
//   (defaults 8 48 3; CARAVAN_API_KEY sets the bearer key)
const [url, shortArg, longArg, runsArg, promptArg] = process.argv.slice(2);
if (!url) {
  console.error('usage: node token_latency.mjs URL [SHORT LONG RUNS [PROMPT]]');
  process.exit(2);
}
const short = Number(shortArg || 8), long = Number(longArg || 48), runs = Number(runsArg || 3);
const headers = { 'Content-Type': 'application/json' };
if (process.env.CARAVAN_API_KEY) headers.Authorization = `Bearer ${process.env.CARAVAN_API_KEY}`;

async function timed(n) {
  const t0 = performance.now();
  const res = await fetch(`${url.replace(/\/+$/, '')}/v1/completions`, {
    method: 'POST',
    headers,
    body: JSON.stringify({
      prompt: promptArg || 'Once upon a time', max_tokens: n, temperature: 0, ignore_eos: true,
    }),
  });
  const body = await res.text();
  const ms = performance.now() - t0;
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${body}`);
  const got = JSON.parse(body).usage.completion_tokens;
  if (got !== n) throw new Error(`asked for ${n} tokens, the server generated ${got}`);
  return ms;
}

const times = { [short]: [], [long]: [] };
for (let i = 0; i < runs; i++) {
  times[short].push(await timed(short));
  times[long].push(await timed(long));
}
const best = (a) => Math.min(...a);
const perToken = (best(times[long]) - best(times[short])) / (long - short);
console.log(JSON.stringify({
  per_token_ms: +perToken.toFixed(3), short, long,
  [`ms_${short}`]: times[short].map((t) => +t.toFixed(2)),
  [`ms_${long}`]: times[long].map((t) => +t.toFixed(2)),
}));
