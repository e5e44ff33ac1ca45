// sotto's end-to-end encryption, in one file a reviewer can read in one sitting.
//
// Only WebCrypto (globalThis.crypto.subtle, getRandomValues): no library and
// no primitive written by hand. No DOM access, so the same file runs in the
// browser and under Node 20 (web/test/crypto.test.mjs, web/test/vectors.json).
// The scheme, its diagram and its limits are in docs/E2E.md; in short:
//
//   every browser is a *device* with a P-256 ECDH key pair (private key
//   non-extractable). A message gets a fresh 32-byte content key that
//   encrypts {"text": …} with AES-256-GCM; the content key is wrapped once
//   per reading device D with AES-256-GCM under
//     HKDF-SHA-256(ECDH(ephemeral, D) ‖ ECDH(sender device, D),
//                  salt = 32 zero bytes, info = "sotto-e2e-v1 wrap|<from_device>|<D>")
//   and every AES-GCM call authenticates who sends to whom, the client id and
//   the sending device (see contentAad / wrapAad).
//
// Who reads: pass in `recipients` every device of the recipient and every
// device of the sender, *this one included*: a device not listed cannot read
// the message later, not even the one that sent it (history after a reload).

export const SCHEME = "sotto-e2e-v1";
export const VERSION = 1;

/** Bounds on what decryptMessage accepts; anything larger is "invalid". */
export const LIMITS = Object.freeze({
  maxBodyChars: 1024 * 1024, // the server's frames are 64 KiB; this is a backstop
  maxKeys: 64, // the server allows 16 devices per user by default: 2·16 fits
  maxFieldBytes: 64, // user ids, client ids (the server allows 1–64 bytes)
  safetyIterations: 5200, // as Signal: slows a search for a colliding number
});

const ECDH = Object.freeze({ name: "ECDH", namedCurve: "P-256" });
const POINT_BYTES = 65; // uncompressed P-256 point: 0x04 ‖ x ‖ y
const KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const DEVICE_ID = /^[0-9a-f]{16}$/;
const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

function subtle() {
  const s = globalThis.crypto?.subtle;
  // Browsers only expose crypto.subtle on secure origins (https, localhost).
  if (!s) throw new Error("WebCrypto is unavailable: open sotto over https or on localhost");
  return s;
}

export function randomBytes(n) {
  return globalThis.crypto.getRandomValues(new Uint8Array(n));
}

// ---------------------------------------------------------------- base64url

/** Bytes → base64url without padding (RFC 4648 §5). */
export function toBase64Url(bytes) {
  const u8 = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let bin = "";
  for (let i = 0; i < u8.length; i += 0x8000) {
    bin += String.fromCharCode(...u8.subarray(i, i + 0x8000));
  }
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/**
 * base64url (no padding) → bytes. Throws on anything else, including
 * non-canonical encodings (stray low bits), so each byte string has exactly
 * one spelling and an envelope cannot be altered without changing its bytes.
 */
export function fromBase64Url(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) {
    throw new TypeError("not base64url");
  }
  const bin = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
  const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
  if (toBase64Url(bytes) !== text) throw new TypeError("not canonical base64url");
  return bytes;
}

/** A fresh client id for a `send` frame: "c" + 16 random bytes, 23 characters. */
export function newClientId() {
  return "c" + toBase64Url(randomBytes(16));
}

// ---------------------------------------------------------------- keys

/** A new device identity. Store the result in IndexedDB as is (CryptoKeys clone). */
export async function generateDeviceKey() {
  const pair = await subtle().generateKey(ECDH, false, ["deriveBits"]);
  const publicRaw = toBase64Url(await subtle().exportKey("raw", pair.publicKey));
  return { privateKey: pair.privateKey, publicKey: pair.publicKey, publicRaw };
}

/** base64url of a 65-byte uncompressed P-256 point → CryptoKey. Throws on a bad key. */
export async function importPublicKey(b64u) {
  const raw = fromBase64Url(b64u);
  if (raw.length !== POINT_BYTES || raw[0] !== 4) throw new TypeError("not an uncompressed P-256 point");
  return subtle().importKey("raw", raw, ECDH, true, []); // also checks the point is on the curve
}

async function ecdh(privateKey, publicKey) {
  return new Uint8Array(await subtle().deriveBits({ name: "ECDH", public: publicKey }, privateKey, 256));
}

// ---------------------------------------------------------------- the scheme's pieces

/** Associated data of the message body: binds sender, recipient, client id, device, version. */
export function contentAad({ fromUser, toUser, clientId, fromDevice }) {
  return `${SCHEME}|${fromUser}|${toUser}|${clientId}|${fromDevice}`;
}

/** Associated data of the content key wrapped for device `deviceId`. */
export function wrapAad(aad, deviceId) {
  return `${aad}|${deviceId}`;
}

/** The 32-byte wrap key for one (sending device, reading device) pair and one ephemeral key. */
export async function deriveWrapKeyBytes({ ephemeralSecret, staticSecret, fromDevice, deviceId }) {
  const ikm = new Uint8Array(ephemeralSecret.length + staticSecret.length);
  ikm.set(ephemeralSecret, 0);
  ikm.set(staticSecret, ephemeralSecret.length);
  const hkdf = await subtle().importKey("raw", ikm, "HKDF", false, ["deriveBits"]);
  const params = {
    name: "HKDF",
    hash: "SHA-256",
    salt: new Uint8Array(32),
    info: utf8.encode(`${SCHEME} wrap|${fromDevice}|${deviceId}`),
  };
  return new Uint8Array(await subtle().deriveBits(params, hkdf, 256));
}

async function aesGcm(op, keyBytes, iv, aad, data) {
  const key = await subtle().importKey("raw", keyBytes, "AES-GCM", false, [op]);
  const params = { name: "AES-GCM", iv, additionalData: utf8.encode(aad), tagLength: 128 };
  return new Uint8Array(await subtle()[op](params, key, data));
}

/** Throws unless `value` may go into associated data unambiguously. */
function checkField(name, value) {
  const ok =
    typeof value === "string" &&
    value.length > 0 &&
    !value.includes("|") &&
    (value.isWellFormed?.() ?? true) &&
    utf8.encode(value).length <= LIMITS.maxFieldBytes;
  if (!ok) throw new TypeError(`${name} must be 1–${LIMITS.maxFieldBytes} bytes of text without "|"`);
}

function checkDeviceId(name, value) {
  if (typeof value !== "string" || !DEVICE_ID.test(value)) {
    throw new TypeError(`${name} must be 16 lowercase hex digits`);
  }
}

// ---------------------------------------------------------------- encrypt

/**
 * Deterministic core of encryptMessage: every random value comes in as an
 * argument (contentKey: 32 bytes, iv: 12 bytes; per recipient an ephemeral
 * {privateKey, publicRaw} and a 12-byte iv). Used by the vectors; real
 * messages go through encryptMessage. Throws on bad arguments (they are ours).
 */
export async function encryptWith({ text, fromUser, toUser, clientId, fromDevice, contentKey, iv, recipients }) {
  if (typeof text !== "string") throw new TypeError("text must be a string");
  checkField("fromUser", fromUser);
  checkField("toUser", toUser);
  checkField("clientId", clientId);
  checkDeviceId("fromDevice.id", fromDevice?.id);
  if (contentKey?.length !== KEY_BYTES || iv?.length !== IV_BYTES) throw new TypeError("bad content key or iv");
  if (!Array.isArray(recipients) || recipients.length < 1 || recipients.length > LIMITS.maxKeys) {
    throw new TypeError(`recipients must list 1–${LIMITS.maxKeys} devices`);
  }
  const seen = new Set();
  for (const r of recipients) {
    checkDeviceId("recipient id", r?.id);
    if (seen.has(r.id)) throw new TypeError(`recipient ${r.id} listed twice`);
    seen.add(r.id);
  }

  const aad = contentAad({ fromUser, toUser, clientId, fromDevice: fromDevice.id });
  const ct = await aesGcm("encrypt", contentKey, iv, aad, utf8.encode(JSON.stringify({ text })));
  const keys = [];
  for (const r of recipients) {
    const device = await importPublicKey(r.publicKey);
    const wrapKey = await deriveWrapKeyBytes({
      ephemeralSecret: await ecdh(r.ephemeral.privateKey, device),
      staticSecret: await ecdh(fromDevice.privateKey, device),
      fromDevice: fromDevice.id,
      deviceId: r.id,
    });
    const wk = await aesGcm("encrypt", wrapKey, r.iv, wrapAad(aad, r.id), contentKey);
    keys.push({ device: r.id, epk: r.ephemeral.publicRaw, iv: toBase64Url(r.iv), wk: toBase64Url(wk) });
  }
  const envelope = { sotto_e2e: VERSION, from_device: fromDevice.id, iv: toBase64Url(iv), ct: toBase64Url(ct), keys };
  return JSON.stringify(envelope);
}

/**
 * Encrypts `text` for `recipients` ([{id, publicKey: b64u}], see the note at
 * the top: include this device) and returns the `send.body` string.
 * `fromDevice` is {id, privateKey} of this device.
 */
export async function encryptMessage({ text, fromUser, toUser, clientId, fromDevice, recipients }) {
  const withRandomness = [];
  // Out-of-bounds lists go on unchanged, so encryptWith refuses them before any key is made.
  const bounded = Array.isArray(recipients) && recipients.length <= LIMITS.maxKeys;
  for (const r of bounded ? recipients : []) {
    const eph = await subtle().generateKey(ECDH, false, ["deriveBits"]);
    const publicRaw = toBase64Url(await subtle().exportKey("raw", eph.publicKey));
    withRandomness.push({ ...r, ephemeral: { privateKey: eph.privateKey, publicRaw }, iv: randomBytes(IV_BYTES) });
  }
  return encryptWith({
    text, fromUser, toUser, clientId, fromDevice,
    contentKey: randomBytes(KEY_BYTES),
    iv: randomBytes(IV_BYTES),
    recipients: bounded ? withRandomness : recipients,
  });
}

// ---------------------------------------------------------------- parse (hostile input)

const ENVELOPE_FIELDS = ["sotto_e2e", "from_device", "iv", "ct", "keys"];
const KEY_FIELDS = ["device", "epk", "iv", "wk"];

function hasExactly(obj, fields) {
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) return false;
  const own = Object.keys(obj);
  return own.length === fields.length && fields.every((f) => Object.hasOwn(obj, f));
}

function bytesOk(value, min, max) {
  try {
    const n = fromBase64Url(value).length;
    return n >= min && n <= max;
  } catch {
    return false;
  }
}

/** The reason a parsed envelope is malformed, or null when every field checks out. */
function envelopeProblem(env) {
  if (!hasExactly(env, ENVELOPE_FIELDS)) return "envelope fields are not exactly " + ENVELOPE_FIELDS.join(", ");
  if (env.sotto_e2e !== VERSION) return "unknown envelope version";
  if (typeof env.from_device !== "string" || !DEVICE_ID.test(env.from_device)) return "bad from_device";
  if (!bytesOk(env.iv, IV_BYTES, IV_BYTES)) return "bad iv";
  if (!bytesOk(env.ct, TAG_BYTES, LIMITS.maxBodyChars)) return "bad ct";
  if (!Array.isArray(env.keys) || env.keys.length < 1 || env.keys.length > LIMITS.maxKeys) {
    return `keys must hold 1–${LIMITS.maxKeys} entries`;
  }
  const seen = new Set();
  for (const k of env.keys) {
    if (!hasExactly(k, KEY_FIELDS)) return "key entry fields are not exactly " + KEY_FIELDS.join(", ");
    if (typeof k.device !== "string" || !DEVICE_ID.test(k.device)) return "bad key device";
    if (seen.has(k.device)) return "a device is listed twice";
    seen.add(k.device);
    if (!bytesOk(k.epk, POINT_BYTES, POINT_BYTES)) return "bad epk";
    if (!bytesOk(k.iv, IV_BYTES, IV_BYTES)) return "bad key iv";
    if (!bytesOk(k.wk, KEY_BYTES + TAG_BYTES, KEY_BYTES + TAG_BYTES)) return "bad wk";
  }
  return null;
}

/**
 * Classifies a message body. Returns null for plaintext (anything that is not
 * a JSON object with a "sotto_e2e" member: compat clients, explicit
 * unencrypted sends); `{invalid: reason}` for a malformed envelope; otherwise
 * the checked envelope ({sotto_e2e, from_device, iv, ct, keys}). Never throws.
 */
export function parseEnvelope(body) {
  if (typeof body !== "string") return { invalid: "body is not a string" };
  if (!/^\s*\{/.test(body)) return null;
  if (body.length > LIMITS.maxBodyChars) {
    return /^\s*\{\s*"sotto_e2e"/.test(body) ? { invalid: "envelope too large" } : null;
  }
  let env;
  try {
    env = JSON.parse(body);
  } catch {
    return null;
  }
  if (env === null || typeof env !== "object" || Array.isArray(env) || !Object.hasOwn(env, "sotto_e2e")) return null;
  const problem = envelopeProblem(env);
  if (problem) return { invalid: problem };
  const keys = env.keys.map((k) => ({ device: k.device, epk: k.epk, iv: k.iv, wk: k.wk }));
  return { sotto_e2e: env.sotto_e2e, from_device: env.from_device, iv: env.iv, ct: env.ct, keys };
}

// ---------------------------------------------------------------- decrypt

const invalid = (reason) => ({ kind: "invalid", reason });

/**
 * Opens a message body on this device. fromUser, toUser and clientId are the
 * message's own fields as the server delivered them (from, to, client_id);
 * senderDevicePublicKey is the pinned key of the device named by
 * parseEnvelope(body).from_device, looked up among the devices of the
 * message's `from` user only (null when not there): that lookup is what ties
 * a device to a person, since a sender chooses the AAD it encrypts under.
 * Never throws on what came from the network: a bad body, key or field
 * yields {kind: "invalid"}.
 */
export async function decryptMessage({ body, fromUser, toUser, clientId, myDevice, senderDevicePublicKey }) {
  checkDeviceId("myDevice.id", myDevice?.id);
  const env = parseEnvelope(body);
  if (env === null) return { kind: "plain", text: body };
  if (env.invalid) return invalid(env.invalid);
  try {
    checkField("from user", fromUser);
    checkField("to user", toUser);
    checkField("client id", clientId);
  } catch (e) {
    return invalid(e.message);
  }
  const entry = env.keys.find((k) => k.device === myDevice.id);
  if (!entry) return { kind: "not_for_this_device" };
  if (typeof senderDevicePublicKey !== "string") return invalid("unknown sender device");

  let senderKey, ephemeral;
  try {
    senderKey = await importPublicKey(senderDevicePublicKey);
    ephemeral = await importPublicKey(entry.epk);
  } catch {
    return invalid(senderKey ? "epk is not a P-256 point" : "sender key is not a P-256 point");
  }
  const aad = contentAad({ fromUser, toUser, clientId, fromDevice: env.from_device });
  let contentKey;
  try {
    const wrapKey = await deriveWrapKeyBytes({
      ephemeralSecret: await ecdh(myDevice.privateKey, ephemeral),
      staticSecret: await ecdh(myDevice.privateKey, senderKey),
      fromDevice: env.from_device,
      deviceId: myDevice.id,
    });
    const iv = fromBase64Url(entry.iv);
    contentKey = await aesGcm("decrypt", wrapKey, iv, wrapAad(aad, myDevice.id), fromBase64Url(entry.wk));
  } catch {
    return invalid("content key did not unwrap (wrong sender key, altered envelope or metadata)");
  }
  try {
    const plain = await aesGcm("decrypt", contentKey, fromBase64Url(env.iv), aad, fromBase64Url(env.ct));
    const message = JSON.parse(strictUtf8.decode(plain));
    if (typeof message?.text !== "string") return invalid("plaintext has no text");
    return { kind: "e2e", text: message.text };
  } catch {
    return invalid("body did not decrypt (altered ct, iv or metadata)");
  }
}

// ---------------------------------------------------------------- safety number

function u32(n) {
  return [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
}

function compareBytes(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

/**
 * One user's half of a safety number: 30 digits over their user id and the
 * set of their device keys (sorted, duplicates dropped, so order is irrelevant).
 * Throws on a malformed key or an empty or oversized key list.
 */
export async function userFingerprint(user, keys) {
  checkField("user", user);
  if (!Array.isArray(keys) || keys.length < 1 || keys.length > LIMITS.maxKeys) {
    throw new TypeError(`a safety number needs 1–${LIMITS.maxKeys} device keys`);
  }
  const unique = [...new Set(keys)];
  for (const k of unique) await importPublicKey(k); // every key must be a real point
  const raws = unique.map(fromBase64Url).sort(compareBytes);
  const userBytes = utf8.encode(user);
  const blob = new Uint8Array([
    ...u32(userBytes.length), ...userBytes, ...u32(raws.length), ...raws.flatMap((r) => [...r]),
  ]);
  // Iterated like Signal's fingerprints, but as one native PBKDF2 call rather
  // than thousands of awaited digests (measured: half a second under Node).
  const material = await subtle().importKey("raw", blob, "PBKDF2", false, ["deriveBits"]);
  const salt = utf8.encode(`${SCHEME} safety`);
  const params = { name: "PBKDF2", hash: "SHA-512", salt, iterations: LIMITS.safetyIterations };
  const hash = new Uint8Array(await subtle().deriveBits(params, material, 240));
  // As Signal: six 5-byte big-endian chunks, each mod 100000 → 5 digits.
  let digits = "";
  for (let c = 0; c < 6; c++) {
    let n = 0;
    for (let i = 0; i < 5; i++) n = n * 256 + hash[c * 5 + i];
    digits += String(n % 100000).padStart(5, "0");
  }
  return digits;
}

/**
 * The safety number of a conversation: 60 digits in groups of five, the two
 * users' fingerprints in sorted order, so both sides see the same digits.
 * It changes when any device key of either user is added, removed or swapped.
 */
export async function safetyNumber({ userA, keysA, userB, keysB }) {
  const halves = [await userFingerprint(userA, keysA), await userFingerprint(userB, keysB)].sort();
  return halves.join("").match(/\d{5}/g).join(" ");
}
