/* "What wrote it": direct logit attribution of one position's token (a document's
 * `decomposition`, README "Direct logit attribution"), drawn when a heatmap cell is picked.
 *
 * lensreport.js fires 'lensreport:pick' on a figure's section with {figure, layer, position};
 * this script draws, in that section's .attribution panel: a token switch (the final top-k,
 * the next input token, the target, each group's most likely member), the attribution of
 * every block's parts as bars, one series per part name (attention and MLP, a state-space
 * block's mixer, a hybrid's parts by module: components "<name>.<block>"), with the running
 * total (the token's direct logit by depth: embeddings and constant terms, then each block
 * added), and a block × head heatmap where the model splits its attention by head. Hover
 * gives the numbers.
 */
(function () {
  'use strict';

  function text(s) { return window.lensreport.plotlyText(String(s)); }
  function tokenText(figure, id) { return JSON.stringify(figure.token(id)); }

  /* Each attributed token at `pos` with what it is to the reader (top-2, next token, …). */
  function choices(figure, decomposition, pos) {
    var d = figure.d, roles = {}, last = figure.L - 1;
    function add(id, role) { (roles[id] = roles[id] || []).push(role); }
    figure.topk(last, pos).forEach(function (c, j) { add(c.id, 'top-' + (j + 1)); });
    if (pos < figure.T - 1) add(d.input_ids[pos + 1], 'next token');
    if (d.target_id !== null && d.target_id !== undefined) add(d.target_id, 'target');
    (d.groups || []).forEach(function (g) {
      var best = figure.groupMembers(g, last, pos)[0];
      if (best) add(best.id, 'group ' + g.name);
    });
    return decomposition.token_ids[pos].map(function (id, j) {
      return { id: id, j: j, label: (roles[id] || ['token']).join(', ') + ': ' + tokenText(figure, id) };
    });
  }

  function show(figure, pos) {
    var panel = figure.root.querySelector('.attribution');
    var decomposition = figure.d.decomposition;
    if (!panel) return;
    panel.hidden = false;
    var title = panel.querySelector('.attribution-title');
    var select = panel.querySelector('.attribution-token');
    var bars = panel.querySelector('.attribution-bars');
    var heads = panel.querySelector('.attribution-heads');
    var note = panel.querySelector('.attribution-note');
    if (!decomposition) {
      title.textContent = 'What wrote it';
      note.textContent = figure.d.decomposition_note ||
        (figure.partial ? 'The attribution loads with the rest of the figure\u2019s numbers.' : 'This run has no attribution.');
      select.hidden = true; bars.hidden = true; heads.hidden = true;
      return;
    }
    select.hidden = false; bars.hidden = false;
    title.textContent = 'What wrote it at position ' + pos + ' (' + tokenText(figure, figure.d.input_ids[pos]) + ')';
    select.textContent = '';
    choices(figure, decomposition, pos).forEach(function (c) {
      var option = document.createElement('option');
      option.value = String(c.j);
      option.textContent = c.label;
      select.appendChild(option);
    });
    select.onchange = function () { draw(figure, pos, Number(select.value)); };
    draw(figure, pos, 0);
  }

  /* How a part name reads, and its bars' colour (other names: the palette in turn). */
  var PARTS = { attn: ['attention', '#2f6fde'], mlp: ['MLP', '#e4572e'], mixer: ['mixer', '#8e5ccf'] };
  var PALETTE = ['#8e5ccf', '#f2a900', '#5b8c2a', '#c2185b', '#6d4c41'];

  function draw(figure, pos, j) {
    var panel = figure.root.querySelector('.attribution');
    var decomposition = figure.d.decomposition, attrs = decomposition.attrs;
    var names = decomposition.components, th = window.lensreport.theme(figure.root);
    var series = {}, order = [], perBlock = [], running = [], xs = [];
    var value = function (c) { return attrs[c][pos][j]; };
    var total = value(0) + value(names.length - 1);  // embeddings and constant terms
    var start = total;
    for (var c = 1; c < names.length - 1; c++) {  // "<name>.<block>", blocks in order
      var dot = names[c].lastIndexOf('.'), name = names[c].slice(0, dot);
      var b = Number(names[c].slice(dot + 1));
      if (!series[name]) { series[name] = { x: [], y: [] }; order.push(name); }
      series[name].x.push(b);
      series[name].y.push(value(c));
      perBlock[b] = (perBlock[b] || 0) + value(c);
    }
    for (b = 1; b < perBlock.length; b++) {
      xs.push(b);
      total += perBlock[b];
      running.push(total);
    }
    var id = decomposition.token_ids[pos][j], token = text(tokenText(figure, id));
    var note = panel.querySelector('.attribution-note');
    note.textContent = 'Direct logit of ' + JSON.stringify(figure.token(id)) + ': ' + total.toFixed(3) +
      ' (before any softcap) = embeddings ' + value(0).toFixed(3) + ' + constant terms ' +
      value(names.length - 1).toFixed(3) + ' + what each block wrote.' +
      (decomposition.heads ? '' : decomposition.heads_note ? ' ' + decomposition.heads_note + '.' : '');
    var bars = panel.querySelector('.attribution-bars');
    var others = 0;
    var traces = order.map(function (name) {
      var known = PARTS[name], label = known ? known[0] : name;
      var color = known ? known[1] : PALETTE[others++ % PALETTE.length];
      return { type: 'bar', name: text(label), x: series[name].x, y: series[name].y, marker: { color: color },
        hovertemplate: 'block %{x} ' + text(label) + ': %{y:.3f}<extra>' + token + '</extra>' };
    });
    Plotly.react(bars, traces.concat([
      { type: 'scatter', mode: 'lines+markers', name: 'running total', x: [0].concat(xs), y: [start].concat(running),
        line: { color: '#17a398' }, hovertemplate: 'after block %{x}: %{y:.3f}<extra>running total</extra>' }
    ]), {
      height: 280, barmode: 'group', margin: { l: 50, r: 10, t: 10, b: 40 },
      paper_bgcolor: th.paper_bgcolor, plot_bgcolor: th.plot_bgcolor, font: th.font,
      xaxis: { title: { text: 'block' } }, yaxis: { title: { text: 'logit' } },
      legend: { orientation: 'h', y: -0.25 }
    }, { displaylogo: false });
    var heads = panel.querySelector('.attribution-heads');
    if (!decomposition.heads) { heads.hidden = true; return; }
    heads.hidden = false;
    var per = decomposition.heads.attrs, z = [];
    for (var h = 0; h < per[0].length; h++) {
      z.push(per.map(function (block) { return block[h][pos][j]; }));
    }
    var bound = Math.max.apply(null, z.map(function (row) {
      return Math.max.apply(null, row.map(Math.abs));
    })) || 1;
    Plotly.react(heads, [{
      type: 'heatmap', z: z, x: xs, y: z.map(function (_, h) { return h; }), colorscale: 'RdBu', reversescale: true,
      zmin: -bound, zmax: bound, hovertemplate: 'block %{x} head %{y}: %{z:.3f}<extra>' + token + '</extra>',
      colorbar: { title: { text: 'logit', side: 'right' }, thickness: 12 }
    }], {
      height: Math.max(200, 60 + 16 * z.length), margin: { l: 50, r: 10, t: 10, b: 40 },
      paper_bgcolor: th.paper_bgcolor, plot_bgcolor: th.plot_bgcolor, font: th.font,
      xaxis: { title: { text: 'block' } }, yaxis: { title: { text: 'head' } }
    }, { displaylogo: false });
  }

  /* The attribution CSV of lensreport/site/tables.py attribution_csv, byte for byte, written
     by the browser where the site has no CSV files (site.csv_files false). */
  window.lensreport = window.lensreport || {};  // lensreport.js keeps it if it runs later
  window.lensreport.attributionCsv = function (figure) {
    var field = figure.d.decomposition, cell = window.lensreport.csvCell, heads = field.heads;
    var lines = ['position,token,component,attribution'];
    field.token_ids.forEach(function (ids, pos) {
      ids.forEach(function (id, j) {
        var token = cell(figure.token(id));
        function row(name, value) { lines.push([cell(pos, true), token, cell(name), cell(value)].join(',')); }
        field.components.forEach(function (name, c) { row(name, field.attrs[c][pos][j]); });
        if (!heads) return;
        heads.attrs.forEach(function (perHead, b) {
          perHead.forEach(function (values, h) { row('attn.' + (b + 1) + '.head' + h, values[pos][j]); });
          if (heads.bias) row('attn.' + (b + 1) + '.bias', heads.bias[b][pos][j]);
        });
      });
    });
    return lines.join('\r\n') + '\r\n';
  };

  document.addEventListener('lensreport:pick', function (event) {
    show(event.detail.figure, event.detail.position);
  });
})();
