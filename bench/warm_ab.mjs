// warm_ab.mjs: single-stream generation speed of two OpenAI-compatible servers that are both up,
// one greedy streamed completion at a time, in turn A B B A (so a host drifting within a pair
// favours neither). A request's speed is its tokens after the first over the time from the first
// token to the last (prompt and start-up excluded). Prints each pair on stderr and one JSON
// line on stdout: the medians, the median of the pair ratios B/A, its range and a 95% interval
// for it (a percentile bootstrap, 10 000 resamples from a fixed seed), in how many pairs B was
// faster, and every pair's two rates (a_tps, b_tps). With --pool it reads such
// lines (several runs) on stdin and prints their pairs' summary, pooled, the same way.
//
//   node bench/warm_ab.mjs URL_A URL_B PAIRS MAX_TOKENS [PROMPT]
//   node bench/warm_ab.mjs --pool < RUNS.jsonl
import { readFileSync } from 'node:fs';
import { sseEvents } from './sse.mjs';

const median = (v) => {
  const s = [...v].sort((x, y) => x - y), n = s.length;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
};
const r3 = (x) => Number(x.toFixed(3));
// 95% interval of median(v): the 2.5th and 97.5th percentiles of the medians of 10 000 samples
// of v drawn with replacement (mulberry32 from a fixed seed: the same pairs give the same line)
const medianInterval = (v) => {
  let s = 1;
  const rnd = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), s | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const n = 10000, m = new Array(n);
  for (let k = 0; k < n; k++) m[k] = median(Array.from(v, () => v[Math.floor(rnd() * v.length)]));
  m.sort((x, y) => x - y);
  return [m[Math.floor(0.025 * n)], m[Math.ceil(0.975 * n) - 1]];
};
// the summary line of pairs (a[i], b[i]), rates in tokens/s
const summary = (a, b, extra) => {
  const ratios = a.map((x, i) => b[i] / x);
  const [lo, hi] = medianInterval(ratios);
  return JSON.stringify({
    pairs: a.length, ...extra, a_median_tps: r3(median(a)), b_median_tps: r3(median(b)),
    ratio_median: r3(median(ratios)), ratio_ci95_low: r3(lo), ratio_ci95_high: r3(hi),
    ratio_min: r3(Math.min(...ratios)),
    ratio_max: r3(Math.max(...ratios)), b_faster: ratios.filter((x) => x > 1).length,
    a_tps: a.map(r3), b_tps: b.map(r3), // every pair, for a caller pooling several runs
  });
};

if (process.argv[2] === '--pool') {
  const runs = readFileSync(0, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
  const a = runs.flatMap((r) => r.a_tps), b = runs.flatMap((r) => r.b_tps);
  if (!a.length || a.length !== b.length) {
    console.error('warm_ab.mjs --pool: no pairs on stdin');
    process.exit(2);
  }
  console.log(summary(a, b, {}));
  process.exit(0);
}

const [urlA, urlB, pairsArg, maxArg, promptArg] = process.argv.slice(2);
const pairs = Number(pairsArg), maxTokens = Number(maxArg);
if (!urlA || !urlB || !(pairs >= 1) || !(maxTokens >= 2)) {
  console.error('usage: node bench/warm_ab.mjs URL_A URL_B PAIRS MAX_TOKENS [PROMPT] (PAIRS >= 1, MAX_TOKENS >= 2)');
  process.exit(2);
}
const prompt = promptArg || 'Once upon a time there was a little robot who lived in a big city';

async function rate(url) {
  const res = await fetch(`${url.replace(/\/+$/, '')}/v1/completions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ prompt, max_tokens: maxTokens, temperature: 0, ignore_eos: true,
                           stream: true, stream_options: { include_usage: true } }),
  });
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}: ${await res.text()}`);
  let first = 0, last = 0, tokens = 0;
  try {
    for await (const j of sseEvents(res)) {
      if (j.choices && j.choices.length && j.choices[0].text) {
        last = performance.now();
        if (!first) first = last;
      }
      if (j.usage) tokens = j.usage.completion_tokens;
    }
  } catch (e) {
    throw new Error(`${url}: ${e.message}`); // which server's stream failed
  }
  if (tokens < 2 || last <= first) throw new Error(`${url}: ${tokens} tokens, nothing to time`);
  return (tokens - 1) / ((last - first) / 1000);
}

await rate(urlA); // warm-up, not counted
await rate(urlB);
const a = [], b = [];
for (let p = 0; p < pairs; p++) {
  let ra, rb;
  if (p % 2 === 0) { ra = await rate(urlA); rb = await rate(urlB); }
  else { rb = await rate(urlB); ra = await rate(urlA); }
  a.push(ra); b.push(rb);
  console.error(`pair ${p + 1}: A ${ra.toFixed(2)} B ${rb.toFixed(2)} t/s, B/A ${(rb / ra).toFixed(3)}`);
}
console.log(summary(a, b, { max_tokens: maxTokens }));
