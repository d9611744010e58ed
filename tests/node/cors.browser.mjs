// --cors in headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core): a page
// served from another origin calls the API as a browser app does (Authorization, a JSON body,
// the openai SDK's own x-stainless headers, so a preflight first) and reads a streamed answer;
// the same page is blocked by a server without --cors, or with another origin in it; and a
// request a page may send without asking (a "simple" POST, no preflight) to a server on
// loopback without a key is refused before it computes anything.
// CARAVAN_BIN: the folder holding api_testserver (the API over a fake serving loop).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { once } from "node:events";
import { chromium } from "playwright-core";

const bin = process.env.CARAVAN_BIN;
const key = "cors-test-key";

// api_testserver with these options (and the key unless told otherwise); resolves to its URL
async function apiServer(args, children, withKey = true) {
  const child = spawn(join(bin, "api_testserver"), [...(withKey ? ["--api-key", key] : []), ...args],
                      { stdio: ["ignore", "pipe", "inherit"] });
  children.push(child);
  let out = "";
  for await (const chunk of child.stdout) {
    out += chunk;
    const m = out.match(/^URL (\S+)$/m);
    if (m) return m[1];
  }
  throw new Error(`api_testserver ${args.join(" ")} exited before serving`);
}

// What the page does: a streamed chat completion as a browser app sends it. Returns the
// status and the streamed text, or the error fetch threw (a blocked request is a TypeError).
async function pageCall(page, api, bearer) {
  return page.evaluate(async ({ api, bearer }) => {
    try {
      const r = await fetch(api + "/v1/chat/completions", {
        method: "POST",
        headers: { "Authorization": "Bearer " + bearer, "Content-Type": "application/json",
                   "X-Stainless-Lang": "js", "X-Stainless-Retry-Count": "0" },
        body: JSON.stringify({ messages: [{ role: "user", content: "Once upon a time" }],
                               max_tokens: 8, temperature: 0, stream: true }),
      });
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let raw = "", events = 0;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        raw += dec.decode(value, { stream: true });
        events++;
      }
      return { status: r.status, raw, events };
    } catch (e) {
      return { error: `${e.name}: ${e.message}` };
    }
  }, { api, bearer });
}

test("a page of a --cors origin calls the API; other pages are blocked",
     { timeout: 120000 }, async () => {
  assert.ok(bin, "CARAVAN_BIN is not set");
  const children = [];
  // the page's own origin: another port on 127.0.0.1
  const site = createServer((req, res) => {
    res.writeHead(200, { "Content-Type": "text/html" });
    res.end("<!doctype html><title>app</title><p>an app on another origin</p>");
  });
  site.listen(0, "127.0.0.1");
  await once(site, "listening");
  const origin = `http://127.0.0.1:${site.address().port}`;
  const profile = mkdtempSync(join(tmpdir(), "caravan-chromium-"));
  let browser;
  try {
    const allowed = await apiServer(["--cors", `https://elsewhere.example,${origin}`], children);
    const none = await apiServer([], children);
    const other = await apiServer(["--cors", "http://127.0.0.1:1"], children);
    const open = await apiServer([], children, false); // loopback, no key
    browser = await chromium.launchPersistentContext(profile, {
      executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
      headless: true,
      args: ["--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
    const page = await browser.newPage();
    assert.equal((await page.goto(origin + "/")).status(), 200);

    const ok = await pageCall(page, allowed, key);
    assert.equal(ok.error, undefined, `the allowed origin was blocked: ${ok.error}`);
    assert.equal(ok.status, 200);
    assert.match(ok.raw, /"object":"chat\.completion\.chunk"/);
    assert.match(ok.raw, /data: \[DONE\]/);

    // a wrong key: the page can read the 401 (and so tell its user), not a bare network error
    const wrong = await pageCall(page, allowed, "not-the-key");
    assert.equal(wrong.status, 401, JSON.stringify(wrong));
    assert.match(wrong.raw, /invalid_api_key/);

    for (const [name, api] of [["without --cors", none], ["with another origin", other]]) {
      const blocked = await pageCall(page, api, key);
      assert.match(blocked.error || "", /^TypeError/, `${name}: ${JSON.stringify(blocked)}`);
    }
    // the block is the browser's: the same request from outside a browser is answered
    const direct = await fetch(none + "/v1/models", { headers: { Authorization: "Bearer " + key } });
    assert.equal(direct.status, 200);

    // A page may send a POST with a text/plain body to any address without a preflight; it
    // cannot read the answer, but a server that computed it would have done a stranger's work.
    const served = async () => {
      const m = (await (await fetch(open + "/metrics")).text()).match(/^caravan_requests_total (\d+)$/m);
      return Number(m[1]);
    };
    const simple = { prompt: "Once upon a time", max_tokens: 4 };
    const sent = await page.evaluate(async ({ api, body }) => {
      const r = await fetch(api + "/v1/completions", { method: "POST", mode: "no-cors",
        headers: { "Content-Type": "text/plain" }, body: JSON.stringify(body) });
      return r.type; // "opaque": sent, unreadable
    }, { api: open, body: simple });
    assert.equal(sent, "opaque");
    assert.equal(await served(), 0, "the page's simple POST was computed");
    // the same request without a browser's Origin is served and counted
    const plain = await fetch(open + "/v1/completions", { method: "POST",
      headers: { "Content-Type": "text/plain" }, body: JSON.stringify(simple) });
    assert.equal(plain.status, 200);
    assert.equal(await served(), 1);
  } finally {
    if (browser) await browser.close();
    rmSync(profile, { recursive: true, force: true });
    for (const c of children) c.kill("SIGTERM");
    site.close();
  }
});
