// The signed-in state: the directory, conversations and their messages, and
// what each /ws frame does to them. No DOM here: views subscribe with
// `on(fn)` and re-read what they show.

import { encryptMessage, newClientId } from "./crypto.js";
import { keySetId } from "./keys.js";

let seqCounter = 0;

/** Most user ids in one `watch` frame (PROTOCOL.md 16.1). */
const WATCH_MAX = 256;
/** Changes of the contact list within this long become one `watch`. */
const WATCH_DEBOUNCE_MS = 300;

/** One conversation's state. Messages are keyed by their id (unique within
 * the conversation, so (from, to, id) dedupe is a Map lookup); sends not yet
 * acknowledged are keyed by client_id. */
class Conversation {
  constructor(peerId) {
    this.peer = peerId;
    this.msgs = new Map();
    this.pending = new Map();
    this.last = null; // {text, kind, mine, sent_at, id}
    this.baseUnread = 0;
    this.baseMaxId = 0;
    this.unreadIds = new Set();
    this.readSent = 0;
    this.deliveredUpTo = 0;
    this.readUpTo = 0;
    this.oldest = null;
    this.complete = false;
    this.loading = false;
    this.loaded = false;
  }

  get unread() {
    return this.baseUnread + this.unreadIds.size;
  }
}

export class Chat {
  constructor({ me, device, keyring, conn, store }) {
    Object.assign(this, { me, device, keyring, conn, store });
    this.users = new Map();
    this.ownDevices = [];
    this.convs = new Map();
    this.openPeer = null;
    this.listeners = new Set();
    this.readTimer = null;
    this.sendChain = Promise.resolve();
    this.watchWanted = [];
    this.watchSent = null;
    this.watchTimer = null;
  }

  on(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  emit(what, detail) {
    for (const fn of this.listeners) fn(what, detail);
  }

  conv(peer) {
    let c = this.convs.get(peer);
    if (!c) {
      c = new Conversation(peer);
      this.convs.set(peer, c);
    }
    return c;
  }

  // ------------------------------------------------------------ loading

  async loadDirectory(users, conversations, ownDevices, outbox) {
    this.ownDevices = ownDevices;
    await this.keyring.learn(this.me.id, ownDevices);
    for (const u of users) await this.setUser(u, false);
    for (const c of conversations) {
      const conv = this.conv(c.with);
      conv.baseUnread = Number(c.unread) || 0;
      conv.baseMaxId = c.last ? c.last.id : 0;
      if (!this.users.has(c.with)) {
        // Beyond the directory's first page: fetch the one user.
        this.users.set(c.with, { id: c.with, name: typeof c.name === "string" ? c.name : c.with, online: false, devices: [] });
        this.emit("need_user", c.with);
      }
      if (c.last) await this.setLast(conv, c.last);
    }
    for (const e of outbox.sort((a, b) => a.seq - b.seq)) {
      this.conv(e.to).pending.set(e.client_id, this.pendingMsg(e));
      seqCounter = Math.max(seqCounter, e.seq);
    }
    this.emit("contacts");
  }

  async setUser(u, notify = true) {
    if (!u || typeof u.id !== "string") return;
    if (u.id === this.me.id) return;
    const known = this.users.get(u.id);
    // Someone new without a device list (a presence frame): ask for it.
    if (!known && !Array.isArray(u.devices)) this.emit("need_user", u.id);
    const prev = known || { id: u.id, name: u.id, online: false, devices: [] };
    const next = {
      ...prev,
      name: typeof u.name === "string" && u.name ? u.name : prev.name,
      online: typeof u.online === "boolean" ? u.online : prev.online,
      devices: Array.isArray(u.devices) ? u.devices.filter((d) => d && typeof d.id === "string" && typeof d.public_key === "string") : prev.devices,
    };
    this.users.set(u.id, next);
    const pin = await this.keyring.check(u.id, next.devices);
    next.pin = pin;
    if (notify) this.emit("user", u.id);
  }

  // ------------------------------------------------------------ frames

  async onFrame(f) {
    switch (f.type) {
      case "users":
        return this.onUsers(f);
      case "presence":
        // Device sets come from `devices` frames (sent on every change);
        // a presence frame's copy may predate the latest one, so it only
        // introduces someone not seen before.
        return this.setUser({
          id: f.user, name: f.name, online: !!f.online,
          ...(f.devices && !this.users.has(f.user) ? { devices: f.devices } : {}),
        });
      case "devices":
        return this.onDevices(f);
      case "message":
        return this.onMessage(f);
      case "ack":
        return this.onAck(f);
      case "delivered":
        return this.onReceipt(f.with, "deliveredUpTo", f.id);
      case "read":
        return this.onReceipt(f.with, "readUpTo", f.up_to);
      case "history":
        return this.onHistory(f);
      case "send_failed":
        return this.onSendFailed(f);
      case "error":
        return this.emit("error", f);
      default:
        return undefined;
    }
  }

  async onUsers(f) {
    const online = new Set();
    for (const u of f.users || []) {
      online.add(u.id);
      await this.setUser({ ...u, online: true }, false);
    }
    for (const u of this.users.values()) if (!online.has(u.id)) u.online = false;
    this.emit("contacts");
  }

  async onDevices(f) {
    if (!Array.isArray(f.devices)) return;
    if (f.user === this.me.id) {
      const known = new Set(this.ownDevices.map((d) => d.id));
      for (const d of f.devices) {
        if (!known.has(d.id) && (!this.device || d.id !== this.device.id)) {
          this.emit("notice", `A new device was added to your account: ${d.name || d.id}. If that was not you, remove it in Settings.`);
        }
      }
      this.ownDevices = f.devices;
      await this.keyring.learn(this.me.id, f.devices);
      this.emit("own_devices");
    } else {
      await this.setUser({ id: f.user, devices: f.devices });
    }
  }

  peerOf(m) {
    return m.from === this.me.id ? m.to : m.from;
  }

  async decrypt(m) {
    const r = await this.keyring.open(m);
    return {
      id: m.id,
      from: m.from,
      to: m.to,
      client_id: m.client_id,
      sent_at: m.sent_at,
      mine: m.from === this.me.id,
      delivered: !!m.delivered,
      read: !!m.read,
      kind: r.kind,
      text: r.text,
    };
  }

  async setLast(conv, m) {
    this.bumpLast(conv, await this.decrypt(m));
  }

  /** The contact list's preview: the newest message, a pending send first. */
  bumpLast(conv, d) {
    if (!conv.last || conv.last.sending || d.id >= conv.last.id) conv.last = d;
  }

  async onMessage(f) {
    if (!Number.isSafeInteger(f.id) || typeof f.from !== "string" || typeof f.to !== "string") return;
    const conv = this.conv(this.peerOf(f));
    if (conv.msgs.has(f.id)) return; // shown already: (from, to, id) is the identity
    const d = await this.decrypt(f);
    let replaces;
    if (d.mine && typeof f.client_id === "string" && conv.pending.has(f.client_id)) {
      // Our own copy came back before the ack (the connection broke after
      // the server stored it, or it was catching up from the database:
      // docs/PROTOCOL.md 16.4): it is stored, not pending any more.
      conv.pending.delete(f.client_id);
      await this.store.del("outbox", f.client_id);
      replaces = f.client_id;
    }
    conv.msgs.set(d.id, d);
    this.bumpLast(conv, d);
    if (!d.mine && !d.read && d.id > conv.baseMaxId && d.id > conv.readSent) conv.unreadIds.add(d.id);
    if (!this.users.has(conv.peer)) await this.fetchUser(conv.peer);
    this.emit("message", { peer: conv.peer, msg: d, replaces });
    this.emit("contacts");
    this.scheduleRead();
  }

  async fetchUser(id) {
    this.users.set(id, { id, name: id, online: false, devices: [] });
    this.emit("need_user", id);
  }

  onAck(f) {
    const conv = this.conv(f.to);
    const p = conv.pending.get(f.client_id);
    if (!p) return;
    conv.pending.delete(f.client_id);
    if (conv.msgs.has(f.id)) {
      this.emit("message", { peer: f.to, msg: conv.msgs.get(f.id), replaces: f.client_id });
      return;
    }
    const d = { ...p, id: f.id, delivered: f.status === "delivered", sending: false };
    conv.msgs.set(f.id, d);
    this.bumpLast(conv, d);
    this.emit("message", { peer: f.to, msg: d, replaces: f.client_id });
    this.emit("contacts");
  }

  onReceipt(peer, field, upTo) {
    if (typeof peer !== "string" || !Number.isSafeInteger(upTo)) return;
    const conv = this.conv(peer);
    if (upTo <= conv[field]) return;
    conv[field] = upTo;
    if (field === "readUpTo" && upTo > conv.deliveredUpTo) conv.deliveredUpTo = upTo;
    this.emit("receipts", peer);
  }

  onSendFailed(f) {
    const conv = this.conv(f.entry.to);
    const p = conv.pending.get(f.entry.client_id);
    if (!p) return;
    p.failed = f.message || f.code;
    this.emit("message", { peer: conv.peer, msg: p });
  }

  /** State shown under one of my messages. */
  stateOf(conv, m) {
    if (m.failed) return "failed";
    if (m.id === undefined || m.sending) return "sending";
    if (m.read || m.id <= conv.readUpTo) return "read";
    if (m.delivered || m.id <= conv.deliveredUpTo) return "delivered";
    return "stored";
  }

  // ------------------------------------------------------------ history

  requestHistory(peer) {
    const conv = this.conv(peer);
    if (conv.loading || conv.complete) return false;
    const frame = { type: "history", with: peer, limit: 50 };
    if (conv.oldest !== null) frame.before = conv.oldest;
    if (!this.conn.sendFrame(frame)) return false;
    conv.loading = true;
    return true;
  }

  async onHistory(f) {
    if (typeof f.with !== "string" || !Array.isArray(f.messages)) return;
    const conv = this.conv(f.with);
    const added = [];
    for (const m of f.messages) {
      if (!Number.isSafeInteger(m.id)) continue;
      if (conv.oldest === null || m.id < conv.oldest) conv.oldest = m.id;
      if (conv.msgs.has(m.id)) continue;
      const d = await this.decrypt(m);
      if (!d.mine && d.read) conv.readSent = Math.max(conv.readSent, d.id);
      conv.msgs.set(d.id, d);
      added.push(d);
    }
    conv.loading = false;
    conv.loaded = true;
    if (f.messages.length < 50 || conv.oldest === 1) conv.complete = true;
    this.emit("history", { peer: f.with, added });
    this.scheduleRead();
  }

  /** A new connection: history requests of the old one will not be
   * answered, and read receipts held while offline can go now. */
  onConnected() {
    for (const c of this.convs.values()) c.loading = false;
    // A new socket follows nobody yet: tell it whom the list shows.
    this.watchSent = null;
    this.watch(this.watchWanted);
    this.emit("online");
    this.scheduleRead();
  }

  // ------------------------------------------------------------ reading

  open(peer) {
    this.openPeer = peer;
    this.scheduleRead();
    this.watch(this.watchWanted);
  }

  /** The server sends presence only for contacts (shared conversations)
   * and the users a socket watches: ask for those the contact list shows,
   * the open conversation's peer first, at most WATCH_MAX. Sent when that
   * set changed (debounced: `watch` counts against the send limits), and
   * again on every new socket. The answer is a `users` frame. */
  watch(ids) {
    this.watchWanted = ids;
    clearTimeout(this.watchTimer);
    this.watchTimer = setTimeout(() => this.sendWatch(), WATCH_DEBOUNCE_MS);
  }

  sendWatch() {
    const wanted = [this.openPeer, ...this.watchWanted].filter((id) => typeof id === "string" && id !== this.me.id);
    const list = [...new Set(wanted)].slice(0, WATCH_MAX);
    const key = [...list].sort().join(",");
    if (key === this.watchSent) return;
    if (this.conn.sendFrame({ type: "watch", users: list })) this.watchSent = key;
  }

  /** Read receipts for the open conversation while the page is visible,
   * batched: each `read` frame counts against the send limits. */
  scheduleRead() {
    clearTimeout(this.readTimer);
    this.readTimer = setTimeout(() => this.sendRead(), 300);
  }

  sendRead() {
    const peer = this.openPeer;
    if (!peer || document.visibilityState !== "visible") return;
    const conv = this.conv(peer);
    let max = 0;
    for (const m of conv.msgs.values()) if (!m.mine && m.id > max) max = m.id;
    if (max <= conv.readSent) {
      if (conv.unread) this.clearUnread(conv);
      return;
    }
    if (!this.conn.sendFrame({ type: "read", with: peer, up_to: max })) return;
    conv.readSent = max;
    this.clearUnread(conv);
  }

  clearUnread(conv) {
    conv.baseUnread = 0;
    conv.unreadIds.clear();
    this.emit("contacts");
  }

  totalUnread() {
    let n = 0;
    for (const c of this.convs.values()) n += c.unread;
    return n;
  }

  /** Every device of mine, this one included. */
  myDevices() {
    const mine = [...this.ownDevices];
    if (this.device && !mine.some((d) => d.id === this.device.id)) {
      mine.push({ id: this.device.id, public_key: this.device.publicRaw, name: this.device.name });
    }
    return mine;
  }

  /** Whether the safety number with `peer` was verified for the keys both
   * of us have now. */
  isVerified(peer) {
    const u = this.users.get(peer);
    return !!(u && u.pin && u.pin.verified && u.pin.verifiedKeys === keySetId(this.myDevices(), u.devices || []));
  }

  // ------------------------------------------------------------ sending

  /** Why sending to `peer` is held, or null: new devices to accept, or a
   * contact without keys and no explicit choice to send unencrypted. */
  sendBlock(peer) {
    const u = this.users.get(peer);
    if (!u) return "unknown";
    const pin = u.pin || { pending: [] };
    if (pin.pending && pin.pending.length) return "new_devices";
    if (!u.devices || u.devices.length === 0 || !this.device) return pin.unencrypted ? null : "no_keys";
    return null;
  }

  /** Sends in the order they were made: encryption is asynchronous. */
  send(peer, text) {
    const p = this.sendChain.then(() => this.sendNow(peer, text));
    this.sendChain = p.catch(() => {});
    return p;
  }

  async sendNow(peer, text) {
    const block = this.sendBlock(peer);
    if (block) throw new Error(block);
    const u = this.users.get(peer);
    const clientId = newClientId();
    let body = text;
    if (u.devices.length && this.device) {
      const seen = new Set();
      const recipients = [];
      for (const d of [...u.devices, ...this.ownDevices, { id: this.device.id, public_key: this.device.publicRaw }]) {
        if (seen.has(d.id)) continue;
        seen.add(d.id);
        recipients.push({ id: d.id, publicKey: d.public_key });
      }
      body = await encryptMessage({
        text,
        fromUser: this.me.id,
        toUser: peer,
        clientId,
        fromDevice: { id: this.device.id, privateKey: this.device.privateKey },
        recipients,
      });
    }
    seqCounter = Math.max(seqCounter + 1, Date.now());
    const entry = { client_id: clientId, to: peer, body, text, seq: seqCounter, sent_at: Date.now(), kind: body === text ? "plain" : "e2e" };
    const conv = this.conv(peer);
    const p = this.pendingMsg(entry);
    conv.pending.set(clientId, p);
    conv.last = p;
    this.emit("message", { peer, msg: p });
    this.emit("contacts");
    await this.conn.enqueue(entry);
  }

  pendingMsg(e) {
    return { client_id: e.client_id, from: this.me.id, to: e.to, sent_at: e.sent_at, mine: true, kind: e.kind || "e2e", text: e.text, seq: e.seq, sending: true };
  }
}
