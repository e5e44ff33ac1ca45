// Regenerates web/test/vectors.json: `node web/test/make-vectors.mjs --write`.
//
// `node --test web/test/` also loads this file (it runs every script under a
// test/ folder); without --write it does nothing, so the tests never rewrite
// the vectors they check.
//
// Every run draws new keys and randomness, so the committed file is the
// reference and this script is only needed to change the scheme (which must
// then also change SCHEME/VERSION). The tests never run it: they read the JSON.
// Private keys here are extractable (JWK) because a vector must publish them;
// real device keys never are.

import { writeFileSync } from "node:fs";
import * as e2e from "../assets/crypto.js";

const subtle = globalThis.crypto.subtle;
const ECDH = { name: "ECDH", namedCurve: "P-256" };

async function newKey() {
  const pair = await subtle.generateKey(ECDH, true, ["deriveBits"]);
  const jwk = await subtle.exportKey("jwk", pair.privateKey);
  const pub = e2e.toBase64Url(await subtle.exportKey("raw", pair.publicKey));
  return { jwk: { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y, d: jwk.d }, public: pub };
}

const hexId = () => [...e2e.randomBytes(8)].map((b) => b.toString(16).padStart(2, "0")).join("");

async function importPrivate(jwk) {
  return subtle.importKey("jwk", jwk, ECDH, false, ["deriveBits"]);
}

async function ecdh(privJwk, pubB64u) {
  const pub = await e2e.importPublicKey(pubB64u);
  const bits = await subtle.deriveBits({ name: "ECDH", public: pub }, await importPrivate(privJwk), 256);
  return new Uint8Array(bits);
}

async function message(devices, { name, from, fromUser, toUser, text, readers }) {
  const clientId = e2e.newClientId();
  const contentKey = e2e.randomBytes(32);
  const iv = e2e.randomBytes(12);
  const sender = devices[from];
  const aad = e2e.contentAad({ fromUser, toUser, clientId, fromDevice: sender.id });
  const wraps = [];
  for (const reader of readers) {
    const d = devices[reader];
    const eph = await newKey();
    const ephemeralSecret = await ecdh(eph.jwk, d.public);
    const staticSecret = await ecdh(sender.jwk, d.public);
    const wrapKey = await e2e.deriveWrapKeyBytes({ ephemeralSecret, staticSecret, fromDevice: sender.id, deviceId: d.id });
    wraps.push({
      device: reader,
      ephemeral: eph,
      iv: e2e.toBase64Url(e2e.randomBytes(12)),
      ecdh_ephemeral: e2e.toBase64Url(ephemeralSecret),
      ecdh_static: e2e.toBase64Url(staticSecret),
      wrap_key: e2e.toBase64Url(wrapKey),
      wrap_aad: e2e.wrapAad(aad, d.id),
    });
  }
  const body = await e2e.encryptWith({
    text, fromUser, toUser, clientId,
    fromDevice: { id: sender.id, privateKey: await importPrivate(sender.jwk) },
    contentKey, iv,
    recipients: await Promise.all(wraps.map(async (w) => ({
      id: devices[w.device].id,
      publicKey: devices[w.device].public,
      ephemeral: { privateKey: await importPrivate(w.ephemeral.jwk), publicRaw: w.ephemeral.public },
      iv: e2e.fromBase64Url(w.iv),
    }))),
  });
  return {
    name, from_user: fromUser, to_user: toUser, client_id: clientId, from_device: from, text,
    content_key: e2e.toBase64Url(contentKey), iv: e2e.toBase64Url(iv), aad, wraps, body,
  };
}

async function safety(devices, name, userA, a, userB, b) {
  const keysA = a.map((n) => devices[n].public);
  const keysB = b.map((n) => devices[n].public);
  return {
    name, user_a: userA, keys_a: keysA, user_b: userB, keys_b: keysB,
    fingerprint_a: await e2e.userFingerprint(userA, keysA),
    fingerprint_b: await e2e.userFingerprint(userB, keysB),
    number: await e2e.safetyNumber({ userA, keysA, userB, keysB }),
  };
}

async function main() {
  const devices = {};
  for (const name of ["alice_laptop", "alice_phone", "bob_laptop", "bob_new"]) {
    devices[name] = { id: hexId(), ...(await newKey()) };
  }
  const alice = "Xk2P9a";
  const bob = "b0B123";

  const vectors = {
    scheme: e2e.SCHEME,
    about: "Fixed vectors for sotto's E2E scheme (docs/E2E.md). Keys are P-256: `public` is base64url " +
      "(no padding) of the 65-byte uncompressed point, `jwk` the private key (extractable here only). " +
      "`body` is the exact send.body encryptWith produces from these inputs; ecdh_* and wrap_key are " +
      "intermediates for debugging another implementation. Wraps are listed in the order of `keys`.",
    devices,
    messages: [
      await message(devices, {
        name: "alice's laptop to bob, readable by bob and both of alice's devices",
        from: "alice_laptop", fromUser: alice, toUser: bob, text: "hello bob",
        readers: ["bob_laptop", "alice_phone", "alice_laptop"],
      }),
      await message(devices, {
        name: "bob to alice: markup, non-ASCII and an emoji stay text",
        from: "bob_laptop", fromUser: bob, toUser: alice, text: "<img src=x onerror=alert(1)> grüße 🔐\n\"q\"",
        readers: ["alice_laptop", "alice_phone", "bob_laptop"],
      }),
      await message(devices, {
        name: "an empty text from alice's phone",
        from: "alice_phone", fromUser: alice, toUser: bob, text: "",
        readers: ["bob_laptop", "alice_laptop"],
      }),
    ],
    safety_numbers: [
      await safety(devices, "alice (two devices) and bob (one)", alice, ["alice_laptop", "alice_phone"], bob, ["bob_laptop"]),
      await safety(devices, "bob gained a device", alice, ["alice_laptop", "alice_phone"], bob, ["bob_laptop", "bob_new"]),
      await safety(devices, "alice with one device", alice, ["alice_laptop"], bob, ["bob_laptop"]),
    ],
  };

  const path = new URL("./vectors.json", import.meta.url);
  writeFileSync(path, JSON.stringify(vectors, null, 2) + "\n");
  console.log(`wrote ${path.pathname}`);
}

if (process.argv.includes("--write")) await main();
