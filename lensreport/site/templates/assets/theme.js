/* The colour theme: light, dark, or the system's (the default), remembered per reader in
 * localStorage. Loaded in <head>, so a remembered theme applies before the first paint.
 * html[data-theme] drives style.css; a change is announced with a 'lensreport:theme' event
 * on window, on which lensreport.js redraws the figures in the new colours. */
(function () {
  'use strict';
  var KEY = 'lensreport-theme', root = document.documentElement;
  function stored() {
    try { return localStorage.getItem(KEY) || 'system'; } catch (e) { return 'system'; }  // storage may be blocked
  }
  function apply(choice) {
    if (choice === 'light' || choice === 'dark') root.setAttribute('data-theme', choice);
    else root.removeAttribute('data-theme');
    document.querySelectorAll('[data-theme-choice]').forEach(function (button) {
      button.setAttribute('aria-pressed', String(button.getAttribute('data-theme-choice') === choice));
    });
  }
  function choose(choice) {
    try { localStorage.setItem(KEY, choice); } catch (e) { /* this page only */ }
    apply(choice);
    window.dispatchEvent(new Event('lensreport:theme'));
  }
  apply(stored());
  function wire() {
    apply(stored());
    document.querySelectorAll('[data-theme-choice]').forEach(function (button) {
      button.addEventListener('click', function () { choose(button.getAttribute('data-theme-choice')); });
    });
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', wire);
  else wire();
  /* Another tab changed it: follow. */
  window.addEventListener('storage', function (event) {
    if (event.key === KEY) { apply(stored()); window.dispatchEvent(new Event('lensreport:theme')); }
  });
})();
