/* Used by `lensreport serve` only: reload the page when a rebuild finishes, and show a
 * banner while the last rebuild failed (the page keeps showing the last good build). */
(function () {
  'use strict';
  var seen = null, banner = null;
  function showError(message) {
    if (!message) { if (banner) { banner.remove(); banner = null; } return; }
    if (!banner) {
      banner = document.createElement('div');
      banner.className = 'lensreport-build-error';
      banner.setAttribute('role', 'alert');
      banner.style.cssText = 'position:fixed;left:0;right:0;top:0;z-index:1000;padding:.6rem 1rem;' +
        'background:#b00020;color:#fff;font:14px/1.4 ui-monospace,monospace;white-space:pre-wrap';
      document.body.appendChild(banner);
    }
    banner.textContent = 'Rebuild failed; showing the last good build.\n' + message;
  }
  function poll() {
    fetch('/__lensreport__/status', { cache: 'no-store' }).then(function (r) { return r.json(); }).then(function (status) {
      if (seen !== null && status.build_id !== seen) { location.reload(); return; }
      seen = status.build_id;
      showError(status.error);
    }).catch(function () {}).then(function () { setTimeout(poll, 1000); });
  }
  poll();
})();
