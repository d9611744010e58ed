// The watch page (GET /) in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core; no browser download) against a running `caravan cluster`:
// every worker of /cluster appears with its layer range, and a chat answer streams in.
// CARAVAN_URL: the cluster's API; CARAVAN_WORKERS: how many workers to expect;
// CARAVAN_SCREENSHOT: where to save a PNG of the page (optional).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const url = process.env.CARAVAN_URL;
const nWorkers = parseInt(process.env.CARAVAN_WORKERS || "3", 10);

test("the page shows the pipeline and streams a chat answer", { timeout: 120000 }, async () => {
  assert.ok(url, "CARAVAN_URL is not set");
  const profile = mkdtempSync(join(tmpdir(), "caravan-chromium-"));
  // a fresh profile (--user-data-dir) per run
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1280, height: 820 },
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    const resp = await page.goto(url + "/");
    assert.equal(resp.status(), 200);
    assert.match(resp.headers()["content-type"], /text\/html/);

    // every worker of /cluster, with its layer range as the page prints it (first–last)
    const cluster = await (await fetch(url + "/cluster")).json();
    assert.equal(cluster.workers.length, nWorkers);
    await page.waitForFunction((n) => document.querySelectorAll("[data-testid=worker]").length === n,
                               nWorkers, { timeout: 20000 });
    for (const w of cluster.workers) {
      const box = page.locator(`[data-testid=worker][data-name="${w.name}"]`);
      await box.waitFor({ timeout: 10000 });
      const layers = await box.locator(".layers").textContent();
      assert.equal(layers, `${w.layer_first}–${w.layer_end - 1}`, `worker ${w.name} layers`);
      assert.match(await box.textContent(), /ready/);
    }

    // a chat answer streams in: the text grows over several updates before finishing
    await page.fill("#chat-input", "Once upon a time");
    await page.fill("#max-tokens", "48");
    await page.fill("#temp", "0");
    const lengths = [];
    await page.exposeFunction("noteLength", (n) => lengths.push(n));
    await page.evaluate(() => {
      new MutationObserver(() => {
        const a = document.querySelector("[data-testid=answer] .text");
        if (a) window.noteLength(a.textContent.length);
      }).observe(document.getElementById("chat-log"),
                 { subtree: true, childList: true, characterData: true });
    });
    await page.click("#chat-send");
    const answer = page.locator("[data-testid=answer]");
    await page.waitForFunction(() => {
      const a = document.querySelector("[data-testid=answer]");
      return a && a.dataset.finish;
    }, null, { timeout: 60000 });
    const text = await answer.locator(".text").textContent();
    assert.ok(text.length > 0, "empty answer");
    assert.doesNotMatch(text, /\[error/);
    // it says the seed it was sampled with, as the API gave it
    assert.match(await answer.getAttribute("data-seed"), /^\d+$/, "the answer's seed");
    assert.match(await answer.getAttribute("title"), /^seed \d+: /, "the seed's tooltip");
    const distinct = new Set(lengths.filter((n) => n > 0));
    assert.ok(distinct.size >= 2, `the answer arrived in ${distinct.size} update(s), not streamed`);
    await page.waitForTimeout(1500); // one more refresh: tokens/s and hop times filled in
    for (const w of cluster.workers) { // steps were computed: each stage's wait is a figure
      const waited = page.locator(`[data-testid=worker][data-name="${w.name}"] .waited`);
      assert.match(await waited.textContent(), /^\d+\.\d+ ms\/step$/, `worker ${w.name} waited`);
      // its clock is the coordinator's (one machine): its link times need no estimate
      const rtt = page.locator(`[data-testid=link-${cluster.workers.indexOf(w)}] .rtt`);
      assert.match(await rtt.getAttribute("title"), /clock: the coordinator's/, `${w.name} clock`);
      // ... over the steps just computed, not since the start
      assert.match(await waited.getAttribute("title"), /over the last \d+ s \([1-9]\d* steps\)$/,
                   `worker ${w.name}: the figures' window`);
    }
    if (process.env.CARAVAN_SCREENSHOT)
      await page.screenshot({ path: process.env.CARAVAN_SCREENSHOT, fullPage: true });
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    rmSync(profile, { recursive: true, force: true });
  }
});
