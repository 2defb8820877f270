/* Site search (and the header's long lists): the index is a script (search-index.js,
 * written at build time) rather than a fetched file, so it works from file:// as over
 * HTTP. Every word of the query must begin a word of an entry (its name, text or note);
 * names rank first. Keys: '/' focuses the box, arrows move through the results, Enter
 * opens one, Escape closes the list.
 * Results are built with textContent only: names and texts are data, never markup. */
(function () {
  'use strict';
  var MAX = 8, KINDS = { prompt: 'prompt', model: 'model', corpus: 'corpus', note: 'note' };
  var WORD = /[\p{L}\p{N}_]+/gu;  // the index's rule (site/search.py)
  function words(text) { return String(text).normalize('NFC').toLowerCase().match(WORD) || []; }

  function search(entries, query) {
    var terms = words(query);
    if (!terms.length) return [];
    var scored = [];
    entries.forEach(function (entry, order) {
      var all = ' ' + entry.w, title = ' ' + words(entry.t).join(' '), score = 0;
      for (var i = 0; i < terms.length; i++) {
        if (title.indexOf(' ' + terms[i]) >= 0) score += 3;
        else if (all.indexOf(' ' + terms[i]) >= 0) score += 1;
        else return;  // every term must match
      }
      scored.push({ entry: entry, score: score, order: order });
    });
    scored.sort(function (a, b) { return b.score - a.score || a.order - b.order; });
    return scored.slice(0, MAX).map(function (s) { return s.entry; });
  }

  function setup(input) {
    var list = document.getElementById(input.getAttribute('aria-controls'));
    var entries = window.lensreportSearchIndex || [], root = input.getAttribute('data-root') || '';
    var active = -1;
    function options() { return list.querySelectorAll('[role="option"]'); }
    function close() {
      list.hidden = true; input.setAttribute('aria-expanded', 'false');
      input.removeAttribute('aria-activedescendant'); active = -1;
    }
    function highlight(index) {
      var items = options();
      if (!items.length) return;
      active = (index + items.length) % items.length;
      items.forEach(function (item, i) { item.setAttribute('aria-selected', String(i === active)); });
      input.setAttribute('aria-activedescendant', items[active].id);
      items[active].scrollIntoView({ block: 'nearest' });
    }
    function show() {
      var found = search(entries, input.value);
      list.textContent = '';
      active = -1;
      if (!input.value.trim()) { close(); return; }
      found.forEach(function (entry, i) {
        var item = document.createElement('li'), link = document.createElement('a');
        var kind = document.createElement('span'), snippet = document.createElement('span');
        item.id = 'search-result-' + i; item.setAttribute('role', 'option');
        item.setAttribute('aria-selected', 'false');
        link.href = root + entry.u; link.tabIndex = -1;
        kind.className = 'kind'; kind.textContent = KINDS[entry.k] || entry.k;
        link.appendChild(kind); link.appendChild(document.createTextNode(entry.t));
        if (entry.s) { snippet.className = 'snippet'; snippet.textContent = entry.s; link.appendChild(snippet); }
        item.appendChild(link); list.appendChild(item);
      });
      if (!found.length) {
        var none = document.createElement('li');
        none.className = 'empty'; none.textContent = 'Nothing found';
        list.appendChild(none);
      }
      list.hidden = false; input.setAttribute('aria-expanded', 'true');
    }
    input.addEventListener('input', show);
    input.addEventListener('focus', function () { if (input.value.trim()) show(); });
    input.addEventListener('keydown', function (event) {
      if (event.key === 'ArrowDown' || event.key === 'ArrowUp') {
        event.preventDefault();
        if (list.hidden) show();
        highlight(active + (event.key === 'ArrowDown' ? 1 : -1));
      } else if (event.key === 'Enter') {
        var items = options(), pick = items[active >= 0 ? active : 0];
        if (pick) { event.preventDefault(); window.location.href = pick.querySelector('a').href; }
      } else if (event.key === 'Escape') {
        close();
      }
    });
    document.addEventListener('click', function (event) {
      if (!input.parentNode.contains(event.target)) close();
    });
  }

  /* A header list too long to write into every page (data-nav: its kind) is filled from the
   * index the first time it is opened, ahead of its "All N" link to the index page. */
  function fillList(details) {
    var list = details.querySelector('ul'), last = list.lastElementChild;
    var root = (document.querySelector('input.search-input') || details).getAttribute('data-root') || '';
    (window.lensreportSearchIndex || []).forEach(function (entry) {
      if (entry.k !== details.getAttribute('data-nav')) return;
      var item = document.createElement('li'), link = document.createElement('a');
      link.href = root + entry.u; link.textContent = entry.t;
      item.appendChild(link); list.insertBefore(item, last);
    });
  }
  document.querySelectorAll('details[data-nav]').forEach(function (details) {
    details.addEventListener('toggle', function filled() {
      if (!details.open) return;
      details.removeEventListener('toggle', filled);
      fillList(details);
    });
  });

  function typing(el) {
    return el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));
  }
  var inputs = document.querySelectorAll('input.search-input');
  inputs.forEach(setup);
  document.addEventListener('keydown', function (event) {
    if (event.key === '/' && !event.ctrlKey && !event.metaKey && !event.altKey &&
        !typing(document.activeElement) && inputs.length) {
      event.preventDefault();
      inputs[0].focus();
    }
  });
})();
