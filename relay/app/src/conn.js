// One laptop, through the relay: a WebSocket (bearer in the subprotocol, never the URL), a
// Noise handshake inside it (the wasm module), then the in-channel protocol. Reconnects by
// itself with backoff, re-attaches to the same session (the laptop sends the current screen),
// and keeps keystrokes typed while offline until it is back (or says it dropped them).

import { Session } from "./wasm.js";

const PING_EVERY_MS = 25000;
const PONG_WITHIN_MS = 10000;
// Output the laptop may have in flight to this phone: about one painted frame's worth (what
// term.js hands xterm.js per frame) per frame-time of round trip, so a flood arrives no faster
// than the terminal paints it (a larger window measurably cost frames under `yes`) and a far
// laptop still fills every frame. The phone acknowledges once per painted frame. Laptops
// before 0.2 do not take a window and send up to 1 MiB.
const FRAME_BYTES = 16 * 1024;
const FRAME_MS = 16;
const WINDOW_MAX = 256 * 1024;
const RTT_PING = 1;
const QUEUE_MAX = 16 * 1024;
const enc = new TextEncoder();

/** Whether a laptop of `version` takes `window` on attach (0.2 and later; older ones refuse it). */
export function knowsWindow(version) {
  const [major, minor] = String(version || "").split(".").map((x) => parseInt(x, 10));
  return major > 0 || (major === 0 && minor >= 2);
}

/** Output window (bytes) for a round trip of `rtt` ms. */
export function windowFor(rtt) {
  const frames = Math.max(1, Math.ceil((Number(rtt) || 0) / FRAME_MS));
  return Math.min(WINDOW_MAX, FRAME_BYTES * frames);
}

/** The relay's WebSocket URL for this phone. */
function wsUrl(p) {
  const base = p.relay.replace(/^http/, "ws");
  return `${base}/v1/device/${p.deviceId}/phones/${p.phoneId}/connect`;
}

export class Connection {
  /**
   * @param {object} pairing what store.js keeps
   * @param {object} on handlers: state(s, detail), output(bytes, done), control(msg)
   */
  constructor(pairing, on) {
    this.p = pairing;
    this.on = on;
    this.state = "idle";
    this.ws = null;
    this.session = null;
    this.calls = new Map();
    this.nextId = 1;
    this.target = null; // {session, cols, rows}
    this.attached = false;
    this.queue = [];
    this.queued = 0;
    this.received = 0;
    this.acked = 0;
    this.done = 0;
    this.rtt = 0; // ms to the laptop and back (the last measured; sizes the output window)
    this.pingAt = 0;
    this.gen = 0; // bumped per attachment: late "processed" calls from an old one are ignored
    this.ackFrame = 0;
    this.delay = 500;
    this.timer = null;
    this.stopped = false;
    this.proof = null; // {pair_id, code} until paired
    this.welcome = null;
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.kick();
    });
    window.addEventListener("online", () => this.kick());
    // The phone lost its network: say so now rather than after the next missed ping.
    window.addEventListener("offline", () => this.abandon("the phone is offline"));
  }

  set(state, detail) {
    this.state = state;
    this.on.state?.(state, detail || "");
  }

  /** Connect now (also: the retry button). */
  kick() {
    if (this.stopped) return;
    if (this.state === "live" || this.state === "connecting" || this.state === "handshake") {
      this.checkAlive();
      return;
    }
    clearTimeout(this.timer);
    this.delay = 500;
    this.open();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.pinger);
    this.ws?.close(1000, "bye");
  }

  later(why) {
    if (this.stopped) return;
    clearTimeout(this.timer);
    const wait = this.delay * (0.5 + Math.random() * 0.5);
    this.delay = Math.min(this.delay * 2, 5000);
    this.set(this.state === "laptop-offline" ? "laptop-offline" : "offline", why);
    this.timer = setTimeout(() => this.open(), wait);
  }

  open() {
    if (this.stopped) return;
    this.set("connecting");
    this.attached = false;
    this.session = null;
    let ws;
    try {
      ws = new WebSocket(wsUrl(this.p), ["loopsy.v1", `loopsy.bearer.${this.p.phoneSecret}`]);
    } catch (e) {
      this.later(String(e));
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onmessage = (ev) => this.message(ws, ev.data);
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      clearInterval(this.pinger);
      for (const [, c] of this.calls) c.reject(new Error("the connection closed"));
      this.calls.clear();
      this.attached = false;
      if (ev.code === 4003) {
        this.stopped = true;
        this.set("revoked", "this phone was revoked on the laptop");
        return;
      }
      if (this.fatal) {
        this.stopped = true;
        this.set("failed", this.fatal);
        return;
      }
      this.later(ev.code === 1006 ? "connection lost" : `closed (${ev.code}) ${ev.reason}`);
    };
    clearInterval(this.pinger);
    this.lastPong = Date.now();
    this.pinger = setInterval(() => this.checkAlive(), PING_EVERY_MS);
  }

  /** Give up on the current socket now (the phone went offline, or no pong came back): with
   *  the network gone its close event can take many seconds to arrive, and the user should
   *  see the state at once. Whatever that socket still delivers is ignored. */
  abandon(why) {
    const ws = this.ws;
    if (!ws) return;
    this.ws = null;
    clearInterval(this.pinger);
    for (const [, c] of this.calls) c.reject(new Error("the connection closed"));
    this.calls.clear();
    this.attached = false;
    try {
      ws.close(4000, why);
    } catch {
      // Already closing.
    }
    this.later(why);
  }

  /** Ping through the relay (answered by it without waking anything); no pong: reconnect. */
  checkAlive() {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    const sent = Date.now();
    try {
      ws.send("ping");
    } catch {
      return;
    }
    setTimeout(() => {
      if (ws === this.ws && this.lastPong < sent) this.abandon("no answer from the relay");
    }, PONG_WITHIN_MS);
  }

  message(ws, data) {
    if (ws !== this.ws) return;
    if (typeof data === "string") {
      if (data === "pong") {
        this.lastPong = Date.now();
        return;
      }
      let n;
      try {
        n = JSON.parse(data);
      } catch {
        return;
      }
      if (n.state === "device-online") this.handshake();
      else if (n.state === "device-offline") {
        this.session = null;
        this.attached = false;
        this.set("laptop-offline", "the laptop is offline; waiting for it");
      }
      return;
    }
    this.lastPong = Date.now();
    const bytes = new Uint8Array(data);
    if (this.session && !this.session.ready()) {
      try {
        this.session.finish(bytes);
      } catch (e) {
        this.fatal = `the laptop could not be verified: ${e.message}`;
        ws.close(4000, "handshake failed");
        return;
      }
      this.hello();
      return;
    }
    if (!this.session) return;
    let m;
    try {
      m = this.session.open(bytes);
    } catch (e) {
      ws.close(4000, "bad frame");
      return;
    }
    if (!m) return;
    if (m.output) {
      this.received += m.output.length;
      const upto = this.received;
      const gen = this.gen;
      this.on.output?.(m.output, () => this.processed(upto, gen));
      return;
    }
    this.control(JSON.parse(m.control));
  }

  /**
   * Output up to byte `upto` went through the terminal: acknowledge it with the next painted
   * frame (flow control). A hidden page paints nothing, so it stops the flow; the laptop then
   * skips it forward to a fresh screen instead of queueing output for it.
   */
  processed(upto, gen) {
    if (gen !== this.gen) return;
    this.done = Math.max(this.done, upto);
    if (this.ackFrame) return;
    this.ackFrame = requestAnimationFrame(() => {
      this.ackFrame = 0;
      if (this.done > this.acked) {
        this.acked = this.done;
        this.send({ t: "ack", bytes: this.done });
      }
    });
  }

  /** A new attachment: output counts start again. */
  restart() {
    this.gen += 1;
    this.received = 0;
    this.acked = 0;
    this.done = 0;
  }

  handshake() {
    this.session = new Session();
    this.set("handshake");
    try {
      const m1 = this.session.start(this.p.secret, this.p.daemonKey, this.p.deviceId, this.p.phoneId);
      this.ws.send(m1);
    } catch (e) {
      this.fatal = String(e.message || e);
      this.ws.close(4000, "handshake failed");
    }
  }

  hello() {
    const h = { t: "hello", label: navigator.userAgent.slice(0, 60) };
    if (this.proof) h.pair = this.proof;
    this.send(h);
  }

  control(c) {
    switch (c.t) {
      case "welcome":
        this.welcome = c;
        this.pingAt = performance.now(); // the pong gives the round trip to the laptop
        this.send({ t: "ping", n: RTT_PING });
        this.proof = null;
        this.delay = 500;
        this.set("live");
        this.on.control?.(c);
        if (this.target) this.sendAttach();
        return;
      case "result": {
        const call = this.calls.get(c.id);
        this.calls.delete(c.id);
        if (!call) return;
        if (c.ok) call.resolve(c.value);
        else call.reject(Object.assign(new Error(c.value?.message || "failed"), { code: c.value?.code }));
        return;
      }
      case "pong":
        if (c.n === RTT_PING && this.pingAt) {
          this.rtt = performance.now() - this.pingAt;
          this.pingAt = 0;
        }
        return;
      case "attached":
        this.attached = true;
        this.restart();
        this.flush();
        this.on.control?.(c);
        return;
      case "error":
        if (c.fatal) this.fatal = c.message;
        this.on.control?.(c);
        return;
      default:
        this.on.control?.(c);
    }
  }

  send(obj) {
    if (!this.session?.ready() || this.ws?.readyState !== WebSocket.OPEN) return false;
    for (const m of this.session.sealControl(JSON.stringify(obj))) this.ws.send(m);
    return true;
  }

  /** Call a tool on the laptop. */
  call(tool, args = {}) {
    return new Promise((resolve, reject) => {
      const id = this.nextId++;
      if (!this.send({ t: "call", id, tool, args })) {
        reject(new Error("not connected"));
        return;
      }
      this.calls.set(id, { resolve, reject });
    });
  }

  /** Be a live client of `session` (again after every reconnect). */
  attach(session, cols, rows) {
    this.target = { session, cols, rows };
    this.attached = false;
    this.restart();
    if (this.state === "live") this.sendAttach();
  }

  sendAttach() {
    const t = this.target;
    const a = { t: "attach", session: t.session, cols: t.cols, rows: t.rows };
    if (knowsWindow(this.welcome?.version)) a.window = windowFor(this.rtt);
    this.send(a);
  }

  detach() {
    this.target = null;
    this.attached = false;
    this.send({ t: "detach" });
  }

  resize(cols, rows) {
    if (this.target) {
      this.target.cols = cols;
      this.target.rows = rows;
    }
    if (this.attached) this.send({ t: "resize", cols, rows });
  }

  /** Type: sent at once when attached, else kept (up to 16 KiB) until it is. */
  input(text) {
    const bytes = typeof text === "string" ? enc.encode(text) : text;
    if (this.attached && this.ws?.readyState === WebSocket.OPEN) {
      for (const m of this.session.sealInput(bytes)) this.ws.send(m);
      return true;
    }
    if (this.queued + bytes.length > QUEUE_MAX) {
      this.on.state?.(this.state, "offline: that input was not sent (too much typed while offline)");
      return false;
    }
    this.queue.push(bytes);
    this.queued += bytes.length;
    return true;
  }

  flush() {
    const q = this.queue;
    this.queue = [];
    this.queued = 0;
    for (const b of q) this.input(b);
  }

  /** Complete a first pairing: connect and prove the code the laptop shows. */
  pair(proof) {
    this.proof = proof;
    this.fatal = null;
    this.stopped = false;
    this.kick();
  }
}
