// The phone app's agent and command pickers in headless Chromium: only installed agents are
// offered; auto-approve shows its exact flag and needs `loopsy approve` on the laptop (run
// here through LOOPSY_BIN); saved commands are added, shown as text, started, and deleted.
// Run by tests/phone_app.rs with LINK, CODE, OUT_DIR, LOOPSY_BIN, LOOPSY_HOME.

import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { launch, pair, waitText, check } from "./phone_common.mjs";

const { LINK, CODE, OUT_DIR, LOOPSY_BIN, LOOPSY_HOME } = process.env;
mkdirSync(OUT_DIR, { recursive: true });
const { browser, context } = await launch();
const page = await context.newPage();
const results = {};
let step = "pair";

try {
  await pair(page, LINK, CODE);

  step = "only installed agents";
  await page.waitForSelector('#kinds button[data-kind="claude"]');
  const kinds = await page.$$eval("#kinds button", (b) => b.map((x) => x.dataset.kind));
  results.kinds = kinds;
  check(kinds.includes("shell") && kinds.includes("claude"), `shell and claude offered: ${kinds}`);
  check(!kinds.includes("gemini"), "gemini is not installed, so not offered");

  step = "a saved command, shown as text";
  await page.click("#add-command");
  await page.fill("#cmd-label", "greet <b>bold</b>");
  await page.fill("#cmd-command", "echo custom-command-$((20+1)); exec sleep 600");
  await page.click("#cmd-save");
  await page.waitForSelector("#commands button[data-command]");
  const label = await page.$eval("#commands button[data-command]", (b) => ({ text: b.textContent, html: b.innerHTML }));
  check(label.text === "greet <b>bold</b>" && !label.html.includes("<b>"), "the label is text, not HTML");
  await page.screenshot({ path: `${OUT_DIR}/a1-commands.png` });
  await page.click("#commands button[data-command]");
  await page.waitForSelector("#keybar");
  await waitText(page, "the saved command's output", (s) => s.includes("custom-command-21"));
  await page.click("#back");
  await page.waitForSelector("#kinds button");

  step = "claude without auto-approve";
  await page.click('#kinds button[data-kind="claude"]');
  await page.waitForSelector("#auto-approve");
  const dialog = await page.textContent("#auto-approve");
  check(dialog.includes("--dangerously-skip-permissions"), "the dialog shows the exact flag");
  await page.screenshot({ path: `${OUT_DIR}/a2-auto-approve.png` });
  await page.click("#auto-no");
  await waitText(page, "claude without the flag", (s) => /fake-claude args: *$/m.test(s));
  await page.click("#back");
  await page.waitForSelector("#kinds button");

  step = "claude with auto-approve: confirmed on the laptop";
  await page.click('#kinds button[data-kind="claude"]');
  await page.click("#auto-yes");
  await page.waitForSelector("#confirm pre");
  await page.screenshot({ path: `${OUT_DIR}/a3-confirm.png` });
  // Not yet approved: starting again is still refused (and asks again).
  await page.click("#approved");
  await page.waitForSelector("#confirm pre");
  const cmd = await page.textContent("#confirm pre");
  const id = /loopsy approve ([A-Za-z0-9_-]+)/.exec(cmd)?.[1];
  check(id, `the app shows the command to run on the laptop: ${cmd}`);
  execFileSync(LOOPSY_BIN, ["--home", LOOPSY_HOME, "approve", id], { stdio: "ignore" });
  await page.click("#approved");
  await waitText(page, "claude with the flag", (s) => s.includes("fake-claude args: --dangerously-skip-permissions"));
  await page.screenshot({ path: `${OUT_DIR}/a4-claude.png` });

  step = "delete the saved command";
  await page.click("#back");
  await page.waitForSelector("#commands button[data-command]");
  await page.click("#commands .dim-button");
  await page.click("#cmd-delete");
  await page.waitForFunction(() => !document.querySelector("#commands button[data-command]"));

  step = "forget this laptop";
  page.on("dialog", (d) => d.accept());
  await page.click("#forget");
  await page.waitForSelector("#link");
  const left = await page.evaluate(
    () =>
      new Promise((resolve) => {
        const req = indexedDB.open("loopsy", 1);
        req.onsuccess = () => {
          const t = req.result.transaction("kv", "readonly").objectStore("kv").count();
          t.onsuccess = () => resolve(t.result);
        };
        req.onerror = () => resolve(-1);
      }),
  );
  check(left === 0, `nothing left in IndexedDB (${left})`);

  results.ok = true;
  console.log(JSON.stringify(results));
} catch (e) {
  await page.screenshot({ path: `${OUT_DIR}/a-failed.png` }).catch(() => {});
  console.log(JSON.stringify({ ok: false, step, error: String(e.message || e), ...results }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
