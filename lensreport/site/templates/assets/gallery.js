/* The index at gallery scale: filter, sort and page the models table (index.html).
   Without this script every row shows; with it, 50 rows a page. Text is only compared,
   never written as markup. */
(function () {
  'use strict';
  var table = document.getElementById('gallery-table');
  if (!table) return;
  var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
  var filter = document.querySelector('.gallery-filter');
  var count = document.querySelector('.gallery-count');
  var pager = document.querySelector('.gallery-pages');
  var size = parseInt(table.getAttribute('data-page-size'), 10) || 50;
  var page = 0, shown = rows;
  var text = rows.map(function (row) {
    return Array.prototype.slice.call(row.cells, 0, 4).map(function (c) { return c.textContent; }).join(' ').toLowerCase();
  });

  function render() {
    var pages = Math.max(1, Math.ceil(shown.length / size));
    page = Math.min(Math.max(page, 0), pages - 1);
    var first = page * size, last = Math.min(shown.length, first + size);
    rows.forEach(function (row) { row.hidden = true; });
    shown.forEach(function (row, i) { row.hidden = i < first || i >= last; body.appendChild(row); });
    count.textContent = shown.length === rows.length ? rows.length + ' models'
      : shown.length + ' of ' + rows.length + ' models';
    pager.hidden = pages < 2;
    pager.querySelector('span').textContent = shown.length ? (first + 1) + '–' + last + ' of ' + shown.length : 'no model matches';
    pager.querySelector('[data-page="-1"]').disabled = page === 0;
    pager.querySelector('[data-page="1"]').disabled = page >= pages - 1;
  }

  function apply() {
    var words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    shown = rows.filter(function (row, i) {
      return words.every(function (w) { return text[i].indexOf(w) >= 0; });
    });
    var sorted = table.querySelector('th[aria-sort="ascending"], th[aria-sort="descending"]');
    if (sorted) {
      var column = sorted.cellIndex, numeric = sorted.getAttribute('data-sort') === 'number';
      var sign = sorted.getAttribute('aria-sort') === 'ascending' ? 1 : -1;
      shown.sort(function (a, b) {
        var x = a.cells[column].getAttribute('data-value'), y = b.cells[column].getAttribute('data-value');
        var order = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
        return sign * order || rows.indexOf(a) - rows.indexOf(b);
      });
    }
    render();
  }

  filter.addEventListener('input', function () { page = 0; apply(); });
  table.querySelectorAll('th[data-sort] button').forEach(function (button) {
    button.addEventListener('click', function () {
      var th = button.parentNode, next = th.getAttribute('aria-sort') === 'ascending' ? 'descending' : 'ascending';
      table.querySelectorAll('th[data-sort]').forEach(function (other) { other.setAttribute('aria-sort', 'none'); });
      th.setAttribute('aria-sort', next);
      page = 0;
      apply();
    });
  });
  pager.addEventListener('click', function (event) {
    var step = event.target.getAttribute && event.target.getAttribute('data-page');
    if (step) { page += parseInt(step, 10); render(); }
  });
  apply();
}());
