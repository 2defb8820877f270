/* A prompt page at gallery scale: which models' figures are shown (prompt.html). The first
   ones are ticked; a link to another figure (#fig-…, as the index's cells are) ticks it and
   scrolls to it. Runs before lensreport.js mounts the figures (its listener comes first), so
   hidden figures are never drawn; lensreport.js draws a figure when it is shown and near
   the screen. Names are only compared, never written as markup. */
(function () {
  'use strict';
  function start() {
    var picker = document.querySelector('.model-picker');
    if (!picker) return;
    var boxes = Array.prototype.slice.call(picker.querySelectorAll('input[type="checkbox"]'));
    var filter = picker.querySelector('.picker-filter'), count = picker.querySelector('.picker-count');
    function section(box) { return document.getElementById(box.value); }
    function show(box) {
      var el = section(box);
      if (el) el.hidden = !box.checked;
    }
    function counted() {
      var shown = boxes.filter(function (b) { return b.checked; }).length;
      count.textContent = shown + ' of ' + boxes.length + ' models shown';
    }
    function matching() {
      return boxes.filter(function (b) { return !b.parentNode.hidden; });
    }
    function target() {  // the figure a #fig-… link points at, ticked and shown
      var id = location.hash.slice(1);
      try { id = decodeURIComponent(id); } catch (e) { /* a broken %-escape: no figure has it */ }
      var box = boxes.filter(function (b) { return b.value === id; })[0];
      if (!box) return;
      box.checked = true;
      show(box);
      counted();
      section(box).scrollIntoView();
    }
    boxes.forEach(function (box) {
      show(box);
      box.addEventListener('change', function () { show(box); counted(); });
    });
    filter.addEventListener('input', function () {
      if (filter.value) picker.querySelector('.picker-list').open = true;  // show what matches
      var words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
      boxes.forEach(function (box) {
        var text = box.parentNode.getAttribute('data-search');
        box.parentNode.hidden = !words.every(function (w) { return text.indexOf(w) >= 0; });
      });
      picker.querySelectorAll('.picker-family').forEach(function (family) {
        family.hidden = !family.querySelector('label:not([hidden])');
      });
    });
    picker.addEventListener('click', function (event) {
      var pick = event.target.getAttribute && event.target.getAttribute('data-pick');
      if (!pick) return;
      (pick === 'none' ? boxes : matching()).forEach(function (box) { box.checked = pick !== 'none'; show(box); });
      counted();
    });
    window.addEventListener('hashchange', target);
    picker.hidden = false;
    counted();
    target();
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
}());
