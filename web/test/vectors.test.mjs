// The committed vectors (web/test/vectors.json) must reproduce exactly: any
// altered key, input, intermediate or expected output makes a test here fail.
// Another client (the planned terminal client) can check itself the same way.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as e2e from "../assets/crypto.js";

const vectors = JSON.parse(readFileSync(new URL("./vectors.json", import.meta.url), "utf8"));
const subtle = globalThis.crypto.subtle;
const ECDH = { name: "ECDH", namedCurve: "P-256" };

const importPrivate = (jwk) => subtle.importKey("jwk", jwk, ECDH, false, ["deriveBits"]);

async function ecdh(jwk, publicB64u) {
  const pub = await e2e.importPublicKey(publicB64u);
  return new Uint8Array(await subtle.deriveBits({ name: "ECDH", public: pub }, await importPrivate(jwk), 256));
}

/** A published key's `public` must be the point of its `jwk` (0x04 ‖ x ‖ y). */
function assertPublicMatches(key) {
  const raw = new Uint8Array([4, ...e2e.fromBase64Url(key.jwk.x), ...e2e.fromBase64Url(key.jwk.y)]);
  assert.equal(e2e.toBase64Url(raw), key.public);
}

/** Every check of one message vector; rejects on the first mismatch. */
async function checkMessage(vectors, v) {
  const sender = vectors.devices[v.from_device];
  const aad = e2e.contentAad({ fromUser: v.from_user, toUser: v.to_user, clientId: v.client_id, fromDevice: sender.id });
  assert.equal(v.aad, aad);
  for (const w of v.wraps) {
    const reader = vectors.devices[w.device];
    assertPublicMatches(w.ephemeral);
    const ephemeralSecret = await ecdh(w.ephemeral.jwk, reader.public);
    const staticSecret = await ecdh(sender.jwk, reader.public);
    // Both ends of each ECDH agree: the reader computes the same secrets.
    assert.deepEqual(await ecdh(reader.jwk, w.ephemeral.public), ephemeralSecret);
    assert.deepEqual(await ecdh(reader.jwk, sender.public), staticSecret);
    assert.equal(e2e.toBase64Url(ephemeralSecret), w.ecdh_ephemeral);
    assert.equal(e2e.toBase64Url(staticSecret), w.ecdh_static);
    const wrapKey = await e2e.deriveWrapKeyBytes({ ephemeralSecret, staticSecret, fromDevice: sender.id, deviceId: reader.id });
    assert.equal(e2e.toBase64Url(wrapKey), w.wrap_key);
    assert.equal(e2e.wrapAad(aad, reader.id), w.wrap_aad);
  }

  const body = await e2e.encryptWith({
    text: v.text,
    fromUser: v.from_user,
    toUser: v.to_user,
    clientId: v.client_id,
    fromDevice: { id: sender.id, privateKey: await importPrivate(sender.jwk) },
    contentKey: e2e.fromBase64Url(v.content_key),
    iv: e2e.fromBase64Url(v.iv),
    recipients: await Promise.all(v.wraps.map(async (w) => ({
      id: vectors.devices[w.device].id,
      publicKey: vectors.devices[w.device].public,
      ephemeral: { privateKey: await importPrivate(w.ephemeral.jwk), publicRaw: w.ephemeral.public },
      iv: e2e.fromBase64Url(w.iv),
    }))),
  });
  assert.equal(body, v.body);

  // Every listed device decrypts it; every other device is told it is not theirs.
  const args = {
    body: v.body, fromUser: v.from_user, toUser: v.to_user, clientId: v.client_id, senderDevicePublicKey: sender.public,
  };
  assert.equal(e2e.parseEnvelope(v.body).from_device, sender.id);
  const readers = new Set(v.wraps.map((w) => w.device));
  for (const [name, d] of Object.entries(vectors.devices)) {
    const myDevice = { id: d.id, privateKey: await importPrivate(d.jwk) };
    const got = await e2e.decryptMessage({ ...args, myDevice });
    assert.deepEqual(got, readers.has(name) ? { kind: "e2e", text: v.text } : { kind: "not_for_this_device" }, name);
  }
}

/** Every check of one safety-number vector, from both sides. */
async function checkSafety(s) {
  assert.equal(await e2e.userFingerprint(s.user_a, s.keys_a), s.fingerprint_a);
  assert.equal(await e2e.userFingerprint(s.user_b, s.keys_b), s.fingerprint_b);
  const ab = await e2e.safetyNumber({ userA: s.user_a, keysA: s.keys_a, userB: s.user_b, keysB: s.keys_b });
  const ba = await e2e.safetyNumber({ userA: s.user_b, keysA: s.keys_b, userB: s.user_a, keysB: s.keys_a });
  assert.equal(ab, s.number);
  assert.equal(ba, s.number);
}

test("vectors use this module's scheme", () => {
  assert.equal(vectors.scheme, e2e.SCHEME);
  assert.ok(vectors.messages.length >= 3 && vectors.safety_numbers.length >= 3);
});

/** Every device's public key is the point of its private key; ids are 16 hex digits. */
function checkDevices(vectors) {
  for (const d of Object.values(vectors.devices)) {
    assertPublicMatches(d);
    assert.match(d.id, /^[0-9a-f]{16}$/);
  }
}

test("every device's public key is the point of its private key", () => checkDevices(vectors));

for (const v of vectors.messages) {
  test(`message vector "${v.name}" reproduces exactly`, () => checkMessage(vectors, v));
}

for (const s of vectors.safety_numbers) {
  test(`safety number "${s.name}" reproduces from both sides`, () => checkSafety(s));
}

test("the safety numbers of the vectors differ from one another", () => {
  const numbers = vectors.safety_numbers.map((s) => s.number);
  assert.equal(new Set(numbers).size, numbers.length);
});

/** [path, parent object, key] of every string in `value` (labels excluded). */
function* leaves(value, path = []) {
  for (const [k, v] of Object.entries(value)) {
    if (k === "name" || k === "about") continue;
    if (typeof v === "string") yield [[...path, k], value, k];
    else if (v && typeof v === "object") yield* leaves(v, [...path, k]);
  }
}

// The acceptance rule "the tests fail when a vector is altered", checked for
// every field rather than for one hand-picked example.
test("altering any single field of the vectors makes their checks fail", async () => {
  const checkAll = async (vs) => {
    checkDevices(vs);
    for (const v of vs.messages) await checkMessage(vs, v);
    for (const s of vs.safety_numbers) await checkSafety(s);
  };
  let count = 0;
  for (const section of ["devices", "messages", "safety_numbers"]) {
    const paths = [...leaves(vectors[section])].map(([path]) => path);
    for (const path of paths) {
      const copy = structuredClone(vectors);
      const [parent, key] = [path.slice(0, -1).reduce((o, k) => o[k], copy[section]), path.at(-1)];
      const old = parent[key];
      parent[key] = (old[0] === "A" ? "B" : "A") + old.slice(1);
      await assert.rejects(checkAll(copy), undefined, `${section}.${path.join(".")} altered, still passes`);
      count++;
    }
  }
  assert.ok(count > 100, `only ${count} fields`);
});
