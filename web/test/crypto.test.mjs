// Behaviour of web/assets/crypto.js under Node 20's runner (`node --test web/test/`):
// round trips, tampering, wrong keys, hostile envelopes, safety numbers.
// The fixed vectors are checked in vectors.test.mjs.

import { test } from "node:test";
import assert from "node:assert/strict";
import * as e2e from "../assets/crypto.js";

const ALICE = "Xk2P9a";
const BOB = "b0B123";

async function device(id) {
  return { id, ...(await e2e.generateDeviceKey()) };
}

/** alice's laptop (sender), alice's phone, bob's laptop, and carol's device (not a reader). */
async function scene() {
  const [laptop, phone, bob, carol] = await Promise.all(
    ["a1a1a1a1a1a1a1a1", "a2a2a2a2a2a2a2a2", "b1b1b1b1b1b1b1b1", "c1c1c1c1c1c1c1c1"].map(device),
  );
  const clientId = e2e.newClientId();
  const body = await e2e.encryptMessage({
    text: "meet at 6 <b>ok</b>",
    fromUser: ALICE,
    toUser: BOB,
    clientId,
    fromDevice: { id: laptop.id, privateKey: laptop.privateKey },
    recipients: [bob, phone, laptop].map((d) => ({ id: d.id, publicKey: d.publicRaw })),
  });
  const open = (reader, over = {}) =>
    e2e.decryptMessage({
      body,
      fromUser: ALICE,
      toUser: BOB,
      clientId,
      myDevice: { id: reader.id, privateKey: reader.privateKey },
      senderDevicePublicKey: laptop.publicRaw,
      ...over,
    });
  return { laptop, phone, bob, carol, clientId, body, open };
}

const isInvalid = (r) => assert.equal(r.kind, "invalid", JSON.stringify(r));

/** Changes the first character of a base64url string: a different, still canonical value. */
const flip = (s) => (s[0] === "A" ? "B" : "A") + s.slice(1);

function edit(body, change) {
  const env = JSON.parse(body);
  change(env);
  return JSON.stringify(env);
}

test("base64url round-trips and refuses padding, foreign characters and non-canonical text", () => {
  for (const n of [0, 1, 2, 3, 31, 32, 65, 65536]) {
    const bytes = e2e.randomBytes(n);
    assert.deepEqual(e2e.fromBase64Url(e2e.toBase64Url(bytes)), bytes);
  }
  assert.equal(e2e.toBase64Url(new Uint8Array([0xfb, 0xff])), "-_8");
  for (const bad of ["AA==", "A+/A", "A", "AB", "ab c", 42, null]) {
    assert.throws(() => e2e.fromBase64Url(bad), TypeError, String(bad));
  }
  assert.deepEqual(e2e.fromBase64Url("AA"), new Uint8Array([0]));
});

test("client ids are fresh, short and safe for the AAD", () => {
  const ids = new Set(Array.from({ length: 100 }, e2e.newClientId));
  assert.equal(ids.size, 100);
  for (const id of ids) assert.match(id, /^c[A-Za-z0-9_-]{22}$/);
});

test("a device key's private half cannot be exported; the public half is a 65-byte point", async () => {
  const d = await e2e.generateDeviceKey();
  assert.equal(d.privateKey.extractable, false);
  await assert.rejects(globalThis.crypto.subtle.exportKey("jwk", d.privateKey));
  const raw = e2e.fromBase64Url(d.publicRaw);
  assert.equal(raw.length, 65);
  assert.equal(raw[0], 4);
  assert.equal((await e2e.importPublicKey(d.publicRaw)).type, "public");
});

test("importPublicKey throws on anything but an uncompressed point on P-256", async () => {
  const good = e2e.fromBase64Url((await e2e.generateDeviceKey()).publicRaw);
  const offCurve = good.slice();
  offCurve[64] ^= 1;
  const compressed = new Uint8Array([2, ...good.subarray(1, 33)]);
  for (const bad of [offCurve, compressed, good.subarray(0, 64), new Uint8Array(65)]) {
    await assert.rejects(e2e.importPublicKey(e2e.toBase64Url(bad)));
  }
  await assert.rejects(e2e.importPublicKey("not base64!"));
});

test("the recipient's device and the sender's devices (other and own) read the message", async () => {
  const s = await scene();
  for (const reader of [s.bob, s.phone, s.laptop]) {
    assert.deepEqual(await s.open(reader), { kind: "e2e", text: "meet at 6 <b>ok</b>" });
  }
  assert.equal(e2e.parseEnvelope(s.body).from_device, s.laptop.id);
});

test("a device not in keys is told the message is not for it", async () => {
  const s = await scene();
  assert.deepEqual(await s.open(s.carol), { kind: "not_for_this_device" });
});

test("tampering with ct, iv, a key's wk, iv or epk, or its device id makes it invalid", async () => {
  const s = await scene();
  const other = await e2e.generateDeviceKey();
  const mine = (env) => env.keys.find((k) => k.device === s.bob.id);
  const tamperings = {
    ct: (env) => (env.ct = flip(env.ct)),
    "ct truncated": (env) => (env.ct = e2e.toBase64Url(e2e.fromBase64Url(env.ct).subarray(0, 20))),
    iv: (env) => (env.iv = flip(env.iv)),
    wk: (env) => (mine(env).wk = flip(mine(env).wk)),
    "key iv": (env) => (mine(env).iv = flip(mine(env).iv)),
    "epk (not a point)": (env) => (mine(env).epk = flip(mine(env).epk)),
    "epk (another valid point)": (env) => (mine(env).epk = other.publicRaw),
    "wrap moved to another entry": (env) => {
      const phone = env.keys.find((k) => k.device === s.phone.id);
      [phone.wk, mine(env).wk] = [mine(env).wk, phone.wk];
    },
  };
  for (const [what, change] of Object.entries(tamperings)) {
    const r = await s.open(s.bob, { body: edit(s.body, change) });
    isInvalid(r);
    assert.ok(r.reason, what);
  }
});

test("the metadata is bound: another from user, to user, client id or from_device is invalid", async () => {
  const s = await scene();
  isInvalid(await s.open(s.bob, { fromUser: "Mallo1" }));
  isInvalid(await s.open(s.bob, { toUser: "Carol1" }));
  isInvalid(await s.open(s.bob, { clientId: e2e.newClientId() }));
  // A server that rewrites from_device to another of alice's devices (and hands
  // that device's key) cannot make the message look as if sent from there.
  const moved = edit(s.body, (env) => (env.from_device = s.phone.id));
  isInvalid(await s.open(s.bob, { body: moved, senderDevicePublicKey: s.phone.publicRaw }));
  isInvalid(await s.open(s.bob, { body: moved }));
  // The same envelope replayed from bob to alice (the direction swapped).
  isInvalid(await s.open(s.phone, { fromUser: BOB, toUser: ALICE }));
});

test("a wrong, missing or malformed sender key is invalid, not an exception", async () => {
  const s = await scene();
  isInvalid(await s.open(s.bob, { senderDevicePublicKey: s.phone.publicRaw }));
  isInvalid(await s.open(s.bob, { senderDevicePublicKey: (await e2e.generateDeviceKey()).publicRaw }));
  for (const bad of [null, undefined, 7, "", "AAAA", s.bob.publicRaw.slice(1)]) {
    isInvalid(await s.open(s.bob, { senderDevicePublicKey: bad }));
  }
});

test("a stranger cannot forge a message from alice's device", async () => {
  const s = await scene();
  // Mallory knows every public key and the metadata, but not alice's private key.
  const mallory = await device(s.laptop.id);
  const forged = await e2e.encryptMessage({
    text: "send money",
    fromUser: ALICE,
    toUser: BOB,
    clientId: s.clientId,
    fromDevice: { id: s.laptop.id, privateKey: mallory.privateKey },
    recipients: [{ id: s.bob.id, publicKey: s.bob.publicRaw }],
  });
  isInvalid(await s.open(s.bob, { body: forged }));
});

test("bodies that are not envelopes are plaintext, shown as such", async () => {
  const s = await scene();
  for (const body of ["hello", "", "{not json", '{"text":"hi"}', "[1,2]", "null", '"sotto_e2e"', "  {}"]) {
    assert.equal(e2e.parseEnvelope(body), null, body);
    assert.deepEqual(await s.open(s.bob, { body }), { kind: "plain", text: body });
  }
});

test("hostile envelopes are refused with a reason and never throw", async () => {
  const s = await scene();
  const env = JSON.parse(s.body);
  const entry = env.keys[0];
  const many = Array.from({ length: 100000 }, (_, i) => ({ ...entry, device: i.toString(16).padStart(16, "0") }));
  const hostile = [
    { ...env, keys: many },
    { ...env, keys: [] },
    { ...env, keys: "all" },
    { ...env, keys: [entry, entry] },
    { ...env, keys: [null] },
    { ...env, keys: [[1, 2, 3, 4]] },
    { ...env, keys: [{ ...entry, extra: 1 }] },
    { ...env, keys: [{ ...entry, wk: 12345 }] },
    { ...env, keys: [{ ...entry, wk: entry.wk + "A" }] },
    { ...env, keys: [{ ...entry, epk: "!!" + entry.epk.slice(2) }] },
    { ...env, keys: [{ ...entry, iv: entry.iv + "==" }] },
    { ...env, keys: [{ ...entry, device: "B1B1B1B1B1B1B1B1" }] },
    { ...env, keys: [{ ...entry, device: { toString: 1 } }] },
    { ...env, sotto_e2e: 2 },
    { ...env, sotto_e2e: "1" },
    { ...env, from_device: 42 },
    { ...env, from_device: "a1a1|a1a1a1a1a1a" },
    { ...env, iv: e2e.toBase64Url(new Uint8Array(16)) },
    { ...env, ct: "" },
    { ...env, ct: ["x"] },
    { ...env, extra: true },
    { sotto_e2e: 1 },
    { sotto_e2e: null },
  ];
  for (const h of hostile) {
    const body = JSON.stringify(h);
    assert.ok(e2e.parseEnvelope(body).invalid, body.slice(0, 120));
    const r = await s.open(s.bob, { body });
    isInvalid(r);
    assert.equal(typeof r.reason, "string");
  }
  const huge = '{"sotto_e2e":1,"ct":"' + "A".repeat(e2e.LIMITS.maxBodyChars) + '"}';
  isInvalid(await s.open(s.bob, { body: huge }));
  isInvalid(await s.open(s.bob, { body: 42 }));
  isInvalid(await s.open(s.bob, { body: null }));
  // Metadata from the server is hostile too.
  isInvalid(await s.open(s.bob, { fromUser: `${ALICE}|x` }));
  isInvalid(await s.open(s.bob, { clientId: "x".repeat(65) }));
  isInvalid(await s.open(s.bob, { toUser: null }));
});

test("encrypting refuses ambiguous metadata, duplicate or too many recipients", async () => {
  const s = await scene();
  const base = {
    text: "hi", fromUser: ALICE, toUser: BOB, clientId: "c1",
    fromDevice: { id: s.laptop.id, privateKey: s.laptop.privateKey },
    recipients: [{ id: s.bob.id, publicKey: s.bob.publicRaw }],
  };
  await e2e.encryptMessage(base);
  const r = base.recipients[0];
  for (const over of [
    { clientId: "a|b" }, { fromUser: "" }, { text: 5 }, { recipients: [] }, { recipients: [r, r] },
    { recipients: [{ ...r, publicKey: "AAAA" }] }, { fromDevice: { id: "A1", privateKey: s.laptop.privateKey } },
    { recipients: Array.from({ length: 65 }, (_, i) => ({ ...r, id: i.toString(16).padStart(16, "0") })) },
  ]) {
    await assert.rejects(e2e.encryptMessage({ ...base, ...over }), JSON.stringify(Object.keys(over)));
  }
});

test("each message gets fresh randomness: the same text encrypts differently", async () => {
  const s = await scene();
  const again = await e2e.encryptMessage({
    text: "meet at 6 <b>ok</b>", fromUser: ALICE, toUser: BOB, clientId: s.clientId,
    fromDevice: { id: s.laptop.id, privateKey: s.laptop.privateKey },
    recipients: [s.bob, s.phone, s.laptop].map((d) => ({ id: d.id, publicKey: d.publicRaw })),
  });
  const [a, b] = [JSON.parse(s.body), JSON.parse(again)];
  assert.notEqual(a.iv, b.iv);
  assert.notEqual(a.ct, b.ct);
  assert.notEqual(a.keys[0].epk, b.keys[0].epk);
});

/** The safety number of user ids and lists of generateDeviceKey() results. */
const sn = (userA, keysA, userB, keysB) =>
  e2e.safetyNumber({ userA, keysA: keysA.map((k) => k.publicRaw), userB, keysB: keysB.map((k) => k.publicRaw) });

test("safety numbers: 60 digits, the same from both sides and in any key order", async () => {
  const [a1, a2, b1] = await Promise.all([1, 2, 3].map(() => e2e.generateDeviceKey()));
  const n = await sn(ALICE, [a1, a2], BOB, [b1]);
  assert.match(n, /^\d{5}( \d{5}){11}$/);
  assert.equal(await sn(BOB, [b1], ALICE, [a2, a1]), n);
  assert.equal(await sn(ALICE, [a2, a1, a2], BOB, [b1]), n);
});

test("safety numbers change when any key is swapped, added or removed, or a user id changes", async () => {
  const [a1, a2, b1, x] = await Promise.all([1, 2, 3, 4].map(() => e2e.generateDeviceKey()));
  const base = await sn(ALICE, [a1, a2], BOB, [b1]);
  const variants = [
    await sn(ALICE, [x, a2], BOB, [b1]),
    await sn(ALICE, [a1, x], BOB, [b1]),
    await sn(ALICE, [a1, a2], BOB, [x]),
    await sn(ALICE, [a1, a2, x], BOB, [b1]),
    await sn(ALICE, [a1, a2], BOB, [b1, x]),
    await sn(ALICE, [a1], BOB, [b1]),
    await sn("Xk2P9b", [a1, a2], BOB, [b1]),
    // Moving a key from one user to the other changes it too.
    await sn(ALICE, [a1], BOB, [b1, a2]),
  ];
  for (const v of variants) assert.notEqual(v, base);
  assert.equal(new Set(variants).size, variants.length);
});

test("safety numbers refuse empty, oversized or malformed key lists", async () => {
  const k = (await e2e.generateDeviceKey()).publicRaw;
  for (const keysB of [[], "k", [k.slice(1)], Array(65).fill(k), [null]]) {
    await assert.rejects(e2e.safetyNumber({ userA: ALICE, keysA: [k], userB: BOB, keysB }));
  }
});
