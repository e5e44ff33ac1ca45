// Panels in the main pane: a contact's devices and safety number (with
// "mark verified"), and the settings: this account's devices (remove),
// log out, log out everywhere.

import { h, replace, text } from "./dom.js";
import { api } from "./api.js";
import { keySetId } from "./keys.js";

const dateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

function when(ms) {
  return Number.isFinite(ms) ? dateFmt.format(new Date(ms)) : "";
}

/** A short, readable form of a device key for comparing by eye. */
function keyPrint(b64u) {
  return (b64u || "").slice(2, 22).replace(/(.{5})/g, "$1 ").trim();
}

function panel(pane, titleId, title, onClose, ...content) {
  const heading = h("h2", { id: titleId, tabindex: "-1" }, title);
  replace(
    pane,
    h(
      "section",
      { class: "panel", "aria-labelledby": titleId },
      h("header", { class: "conv-header" },
        h("button", { type: "button", class: "back", "aria-label": "Back", on: { click: onClose } }, "‹"),
        heading),
      h("div", { class: "panel-body" }, ...content),
    ),
  );
  heading.focus();
}

function deviceList(devices, pending, label) {
  if (!devices.length) return h("p", { class: "muted" }, "No devices with a sotto key.");
  return h(
    "ul",
    { class: "devices", "aria-label": label },
    devices.map((d) =>
      h("li", null,
        h("span", { class: "device-name" }, d.name || d.id),
        pending.has(d.id) ? h("span", { class: "tag warn" }, "new — not accepted") : null,
        h("span", { class: "muted" }, ` added ${when(d.created_at)}`),
        h("code", { class: "keyprint" }, keyPrint(d.public_key)))),
  );
}

export async function showSafety(pane, chat, peer, onClose) {
  const u = chat.users.get(peer);
  if (!u) return onClose();
  const pin = await chat.keyring.pin(peer);
  const pending = new Set((pin.pending || []).map((d) => d.id));
  const mine = chat.myDevices();
  const hasKeys = u.devices && u.devices.length > 0;
  const number = hasKeys ? await chat.keyring.safetyNumber(mine, u) : null;
  const verified = number && chat.isVerified(peer);
  const status = h("p", { class: verified ? "verified" : "muted", id: "verify-status", role: "status" }, verified ? "✓ Verified" : "Not verified");
  const btn = h("button", {
    type: "button", class: verified ? "secondary" : "primary", id: "verify-btn",
    on: {
      click: async () => {
        pin.verified = chat.isVerified(peer) ? null : number;
        await chat.keyring.setVerified(peer, pin.verified, keySetId(mine, u.devices || []));
        u.pin = await chat.keyring.pin(peer);
        const v = pin.verified === number;
        text(status, v ? "✓ Verified" : "Not verified");
        status.className = v ? "verified" : "muted";
        text(btn, v ? "Mark as not verified" : "Mark verified");
      },
    },
  }, verified ? "Mark as not verified" : "Mark verified");
  panel(
    pane, "safety-title", `Safety number with ${u.name}`, onClose,
    hasKeys
      ? [
        h("p", null, `Compare these numbers with ${u.name} in person or on a call. If they match, nobody is reading along: mark the contact verified. The number changes when a device of either of you is added or removed.`),
        h("p", { class: "safety-number", id: "safety-number", "aria-label": `Safety number: ${number.replace(/ /g, ", ")}` },
          number.split(" ").map((g) => h("span", null, g))),
        status,
        btn,
      ]
      : h("p", { class: "warning" }, `${u.name} has no device with a sotto key, so there is no safety number. Messages to ${u.name} cannot be end-to-end encrypted.`),
    h("h3", null, `${u.name}'s devices`),
    deviceList(u.devices || [], pending, `${u.name}'s devices`),
    h("h3", null, "Your devices"),
    deviceList(mine, new Set(), "Your devices"),
  );
}

export async function showSettings(pane, chat, actions, onClose) {
  const list = h("ul", { class: "devices", "aria-label": "Your devices" });
  const msg = h("p", { role: "status", class: "muted" });
  async function refresh() {
    try {
      const { devices } = await api.devices();
      chat.ownDevices = devices;
      replace(list, devices.map((d) =>
        h("li", null,
          h("span", { class: "device-name" }, d.name || d.id),
          d.current ? h("span", { class: "tag" }, "this device") : null,
          h("span", { class: "muted" }, ` added ${when(d.created_at)}`),
          h("code", { class: "keyprint" }, keyPrint(d.public_key)),
          d.current
            ? null
            : h("button", {
              type: "button", class: "secondary small", "aria-label": `Remove ${d.name || d.id}`,
              on: { click: async () => { await api.removeDevice(d.id).catch((e) => text(msg, e.message)); refresh(); } },
            }, "Remove"))));
    } catch (e) {
      text(msg, `Could not load your devices: ${e.message}`);
    }
  }
  const everywhere = h("button", { type: "button", class: "danger", id: "logout-all" }, "Log out everywhere");
  everywhere.addEventListener("click", () => {
    if (everywhere.dataset.confirm) return actions.logoutAll();
    everywhere.dataset.confirm = "1";
    text(everywhere, "Confirm: log out on every device");
    text(msg, "This ends every session and removes every device of your account. Press again to confirm.");
  });
  panel(
    pane, "settings-title", "Settings", onClose,
    h("p", null, "Signed in as ", h("strong", null, chat.me.name), "."),
    h("h3", null, "Your devices"),
    h("p", { class: "muted" }, "Each browser you log in from is a device with its own key. Remove one you no longer use or trust."),
    list,
    msg,
    h("div", { class: "actions" },
      h("button", { type: "button", class: "secondary", id: "logout", on: { click: () => actions.logout() } }, "Log out"),
      everywhere),
  );
  refresh();
}
