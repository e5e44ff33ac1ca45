// This device's local state in IndexedDB, one database per account so two
// accounts in one browser never mix: the device key (CryptoKeys, the
// private one non-extractable), the resume position, the outbox of sends
// not yet acknowledged (with their text, until the server has stored them),
// pinned contact keys, and drafts.

const STORES = ["kv", "outbox", "pins", "keys"];

function promisify(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

export async function openStore(userId) {
  const req = indexedDB.open(`sotto-${userId}`, 1);
  req.onupgradeneeded = () => {
    const db = req.result;
    for (const s of STORES) if (!db.objectStoreNames.contains(s)) db.createObjectStore(s);
  };
  const db = await promisify(req);
  return new Store(db);
}

export class Store {
  constructor(db) {
    this.db = db;
  }

  async get(store, key) {
    return promisify(this.db.transaction(store).objectStore(store).get(key));
  }

  async put(store, key, value) {
    const tx = this.db.transaction(store, "readwrite");
    tx.objectStore(store).put(value, key);
    return done(tx);
  }

  async del(store, key) {
    const tx = this.db.transaction(store, "readwrite");
    tx.objectStore(store).delete(key);
    return done(tx);
  }

  /** Every value of a store, in key order. */
  async all(store) {
    return promisify(this.db.transaction(store).objectStore(store).getAll());
  }

  close() {
    this.db.close();
  }
}

function done(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}
