// One laptop, through the relay: a WebSocket (bearer in the subprotocol, never the URL), a
// Noise handshake inside it (the wasm module), then the in-channel protocol. Reconnects by
// itself with backoff, re-attaches to the same session (the laptop sends the current screen),
// and keeps keystrokes typed while offline until it is back (or says it dropped them).

import { Session } from "./wasm.js";

const PING_EVERY_MS = 25000;
const PONG_WITHIN_MS = 10000;
const ACK_EVERY = 128 * 1024;
const QUEUE_MAX = 16 * 1024;
const enc = new TextEncoder();

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
    window.addEventListener("offline", () => this.ws?.close(4000, "offline"));
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
      if (ws === this.ws && this.lastPong < sent) ws.close(4000, "no answer");
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
      this.on.output?.(m.output, () => this.processed(upto));
      return;
    }
    this.control(JSON.parse(m.control));
  }

  /** Output up to byte `upto` is on screen: acknowledge now and then (flow control). */
  processed(upto) {
    if (upto - this.acked >= ACK_EVERY) {
      this.acked = upto;
      this.send({ t: "ack", bytes: upto });
    }
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
      case "attached":
        this.attached = true;
        this.received = 0;
        this.acked = 0;
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
    this.received = 0;
    this.acked = 0;
    if (this.state === "live") this.sendAttach();
  }

  sendAttach() {
    const t = this.target;
    this.send({ t: "attach", session: t.session, cols: t.cols, rows: t.rows });
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
