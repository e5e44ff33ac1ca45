// One open conversation: history paged backwards as the person scrolls up
// (or presses "Show earlier messages"), live messages, the state of each of
// my messages (sending → stored → delivered → read), and the composer,
// held while the contact has unaccepted devices or no keys at all.

import { h, replace, text } from "./dom.js";

const STATE_LABEL = { sending: "Sending…", stored: "Stored", delivered: "Delivered", read: "Read", failed: "Not sent" };
const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

export class ConversationView {
  constructor(pane, chat, peer, { back, safety }) {
    Object.assign(this, { pane, chat, peer });
    this.conv = chat.conv(peer);
    this.nodes = new Map(); // "i:<id>" | "c:<client_id>" → li
    const u = chat.users.get(peer) || { name: peer };
    this.title = h("h2", { id: "conv-title" }, u.name);
    this.presence = h("span", { class: "presence" });
    this.notices = h("div", { class: "notices" });
    this.earlier = h("button", { type: "button", class: "link earlier", on: { click: () => this.loadEarlier() } }, "Show earlier messages");
    this.list = h("ol", { class: "messages" });
    this.scroller = h(
      "div",
      { class: "scroller", tabindex: "0", "aria-label": `Messages with ${u.name}`, role: "region", on: { scroll: () => this.onScroll() } },
      this.earlier,
      (this.log = h("div", { role: "log", "aria-live": "polite", class: "log" }, this.list)),
    );
    this.input = h("textarea", {
      id: "composer", rows: "1", maxlength: "4000", placeholder: "Message", autocomplete: "off",
      on: { keydown: (e) => this.onKey(e), input: () => this.saveDraft() },
    });
    this.sendBtn = h("button", { type: "submit", class: "primary send" }, "Send");
    this.form = h(
      "form",
      { class: "composer", on: { submit: (e) => { e.preventDefault(); this.submit(); } } },
      h("label", { for: "composer", class: "visually-hidden" }, `Message to ${u.name}`),
      this.input,
      this.sendBtn,
    );
    replace(
      pane,
      h(
        "section",
        { class: "conversation", "aria-labelledby": "conv-title" },
        h(
          "header",
          { class: "conv-header" },
          h("button", { type: "button", class: "back", "aria-label": "Back to contacts", on: { click: back } }, "‹"),
          h("div", { class: "conv-who" }, this.title, this.presence),
          h("button", { type: "button", class: "secondary", id: "safety-btn", on: { click: safety } }, "Safety number"),
        ),
        this.notices,
        this.scroller,
        this.form,
      ),
    );
    this.renderHeader();
    this.renderNotices();
    for (const m of this.conv.msgs.values()) this.upsert(m);
    for (const m of this.conv.pending.values()) this.upsert(m);
    this.renderStart();
    this.scrollToEnd();
    chat.open(peer);
    if (!this.conv.loaded) chat.requestHistory(peer);
    chat.store.get("kv", `draft:${peer}`).then((d) => {
      if (d && !this.input.value) this.input.value = d;
    });
    this.input.focus();
  }

  close() {
    this.closed = true;
  }

  onChange(what, detail) {
    if (this.closed) return;
    if (what === "message" && detail.peer === this.peer) {
      const near = this.nearEnd();
      if (detail.replaces) this.dropNode(`c:${detail.replaces}`);
      this.upsert(detail.msg);
      if (near || detail.msg.mine) this.scrollToEnd();
    } else if (what === "history" && detail.peer === this.peer) {
      const before = this.scroller.scrollHeight - this.scroller.scrollTop;
      // Older messages are not news: keep screen readers from reading a page out.
      this.log.setAttribute("aria-busy", "true");
      for (const m of detail.added) this.upsert(m);
      setTimeout(() => this.log.removeAttribute("aria-busy"), 0);
      this.renderStart();
      // Keep what the person was looking at in place; the first page shows the end.
      if (this.firstPageShown) this.scroller.scrollTop = this.scroller.scrollHeight - before;
      else this.scrollToEnd();
      this.firstPageShown = true;
    } else if (what === "receipts" && detail === this.peer) {
      for (const m of this.conv.msgs.values()) if (m.mine) this.renderState(m);
    } else if ((what === "user" && detail === this.peer) || what === "contacts") {
      this.renderHeader();
      if (what === "user") this.renderNotices();
    } else if (what === "online") {
      if (!this.conv.loaded) this.chat.requestHistory(this.peer);
    }
  }

  renderHeader() {
    const u = this.chat.users.get(this.peer);
    const state = u && u.online ? "online" : "offline";
    text(this.presence, this.chat.isVerified(this.peer) ? `${state} · ✓ verified` : state);
  }

  renderStart() {
    this.earlier.hidden = this.conv.complete;
    const start = this.list.querySelector(".start");
    if (this.conv.complete && !start) {
      this.list.prepend(h("li", { class: "start" }, "This is the beginning of your conversation."));
    }
  }

  // ------------------------------------------------------------ messages

  key(m) {
    return m.id !== undefined ? `i:${m.id}` : `c:${m.client_id}`;
  }

  dropNode(k) {
    const n = this.nodes.get(k);
    if (n) n.remove();
    this.nodes.delete(k);
  }

  /** Inserts or refreshes the node of one message, keeping id order;
   * sends still pending stay at the end in the order they were made. */
  upsert(m) {
    const k = this.key(m);
    const old = this.nodes.get(k);
    const node = this.messageNode(m);
    this.nodes.set(k, node);
    if (old) {
      old.replaceWith(node);
      return;
    }
    const sortKey = (x) => (x.dataset.id ? Number(x.dataset.id) : Number.MAX_SAFE_INTEGER + Number(x.dataset.seq || 0));
    const mine = m.id !== undefined ? m.id : Number.MAX_SAFE_INTEGER + (m.seq || 0);
    let after = this.list.lastElementChild;
    while (after && !after.classList.contains("start") && sortKey(after) > mine) after = after.previousElementSibling;
    if (after) after.after(node);
    else this.list.prepend(node);
  }

  messageNode(m) {
    const u = this.chat.users.get(this.peer);
    const who = m.mine ? "You" : (u ? u.name : "Them");
    let body;
    if (m.kind === "before") body = h("p", { class: "text placeholder" }, "Sent before this device was added.");
    else if (m.kind === "invalid") body = h("p", { class: "text placeholder error" }, "This message could not be decrypted.");
    else body = h("p", { class: "text" }, m.text);
    const state = m.mine ? h("span", { class: "state" }) : null;
    const li = h(
      "li",
      { class: `msg ${m.mine ? "mine" : "theirs"} kind-${m.kind}`, dataset: m.id !== undefined ? { id: String(m.id) } : { client: m.client_id, seq: String(m.seq || 0) } },
      h("span", { class: "visually-hidden" }, `${who}: `),
      body,
      h(
        "p",
        { class: "meta" },
        m.kind === "plain" ? h("span", { class: "unencrypted" }, "unencrypted") : null,
        m.sent_at ? h("time", { datetime: new Date(m.sent_at).toISOString() }, timeFmt.format(new Date(m.sent_at))) : null,
        state,
      ),
    );
    if (m.mine) this.renderState(m, li);
    return li;
  }

  renderState(m, li = this.nodes.get(this.key(m))) {
    const el = li && li.querySelector(".state");
    if (!el) return;
    const s = this.chat.stateOf(this.conv, m);
    el.dataset.state = s;
    text(el, s === "failed" ? `Not sent: ${m.failed}` : STATE_LABEL[s]);
  }

  // ------------------------------------------------------------ scrolling

  nearEnd() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
  }

  scrollToEnd() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  onScroll() {
    if (this.scroller.scrollTop < 150) this.loadEarlier();
  }

  loadEarlier() {
    this.chat.requestHistory(this.peer);
  }

  // ------------------------------------------------------------ notices and sending

  renderNotices() {
    const u = this.chat.users.get(this.peer);
    const block = this.chat.sendBlock(this.peer);
    const items = [];
    if (block === "new_devices") {
      const names = u.pin.pending.map((d) => d.name || d.id).join(", ");
      items.push(h(
        "div",
        { class: "warning", role: "alert", id: "block-reason" },
        h("p", null, `${u.name} has a new device (${names}). Their safety number changed. Sending is paused until you accept it; check the safety number with ${u.name} if you can.`),
        h("div", { class: "actions" },
          h("button", { type: "button", class: "primary", on: { click: () => this.accept() } }, "Accept new device"),
          h("button", { type: "button", class: "secondary", on: { click: () => document.getElementById("safety-btn").click() } }, "View safety number")),
      ));
    } else if (block === "no_keys") {
      items.push(h(
        "div",
        { class: "warning", role: "status", id: "block-reason" },
        h("p", null, `${u ? u.name : "This contact"} has no device with a sotto key (an older client, or never signed in on the web). Messages cannot be end-to-end encrypted.`),
        h("button", { type: "button", class: "secondary", on: { click: () => this.setUnencrypted(true) } }, "Send unencrypted in this conversation"),
      ));
    } else if (u && u.pin && u.pin.unencrypted && (!u.devices || !u.devices.length)) {
      items.push(h(
        "div",
        { class: "notice", role: "status" },
        h("p", null, "Messages in this conversation are sent unencrypted: the server can read them."),
        h("button", { type: "button", class: "link", on: { click: () => this.setUnencrypted(false) } }, "Stop sending unencrypted"),
      ));
    }
    replace(this.notices, items);
    this.sendBtn.disabled = !!block;
    if (block) this.sendBtn.setAttribute("aria-describedby", "block-reason");
    else this.sendBtn.removeAttribute("aria-describedby");
  }

  async accept() {
    const u = this.chat.users.get(this.peer);
    u.pin = await this.chat.keyring.accept(this.peer);
    this.renderNotices();
    this.input.focus();
  }

  async setUnencrypted(on) {
    await this.chat.keyring.setUnencrypted(this.peer, on);
    const u = this.chat.users.get(this.peer);
    u.pin = await this.chat.keyring.pin(this.peer);
    this.renderNotices();
    this.input.focus();
  }

  onKey(e) {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      this.submit();
    }
  }

  saveDraft() {
    clearTimeout(this.draftTimer);
    this.draftTimer = setTimeout(() => this.chat.store.put("kv", `draft:${this.peer}`, this.input.value), 300);
  }

  async submit() {
    const t = this.input.value;
    if (!t.trim() || this.chat.sendBlock(this.peer)) return;
    this.input.value = "";
    clearTimeout(this.draftTimer);
    try {
      await this.chat.send(this.peer, t);
      await this.chat.store.del("kv", `draft:${this.peer}`);
    } catch (e) {
      this.input.value = t; // nothing typed is lost
      this.chat.emit("error", { message: `Not sent: ${e.message}` });
    }
  }
}
