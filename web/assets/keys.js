// Devices and keys: this browser's device key (generated on first login,
// the private half non-extractable, kept in IndexedDB), the registration of
// the device with the server, the keys of every device seen (so old
// messages still verify after a device is removed), and the pins: a
// contact's device keys are trusted on first use; a device added later is
// held back until the person accepts it.

import { generateDeviceKey, importPublicKey, decryptMessage, parseEnvelope, safetyNumber } from "./crypto.js";
import { api, ApiError } from "./api.js";

/** A short label for this browser, shown in device lists. */
function deviceName() {
  const ua = navigator.userAgent;
  const browser = /Firefox\//.test(ua) ? "Firefox" : /Edg\//.test(ua) ? "Edge" : /Chrom(e|ium)\//.test(ua) ? "Chromium" : /Safari\//.test(ua) ? "Safari" : "Browser";
  const os = /Android/.test(ua) ? "Android" : /iPhone|iPad/.test(ua) ? "iOS" : /Mac OS X/.test(ua) ? "macOS" : /Windows/.test(ua) ? "Windows" : /Linux/.test(ua) ? "Linux" : "";
  return os ? `${browser} on ${os}` : browser;
}

/** Loads or creates this browser's key for the account and registers it
 * under the current session. Returns {id, privateKey, publicRaw, name}. */
export async function ensureDevice(store) {
  let key = await store.get("kv", "device");
  if (!key) {
    const k = await generateDeviceKey();
    key = { privateKey: k.privateKey, publicKey: k.publicKey, publicRaw: k.publicRaw };
    await store.put("kv", "device", key);
  }
  let res;
  try {
    res = await api.addDevice(key.publicRaw, deviceName());
  } catch (e) {
    // A server without a device directory (404/405): no end-to-end
    // encryption from this browser; the UI says so.
    if (e instanceof ApiError && (e.status === 404 || e.status === 405)) return null;
    // This session already has our key bound: fine. Anything else is real.
    if (!(e instanceof ApiError && e.code === "device_exists")) throw e;
    const me = await api.me();
    res = { device: me.device };
  }
  const device = res.device;
  await store.put("keys", device.id, { user: null, public_key: key.publicRaw });
  return { id: device.id, name: device.name, privateKey: key.privateKey, publicRaw: key.publicRaw };
}

/** An identifier of the two key sets a safety number covers. */
export function keySetId(mine, theirs) {
  return [mine, theirs].map((l) => l.map((d) => d.public_key).sort().join(",")).join("|");
}

export class Keyring {
  constructor(store, me, device) {
    Object.assign(this, { store, me, device });
    this.known = new Map(); // device id → public key (b64u)
  }

  async load() {
    const tx = this.store.db.transaction("keys");
    const os = tx.objectStore("keys");
    await new Promise((resolve) => {
      os.openCursor().onsuccess = (ev) => {
        const c = ev.target.result;
        if (!c) return resolve();
        this.known.set(c.key, c.value.public_key);
        c.continue();
      };
    });
  }

  /** Remembers every device key seen, for decrypting old messages. */
  async learn(userId, devices) {
    for (const d of devices || []) {
      if (typeof d.id !== "string" || typeof d.public_key !== "string") continue;
      if (this.known.get(d.id) === d.public_key) continue;
      this.known.set(d.id, d.public_key);
      await this.store.put("keys", d.id, { user: userId, public_key: d.public_key });
    }
  }

  /**
   * Compares a contact's current devices with the pinned ones. First use
   * (nothing pinned yet) pins silently. Returns the pin:
   * {devices: {id: key}, pending: [device…], verified: string|null}.
   */
  async check(userId, devices) {
    await this.learn(userId, devices);
    let pin = await this.store.get("pins", userId);
    const list = (devices || []).filter((d) => typeof d.id === "string");
    if (!pin || Object.keys(pin.devices).length === 0) {
      pin = { devices: Object.fromEntries(list.map((d) => [d.id, d.public_key])), pending: [], verified: pin ? pin.verified : null, unencrypted: pin ? pin.unencrypted : false };
    } else {
      pin.pending = list.filter((d) => pin.devices[d.id] !== d.public_key);
    }
    await this.store.put("pins", userId, pin);
    return pin;
  }

  async pin(userId) {
    return (await this.store.get("pins", userId)) || { devices: {}, pending: [], verified: null, unencrypted: false };
  }

  /** The person accepted the new devices: pin them; an earlier
   * verification no longer covers the new key set. */
  async accept(userId) {
    const pin = await this.pin(userId);
    for (const d of pin.pending) pin.devices[d.id] = d.public_key;
    pin.pending = [];
    pin.verified = null;
    await this.store.put("pins", userId, pin);
    return pin;
  }

  /** Records (or clears, with null) a verified safety number, with the
   * key set it covers: any device added or removed on either side since
   * ends the verification. */
  async setVerified(userId, number, keys) {
    const pin = await this.pin(userId);
    pin.verified = number;
    pin.verifiedKeys = number ? keys : null;
    await this.store.put("pins", userId, pin);
  }

  async setUnencrypted(userId, allowed) {
    const pin = await this.pin(userId);
    pin.unencrypted = allowed;
    await this.store.put("pins", userId, pin);
  }

  async safetyNumber(myDevices, peer) {
    return safetyNumber({
      userA: this.me.id,
      keysA: myDevices.map((d) => d.public_key),
      userB: peer.id,
      keysB: (peer.devices || []).map((d) => d.public_key),
    });
  }

  /**
   * A message body → {kind, text}: "e2e" | "plain" (not an envelope: a
   * compat client, or an explicit unencrypted send) | "before" (sent before
   * this device existed) | "invalid" (tampered, or a key nobody knows).
   */
  async open(msg) {
    const env = parseEnvelope(msg.body);
    if (env === null) return { kind: "plain", text: String(msg.body) };
    if (env.invalid) return { kind: "invalid", text: "", reason: env.invalid };
    if (!this.device) return { kind: "before", text: "" };
    // Every device that may read it, the sending one included, is listed.
    const mine = env.keys.some((k) => k.device === this.device.id);
    if (!mine) return { kind: "before", text: "" };
    const senderKey = this.known.get(env.from_device);
    if (!senderKey) return { kind: "invalid", text: "", reason: "unknown sender device" };
    const r = await decryptMessage({
      body: msg.body,
      fromUser: msg.from,
      toUser: msg.to,
      clientId: msg.client_id,
      myDevice: { id: this.device.id, privateKey: this.device.privateKey },
      senderDevicePublicKey: senderKey,
    }).catch((e) => ({ kind: "invalid", reason: String(e) }));
    if (r.kind === "not_for_this_device") return { kind: "before", text: "" };
    if (r.kind === "invalid") return { kind: "invalid", text: "", reason: r.reason };
    return { kind: r.kind, text: String(r.text) };
  }
}

export { importPublicKey };
