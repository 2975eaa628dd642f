// The phone's own state, in IndexedDB (never localStorage, never a URL): the pairing with each
// laptop (relay credentials, this phone's static secret, the laptop's pinned key) and the
// sessions it last used. "Forget this laptop" deletes it all.

const DB = "loopsy";
const STORE = "kv";

function db() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function tx(mode, fn) {
  const d = await db();
  return new Promise((resolve, reject) => {
    const t = d.transaction(STORE, mode);
    const r = fn(t.objectStore(STORE));
    t.oncomplete = () => resolve(r && "result" in r ? r.result : undefined);
    t.onerror = () => reject(t.error);
    t.onabort = () => reject(t.error);
  });
}

export const get = (key) => tx("readonly", (s) => s.get(key));
export const put = (key, value) => tx("readwrite", (s) => s.put(value, key));
export const del = (key) => tx("readwrite", (s) => s.delete(key));

/** The pairing, or undefined. */
export const pairing = () => get("pairing");
export const savePairing = (p) => put("pairing", p);

/** Everything this app stored. */
export async function wipe() {
  await tx("readwrite", (s) => s.clear());
}
