// Benchmarks of the phone web app in headless Chromium (phone viewport), against the real
// Worker under `wrangler dev` and a real daemon: bytes of the first load (as sent, and as
// gzip would send them), time to interactive, tap → prompt, and frame rate while `yes` floods
// the terminal (requestAnimationFrame over the performance timeline), each beside a baseline
// from the same run. Prints one JSON line. Run by benches/phone_app.rs (LINK, CODE, PLAIN).

import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { launch, pair, waitText } from "./phone_common.mjs";

const { LINK, CODE, PLAIN } = process.env;
const origin = new URL(LINK).origin;
const out = {};
const { browser, context } = await launch();

// First load: every response's body, raw and gzipped; interactive = the code box is ready
// (the wasm module loaded, the app running).
const page = await context.newPage();
let raw = 0;
let gz = 0;
const bodies = [];
page.on("response", (r) => bodies.push(r));
const t0 = Date.now();
await page.goto(LINK);
await page.waitForSelector("#code");
out.interactive_ms = Date.now() - t0;
out.nav = await page.evaluate(() => {
  const n = performance.getEntriesByType("navigation")[0];
  return { dom_content_loaded_ms: n.domContentLoadedEventEnd, load_ms: n.loadEventEnd };
});
for (const r of bodies) {
  if (new URL(r.url()).origin !== origin) continue;
  try {
    const b = await r.body();
    raw += b.length;
    gz += gzipSync(b).length;
  } catch {
    // redirects and the like have no body
  }
}
out.first_load_bytes = raw;
out.first_load_gzip_bytes = gz;

// Baseline: a bare page from the same relay (no wasm, no terminal).
const base = await context.newPage();
const t1 = Date.now();
await base.goto(PLAIN);
await base.waitForLoadState("load");
out.plain_page_ms = Date.now() - t1;
await base.close();

// Pair, then tap → prompt for a new shell (median of 5).
await page.fill("#code", CODE);
await page.click("#pair");
await page.waitForSelector("#sessions", { timeout: 20000 });
await page.waitForFunction(() => document.getElementById("state").dataset.state === "live");
const taps = [];
for (let i = 0; i < 5; i++) {
  await page.waitForSelector('#kinds button[data-kind="shell"]');
  const t = Date.now();
  await page.click('#kinds button[data-kind="shell"]');
  await waitText(page, "a prompt", (s) => /[$#] ?$/m.test(s.trimEnd()), 10000);
  taps.push(Date.now() - t);
  await page.click("#back");
}
taps.sort((a, b) => a - b);
out.tap_to_prompt_ms = taps;

// Frame rate: an idle terminal, then while `yes` floods it.
await page.click('#kinds button[data-kind="shell"]');
await waitText(page, "a prompt", (s) => /[$#] ?$/m.test(s.trimEnd()), 10000);
// With `local`, each frame also hands the terminal 16 KiB of "y\n" made in the page (once
// the previous batch is parsed): xterm.js's own cost for the same flood, with no network, no
// decryption and nothing running on the laptop's side.
const fps = (local = false) =>
  page.evaluate(
    (local) =>
      new Promise((resolve) => {
        const batch = new TextEncoder().encode("y\n".repeat(8192));
        let parsing = false;
        const frames = [];
        const longTasks = [];
        const obs = new PerformanceObserver((l) => longTasks.push(...l.getEntries().map((e) => e.duration)));
        try {
          obs.observe({ type: "longtask", buffered: false });
        } catch {
          // not supported
        }
        // How often the terminal redrew its rows (xterm.js's onRender): the screen's own
        // update rate, beside the page's frame rate.
        let renders = 0;
        const counting = window.loopsyTerm.onRender(() => renders++);
        const start = performance.now();
        const tick = (t) => {
          frames.push(t);
          if (local && !parsing) {
            parsing = true;
            window.loopsyTerm.write(batch, () => {
              parsing = false;
            });
          }
          if (t - start < 3000) requestAnimationFrame(tick);
          else {
            obs.disconnect();
            counting.dispose();
            const gaps = frames.slice(1).map((f, i) => f - frames[i]);
            gaps.sort((a, b) => a - b);
            resolve({
              fps: (frames.length - 1) / ((frames[frames.length - 1] - frames[0]) / 1000),
              p95_frame_ms: gaps[Math.floor(gaps.length * 0.95)],
              long_tasks: longTasks.length,
              renders_per_s: renders / ((frames[frames.length - 1] - frames[0]) / 1000),
            });
          }
        };
        requestAnimationFrame(tick);
      }),
    local,
  );
// The browser runs beside the laptop's side here (the flood, the kernel's terminal work, the
// session host, the daemon, workerd) on the same cores, where on a phone it has its own. So
// each flood is measured twice: sharing the CPU equally (Linux schedules each session, here
// Chromium's and the flood's, as a group of equal weight), and with Chromium's group
// weighted first (nice -10 for its autogroup), as a phone's own CPU would be.
// (The browser is this process's child; its other processes share its autogroup.)
const browserPid = readdirSync("/proc").find((p) => {
  try {
    const stat = readFileSync(`/proc/${p}/stat`, "utf8");
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) === process.pid;
  } catch {
    return false;
  }
});
const phoneFirst = (nice) => {
  try {
    writeFileSync(`/proc/${browserPid}/autogroup`, String(nice));
    return true;
  } catch (e) {
    out.phone_first_error = String(e);
    return false;
  }
};
const both = async () => {
  const shared = await fps();
  const first = phoneFirst(-10) ? await fps() : null;
  phoneFirst(0);
  return [shared, first];
};
out.idle = await fps();
await page.fill("#compose", "yes");
await page.press("#compose", "Enter");
await waitText(page, "yes flooding", (s) => s.split("\n").filter((l) => l === "y").length > 10, 10000);
// LOOPSY_BENCH_TRACE=file.json saves a Chrome trace of the flood (for finding slow frames).
const trace = process.env.LOOPSY_BENCH_TRACE;
if (trace) {
  await browser.startTracing(page, {
    path: trace,
    categories: [
      "toplevel",
      "devtools.timeline",
      "disabled-by-default-devtools.timeline",
      "disabled-by-default-devtools.timeline.frame",
      "blink",
      "cc",
      "viz",
      "v8",
      "benchmark",
      "disabled-by-default-v8.gc",
    ],
  });
}
if (trace) {
  out.yes = await fps();
  await browser.stopTracing();
} else {
  [out.yes, out.yes_phone_first] = await both();
}
await page.click("#term");
await page.keyboard.press("Control+C");
await waitText(page, "the prompt after yes", (s) => /[$#] ?$/m.test(s.trimEnd()), 10000);
// A flood whose every line differs (`yes` repeats one line, so its screen looks the same
// from frame to frame): every row of the terminal changes in every frame.
await page.fill("#compose", "seq 1 inf");
await page.press("#compose", "Enter");
await waitText(page, "seq flooding", (s) => s.split("\n").filter((l) => /^[0-9]{5,}$/.test(l)).length > 10, 10000);
[out.seq, out.seq_phone_first] = await both();
await page.click("#term");
await page.keyboard.press("Control+C");
await waitText(page, "the prompt after seq", (s) => /[$#] ?$/m.test(s.trimEnd()), 10000);
out.local = await fps(true);
out.ok = true;
console.log(JSON.stringify(out));
await browser.close();
