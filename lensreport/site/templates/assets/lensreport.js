/* lensreport: turns the compact figure data on each page into Plotly figures.
 *
 * Data layout (see lensreport/figures.py): flat integer arrays indexed [layer][position]
 * (or [layer][position][k]); probabilities in units of 1e-4, nats in units of 1e-3.
 * Every string shown by Plotly goes through plotlyText(): Plotly renders tags such as
 * <b>, <br> or <a href> in text, so '&', '<' and '>' are written as entities.
 * A lens that does not cover every row (data.rows lists the covered ones; absent = all) has
 * nulls at the other rows: blank cells, gaps in lines, nothing in hovers and top-k lists.
 */
(function () {
  'use strict';
  if (window.lensreport && window.lensreport.mount) return;  // loaded once per page
  var PROB = 1e4, NATS = 1e3;

  function plotlyText(s) {
    return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  }
  function shortText(s, n) {
    var chars = Array.from(String(s));
    return chars.length > n ? chars.slice(0, n - 1).join('') + '…' : chars.join('');
  }
  function pct(p) { return p === null || p === undefined ? '–' : (100 * p).toFixed(p < 0.001 ? 3 : 1) + '%'; }
  /* Colours where the figure is, not at the page root: a notebook output sets its own
     variables (transparent background, the notebook's text colour), so figures follow a
     dark notebook theme as pages follow theirs. */
  function css(el, name, fallback) {
    var v = getComputedStyle(el).getPropertyValue(name).trim();
    return v && v !== 'inherit' && v !== 'transparent' ? v : fallback;
  }
  function theme(el) {
    el = el || document.documentElement;
    var bg = css(el, '--bg', 'rgba(0,0,0,0)');
    return {
      paper_bgcolor: bg, plot_bgcolor: bg,
      font: { color: css(el, '--fg', getComputedStyle(el).color || '#222'), family: 'system-ui, sans-serif', size: 12 },
      gridcolor: css(el, '--grid', '#ddd')
    };
  }

  var WINDOW = 120;  // tokens shown at once for long prompts (a range slider pans)
  var CELL_TEXT_LIMIT = 200;  // longer prompts show the top-1 token on hover only
  function Figure(root, data) {
    this.root = root;
    this.setData(data);
  }
  Figure.prototype.setData = function (data) {
    this.d = data;
    this.variants = [data].concat(data.variants || []);  // one per lens, same shape
    this.L = data.layers; this.T = data.length; this.k = data.k;
    this.partial = !!data.partial;  // a long prompt's first view: entropy and top-1 only
  };
  /* A long prompt's page carries the first view; the rest comes from its .figure.json. */
  Figure.prototype.loadFull = function () {
    var url = this.root.getAttribute('data-full'), self = this;
    if (!this.partial || !url) return Promise.resolve();
    var fetched = location.protocol === 'file:'
      ? Promise.reject(new Error('file://'))  // browsers refuse; do not even try (no console error)
      : fetch(url);
    return fetched.then(function (r) {
      if (!r.ok) throw new Error(r.status);
      return r.json();
    }).then(function (full) {
      var key = self.metric && self.metric.key;
      self.setData(full);
      self.metricList = self.metrics();
      self.metric = self.metricList.filter(function (m) { return m.key === key; })[0] || self.metricList[0];
      self.fillSelect();
      self.enableLens(true);
      self.note('');
      return self.draw().then(function () { self.defaultTrajectory(); });
    }).catch(function () {
      self.note('Long prompt: this page shows the first view (entropy and the top-1 token). ' +
        'Other metrics, the top-k list and trajectories load from ' + url + ', which browsers ' +
        'do not fetch from file:// pages: open the site through a web server (lensreport serve, GitHub Pages).');
    });
  };
  Figure.prototype.note = function (text) {
    var el = this.root.querySelector('.figure-note');
    if (el) { el.textContent = text; el.hidden = !text; }
  };
  Figure.prototype.enableLens = function (on) {
    var select = this.root.querySelector('.lens-select');
    if (select) select.disabled = !on;
  };
  /* Whether the current lens has numbers for this row. */
  Figure.prototype.covered = function (layer) {
    return !this.d.rows || this.d.rows.indexOf(layer) >= 0;
  };
  Figure.prototype.gapText = function () {
    return this.d.gap_text || 'no reading for this row';
  };
  Figure.prototype.at = function (array, layer, pos, scale) {
    var v = array[layer * this.T + pos];
    return v === null || v === undefined ? null : v / scale;
  };
  Figure.prototype.token = function (id) {
    var s = this.d.vocab[String(id)];
    return s === undefined ? '#' + id : s;
  };
  Figure.prototype.topk = function (layer, pos) {
    var out = [], base = (layer * this.T + pos) * this.k;
    if (!this.covered(layer)) return out;
    for (var j = 0; j < this.k; j++) {
      var id = this.d.topk_ids[base + j], p = this.d.topk_probs[base + j];
      if (id === null || id === undefined) continue;
      out.push({ id: id, p: p === null || p === undefined ? null : p / PROB });
    }
    return out;
  };
  Figure.prototype.metrics = function () {
    var d = this.d, self = this, list = [
      { key: 'entropy', label: 'Entropy (nats)', get: function (l, t) { return self.at(d.entropy, l, t, NATS); }, colorscale: 'Viridis', zmin: 0 },
      { key: 'top1', label: 'Top-1 probability', get: function (l, t) { var v = d.topk_probs[(l * self.T + t) * self.k]; return v === null || v === undefined ? null : v / PROB; }, colorscale: 'Blues', zmin: 0, zmax: 1 },
      { key: 'kl', label: 'KL(final ‖ layer) (nats)', get: function (l, t) { return self.at(d.kl_to_final, l, t, NATS); }, colorscale: 'Magma', zmin: 0 },
      { key: 'next', label: 'P(actual next token)', get: function (l, t) { return self.at(d.next_token_prob, l, t, PROB); }, colorscale: 'Greens', zmin: 0, zmax: 1 }
    ];
    list = list.filter(function (m) {
      return { entropy: d.entropy, top1: d.topk_probs, kl: d.kl_to_final, next: d.next_token_prob }[m.key];
    });
    if (d.target_prob) {
      list.push({ key: 'target', label: 'P(target ' + JSON.stringify(d.target) + ')', get: function (l, t) { return self.at(d.target_prob, l, t, PROB); }, colorscale: 'Oranges', zmin: 0, zmax: 1 });
    }
    return list;
  };
  Figure.prototype.matrix = function (metric) {
    var z = [];
    for (var l = 0; l < this.L; l++) {
      var row = [];
      for (var t = 0; t < this.T; t++) row.push(metric.get(l, t));
      z.push(row);
    }
    return z;
  };
  Figure.prototype.hover = function () {
    var d = this.d, rows = [];
    for (var l = 0; l < this.L; l++) {
      var row = [];
      for (var t = 0; t < this.T; t++) {
        var lines = ['<b>layer ' + l + (l === this.L - 1 ? ' (output)' : '') + ' · position ' + t + '</b>',
          'input: ' + plotlyText(JSON.stringify(this.token(d.input_ids[t])))];
        if (!this.covered(l)) {  // no numbers at all: none of this lens's, none of another's
          lines.push(plotlyText(this.gapText()));
          row.push(lines.join('<br>'));
          continue;
        }
        lines.push(
          'entropy ' + this.at(d.entropy, l, t, NATS).toFixed(2) + ' nats' +
            (d.kl_to_final ? ' · KL ' + this.at(d.kl_to_final, l, t, NATS).toFixed(2) : ''));
        if (t < this.T - 1 && d.next_token_prob) {
          lines.push('next ' + plotlyText(JSON.stringify(this.token(d.input_ids[t + 1]))) + ': ' +
            pct(this.at(d.next_token_prob, l, t, PROB)) + ' (rank ' + d.next_token_rank[l * this.T + t] + ')');
        }
        this.topk(l, t).forEach(function (c, j) {
          lines.push((j + 1) + '. ' + plotlyText(JSON.stringify(this.token(c.id))) + '  ' + pct(c.p));
        }, this);
        row.push(lines.join('<br>'));
      }
      rows.push(row);
    }
    return rows;
  };
  Figure.prototype.cellText = function () {
    var rows = [];
    for (var l = 0; l < this.L; l++) {
      var row = [];
      for (var t = 0; t < this.T; t++) {
        var id = this.d.topk_ids[(l * this.T + t) * this.k];
        row.push(!this.covered(l) || id === null || id === undefined ? '' : plotlyText(shortText(this.token(id), 10)));
      }
      rows.push(row);
    }
    return rows;
  };
  Figure.prototype.layerTicks = function () {
    var stride = Math.max(1, Math.ceil(this.L / 24)), ticks = [];
    for (var l = 0; l < this.L; l += stride) ticks.push(l);
    if (ticks[ticks.length - 1] !== this.L - 1) ticks.push(this.L - 1);  // always the last layer
    return ticks;
  };
  Figure.prototype.draw = function () {
    var el = this.root.querySelector('.heatmap'), th = theme(this.root), self = this;
    var positions = [], ticktext = [];
    for (var t = 0; t < this.T; t++) { positions.push(t); ticktext.push(plotlyText(shortText(this.token(this.d.input_ids[t]), 12))); }
    this.metricList = this.metrics();
    this.metric = this.metric || this.metricList[0];
    var long = this.T > WINDOW, withText = this.T <= CELL_TEXT_LIMIT;
    var available = el.parentNode.clientWidth || 600;
    var width = long ? Math.max(available, 600) : Math.max(available, 90 + 62 * this.T);
    var height = Math.max(260, 110 + 21 * this.L) + (long ? 50 : 0);
    var trace = {
      type: 'heatmap', z: this.matrix(this.metric), x: positions, y: Array.from({ length: this.L }, function (_, i) { return i; }),
      text: this.cellText(), texttemplate: withText ? '%{text}' : '', textfont: { size: 10 },
      // Long prompts: a light hover (top-1 and the value), no string built per cell up
      // front; clicking a cell lists its top-k. Short ones: the full hover.
      customdata: long ? undefined : this.hover(),
      // A blank cell (a row the lens does not cover): its hover says so on short prompts, and
      // long prompts (whose hover shows the value) have none there.
      hoverongaps: !long,
      hovertemplate: long ? '<b>layer %{y} · position %{x}</b><br>top-1: %{text}<br>value: %{z:.3f}<extra></extra>'
        : '%{customdata}<extra></extra>',
      colorscale: this.metric.colorscale, zmin: this.metric.zmin, zmax: this.metric.zmax,
      colorbar: { title: { text: plotlyText(this.metric.label), side: 'right' }, thickness: 12 }, xgap: 1, ygap: 1
    };
    var layout = {
      width: width, height: height, margin: { l: 60, r: 20, t: 10, b: 90 },
      paper_bgcolor: th.paper_bgcolor, plot_bgcolor: th.plot_bgcolor, font: th.font,
      xaxis: long
        ? { tickmode: 'array', tickvals: positions, ticktext: ticktext, tickangle: -45, title: { text: 'input token' },
            range: [-0.5, WINDOW - 0.5], rangeslider: { visible: true, thickness: 0.08 }, zeroline: false }
        : { tickmode: 'array', tickvals: positions, ticktext: ticktext, tickangle: -45, title: { text: 'input token' }, fixedrange: false, zeroline: false },
      // Every row keeps its place, a blank one (a row the lens does not cover) included.
      yaxis: { tickmode: 'array', tickvals: this.layerTicks(), title: { text: 'layer' }, fixedrange: false, range: [-0.5, this.L - 0.5], zeroline: false },
      hoverlabel: { align: 'left', font: { family: 'ui-monospace, monospace', size: 12 } }
    };
    el.style.width = width + 'px';
    return Plotly.react(el, [trace], layout, { displaylogo: false, responsive: false }).then(function () {
      if (!self.bound) {
        self.bound = true;
        el.on('plotly_click', function (ev) { if (ev.points && ev.points[0]) self.pick(ev.points[0].y, ev.points[0].x); });
      }
    });
  };
  Figure.prototype.fillSelect = function () {
    var select = this.root.querySelector('.metric-select'), current = this.metric && this.metric.key;
    if (!select) return;
    select.textContent = '';
    this.metrics().forEach(function (m) {
      var o = document.createElement('option'); o.value = m.key; o.textContent = m.label; select.appendChild(o);
    });
    if (current) select.value = current;
  };
  Figure.prototype.setupSelect = function () {
    var select = this.root.querySelector('.metric-select'), self = this;
    if (!select) return;
    this.fillSelect();
    select.addEventListener('change', function () {
      self.metric = self.metricList.filter(function (m) { return m.key === select.value; })[0];
      Plotly.restyle(self.root.querySelector('.heatmap'), {
        z: [self.matrix(self.metric)], colorscale: [self.metric.colorscale],
        zmin: [self.metric.zmin], zmax: [self.metric.zmax === undefined ? null : self.metric.zmax],
        zauto: [self.metric.zmax === undefined], 'colorbar.title.text': [plotlyText(self.metric.label)]
      });
    });
  };
  /* The lens switch: same tokens and layers, another lens's numbers. */
  Figure.prototype.setupLens = function () {
    var select = this.root.querySelector('.lens-select'), self = this;
    if (!select) return;
    select.addEventListener('change', function () {
      var key = self.metric && self.metric.key;
      self.d = self.variants[Number(select.value)];
      self.metricList = self.metrics();
      self.metric = self.metricList.filter(function (m) { return m.key === key; })[0] || self.metricList[0];
      var el = self.root.querySelector('.trajectory');
      if (el && self.trajectoryDrawn) { Plotly.purge(el); self.trajectoryDrawn = false; self.tracks = []; }
      self.draw().then(function () { self.defaultTrajectory(); });
    });
  };
  /* Token trajectories: probability of one token at one position, layer by layer. */
  Figure.prototype.track = function (pos, id) {
    var d = this.d, ys = [];
    if (d.tracked_ids) {
      var j = d.tracked_ids[pos].indexOf(id);
      if (j < 0) return null;
      var n = d.tracked_ids[pos].length;
      for (var l = 0; l < this.L; l++) {
        var v = d.tracked_probs[pos][l * n + j];
        ys.push(!this.covered(l) || v === null || v === undefined ? null : v / PROB);
      }
      return ys;
    }
    return null;
  };
  Figure.prototype.addTrajectory = function (pos, id, probs) {
    var el = this.root.querySelector('.trajectory');
    if (!el) return;
    var th = theme(this.root), key = pos + ':' + id;
    this.tracks = this.tracks || [];
    if (this.tracks.indexOf(key) >= 0) return;
    this.tracks.push(key);
    var trace = {
      type: 'scatter', mode: 'lines+markers', x: Array.from({ length: this.L }, function (_, i) { return i; }), y: probs,
      connectgaps: false,  // null at rows the lens does not cover
      name: plotlyText(JSON.stringify(this.token(id))) + ' @ ' + plotlyText(shortText(this.token(this.d.input_ids[pos]), 12)) + ' (pos ' + pos + ')',
      hovertemplate: 'layer %{x}: %{y:.2%}<extra>%{fullData.name}</extra>'
    };
    if (!this.trajectoryDrawn) {
      this.trajectoryDrawn = true;
      return Plotly.newPlot(el, [trace], {
        height: 260, margin: { l: 50, r: 10, t: 10, b: 40 }, paper_bgcolor: th.paper_bgcolor, plot_bgcolor: th.plot_bgcolor, font: th.font,
        xaxis: { title: { text: 'layer' } }, yaxis: { title: { text: 'probability' }, range: [0, 1] }, legend: { orientation: 'h', y: -0.25 }
      }, { displaylogo: false });
    }
    return Plotly.addTraces(el, [trace]);
  };
  Figure.prototype.pick = function (layer, pos) {
    var picker = this.root.querySelector('.token-picker'), self = this;
    if (!picker) return;
    picker.textContent = '';
    var label = document.createElement('span');
    label.className = 'hint';
    if (!this.covered(layer)) {
      label.textContent = 'Layer ' + layer + ', position ' + pos + ' — ' + this.gapText() + '.';
      picker.appendChild(label);
      return;
    }
    label.textContent = 'Layer ' + layer + ', position ' + pos + ' — follow: ';
    picker.appendChild(label);
    this.topk(layer, pos).forEach(function (c) {
      var b = document.createElement('button');
      b.type = 'button'; b.className = 'token';
      b.textContent = self.token(c.id);
      b.title = JSON.stringify(self.token(c.id)) + ' ' + pct(c.p);
      b.addEventListener('click', function () { var ys = self.track(pos, c.id); if (ys) self.addTrajectory(pos, c.id, ys); });
      picker.appendChild(b);
    });
  };
  Figure.prototype.defaultTrajectory = function () {
    var d = this.d, last = this.T - 1;
    if (!this.root.querySelector('.trajectory')) return;
    if (d.target_prob) {
      var ys = [];
      for (var l = 0; l < this.L; l++) ys.push(this.at(d.target_prob, l, last, PROB));
      this.addTrajectory(last, d.target_id, ys);
    } else {
      var answer = this.topk(this.L - 1, last)[0].id, track = this.track(last, answer);
      if (track) this.addTrajectory(last, answer, track);
    }
  };
  /* Probability of the model's final answer at the last position, per lens. */
  Figure.prototype.answerCurves = function () {
    var self = this, current = this.d, curves = [];
    this.variants.forEach(function (variant) {
      self.d = variant;
      var last = self.T - 1, answer = self.topk(self.L - 1, last)[0].id, ys = self.track(last, answer), L = self.L - 1;
      if (ys) curves.push({ x: ys.map(function (_, l) { return L ? l / L : 0; }), y: ys, answer: self.token(answer), lens: variant.lens_style });
    });
    this.d = current;
    return curves;
  };

  function drawComparison(figures, scope) {
    var el = (scope || document).querySelector('.comparison-chart');
    if (!el) return;
    var th = theme(el), traces = [];
    figures.forEach(function (f) {
      f.answerCurves().forEach(function (c) {
        traces.push({ type: 'scatter', mode: 'lines+markers', x: c.x, y: c.y, connectgaps: false,
          line: { dash: c.lens.dash },
          name: plotlyText(f.d.model) + (f.variants.length > 1 ? ' (' + plotlyText(c.lens.label) + ')' : '') + ': ' + plotlyText(JSON.stringify(c.answer)),
          hovertemplate: 'depth %{x:.2f}: %{y:.2%}<extra>%{fullData.name}</extra>' });
      });
    });
    Plotly.react(el, traces, {
      height: 300, margin: { l: 50, r: 10, t: 10, b: 40 }, paper_bgcolor: th.paper_bgcolor, plot_bgcolor: th.plot_bgcolor, font: th.font,
      xaxis: { title: { text: 'normalised depth (layer / layers)' }, range: [0, 1] }, yaxis: { title: { text: 'probability' }, range: [0, 1] },
      legend: { orientation: 'h', y: -0.25 }
    }, { displaylogo: false });
  }

  /* Corpus curves: one panel per metric, a line per (model, lens) with a 95 % band. */
  var PALETTE = ['#2f6fde', '#e4572e', '#17a398', '#9b5de5', '#f2a541', '#6c757d', '#d63384', '#198754'];
  function drawCurves(section) {
    var data = JSON.parse(section.querySelector('script.corpus-data').textContent);
    var select = section.querySelector('.depth-select'), logAxis = {};
    data.metrics.forEach(function (m) { logAxis[m.name] = m.log; });  // the metric table, from Python
    function render() {
      var byDepth = !select || select.value === 'depth', th = theme(section), all = [];
      section.querySelectorAll('.curve-panel').forEach(function (panel) {
        var metric = panel.getAttribute('data-metric'), traces = [];
        data.series.forEach(function (s, i) {
          var L = s.layers - 1, colour = PALETTE[i % PALETTE.length];
          var xs = s[metric].map(function (_, l) { return byDepth ? (L ? l / L : 0) : l; });
          var ci = s[metric + '_ci'], name = plotlyText(s.model) + ' (' + plotlyText(s.style.label) + ')';
          // A row the lens does not cover is null in the curve and in its interval: a gap.
          function bound(i) { return function (c) { return c ? c[i] : null; }; }
          if (ci) {  // no interval below the minimum number of documents
            traces.push({ type: 'scatter', mode: 'lines', x: xs, y: ci.map(bound(1)), line: { width: 0, color: colour },
              connectgaps: false, hoverinfo: 'skip', showlegend: false, legendgroup: name });
            traces.push({ type: 'scatter', mode: 'lines', x: xs, y: ci.map(bound(0)), line: { width: 0, color: colour },
              connectgaps: false, fill: 'tonexty', fillcolor: colour + '33', hoverinfo: 'skip', showlegend: false, legendgroup: name });
          }
          traces.push({ type: 'scatter', mode: 'lines+markers', x: xs, y: s[metric], name: name, legendgroup: name,
            line: { color: colour, dash: s.style.dash }, marker: { size: 4 }, connectgaps: false,
            customdata: s[metric].map(function (_, l) { return ci && ci[l] ? [l, ci[l][0], ci[l][1]] : [l, null, null]; }),
            hovertemplate: 'layer %{customdata[0]}: %{y:.4f}' + (ci ? ' [%{customdata[1]:.4f}, %{customdata[2]:.4f}]' : ' (no interval)') + '<extra>%{fullData.name}</extra>' });
        });
        var el = panel.querySelector('.curve-chart');
        all.push(Plotly.react(el, traces, {
          height: 320, margin: { l: 55, r: 10, t: 10, b: 45 }, paper_bgcolor: th.paper_bgcolor, plot_bgcolor: th.plot_bgcolor, font: th.font,
          xaxis: { title: { text: byDepth ? 'normalised depth (layer / layers)' : 'layer' } },
          // Cross-entropy, bits and KL span orders of magnitude from the first rows to the last.
          yaxis: logAxis[metric]
            ? { title: { text: plotlyText(panel.querySelector('h3').textContent) }, type: 'log' }
            : { title: { text: plotlyText(panel.querySelector('h3').textContent) }, rangemode: 'tozero' },
          legend: { orientation: 'h', y: -0.3 }, hovermode: 'closest'
        }, { displaylogo: false }));
      });
      return Promise.all(all);
    }
    if (select) select.addEventListener('change', render);
    return { render: render };
  }

  var mounted = [];
  /* Draw every figure inside `scope` (the page, or one notebook output) exactly once. */
  function mount(scope) {
    var figures = [];
    scope.querySelectorAll('section.figure').forEach(function (root) {
      var script = root.querySelector('script.figure-data');
      if (!script || root.hasAttribute('data-mounted')) return;
      root.setAttribute('data-mounted', '');
      var f = new Figure(root, JSON.parse(script.textContent));
      f.setupSelect();
      f.setupLens();
      f.enableLens(!f.partial);
      figures.push(f);
    });
    var all = figures.map(function (f) { return f.draw().then(function () { f.defaultTrajectory(); }); });
    if (figures.some(function (f) { return f.partial; })) {
      Promise.all(all).then(function () {
        return Promise.all(figures.map(function (f) { return f.loadFull(); }));
      }).then(function () { drawComparison(figures, scope); });
    }
    drawComparison(figures, scope);
    scope.querySelectorAll('section.corpus').forEach(function (section) {
      if (section.hasAttribute('data-mounted')) return;
      section.setAttribute('data-mounted', '');
      var curves = drawCurves(section);
      api.curves.push(curves);
      all.push(curves.render());
    });
    mounted.push({ figures: figures, scope: scope });
    Array.prototype.push.apply(api.figures, figures);
    return Promise.all(all).then(function () {
      var target = scope === document ? document.documentElement : scope;
      target.setAttribute('data-figures-ready', String(all.length));
    });
  }

  /* Redraw every figure in the page's colours now (theme() reads them): when the system's
     scheme changes, and on the theme switch's 'lensreport:theme' event (assets/theme.js). */
  function retheme() {
    mounted.forEach(function (m) {
      m.figures.forEach(function (f) {
        f.draw();
        var el = f.root.querySelector('.trajectory'), th = theme(f.root);
        if (el && f.trajectoryDrawn) {
          Plotly.relayout(el, { paper_bgcolor: th.paper_bgcolor, plot_bgcolor: th.plot_bgcolor, font: th.font });
        }
      });
      drawComparison(m.figures, m.scope);
    });
    api.curves.forEach(function (c) { c.render(); });
  }

  var api = { figures: [], curves: [], plotlyText: plotlyText, mount: mount, retheme: retheme };
  window.lensreport = api;
  if (window.matchMedia) {
    window.matchMedia('(prefers-color-scheme: dark)').addEventListener('change', retheme);
  }
  window.addEventListener('lensreport:theme', retheme);
  if (!document.querySelector('[data-lensreport-notebook]')) {
    if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', function () { mount(document); });
    else mount(document);
  }
})();
