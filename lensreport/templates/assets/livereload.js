/* Used by `lensreport serve` only: reload the page when a rebuild finishes. */
(function () {
  'use strict';
  var seen = null;
  function poll() {
    fetch('/__lensreport__/build-id', { cache: 'no-store' }).then(function (r) { return r.text(); }).then(function (id) {
      if (seen !== null && id !== seen) { location.reload(); return; }
      seen = id;
    }).catch(function () {}).then(function () { setTimeout(poll, 1000); });
  }
  poll();
})();
