// The loopsy phone app: pair with a laptop (QR link + the code on its screen), see its
// sessions, open one in a real terminal. Views: welcome, pair, home, session (hash routes).

import { ready, parseLink, generateSecret, publicKey } from "./wasm.js";
import * as store from "./store.js";
import { Connection } from "./conn.js";
import { mountTerminal } from "./term.js";
import { el, show, ago } from "./ui.js";

const view = document.getElementById("view");
const chip = document.getElementById("state");
const note = document.getElementById("note");
const retryBtn = document.getElementById("retry");
const titleEl = document.getElementById("title");
const backBtn = document.getElementById("back");

const STATE_TEXT = {
  idle: "",
  connecting: "connecting…",
  handshake: "connecting…",
  live: "live",
  offline: "offline",
  "laptop-offline": "laptop offline",
  revoked: "revoked",
  failed: "failed",
};

let pairing = null;
let conn = null;
let termView = null;
let waiters = [];

function b64url(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function title(t) {
  titleEl.textContent = t;
  document.title = t === "loopsy" ? "loopsy" : `${t} · loopsy`;
}

function setNote(text, bad) {
  note.textContent = text || "";
  note.hidden = !text;
  note.classList.toggle("bad", !!bad);
}

function onState(s, detail) {
  chip.textContent = STATE_TEXT[s] ?? s;
  chip.dataset.state = s;
  retryBtn.hidden = !["offline", "laptop-offline", "failed"].includes(s);
  if (s === "live") setNote("");
  else if (detail) setNote(detail, s === "failed" || s === "revoked");
}

function onControl(c) {
  for (const w of waiters) w(c);
  if (c.t === "welcome" && pairing && !pairing.paired) {
    pairing.paired = true;
    pairing.host = c.host;
    store.savePairing(pairing);
  }
  if (c.t === "welcome") title(c.host);
  if (!termView) return;
  if (c.t === "attached") termView.reset();
  else if (c.t === "exited") setNote(`the program exited${c.code === null ? "" : ` (code ${c.code})`}`);
  else if (c.t === "detached") setNote(`detached: ${c.reason}`);
  else if (c.t === "error") setNote(c.message, true);
}

/** The next control message matching `pred`. */
function next(pred, ms = 15000) {
  return new Promise((resolve, reject) => {
    const w = (c) => {
      if (!pred(c)) return;
      waiters = waiters.filter((x) => x !== w);
      resolve(c);
    };
    waiters.push(w);
    setTimeout(() => {
      waiters = waiters.filter((x) => x !== w);
      reject(new Error("no answer from the laptop"));
    }, ms);
  });
}

function connect() {
  conn?.stop();
  conn = new Connection(pairing, {
    state: onState,
    control: onControl,
    output: (bytes, done) => (termView ? termView.write(bytes, done) : done()),
  });
  window.loopsyConn = conn; // for tests and debugging
  return conn;
}

function welcomeView() {
  title("loopsy");
  backBtn.hidden = true;
  const input = el("input", {
    id: "link",
    type: "url",
    placeholder: "Paste the pair link",
    autocomplete: "off",
  });
  const go = el("button", { type: "button", className: "primary" }, "Continue");
  go.addEventListener("click", () => pairView(input.value.trim()));
  show(
    view,
    el(
      "section",
      { className: "card" },
      el("h2", {}, "Pair with your laptop"),
      el("p", {}, "On the laptop, run "),
      el("pre", {}, "loopsy mobile pair"),
      el("p", {}, "and scan its QR code with this phone's camera. Or paste the link:"),
      input,
      go,
    ),
  );
}

function codeForm(label, onCode) {
  const code = el("input", {
    id: "code",
    inputmode: "numeric",
    autocomplete: "one-time-code",
    pattern: "[0-9 ]*",
    maxlength: "7",
    placeholder: "123 456",
  });
  const go = el("button", { type: "button", className: "primary", id: "pair" }, label);
  const submit = () => {
    const c = code.value.replace(/\D/g, "");
    if (c.length !== 6) {
      setNote("the code has 6 digits", true);
      return;
    }
    go.disabled = true;
    onCode(c).finally(() => {
      go.disabled = false;
    });
  };
  go.addEventListener("click", submit);
  code.addEventListener("keydown", (e) => e.key === "Enter" && submit());
  return el("div", {}, code, go);
}

function pairView(link) {
  // The local dashboard's link carries its code (it never leaves the machine).
  let autoCode = null;
  const m = /^(.*#pair=[^.]+\.[^.]+)\.(\d{6})$/.exec(link);
  if (m) {
    link = m[1];
    autoCode = m[2];
  }
  let info;
  try {
    info = parseLink(link);
  } catch (e) {
    setNote(String(e.message || e), true);
    return welcomeView();
  }
  if (info.relay !== location.origin) {
    setNote(`this link is for the relay at ${info.relay}: open it there`, true);
    return welcomeView();
  }
  if (info.expiresAt * 1000 < Date.now()) {
    setNote("this pair link has expired: run `loopsy mobile pair` again", true);
    return welcomeView();
  }
  title("Pair");
  show(
    view,
    el(
      "section",
      { className: "card" },
      el("h2", {}, "Pair this phone"),
      el("p", {}, "Type the 6-digit code your laptop shows next to the QR code."),
      codeForm("Pair", async (code) => {
        try {
          const secret = generateSecret();
          const resp = await fetch(`/v1/device/${info.deviceId}/redeem`, {
            method: "POST",
            headers: { "Content-Type": "application/json" },
            body: JSON.stringify({
              token: info.token,
              phone_key: b64url(publicKey(secret)),
              label: navigator.userAgent.slice(0, 60),
            }),
          });
          const body = await resp.json().catch(() => ({}));
          if (!resp.ok) throw new Error(body.message || `the relay said ${resp.status}`);
          pairing = {
            relay: location.origin,
            deviceId: body.device_id,
            phoneId: body.phone_id,
            phoneSecret: body.phone_secret,
            pairId: body.pair_id,
            secret,
            daemonKey: info.daemonKey,
            paired: false,
          };
          await store.savePairing(pairing);
          await prove(code);
        } catch (e) {
          setNote(String(e.message || e), true);
        }
      }),
    ),
  );
  const codeInput = document.getElementById("code");
  codeInput?.focus();
  if (autoCode && codeInput) {
    codeInput.value = autoCode;
    document.getElementById("pair")?.click();
  }
}

/** Show the laptop the code (inside the encrypted channel) and wait for its verdict. */
async function prove(code) {
  const c = connect();
  const verdict = next((m) => m.t === "welcome" || (m.t === "error" && m.fatal), 20000);
  c.pair({ pair_id: pairing.pairId, code });
  const m = await verdict;
  if (m.t === "error") {
    c.stop();
    setNote(m.message, true);
    if (m.code === "wrong_code") return codeView();
    return welcomeView();
  }
  location.hash = "#home";
  route();
}

function codeView() {
  title("Pair");
  show(
    view,
    el(
      "section",
      { className: "card" },
      el("h2", {}, "Try the code again"),
      codeForm("Pair", (code) => prove(code).catch((e) => setNote(String(e.message), true))),
    ),
  );
}

async function homeView() {
  title(pairing.host || "laptop");
  backBtn.hidden = true;
  const list = el("ul", { id: "sessions" }, el("li", { className: "dim" }, "loading…"));
  const kinds = el("div", { id: "kinds" });
  const mine = el("ul", { id: "commands" });
  const addCmd = el("button", { type: "button", id: "add-command" }, "Add a command");
  addCmd.addEventListener("click", () => commandForm(null, mine));
  const forget = el("button", { type: "button", id: "forget", className: "danger" }, "Forget this laptop");
  forget.addEventListener("click", forgetLaptop);
  const peers = el("ul", { id: "peers", className: "plain" });
  const inbox = el("ul", { id: "inbox", className: "plain" });
  const context = el("ul", { id: "context", className: "plain" });
  show(
    view,
    el("section", { className: "card" }, el("h2", {}, "Running"), list),
    el("section", { className: "card" }, el("h2", {}, "New session"), kinds),
    el("section", { className: "card" }, el("h2", {}, "Your commands"), mine, addCmd),
    el("section", { className: "card" }, el("h2", {}, "Machines"), peers),
    el("section", { className: "card" }, el("h2", {}, "Messages"), inbox),
    el("section", { className: "card" }, el("h2", {}, "Shared context"), context),
    el("section", { className: "card" }, forget),
  );
  const refresh = async () => {
    try {
      const r = await conn.call("loopsy_session_list");
      list.replaceChildren();
      const running = r.sessions.filter((s) => s.state === "running");
      if (!running.length) list.append(el("li", { className: "dim" }, "no sessions running"));
      for (const s of running) {
        const li = el(
          "li",
          { className: "session", "data-id": s.id },
          el("strong", {}, s.name),
          el("span", { className: "kind-tag" }, s.kind),
          el("span", { className: "dim" }, `${ago(s.last_activity_ms)} · ${s.clients} attached`),
        );
        li.addEventListener("click", () => {
          location.hash = `#s/${s.id}`;
        });
        list.append(li);
      }
    } catch (e) {
      list.replaceChildren(el("li", { className: "dim" }, `cannot list sessions: ${e.message}`));
    }
    try {
      const k = await conn.call("loopsy_session_kinds");
      kinds.replaceChildren();
      for (const kind of k.kinds.filter((x) => x.installed)) {
        const b = el("button", { type: "button", className: "kind", "data-kind": kind.kind }, kind.kind);
        b.addEventListener("click", () => newSession(kind));
        kinds.append(b);
      }
    } catch (e) {
      kinds.replaceChildren(el("span", { className: "dim" }, e.message));
    }
    await listCommands(mine);
    await listOthers(peers, inbox, context);
  };
  if (conn.state === "live") refresh();
  waiters.push((c) => c.t === "welcome" && refresh());
}

/** Peers, unread messages and the shared context: the dashboard's read-only views. */
async function listOthers(peers, inbox, context) {
  const fill = async (ul, tool, args, rows, empty) => {
    try {
      const r = await conn.call(tool, args);
      const items = rows(r);
      ul.replaceChildren(...(items.length ? items : [el("li", { className: "dim" }, empty)]));
    } catch (e) {
      ul.replaceChildren(el("li", { className: "dim" }, e.message));
    }
  };
  await fill(peers, "loopsy_list_peers", {}, (r) =>
    r.peers.map((p) =>
      el("li", {}, el("strong", {}, p.name), el("span", { className: p.online ? "ok" : "dim" }, p.online ? "online" : "offline")),
    ), "no other machines paired");
  await fill(inbox, "loopsy_check_inbox", { unread_only: true, limit: 10 }, (r) =>
    r.messages.map((m) => el("li", {}, el("strong", {}, m.from_name || m.from), el("span", {}, String(m.body).slice(0, 120)))),
    "no unread messages");
  await fill(context, "loopsy_context_list", { limit: 20 }, (r) =>
    r.entries.map((e) =>
      el("li", {}, el("code", {}, e.key), el("span", { className: "dim" }, JSON.stringify(e.value).slice(0, 80))),
    ), "no keys");
}

async function listCommands(mine) {
  try {
    const r = await conn.call("loopsy_command_list");
    mine.replaceChildren();
    if (!r.commands.length) mine.append(el("li", { className: "dim" }, "none yet"));
    for (const c of r.commands) {
      const start = el("button", { type: "button", className: "kind", "data-command": c.id }, c.label);
      start.addEventListener("click", () =>
        startSession({ kind: "custom", command: c.command, args: c.args.length ? c.args : undefined, cwd: c.cwd, name: undefined }),
      );
      const edit = el("button", { type: "button", className: "dim-button" }, "Edit");
      edit.addEventListener("click", () => commandForm(c, mine));
      mine.append(el("li", {}, start, el("span", { className: "dim" }, c.command), edit));
    }
  } catch (e) {
    mine.replaceChildren(el("li", { className: "dim" }, e.message));
  }
}

/** Add (c = null) or edit a saved command. Everything is shown back as text. */
function commandForm(c, mine) {
  const label = el("input", { id: "cmd-label", placeholder: "Label", value: c?.label || "" });
  const command = el("input", { id: "cmd-command", placeholder: "Command line", value: c?.command || "" });
  const cwd = el("input", { id: "cmd-cwd", placeholder: "Directory (optional)", value: c?.cwd || "" });
  const save = el("button", { type: "button", className: "primary", id: "cmd-save" }, "Save");
  const form = el("li", { className: "form" }, label, command, cwd, save);
  save.addEventListener("click", async () => {
    try {
      const args = { label: label.value, command: command.value };
      if (c) args.id = c.id;
      if (cwd.value.trim()) args.cwd = cwd.value.trim();
      await conn.call("loopsy_command_save", args);
      await listCommands(mine);
    } catch (e) {
      setNote(e.message, true);
    }
  });
  if (c) {
    const del = el("button", { type: "button", className: "danger", id: "cmd-delete" }, "Delete");
    del.addEventListener("click", async () => {
      try {
        await conn.call("loopsy_command_remove", { id: c.id });
        await listCommands(mine);
      } catch (e) {
        setNote(e.message, true);
      }
    });
    form.append(del);
  }
  mine.prepend(form);
  label.focus();
}

/** A new session of `kind` ({kind, auto_approve_flag}); agents may ask to skip permissions. */
function newSession(kind) {
  if (!kind.auto_approve_flag) return startSession({ kind: kind.kind });
  const yes = el("button", { type: "button", id: "auto-yes" }, `Auto-approve (${kind.auto_approve_flag})`);
  const no = el("button", { type: "button", className: "primary", id: "auto-no" }, "Ask me (safe)");
  const box = el(
    "section",
    { className: "card", id: "auto-approve" },
    el("h2", {}, `Start ${kind.kind}`),
    el(
      "p",
      {},
      `Auto-approve starts ${kind.kind} with ${kind.auto_approve_flag}: it will act without asking. `,
      "You confirm that on the laptop itself (nothing secret goes through the phone).",
    ),
    no,
    yes,
  );
  no.addEventListener("click", () => startSession({ kind: kind.kind }));
  yes.addEventListener("click", () => startSession({ kind: kind.kind, auto_approve: true }));
  view.prepend(box);
}

async function startSession(args) {
  try {
    const s = await conn.call("loopsy_session_start", { cols: 80, rows: 24, ...args });
    location.hash = `#s/${s.id}`;
  } catch (e) {
    const m = /loopsy approve ([A-Za-z0-9_-]+)/.exec(e.message || "");
    if (e.code === "permission_denied" && m) return confirmOnLaptop(args, m[1]);
    setNote(e.message, true);
  }
}

/** Auto-approve needs the user on the laptop: show the command to run there, then retry. */
function confirmOnLaptop(args, id) {
  const again = el("button", { type: "button", className: "primary", id: "approved" }, "I approved it: start");
  again.addEventListener("click", () => startSession({ ...args, approval: id }));
  show(
    view,
    el(
      "section",
      { className: "card", id: "confirm" },
      el("h2", {}, "Confirm on the laptop"),
      el("p", {}, "On the laptop, run:"),
      el("pre", {}, `loopsy approve ${id}`),
      el("p", { className: "dim" }, "Valid for 10 minutes, once."),
      again,
    ),
  );
}

function sessionView(id) {
  backBtn.hidden = false;
  title(pairing.host || "laptop");
  const root = el("section", { id: "terminal" });
  show(view, root);
  termView = mountTerminal(root, conn);
  const { cols, rows } = termView.size();
  conn.attach(id, cols, rows);
  termView.focus();
}

async function forgetLaptop() {
  if (!confirm("Forget this laptop? You will need to pair again.")) return;
  try {
    conn.send({ t: "forget" });
    await fetch(`/v1/device/${pairing.deviceId}/phones/${pairing.phoneId}`, {
      method: "DELETE",
      headers: { Authorization: `Bearer ${pairing.phoneSecret}` },
    });
  } catch {
    // the laptop forgets it too (the forget message); local state goes regardless
  }
  conn.stop();
  await store.wipe();
  pairing = null;
  location.hash = "";
  welcomeView();
}

function route() {
  if (!pairing?.paired) return;
  if (termView) {
    termView.dispose();
    termView = null;
    conn.detach();
  }
  setNote("");
  const h = location.hash;
  if (h.startsWith("#s/")) return sessionView(decodeURIComponent(h.slice(3)));
  return homeView();
}

async function start() {
  retryBtn.addEventListener("click", () => conn?.kick());
  backBtn.addEventListener("click", () => {
    location.hash = "#home";
  });
  window.addEventListener("hashchange", route);
  try {
    await ready();
  } catch (e) {
    setNote(`cannot load the encryption module: ${e.message}`, true);
    return;
  }
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/app/sw.js", { scope: "/app/" }).catch(() => {});
  }
  pairing = (await store.pairing()) || null;
  if (location.hash.startsWith("#pair=")) {
    const link = location.href;
    history.replaceState(null, "", `${location.pathname}#pairing`);
    return pairView(link);
  }
  if (!pairing) return welcomeView();
  if (!pairing.paired) return codeView();
  connect().kick();
  route();
}

start();
