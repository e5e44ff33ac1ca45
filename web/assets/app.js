// Start-up: log in (or resume the session of this tab or the cookie), open
// this account's local store, make sure this browser is a registered
// device, load the directory, then connect.

import { $ } from "./dom.js";
import { api, ApiError, session } from "./api.js";
import { openStore } from "./store.js";
import { ensureDevice, Keyring } from "./keys.js";
import { Connection } from "./connection.js";
import { Chat } from "./chat.js";
import { showLogin } from "./ui-login.js";
import { ChatView } from "./ui-chat.js";

const root = $("#app");
let current = null; // {conn, store}

/** WebCrypto exists only in secure contexts (https, or localhost). */
const INSECURE = !(globalThis.isSecureContext && globalThis.crypto && globalThis.crypto.subtle)
  ? "This page is not served over https, so the browser does not allow the encryption sotto needs. Open sotto over https (or on localhost)."
  : null;

async function boot() {
  if (INSECURE) {
    showLogin(root, start, INSECURE);
    return;
  }
  try {
    const me = await api.me();
    await start({ id: me.id, name: me.name });
  } catch (e) {
    if (!(e instanceof ApiError) || (e.status !== 401 && e.status !== 0)) console.error(e);
    session.token = null;
    showLogin(root, start, e instanceof ApiError && e.status === 0 ? "The server cannot be reached." : null);
  }
}

async function start(me) {
  const store = await openStore(me.id);
  const device = await ensureDevice(store);
  const keyring = new Keyring(store, me, device);
  await keyring.load();
  let chat;
  const conn = new Connection({
    store,
    token: () => session.token,
    onFrame: (f) => chat.onFrame(f),
    onState: (state, detail) => {
      view.setConnState(state, detail);
      if (state === "online") chat.onConnected();
    },
    onAuthLost: () => signedOut("Your session ended. Log in again."),
    checkAuth: async () => {
      try {
        await api.me();
        return true;
      } catch (e) {
        return !(e instanceof ApiError && e.status === 401);
      }
    },
  });
  chat = new Chat({ me, device, keyring, conn, store });
  const [users, convs, own, outbox] = await Promise.all([
    api.users(),
    api.conversations().catch(missing({ conversations: [] })),
    api.devices().catch(missing({ devices: [] })),
    store.all("outbox"),
  ]);
  chat.on((what, id) => {
    if (what === "need_user") api.user(id).then((u) => chat.setUser(u)).catch(() => {});
    // Presence comes only for contacts and watched users: someone new is
    // found by searching the directory, which also says who is online.
    if (what === "search") {
      api.search(id).then((r) => Promise.all((r.users || []).map((u) => chat.setUser(u)))).catch(() => {});
    }
  });
  await chat.loadDirectory(users.users || [], convs.conversations || [], own.devices || [], outbox);
  const view = new ChatView(root, chat, {
    logout: () => logout(api.logout),
    logoutAll: () => logout(api.logoutAll),
  });
  current = { conn, store };
  document.body.dataset.ready = "chat";
  conn.start();
}

/** A server without the endpoint (404): carry on without what it gives. */
function missing(fallback) {
  return (e) => {
    if (e instanceof ApiError && e.status === 404) return fallback;
    throw e;
  };
}

async function logout(call) {
  try {
    await call();
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) {
      console.error(e);
      return;
    }
  }
  signedOut("You are logged out.");
}

function signedOut(notice) {
  if (current) {
    current.conn.stop();
    current.store.close();
    current = null;
  }
  session.token = null;
  document.body.dataset.ready = "login";
  showLogin(root, start, INSECURE || notice);
}

boot();
