// The /ws connection (PROTOCOL.md §15–16): reconnects with capped
// exponential backoff and jitter, resumes from the last inbox position this
// device processed (kept in IndexedDB), keeps an outbox of sends not yet
// acknowledged and sends them again with the same client_id after a
// reconnect (the server stores a client_id once), and confirms processed
// positions in batches.

const CONFIRM_EVERY_MS = 300;
const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 15000;
const STABLE_MS = 5000;
/** Send errors after which the same frame is tried again later. */
const RETRY_CODES = { rate_limited: 0, queue_full: 5, internal: 1 };

export class Connection {
  /**
   * store: the account's Store; token(): the session token or null (the
   * cookie then authenticates); onFrame(frame): async, called in order for
   * every frame; onState(state, detail): "connecting" | "online" |
   * "offline"; onAuthLost(): the session is gone; checkAuth(): async,
   * false when the session is no longer valid.
   */
  constructor({ store, token, onFrame, onState, onAuthLost, checkAuth }) {
    Object.assign(this, { store, token, onFrame, onState, onAuthLost, checkAuth });
    this.ws = null;
    this.attempt = 0;
    this.stopped = false;
    this.lastPos = 0;
    this.confirmable = 0;
    this.confirmed = 0;
    this.chain = Promise.resolve();
    this.inflight = new Set();
    this.retryTimers = new Map();
    this.onOnline = () => this.reconnectNow();
    this.onOffline = () => this.ws && this.ws.close(4000, "offline");
  }

  async start() {
    this.lastPos = (await this.store.get("kv", "after")) || 0;
    window.addEventListener("online", this.onOnline);
    window.addEventListener("offline", this.onOffline);
    this.confirmTimer = setInterval(() => this.flushConfirm(), CONFIRM_EVERY_MS);
    this.open();
  }

  stop() {
    this.stopped = true;
    clearInterval(this.confirmTimer);
    clearTimeout(this.reconnectTimer);
    for (const t of this.retryTimers.values()) clearTimeout(t);
    window.removeEventListener("online", this.onOnline);
    window.removeEventListener("offline", this.onOffline);
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000, "bye");
  }

  get isOpen() {
    return !!this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  open() {
    if (this.stopped) return;
    if (!navigator.onLine) {
      this.onState("offline", { waiting: "network" });
      return;
    }
    this.onState("connecting");
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const after = this.lastPos > 0 ? `?after=${this.lastPos}` : "";
    const protocols = ["sotto.v1"];
    const t = this.token();
    if (t) protocols.push(`sotto.token.${t}`);
    let ws;
    try {
      ws = new WebSocket(`${scheme}://${location.host}/ws${after}`, protocols);
    } catch {
      this.scheduleReconnect(false);
      return;
    }
    this.ws = ws;
    this.confirmable = 0;
    this.confirmed = this.lastPos;
    this.inflight.clear();
    let openedAt = 0;
    ws.onopen = () => {
      openedAt = Date.now();
      this.onState("online");
      this.resendOutbox();
    };
    ws.onmessage = (ev) => this.receive(ev.data);
    ws.onclose = (ev) => {
      if (this.ws !== ws || this.stopped) return;
      this.ws = null;
      if (ev.code === 1000 && ev.reason === "logged out") {
        this.stopped = true;
        this.onAuthLost();
        return;
      }
      // Only a connection that lasted resets the backoff: one the server
      // accepts and drops at once must not make us reconnect in a loop.
      const lasted = openedAt > 0 && Date.now() - openedAt > STABLE_MS;
      if (lasted) this.attempt = 0;
      this.scheduleReconnect(lasted);
    };
  }

  /** After a failed or lost connection: is the session still valid? Then
   * wait (backoff with jitter) and connect again; at once, nearly, after
   * losing a connection that had lasted. */
  async scheduleReconnect(lasted) {
    if (this.stopped) return;
    if (!lasted || this.attempt > 0) {
      const ok = await this.checkAuth().catch(() => true);
      if (!ok) {
        this.stopped = true;
        this.onAuthLost();
        return;
      }
    }
    const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** this.attempt);
    const delay = lasted && this.attempt === 0 ? 200 : cap * (0.5 + Math.random() * 0.5);
    this.attempt += 1;
    this.onState("offline", { retryInMs: delay });
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => this.open(), delay);
  }

  reconnectNow() {
    if (this.stopped || this.ws) return;
    clearTimeout(this.reconnectTimer);
    this.attempt = 0;
    this.open();
  }

  sendFrame(frame) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (!frame || typeof frame !== "object" || typeof frame.type !== "string") return;
    const ws = this.ws;
    // One frame at a time, in order: decrypting is asynchronous, and a
    // position counts as processed only once its frame has been handled.
    this.chain = this.chain.then(() => this.handle(frame, ws)).catch((e) => console.error(e));
  }

  async handle(frame, ws) {
    if (frame.type === "ack") await this.store.del("outbox", frame.client_id);
    if (frame.type === "error" && typeof frame.ref === "string") {
      if (await this.sendFailed(frame)) return;
    }
    await this.onFrame(frame);
    if (Number.isSafeInteger(frame.pos) && frame.pos > this.lastPos) {
      this.lastPos = frame.pos;
      if (ws === this.ws) this.confirmable = frame.pos;
    }
  }

  /** Persists the resume position, then confirms it (PROTOCOL 16.3). */
  async flushConfirm() {
    const upTo = this.confirmable;
    if (upTo <= this.confirmed || !this.isOpen) return;
    this.confirmed = upTo;
    await this.store.put("kv", "after", this.lastPos);
    this.sendFrame({ type: "confirm", up_to: upTo });
  }

  /** Queues a message: durable in the outbox first, then on the wire. */
  async enqueue(entry) {
    await this.store.put("outbox", entry.client_id, entry);
    this.transmit(entry);
  }

  transmit(entry) {
    if (this.inflight.has(entry.client_id)) return;
    if (this.sendFrame({ type: "send", to: entry.to, body: entry.body, client_id: entry.client_id })) {
      this.inflight.add(entry.client_id);
    }
  }

  async resendOutbox() {
    const pending = await this.store.all("outbox");
    pending.sort((a, b) => a.seq - b.seq);
    for (const e of pending) this.transmit(e);
  }

  /** A send was refused: retry later, or give up (returns true when the
   * frame was handled here). */
  async sendFailed(frame) {
    const entry = await this.store.get("outbox", frame.ref);
    if (!entry) return false;
    this.inflight.delete(entry.client_id);
    if (frame.code in RETRY_CODES) {
      const secs = Number(frame.retry_after) || RETRY_CODES[frame.code] || 1;
      clearTimeout(this.retryTimers.get(entry.client_id));
      this.retryTimers.set(
        entry.client_id,
        setTimeout(() => this.transmit(entry), Math.min(60, secs) * 1000),
      );
      return true;
    }
    await this.store.del("outbox", entry.client_id);
    await this.onFrame({ type: "send_failed", entry, code: frame.code, message: frame.message });
    return true;
  }
}
