// The app shell, cached so the app opens at once and offline (it then reconnects by itself).
// The relay's API (/v1/…) is never cached.
const CACHE = "loopsy-app-v1";
const SHELL = [
  "/app/",
  "/app/app.js",
  "/app/app.css",
  "/app/loopsy.wasm",
  "/app/manifest.webmanifest",
  "/app/icon.svg",
  "/app/icon-192.png",
  "/app/icon-512.png",
];

self.addEventListener("install", (e) => {
  e.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (e) => {
  e.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (e) => {
  const url = new URL(e.request.url);
  if (e.request.method !== "GET" || url.origin !== location.origin || !url.pathname.startsWith("/app")) return;
  // Network first (a new version shows at once), the cache when offline.
  e.respondWith(
    fetch(e.request)
      .then((resp) => {
        if (resp.ok) {
          const copy = resp.clone();
          caches.open(CACHE).then((c) => c.put(e.request, copy));
        }
        return resp;
      })
      .catch(() => caches.match(e.request, { ignoreSearch: true }).then((r) => r || caches.match("/app/"))),
  );
});
