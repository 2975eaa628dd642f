// Shared by the phone app's browser tests: Chromium as a phone (390x844, touch), pairing,
// and reading the terminal's screen through xterm.js's buffer.

import { chromium } from "playwright-core";

/** Launch Debian's Chromium headless with a phone-sized touch context. */
export async function launch() {
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
  return { browser, context };
}

/** The terminal's visible text. */
export const screen = (page) =>
  page.evaluate(() => {
    const t = window.loopsyTerm;
    if (!t) return "";
    const b = t.buffer.active;
    const out = [];
    for (let i = 0; i < t.rows; i++) out.push(b.getLine(b.viewportY + i)?.translateToString(true) ?? "");
    return out.join("\n");
  });

/** Wait until `pred(screen)` holds. */
export async function waitText(page, what, pred, ms = 10000) {
  const end = Date.now() + ms;
  let last = "";
  while (Date.now() < end) {
    last = await screen(page);
    if (pred(last)) return last;
    await page.waitForTimeout(50);
  }
  throw new Error(`timed out waiting for ${what}; the screen was:\n${last}`);
}

/** Open the pair link and type the code; resolves on the live home view. */
export async function pair(page, link, code) {
  const first = await page.goto(link);
  await page.waitForSelector("#code");
  await page.fill("#code", code);
  await page.click("#pair");
  await page.waitForSelector("#sessions", { timeout: 20000 });
  await page.waitForFunction(() => document.getElementById("state").dataset.state === "live");
  return first;
}

export function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}
