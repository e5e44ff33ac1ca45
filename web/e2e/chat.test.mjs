// Two people talk; one adds a second device; a contact logs in from a new
// browser; a hostile message; logout. Each step asserts what the person
// sees. At the end the server's database holds none of the plaintexts.

import { test } from "node:test";
import assert from "node:assert/strict";
import * as H from "./harness.mjs";

const skip = H.unavailable();
const XSS = "<img src=x onerror=alert(1)>";

test("conversations between browsers, end to end", { skip: skip || false, timeout: 150000 }, async (t) => {
  const server = await H.Sotto.start();
  const browser = await H.launch();
  t.after(async () => {
    await browser.close();
    await server.close();
  });
  const said = [];
  const alice = await H.person(browser, server);
  await H.register(alice, "alice");
  const bob = await H.person(browser, server);
  await H.register(bob, "bob");

  await t.test("two users talk both ways; states go to delivered and read", async () => {
    await H.openConversation(alice, "bob");
    said.push("hello bob, how are you?");
    await H.send(alice, said.at(-1));
    await H.bubble(alice, said.at(-1)).waitFor();
    // bob is online but has not opened the conversation: delivered, unread.
    await H.expectState(alice, said.at(-1), "Delivered");
    await H.contact(bob, "alice").locator(".badge", { hasText: "1" }).waitFor();
    assert.equal(await bob.title(), "(1) sotto");
    await H.contact(bob, "alice").locator(".preview", { hasText: said.at(-1) }).waitFor();
    await H.openConversation(bob, "alice");
    await H.bubble(bob, said.at(-1)).waitFor();
    await H.expectState(alice, said.at(-1), "Read");
    assert.equal(await bob.title(), "sotto");
    said.push("fine, thanks alice");
    await H.send(bob, said.at(-1));
    await H.bubble(alice, said.at(-1)).waitFor();
    await H.expectState(bob, said.at(-1), "Read");
    assert.deepEqual(await H.shownTexts(alice), said);
    assert.deepEqual(await H.shownTexts(bob), said);
  });

  await t.test("a hostile message renders as text and opens no dialog", async () => {
    said.push(XSS);
    await H.send(alice, XSS);
    await H.bubble(bob, XSS).waitFor();
    await H.bubble(alice, XSS).waitFor();
    assert.equal(await bob.locator(".messages img").count(), 0);
    await H.contact(bob, "alice").locator(".preview", { hasText: XSS }).waitFor();
    await bob.waitForTimeout(300);
    assert.deepEqual(bob.dialogs, []);
    assert.deepEqual(alice.dialogs, []);
  });

  let alice2;
  await t.test("a second device receives and decrypts every new message", async () => {
    alice2 = await H.person(browser, server);
    await H.login(alice2, "alice");
    // bob is told about alice's new device before he sends anything.
    const warning = bob.locator(".warning", { hasText: "alice has a new device" });
    await warning.waitFor();
    assert.ok(await bob.locator(".composer .send").isDisabled());
    await bob.getByRole("button", { name: "Accept new device" }).click();
    await warning.waitFor({ state: "detached" });

    // alice's first device is told about the second one.
    await alice.locator("#conn-status", { hasText: "A new device was added to your account" }).waitFor();
    await H.openConversation(alice2, "bob");
    const before = alice2.locator(".msg .placeholder", { hasText: "Sent before this device was added." });
    await before.nth(said.length - 1).waitFor();
    assert.equal(await before.count(), said.length);
    assert.equal(await alice2.locator(".msg .error").count(), 0);

    const fromBob = "bob writes to both of alice's devices";
    const fromSecond = "alice answers from her second device";
    const fromFirst = "and again from her first one";
    said.push(fromBob, fromSecond, fromFirst);
    await H.send(bob, fromBob);
    await H.bubble(alice, fromBob).waitFor();
    await H.bubble(alice2, fromBob).waitFor();
    await H.send(alice2, fromSecond);
    await H.bubble(bob, fromSecond).waitFor();
    await H.bubble(alice, fromSecond).waitFor();
    await H.expectState(alice2, fromSecond, "Read");
    await H.send(alice, fromFirst);
    await H.bubble(bob, fromFirst).waitFor();
    await H.bubble(alice2, fromFirst).waitFor();
    assert.deepEqual(await H.shownTexts(bob), said);
    assert.deepEqual(await H.shownTexts(alice), said);
  });

  await t.test("a contact's new browser shows a warning and holds sending until accepted", async () => {
    const bob2 = await H.person(browser, server);
    await H.login(bob2, "bob");
    const warning = alice.locator(".warning", { hasText: "bob has a new device" });
    await warning.waitFor();
    const held = "this waits for alice to accept";
    await alice.locator("#composer").fill(held);
    await alice.locator("#composer").press("Enter");
    assert.ok(await alice.locator(".composer .send").isDisabled());
    await alice.waitForTimeout(300);
    assert.equal(await H.bubble(alice, held).count(), 0, "nothing is sent while held");
    assert.equal(await alice.locator("#composer").inputValue(), held, "what was typed stays");
    // The safety number view lists the new device as not accepted.
    await alice.getByRole("button", { name: "View safety number" }).click();
    await alice.locator(".devices .tag.warn", { hasText: "new — not accepted" }).waitFor();
    await alice.getByRole("button", { name: "Back", exact: true }).click();
    await alice.getByRole("button", { name: "Accept new device" }).click();
    await warning.waitFor({ state: "detached" });
    await alice.locator("#composer").press("Enter");
    said.push(held);
    await H.openConversation(bob2, "alice");
    await H.bubble(bob2, held).waitFor();
    await H.bubble(bob, held).waitFor();
    await H.bubble(alice2, held).waitFor();
    await bob2.close();
  });

  await t.test("logout revokes the session and closes its socket", async () => {
    const token = await H.tokenOf(alice2);
    assert.ok(token);
    const socket = alice2.sockets.at(-1);
    assert.ok(socket && !socket.isClosed());
    await alice2.getByRole("button", { name: "Settings" }).click();
    await alice2.getByRole("button", { name: "Log out", exact: true }).click();
    await alice2.locator("#name").waitFor();
    await alice2.getByText("You are logged out.").waitFor();
    const me = await fetch(`${server.url}/api/me`, { headers: { Authorization: `Bearer ${token}` } });
    assert.equal(me.status, 401);
    if (!socket.isClosed()) await socket.waitForEvent("close", { timeout: H.WAIT });
    assert.ok(socket.isClosed(), "the socket of the logged-out session is closed");
    // alice's other device is still signed in and still receives.
    const after = "alice's first device still works";
    said.push(after);
    await H.send(bob, after);
    await H.bubble(alice, after).waitFor();
  });

  await t.test("log out everywhere ends every session and removes every device", async () => {
    const token = await H.tokenOf(alice);
    await alice.getByRole("button", { name: "Settings" }).click();
    // The device of the logged-out second browser is still listed; remove it.
    const devices = alice.locator(".devices li");
    await devices.nth(1).waitFor();
    assert.equal(await devices.count(), 2);
    await alice.getByRole("button", { name: /^Remove / }).click();
    await alice.waitForFunction(() => document.querySelectorAll(".devices li").length === 1);
    await alice.locator(".devices li .tag", { hasText: "this device" }).waitFor();
    await alice.getByRole("button", { name: "Log out everywhere" }).click();
    await alice.getByRole("button", { name: "Confirm: log out on every device" }).click();
    await alice.locator("#name").waitFor();
    const me = await fetch(`${server.url}/api/me`, { headers: { Authorization: `Bearer ${token}` } });
    assert.equal(me.status, 401);
    // bob is told at once: alice has no device left to encrypt to.
    await bob.locator(".warning", { hasText: "alice has no device with a sotto key" }).waitFor();
    assert.ok(await bob.locator(".composer .send").isDisabled());
  });

  await t.test("the database holds none of the plaintexts", () => {
    H.assertNoPlaintext(server, said);
  });
  assert.deepEqual([...alice.errors, ...bob.errors], []);
});
