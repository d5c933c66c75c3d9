// Injected into every page before the app runs (Playwright init script).
// Records, in the page itself, what a test asserts over time rather than
// at one instant: every change of the connection badge, every change of
// each import row (status, aria-valuenow, value), the most rows ever shown,
// and every WebSocket close call and close event (with its code).
(() => {
  const rec = {
    badge: [],
    rows: [],
    maxRows: 0,
    importIds: [],
    sockets: 0,
    closeCalls: [],
    closeEvents: [],
  };
  Object.defineProperty(window, '__e2e', { value: rec });

  const NativeWebSocket = window.WebSocket;
  class RecordingWebSocket extends NativeWebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      const index = rec.sockets++;
      this.addEventListener('close', (event) => {
        rec.closeEvents.push({ index, code: event.code, reason: event.reason, wasClean: event.wasClean, t: Date.now() });
      });
      this.__index = index;
    }
    close(code, reason) {
      rec.closeCalls.push({ index: this.__index, code, reason, t: Date.now() });
      return super.close(code, reason);
    }
  }
  window.WebSocket = RecordingWebSocket;

  let lastBadge;
  const lastRow = new Map();
  const sample = () => {
    const t = Date.now();
    const badge = document.querySelector('[data-testid="connection-badge"]');
    const status = badge ? badge.getAttribute('data-status') : null;
    const text = badge ? badge.textContent : null;
    if (status !== lastBadge) {
      lastBadge = status;
      rec.badge.push({ t, status, text });
    }
    const rows = document.querySelectorAll('[data-testid="import-row"]');
    rec.maxRows = Math.max(rec.maxRows, rows.length);
    for (const row of rows) {
      const id = row.getAttribute('data-import-id');
      if (!rec.importIds.includes(id)) rec.importIds.push(id);
      const bar = row.querySelector('[data-testid="import-progress"]');
      const entry = {
        t,
        id,
        status: row.getAttribute('data-status'),
        valuenow: bar && bar.hasAttribute('aria-valuenow') ? Number(bar.getAttribute('aria-valuenow')) : null,
        value: bar && bar.hasAttribute('value') ? Number(bar.value) : null,
      };
      const key = `${entry.status}|${entry.valuenow}|${entry.value}`;
      if (lastRow.get(id) !== key) {
        lastRow.set(id, key);
        rec.rows.push(entry);
      }
    }
  };
  new MutationObserver(sample).observe(document, {
    subtree: true,
    childList: true,
    attributes: true,
    characterData: true,
  });
})();
