// The signed-in screen: a contact list (online dot, decrypted last
// message, unread count, search) beside the open conversation or a panel.
// At phone width only one of the two shows (data-view on the root).

import { h, replace, text } from "./dom.js";
import { ConversationView } from "./ui-conversation.js";
import { showSafety, showSettings } from "./ui-panels.js";

export function previewText(m) {
  if (!m) return "";
  const who = m.mine ? "You: " : "";
  switch (m.kind) {
    case "before":
      return `${who}(sent before this device was added)`;
    case "invalid":
      return `${who}(could not be decrypted)`;
    default:
      return who + (m.text || "").replace(/\s+/g, " ").slice(0, 80);
  }
}

export class ChatView {
  constructor(root, chat, actions) {
    Object.assign(this, { root, chat, actions });
    this.query = "";
    this.conversation = null;
    this.status = h("p", { id: "conn-status", class: "conn-status", role: "status", "aria-live": "polite" });
    this.list = h("ul", { class: "contacts", id: "contacts", "aria-label": "Contact list" });
    this.search = h("input", {
      id: "search", type: "search", placeholder: "Search contacts", autocomplete: "off",
      on: { input: () => this.onSearch() },
    });
    this.pane = h("section", { class: "pane", id: "pane", "aria-label": "Conversation" });
    this.shell = h(
      "div",
      { class: "chat", "data-view": "list" },
      h(
        "header",
        { class: "topbar" },
        h("h1", { class: "brand" }, "sotto"),
        h("span", { class: "me", title: "Signed in as" }, chat.me.name),
        h("button", { type: "button", class: "secondary", id: "settings-btn", on: { click: () => this.openSettings() } }, "Settings"),
      ),
      this.status,
      h(
        "nav",
        { class: "sidebar", "aria-label": "Contacts" },
        h("label", { for: "search", class: "visually-hidden" }, "Search contacts"),
        this.search,
        this.list,
      ),
      h("main", { class: "main", id: "main" }, this.pane),
    );
    replace(root, this.shell);
    this.showEmpty();
    chat.on((what, detail) => this.onChange(what, detail));
    document.addEventListener("visibilitychange", () => chat.scheduleRead());
    this.renderContacts();
  }

  /** Filters the list, and asks the server's directory for names that
   * start with the query (debounced), so people not yet listed show up. */
  onSearch() {
    this.query = this.search.value.trim().toLowerCase();
    this.renderContacts();
    clearTimeout(this.searchTimer);
    const q = this.query;
    if (q) this.searchTimer = setTimeout(() => this.chat.emit("search", q), 250);
  }

  onChange(what, detail) {
    if (what === "contacts" || what === "user") this.renderContacts();
    if (this.conversation) this.conversation.onChange(what, detail);
    if (what === "error" && detail && !detail.ref) this.flash(detail.message || detail.code);
    if (what === "notice") this.flash(detail);
    this.updateTitle();
  }

  setConnState(state, detail) {
    let msg = "";
    if (state === "connecting") msg = "Connecting…";
    if (state === "offline") {
      msg = detail && detail.waiting === "network"
        ? "Offline. Messages you send will go out when you are back online."
        : `Connection lost. Reconnecting${detail && detail.retryInMs ? ` in ${Math.ceil(detail.retryInMs / 1000)} s` : ""}…`;
    }
    this.shell.dataset.conn = state;
    text(this.status, msg);
  }

  flash(msg) {
    text(this.status, String(msg).slice(0, 200));
  }

  updateTitle() {
    const n = this.chat.totalUnread();
    document.title = n ? `(${n}) sotto` : "sotto";
    if (navigator.setAppBadge) {
      (n ? navigator.setAppBadge(n) : navigator.clearAppBadge()).catch(() => {});
    }
  }

  sortedContacts(query = this.query) {
    const all = [...this.chat.users.values()].filter((u) => !query || u.name.toLowerCase().includes(query));
    const lastAt = (u) => {
      const c = this.chat.convs.get(u.id);
      return c && c.last ? c.last.sent_at || 0 : 0;
    };
    return all.sort((a, b) => lastAt(b) - lastAt(a) || a.name.localeCompare(b.name));
  }

  renderContacts() {
    const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.user : null;
    // Online dots need presence for whom the list holds (PROTOCOL 16.1),
    // searched for or not, so that clearing a search shows them right.
    this.chat.watch(this.sortedContacts("").map((u) => u.id));
    const items = this.sortedContacts().map((u) => this.contactItem(u));
    replace(this.list, items.length ? items : h("li", { class: "empty" }, this.query ? "No contact matches." : "Nobody else is here yet."));
    if (focused) {
      const again = this.list.querySelector(`[data-user="${CSS.escape(focused)}"]`);
      if (again) again.focus();
    }
  }

  contactItem(u) {
    const c = this.chat.convs.get(u.id);
    const unread = c ? c.unread : 0;
    const current = this.conversation && this.conversation.peer === u.id;
    return h(
      "li",
      null,
      h(
        "button",
        {
          type: "button", class: "contact", "data-user": u.id, "aria-current": current ? "true" : null,
          on: { click: () => this.openConversation(u.id) },
        },
        h("span", { class: "avatar", "aria-hidden": "true" }, u.name.slice(0, 1).toUpperCase()),
        h(
          "span",
          { class: "contact-body" },
          h(
            "span",
            { class: "contact-name" },
            u.name,
            h("span", { class: u.online ? "dot online" : "dot", "aria-hidden": "true" }),
            h("span", { class: "visually-hidden" }, u.online ? " (online)" : " (offline)"),
          ),
          h("span", { class: "preview" }, previewText(c && c.last)),
        ),
        unread ? h("span", { class: "badge", "aria-hidden": "true" }, String(unread)) : null,
        unread ? h("span", { class: "visually-hidden" }, `, ${unread} unread`) : null,
      ),
    );
  }

  showEmpty() {
    this.conversation = null;
    this.chat.open(null);
    replace(this.pane, h("div", { class: "empty-pane" }, h("p", null, "Choose a contact to start a conversation.")));
  }

  openConversation(peer) {
    if (this.conversation) this.conversation.close();
    this.conversation = new ConversationView(this.pane, this.chat, peer, {
      back: () => this.back(),
      safety: () => this.openSafety(peer),
    });
    this.shell.dataset.view = "conv";
    this.renderContacts();
  }

  back() {
    const peer = this.conversation && this.conversation.peer;
    if (this.conversation) this.conversation.close();
    this.showEmpty();
    this.shell.dataset.view = "list";
    this.renderContacts();
    const btn = peer && this.list.querySelector(`[data-user="${CSS.escape(peer)}"]`);
    if (btn) btn.focus();
  }

  openSafety(peer) {
    if (this.conversation) this.conversation.close();
    this.conversation = null;
    this.chat.open(null);
    showSafety(this.pane, this.chat, peer, () => this.openConversation(peer));
    this.shell.dataset.view = "conv";
  }

  openSettings() {
    if (this.conversation) this.conversation.close();
    this.conversation = null;
    this.chat.open(null);
    showSettings(this.pane, this.chat, this.actions, () => this.back());
    this.shell.dataset.view = "conv";
  }
}
