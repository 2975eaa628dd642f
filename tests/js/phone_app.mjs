// The phone web app in headless Chromium (a phone-sized touch viewport), against the real
// Worker under `wrangler dev` and a real daemon: pair with the link and code, open a shell,
// type with the compose box and the key bar, run a full-screen program, Ctrl-C from the key
// bar, voice input (a stand-in speech service) into the compose box, Ctrl-C out of a `yes` flood,
// go offline and back to the same screen, Android-like IME composition without doubled
// text, CSP and no request leaving the relay's origin. Screenshots go to OUT_DIR.
//
// Run by tests/phone_app.rs: LINK, CODE, OUT_DIR in the environment. Prints one JSON line of
// results; exits non-zero on the first failed check.

import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const { LINK, CODE, OUT_DIR } = process.env;
const origin = new URL(LINK).origin;
mkdirSync(OUT_DIR, { recursive: true });
const results = {};
let step = "start";

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const context = await browser.newContext({
  viewport: { width: 390, height: 844 },
  deviceScaleFactor: 3,
  isMobile: true,
  hasTouch: true,
  userAgent:
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/148.0 Mobile Safari/537.36",
});
// Headless Chromium has no speech service: a stand-in Web Speech API, driven by the test,
// exercises the app's voice button (results land in the compose box, and are not sent).
await context.addInitScript(() => {
  window.SpeechRecognition = class {
    start() {
      window.__speech = this;
    }
    stop() {
      this.onend?.();
    }
  };
});
const page = await context.newPage();
const foreign = [];
const consoleErrors = [];
page.on("request", (r) => {
  const u = new URL(r.url());
  if (!["data:", "blob:"].includes(u.protocol) && u.origin !== origin && u.origin.replace(/^ws/, "http") !== origin) {
    foreign.push(r.url());
  }
});
page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
page.on("pageerror", (e) => consoleErrors.push(String(e)));

const shot = (name) => page.screenshot({ path: `${OUT_DIR}/${name}.png` });

/** The terminal's visible text. */
const screen = () =>
  page.evaluate(() => {
    const t = window.loopsyTerm;
    if (!t) return "";
    const b = t.buffer.active;
    const out = [];
    for (let i = 0; i < t.rows; i++) out.push(b.getLine(b.viewportY + i)?.translateToString(true) ?? "");
    return out.join("\n");
  });

/** All the terminal's text, scrollback included. */
const everything = () =>
  page.evaluate(() => {
    const t = window.loopsyTerm;
    if (!t) return "";
    const b = t.buffer.active;
    const out = [];
    for (let i = 0; i < b.length; i++) out.push(b.getLine(i)?.translateToString(true) ?? "");
    return out.join("\n");
  });

async function waitText(what, pred, ms = 10000, read = screen) {
  const end = Date.now() + ms;
  let last = "";
  while (Date.now() < end) {
    last = await read();
    if (pred(last)) return last;
    await page.waitForTimeout(50);
  }
  throw new Error(`timed out waiting for ${what}; the screen was:\n${last}`);
}

async function compose(text) {
  await page.fill("#compose", text);
  await page.press("#compose", "Enter");
}

try {
  step = "open the pair link";
  const first = await page.goto(LINK);
  const headers = first.headers();
  results.csp = headers["content-security-policy"];
  check(/script-src 'self' 'wasm-unsafe-eval'/.test(results.csp || ""), "a strict CSP on /app");
  check(!/script-src[^;]*unsafe-inline/.test(results.csp), "no inline script allowed");
  check(headers["x-frame-options"] === "DENY", "no framing");
  check(headers["x-content-type-options"] === "nosniff", "nosniff");
  await page.waitForSelector("#code");
  await shot("1-pair");

  step = "type the code";
  const t0 = Date.now();
  await page.fill("#code", CODE);
  await page.click("#pair");
  await page.waitForSelector("#sessions", { timeout: 20000 });
  await page.waitForFunction(() => document.getElementById("state").dataset.state === "live");
  results.pair_ms = Date.now() - t0;
  check(!page.url().includes("pair="), "the pair link is out of the address bar");
  const stored = await page.evaluate(() => JSON.stringify(Object.keys(localStorage)));
  check(stored === "[]", "nothing in localStorage");
  await shot("2-home");

  step = "open a shell";
  const t1 = Date.now();
  await page.click('button[data-kind="shell"]');
  await page.waitForSelector("#keybar");
  await waitText("a prompt", (s) => /[$#] ?$/m.test(s.trimEnd()), 10000);
  results.open_to_prompt_ms = Date.now() - t1;

  step = "compose box";
  await compose("echo hello-from-$((40+2))-phone");
  await waitText("the echo", (s) => s.includes("hello-from-42-phone"));
  await shot("3-shell");

  step = "key bar: Tab completion and Ctrl-C";
  await compose("sleep 300");
  await page.waitForTimeout(300);
  await page.click('#keybar button[data-key="Ctrl"]');
  await page.click("#term"); // focus the terminal
  await page.keyboard.type("c");
  await compose("echo after-ctrl-c-$((3*3))");
  await waitText("Ctrl-C ended sleep", (s) => s.includes("after-ctrl-c-9"));
  await page.click("#term");
  await page.keyboard.type("ech");
  await page.click('#keybar button[data-key="Tab"]'); // bash completes "echo "
  await page.click("#term");
  await page.keyboard.type("tab-completed-$((2*4))");
  await page.keyboard.press("Enter");
  await waitText("Tab from the key bar", (s) => /^tab-completed-8$/m.test(s));

  step = "full-screen program";
  await compose("printf 'line-%s\\n' $(seq 1 200) > /tmp/loopsy-less.txt; less /tmp/loopsy-less.txt");
  await waitText("less on the alternate screen", (s) => s.includes("line-1") && !s.includes("line-150"));
  await page.click('#keybar button[data-key="PgDn"]');
  await waitText("PgDn in less", (s) => s.includes("line-50") || s.includes("line-40"));
  await shot("4-less");
  await page.click("#term");
  await page.keyboard.press("q");
  await waitText("back from less", (s) => !s.includes("line-50"));

  step = "voice input";
  await page.click("#mic");
  check(await page.evaluate(() => Boolean(window.__speech) && window.__speech.interimResults), "voice started");
  const hear = (texts) =>
    page.evaluate((t) => window.__speech.onresult({ results: t.map((x) => [{ transcript: x }]) }), texts);
  await hear(["echo spo"]); // interim
  await hear(["echo spoken-", "$((8*8))"]); // final, in two results
  await page.evaluate(() => window.__speech.stop());
  check((await page.inputValue("#compose")) === "echo spoken-$((8*8))", "what was said is in the compose box");
  await page.waitForTimeout(300);
  check(!(await screen()).includes("spoken-"), "voice input is not sent before Enter");
  await page.press("#compose", "Enter");
  await waitText("the spoken command ran", (s) => /^spoken-64$/m.test(s));

  step = "a flood, then Ctrl-C";
  await compose("yes flood-line");
  await waitText("the flood", (s) => s.split("\n").filter((l) => l === "flood-line").length > 10);
  await page.waitForTimeout(1000);
  const t3 = Date.now();
  await page.click('#keybar button[data-key="Ctrl"]');
  await page.click("#term");
  await page.keyboard.type("c");
  await compose("echo after-flood-$((4*4))");
  await waitText("the prompt back after the flood", (s) => /^after-flood-16$/m.test(s), 15000);
  results.flood_ctrl_c_to_output_ms = Date.now() - t3;

  step = "Android-like IME composition in the terminal";
  await page.click("#term");
  const cdp = await context.newCDPSession(page);
  await page.keyboard.type("echo ");
  // A keyboard's composition, at a typing pace (a real IME does not fire all at once).
  for (const partial of ["i", "im", "ime", "imet", "imetx"]) {
    await cdp.send("Input.imeSetComposition", { text: partial, selectionStart: partial.length, selectionEnd: partial.length });
    await page.waitForTimeout(40);
  }
  await cdp.send("Input.insertText", { text: "imetext" });
  await page.waitForTimeout(100);
  await page.keyboard.press("Enter");
  const ime = await waitText("the composed word", (s) => /^imetext$/m.test(s));
  check(!ime.includes("imetextimetext") && !ime.includes("imetximetext"), "no doubled text from the IME");

  step = "Android-like IME composition in the compose box";
  await page.click("#compose");
  await page.keyboard.type("echo ");
  for (const partial of ["b", "bo", "box", "boxw"]) {
    await cdp.send("Input.imeSetComposition", { text: partial, selectionStart: partial.length, selectionEnd: partial.length });
    await page.waitForTimeout(40);
  }
  await cdp.send("Input.insertText", { text: "boxword" });
  await page.waitForTimeout(100);
  await page.press("#compose", "Enter");
  const boxed = await waitText("the composed box word", (s) => /^boxword$/m.test(s));
  check(!boxed.includes("boxwordboxword"), "no doubled text from the compose box");
  await shot("5-ime");

  step = "offline and back";
  await compose("echo before-offline-$((5+5))");
  await waitText("before offline", (s) => s.includes("before-offline-10"));
  await page.evaluate(() => {
    // Every state the page goes through from here (reported if a step fails).
    window.__states = [];
    const el = document.getElementById("state");
    const note = () => window.__states.push([Math.round(performance.now()), el.dataset.state, el.textContent]);
    note();
    new MutationObserver(note).observe(el, { attributes: true, childList: true, subtree: true });
  });
  await context.setOffline(true);
  await page.waitForFunction(() => window.__states.some(([, s]) => ["offline", "connecting"].includes(s)), null, { timeout: 15000 });
  await shot("6-offline");
  // Typed while offline: kept, and sent once the session is back (not lost, not doubled).
  await compose("echo typed-while-offline-$((7+7))");
  await context.setOffline(false);
  const t2 = Date.now();
  await page.waitForFunction(() => document.getElementById("state").dataset.state === "live", null, { timeout: 20000 });
  await waitText("the same screen after the reconnect", (s) => s.includes("before-offline-10"), 10000);
  results.reconnect_ms = Date.now() - t2;
  const queued = await waitText("the keystrokes typed while offline", (s) => /^typed-while-offline-14$/m.test(s), 10000);
  check(queued.split("typed-while-offline-14").length === 2, "sent once");
  await compose("echo after-offline-$((6+6))");
  await waitText("typing after the reconnect", (s) => s.includes("after-offline-12"));
  await shot("7-back");

  step = "installable";
  const manifest = await page.evaluate(async () => (await fetch("/app/manifest.webmanifest")).json());
  check(manifest.display === "standalone" && manifest.icons.some((i) => i.sizes === "512x512"), "a web app manifest with icons");
  const sw = await page.evaluate(async () => {
    const r = await navigator.serviceWorker.getRegistration("/app/");
    return r ? (r.active || r.waiting || r.installing) !== null : false;
  });
  check(sw, "the service worker is registered");

  step = "origins";
  check(foreign.length === 0, `requests left the relay's origin: ${foreign.join(", ")}`);

  if (process.env.DASHBOARD) {
    step = "the local dashboard";
    const dash = await context.newPage();
    const dashForeign = [];
    const dashOrigin = new URL(process.env.DASHBOARD).origin;
    dash.on("request", (r) => {
      const u = new URL(r.url());
      if (u.origin !== dashOrigin && u.origin.replace(/^ws/, "http") !== dashOrigin) dashForeign.push(r.url());
    });
    dash.on("console", (m) => m.type() === "error" && consoleErrors.push(`dashboard: ${m.text()}`));
    dash.on("pageerror", (e) => consoleErrors.push(`dashboard: ${e}`));
    const resp = await dash.goto(process.env.DASHBOARD);
    check(/wasm-unsafe-eval/.test(resp.headers()["content-security-policy"] || ""), "the dashboard's CSP");
    await dash.waitForSelector("#sessions li.session", { timeout: 20000 });
    results.dashboard_sessions = await dash.$$eval("#sessions li.session", (l) => l.length);
    check(results.dashboard_sessions >= 1, "the dashboard lists the running session");
    await dash.screenshot({ path: `${OUT_DIR}/8-dashboard.png`, fullPage: true });
    check(dashForeign.length === 0, `the dashboard made requests elsewhere: ${dashForeign.join(", ")}`);
  }
  results.console_errors = consoleErrors;
  // Nothing went wrong in the page on the way: no exception, no CSP violation, no error logged.
  check(consoleErrors.length === 0, `errors in the page: ${consoleErrors.join(" | ")}`);
  results.ok = true;
  console.log(JSON.stringify(results));
} catch (e) {
  await shot("failed").catch(() => {});
  results.states = await page.evaluate(() => window.__states).catch(() => undefined);
  console.log(JSON.stringify({ ok: false, step, error: String(e.message || e), ...results, console_errors: consoleErrors }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
