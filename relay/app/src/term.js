// The terminal view: xterm.js, fitted to the space above the on-screen keyboard, with a key
// bar (Esc, Tab, Ctrl, Alt, arrows, PgUp/PgDn, paste), a compose box for IME, autocorrect and
// voice (the text is sent whole on Enter, so keyboards that re-send composed text cannot
// double it), and voice input where the browser has the Web Speech API.

import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import { el } from "./ui.js";

// Output handed to xterm.js per painted frame at most, in slices: parsing a flood (`yes`)
// costs about 0.25 ms per KiB here, so this keeps a frame's parsing to a few milliseconds and
// the terminal at the display's frame rate. The rest waits for the next frame (conn.js keeps
// the laptop from sending much more than that). The budget adapts: a frame that came late
// (the page missed the display's refresh) halves it, each frame on time gives 1 KiB back.
const MAX_BUDGET = 16 * 1024;
const MIN_BUDGET = 2 * 1024;
const SLICE = 4 * 1024;
const LATE_MS = 20;

const KEYS = [
  ["Esc", "\x1b"],
  ["Tab", "\t"],
  ["Ctrl", "ctrl"],
  ["Alt", "alt"],
  ["←", "left"],
  ["↑", "up"],
  ["↓", "down"],
  ["→", "right"],
  ["PgUp", "\x1b[5~"],
  ["PgDn", "\x1b[6~"],
  ["Paste", "paste"],
];

/** Ctrl applied to one typed character (Ctrl-C → \x03), as terminals do. */
export function ctrl(ch) {
  const c = ch.toUpperCase().charCodeAt(0);
  if (c >= 64 && c <= 95) return String.fromCharCode(c - 64);
  if (ch === " ") return "\x00";
  if (ch === "?") return "\x7f";
  return ch;
}

/**
 * Mount a terminal for `conn` into `root`; returns {dispose}.
 */
export function mountTerminal(root, conn) {
  const term = new Terminal({
    fontSize: 13,
    scrollback: 5000,
    cursorBlink: true,
    convertEol: false,
    theme: { background: "#11131a", foreground: "#e6e6e6" },
  });
  const fit = new FitAddon();
  term.loadAddon(fit);
  const box = el("div", { id: "term" });
  const mods = { ctrl: false, alt: false };
  const modButtons = {};

  const send = (data) => {
    let d = data;
    if (mods.ctrl && d.length === 1) d = ctrl(d);
    if (mods.alt) d = "\x1b" + d;
    if (mods.ctrl || mods.alt) {
      mods.ctrl = mods.alt = false;
      for (const b of Object.values(modButtons)) b.classList.remove("on");
    }
    conn.input(d);
  };

  const arrow = (k) => {
    const app = term.modes.applicationCursorKeysMode;
    const code = { up: "A", down: "B", right: "C", left: "D" }[k];
    return (app ? "\x1bO" : "\x1b[") + code;
  };

  const bar = el("div", { id: "keybar" });
  for (const [label, what] of KEYS) {
    const b = el("button", { type: "button", className: "key", "data-key": label }, label);
    b.addEventListener("pointerdown", (e) => e.preventDefault()); // keep the keyboard up
    b.addEventListener("click", async () => {
      if (what === "ctrl" || what === "alt") {
        mods[what] = !mods[what];
        b.classList.toggle("on", mods[what]);
        return;
      }
      if (what === "paste") {
        try {
          const text = await navigator.clipboard.readText();
          if (text) {
            const bracketed = term.modes.bracketedPasteMode;
            conn.input(bracketed ? `\x1b[200~${text}\x1b[201~` : text);
          }
        } catch {
          compose.focus();
        }
        return;
      }
      send(["up", "down", "left", "right"].includes(what) ? arrow(what) : what);
    });
    if (what === "ctrl" || what === "alt") modButtons[what] = b;
    bar.append(b);
  }

  const compose = el("textarea", {
    id: "compose",
    rows: 1,
    placeholder: "Type here (sent on Enter)",
    autocapitalize: "off",
    autocomplete: "off",
    spellcheck: false,
    enterKeyHint: "send",
  });
  const sendCompose = () => {
    const text = compose.value;
    compose.value = "";
    send(text + "\r");
  };
  compose.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      sendCompose();
    }
  });
  const sendButton = el("button", { type: "button", id: "send" }, "Send");
  sendButton.addEventListener("click", sendCompose);
  const row = el("div", { id: "composer" }, compose, sendButton);

  const Speech = window.SpeechRecognition || window.webkitSpeechRecognition;
  if (Speech) {
    const mic = el("button", { type: "button", id: "mic", title: "Voice input" }, "Voice");
    let rec = null;
    mic.addEventListener("click", () => {
      if (rec) {
        rec.stop();
        return;
      }
      rec = new Speech();
      rec.lang = navigator.language;
      rec.interimResults = true;
      rec.continuous = false;
      const before = compose.value;
      rec.onresult = (ev) => {
        let text = "";
        for (const r of ev.results) text += r[0].transcript;
        compose.value = before + text; // lands in the box for editing, not sent
      };
      rec.onend = () => {
        rec = null;
        mic.classList.remove("on");
        compose.focus();
      };
      rec.onerror = (ev) => {
        compose.placeholder = `voice: ${ev.error}`;
      };
      mic.classList.add("on");
      rec.start();
    });
    row.append(mic);
  }

  // Output waiting for a frame: [{bytes, off, done}]; `used` is what this frame already took.
  let pending = [];
  let used = 0;
  let frame = 0;
  let budget = MAX_BUDGET;
  let lastFrame = 0; // time of the previous frame while output keeps coming, else 0
  const feed = () => {
    while (pending.length && used < budget) {
      const p = pending[0];
      const n = Math.min(budget - used, SLICE, p.bytes.length - p.off);
      const last = p.off + n === p.bytes.length;
      term.write(p.bytes.subarray(p.off, p.off + n), last ? p.done : undefined);
      p.off += n;
      used += n;
      if (last) pending.shift();
    }
    if (used > 0 && !frame) {
      frame = requestAnimationFrame((t) => {
        frame = 0;
        used = 0;
        if (lastFrame && t - lastFrame > LATE_MS) budget = Math.max(MIN_BUDGET, budget / 2);
        else budget = Math.min(MAX_BUDGET, budget + 1024);
        lastFrame = t;
        feed();
        if (!frame) lastFrame = 0; // the output stopped: the next frame is not "late"
      });
    }
  };

  root.append(box, bar, row);
  term.open(box);
  window.loopsyTerm = term; // read by the browser tests (the screen's text)
  term.onData((d) => send(d));
  term.onResize(({ cols, rows }) => conn.resize(cols, rows));

  const refit = () => {
    const vv = window.visualViewport;
    if (vv) document.documentElement.style.setProperty("--vh", `${vv.height}px`);
    try {
      fit.fit();
    } catch {
      // not laid out yet
    }
  };
  window.visualViewport?.addEventListener("resize", refit);
  window.addEventListener("resize", refit);
  refit();

  return {
    term,
    size: () => ({ cols: term.cols, rows: term.rows }),
    write: (bytes, done) => {
      if (!bytes.length) return done();
      pending.push({ bytes, off: 0, done });
      feed();
    },
    reset: () => {
      pending = []; // the old attachment's output (its acknowledgements no longer count)
      term.reset();
    },
    focus: () => term.focus(),
    dispose() {
      window.visualViewport?.removeEventListener("resize", refit);
      window.removeEventListener("resize", refit);
      if (frame) cancelAnimationFrame(frame);
      pending = [];
      // The tests read the screen through this: never a closed session's.
      if (window.loopsyTerm === term) window.loopsyTerm = null;
      term.dispose();
    },
  };
}
