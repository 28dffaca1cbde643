// tauri-plugin-tether's network watch (DESIGN 3.2), added by the plugin to every page before
// the page's own scripts. When the webview goes back online, or the page becomes visible again
// (a laptop opened, the app brought back), it tells the connection that the network may have
// changed: a live link is probed at once, and a backoff wait is skipped. Off for this page with
// `watchNetwork(false)` from guest-js (or `window.__TETHER_NETWORK__.watch = false`).
(() => {
  if (window !== window.top || window.__TETHER_NETWORK__) return;
  const state = { watch: true };
  Object.defineProperty(window, "__TETHER_NETWORK__", { value: state });
  const changed = () => {
    const ipc = window.__TAURI_INTERNALS__;
    if (state.watch && ipc) {
      // Without a connection it does nothing; an app that did not grant it gets a refusal.
      ipc.invoke("plugin:tether|network_changed").catch(() => {});
    }
  };
  window.addEventListener("online", changed);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") changed();
  });
})();
