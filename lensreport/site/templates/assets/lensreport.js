/* lensreport: turns the results documents on each page into Plotly figures.
 *
 * A page inlines, per figure, its lenses' documents (schema 2, as in data/) or a first view
 * of the first one (lensreport/site/figures.py), and where to fetch the whole documents.
 * fromDocument() reads a document into flat arrays indexed [layer][position] (or
 * [layer][position][k]): probabilities, nats, ranks as the document has them.
 * Every string shown by Plotly goes through plotlyText(): Plotly renders tags such as
 * <b>, <br> or <a href> in text, so '&', '<' and '>' are written as entities.
 * A lens that does not cover every row (data.rows lists the covered ones; absent = all) has
 * nulls at the other rows: blank cells, gaps in lines, nothing in hovers and top-k lists.
 */
(function () {
  'use strict';
  if (window.lensreport && window.lensreport.mount) return;  // loaded once per page
  var LOG_FLOOR = -40;  // log10 of a probability that underflowed to 0 (float32 stops near 1e-45)
  var LOG_MIN = -8;  // log-probability colour scales run from 1e-8 (and below) to 1

  function plotlyText(s) {
    return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  }
  function shortText(s, n) {
    var chars = Array.from(String(s));
    return chars.length > n ? chars.slice(0, n - 1).join('') + '…' : chars.join('');
  }
  function pct(p) { return p === null || p === undefined ? '–' : (100 * p).toFixed(p < 0.001 ? 3 : 1) + '%'; }
  /* A probability that may be far below 0.1 %: a percentage, else scientific (2.8e-7). */
  function prob(p) {
    if (p === null || p === undefined) return '–';
    return p >= 0.001 || p === 0 ? pct(p) : p.toExponential(1);
  }
  var SUPERSCRIPT = { '-': '⁻', '0': '⁰', '1': '¹', '2': '²', '3': '³', '4': '⁴', '5': '⁵', '6': '⁶', '7': '⁷', '8': '⁸', '9': '⁹' };
  function power(n) { return n === 0 ? '1' : '10' + String(n).replace(/./g, function (c) { return SUPERSCRIPT[c]; }); }
  /* Colour bar ticks for log10 values: 10⁻⁸ … 1 (log-probability), 1, 10, 100, … (rank). */
  function logTicks(low, high, rank) {
    var vals = [], text = [], step = Math.max(1, Math.ceil((high - low) / 6));
    for (var v = Math.ceil(low); v <= Math.floor(high); v += step) {
      vals.push(v);
      text.push(rank ? (v < 4 ? String(Math.pow(10, v)) : power(v)) : power(v));
    }
    return { tickmode: 'array', tickvals: vals, ticktext: text };
  }
  /* Colour scales plotly.js does not ship (it has Blues, Greens, Reds, Viridis, … but no
     Oranges or Magma): ColorBrewer / matplotlib stops, light to dark (Magma: dark to light). */
  var SCALES = {
    Oranges: ['#fff5eb', '#fee6ce', '#fdd0a2', '#fdae6b', '#fd8d3c', '#f16913', '#d94801', '#a63603', '#7f2704'],
    Purples: ['#fcfbfd', '#efedf5', '#dadaeb', '#bcbddc', '#9e9ac8', '#807dba', '#6a51a3', '#54278f', '#3f007d'],
    PuRd: ['#f7f4f9', '#e7e1ef', '#d4b9da', '#c994c7', '#df65b0', '#e7298a', '#ce1256', '#980043', '#67001f'],
    BuGn: ['#f7fcfd', '#e5f5f9', '#ccece6', '#99d8c9', '#66c2a4', '#41ae76', '#238b45', '#006d2c', '#00441b'],
    Magma: ['#000004', '#1c1044', '#4f127b', '#812581', '#b5367a', '#e55064', '#fb8761', '#fec287', '#fcfdbf']
  };
  var GROUP_SCALES = ['Purples', 'PuRd', 'BuGn', 'Oranges'];  // token groups' heatmap colours, in turn
  function colourScale(name) {
    var stops = SCALES[name];
    return stops ? stops.map(function (c, i) { return [i / (stops.length - 1), c]; }) : name;
  }
  /* A colour taken from the page's CSS (a theme's own), used inside Plotly's styled text. */
  function cssColour(el, name, fallback) {
    var v = css(el, name, fallback);
    return /^[#\w(),.\s%-]+$/.test(v) ? v : fallback;
  }
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

  /* A document's per-row field as one flat array: row after row, each flattened in order,
     and `width` nulls for a row the lens does not cover (a null row). */
  function cells(rows, L, width) {
    if (rows && rows.values) return rows.values;  // a packed array, unpacked flat
    var out = [];
    function walk(v) { if (Array.isArray(v)) v.forEach(walk); else out.push(v === undefined ? null : v); }
    for (var l = 0; l < L; l++) {
      if (rows[l] === null || rows[l] === undefined) for (var i = 0; i < width; i++) out.push(null);
      else walk(rows[l]);
    }
    return out;
  }
  function logs(values) {
    return values.map(function (p) { return p === null ? null : p > 0 ? Math.log10(p) : LOG_FLOOR; });
  }
  function halfFloat(h) {  // an IEEE 754 binary16 value (NaN for NaN)
    var sign = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
    if (e === 0) return sign * f * Math.pow(2, -24);
    if (e === 31) return f ? NaN : sign * Infinity;
    return sign * (1 + f / 1024) * Math.pow(2, e - 15);
  }
  /* Schema 3's packed arrays (lensreport/results/documents.py): uint32 codes stored as byte
     planes, deflated, base64; a row in null_rows is not stored. unpack() reads one into
     {shape, values}: the values flat, row after row, null where missing (a whole null row too). */
  var NULL_CODE = 0xFFFFFFFF, POW10 = [];
  for (var p10 = 0; p10 <= 22; p10++) POW10.push(parseFloat('1e' + p10));  // exact doubles
  function inflate(b64) {
    var text = atob(b64), bytes = new Uint8Array(text.length);
    for (var i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('deflate'));
    return new Response(stream).arrayBuffer().then(function (buffer) { return new Uint8Array(buffer); });
  }
  var DECODE = {
    int: function (c) { return c; },
    prob4: function (c) {  // 1 + 9000·(−e) + (m − 1000): m·10^(e−3); 0 is 0
      if (c === 0) return 0;
      c -= 1;
      var power = 3 + Math.floor(c / 9000), m = 1000 + c % 9000;
      // A quotient of exact doubles is correctly rounded: the double Python reads (documents.py).
      return power <= 22 ? m / POW10[power] : parseFloat(m + 'e-' + power);
    },
    fixed2: function (c) { return ((c >>> 1) ^ -(c & 1)) / 100; },  // zigzag, 2 decimals
    fixed4: function (c) { return ((c >>> 1) ^ -(c & 1)) / 10000; },  // zigzag, 4 decimals
    fixed5: function (c) { return ((c >>> 1) ^ -(c & 1)) / 100000; }  // 5 decimals (logits)
  };
  function unpackValues(b64, codec) {
    var decode = DECODE[codec];
    if (!decode) return Promise.reject(new Error('unknown codec ' + codec));
    return inflate(b64).then(function (b) {
      var n = b.length / 4, out = new Array(n);
      for (var i = 0; i < n; i++) {
        var c = (b[i] | (b[n + i] << 8) | (b[2 * n + i] << 16) | (b[3 * n + i] << 24)) >>> 0;
        out[i] = c === NULL_CODE ? null : decode(c);
      }
      return out;
    });
  }
  function unpack(packed) {
    return unpackValues(packed.zlib, packed.codec).then(function (stored) {
      var cell = packed.shape.slice(1).reduce(function (a, b) { return a * b; }, 1);
      var nulls = packed.null_rows || [], values = [], at = 0;
      for (var r = 0; r < packed.shape[0]; r++) {
        if (nulls.indexOf(r) >= 0) { for (var i = 0; i < cell; i++) values.push(null); }
        else { for (var j = 0; j < cell; j++) values.push(stored[at++]); }
      }
      return { shape: packed.shape, values: values };
    });
  }
  var GRID_FIELDS = ['topk_ids', 'topk_probs', 'entropy', 'kl_to_final', 'next_token_prob', 'next_token_rank', 'target_prob', 'target_rank'];
  var GROUP_FIELDS = ['prob', 'rank', 'top_ids', 'top_probs'];
  /* A document with its packed arrays unpacked (in place; schema 1 and 2 pass through). */
  function unpackDocument(doc) {
    var jobs = [];
    function one(holder, name) {
      var v = holder[name];
      if (v && v.zlib && v.shape) jobs.push(unpack(v).then(function (u) { holder[name] = u; }));
    }
    GRID_FIELDS.forEach(function (name) { one(doc, name); });
    (doc.target_groups || []).forEach(function (g) { GROUP_FIELDS.forEach(function (name) { one(g, name); }); });
    var dec = doc.decomposition;
    if (dec && dec.attrs && dec.attrs.zlib) {
      /* Its grids end in a position's attributed tokens, padded to the widest position:
         nested back into lists, each position's cut to its own tokens (documents.py). */
      var counts = dec.token_ids.map(function (ids) { return ids.length; });
      var nested = function (holder, name) {
        jobs.push(unpack(holder[name]).then(function (u) {
          var width = u.shape[u.shape.length - 1], T = counts.length, at = 0;
          function build(axis) {
            var out = [];
            if (axis === u.shape.length - 2) {
              for (var t = 0; t < T; t++, at += width) out.push(u.values.slice(at, at + counts[t]));
              return out;
            }
            for (var i = 0; i < u.shape[axis]; i++) out.push(build(axis + 1));
            return out;
          }
          holder[name] = build(0);
        }));
      };
      nested(dec, 'attrs');
      if (dec.heads) {
        nested(dec.heads, 'attrs');
        if (dec.heads.bias) nested(dec.heads, 'bias');
      }
    }
    if (doc.tracked_ids && doc.tracked_ids.zlib) {  // one packed array and each position's count
      var packedIds = doc.tracked_ids;
      jobs.push(unpackValues(packedIds.zlib, packedIds.codec).then(function (v) {
        var at = 0;
        doc.tracked_ids = packedIds.counts.map(function (n) { at += n; return v.slice(at - n, at); });
      }));
    }
    if (doc.tracked_probs && doc.tracked_probs.zlib) {
      var byToken = doc.tracked_probs.order === 'position, tracked id, layer';
      jobs.push(unpackValues(doc.tracked_probs.zlib, doc.tracked_probs.codec).then(function (v) {
        doc.tracked_probs = { values: v, byToken: byToken };
      }));
    }
    return Promise.all(jobs).then(function () { return doc; });
  }
  /* tracked_probs per position as [layer][j] flat (null or NaN at uncovered rows), from one
     array of every position's values: schema 3 packed at 4 decimals (each token's layers
     together, or before: each layer's tokens together), schema 2 float16 in base64 (each
     layer's tokens together); schema 1 lists. */
  function trackedProbs(field, tracked, L) {
    if (Array.isArray(field)) return field.map(function (rows, pos) { return cells(rows, L, tracked[pos].length); });
    if (field.values) {
      var from = 0;
      return tracked.map(function (ids) {
        var n = ids.length, block = field.values.slice(from, from + L * n);
        from += L * n;
        if (!field.byToken) return block;
        var out = new Array(L * n);  // stored token by token (each one's layers together)
        for (var j = 0; j < n; j++) for (var l = 0; l < L; l++) out[l * n + j] = block[j * L + l];
        return out;
      });
    }
    var bytes = atob(field.base64), at = 0;
    return tracked.map(function (ids) {
      var out = [];
      for (var i = 0; i < L * ids.length; i++, at++) {
        var v = halfFloat(bytes.charCodeAt(2 * at) | (bytes.charCodeAt(2 * at + 1) << 8));
        out.push(v !== v ? null : v);
      }
      return out;
    });
  }
  /* A results document (or a page's first view of one: top-k 1, entropy only) in the
     figure's layout; `lens` is how the page names its lens ({style, gap_text}). */
  /* How many values a cell of a [layer][position][j] field holds (its first covered row's). */
  function capital(text) { return text.charAt(0).toUpperCase() + text.slice(1); }
  function cellWidth(rows, none) {
    if (rows && rows.shape) return rows.shape.length > 2 ? rows.shape[2] : none;
    var covered = rows.filter(function (row) { return row; })[0];
    return covered && covered[0] ? covered[0].length : none;
  }
  /* Rows of `from` values each, padded with nulls to `to` values each. */
  function widen(values, L, from, to) {
    var out = [];
    for (var l = 0; l < L; l++) {
      for (var i = 0; i < to; i++) out.push(i < from ? values[l * from + i] : null);
    }
    return out;
  }
  function fromDocument(doc, lens) {
    var L = doc.layers.length, T = doc.input_ids.length, k = cellWidth(doc.topk_ids, 1);
    var d = {
      model: doc.model.name, layers: L, length: T, k: k, input_ids: doc.input_ids, vocab: doc.vocab,
      vocab_size: doc.model.vocab_size, target_id: doc.prompt.target_id, target: doc.prompt.target_token,
      rows: doc.lens.rows || null, gap_text: lens.gap_text, lens_style: lens.style,
      // Each row's depth: b = block b's output, b − 0.5 = after block b's attention.
      depths: doc.row_depths || Array.from({ length: L }, function (_, i) { return i; }),
      // Direct logit attribution, drawn by assets/attribution.js (null: the note says why).
      decomposition: doc.decomposition || null, decomposition_note: doc.decomposition_note || null,
      generated_from: doc.generated_from, template_mask: doc.template_mask,
      topk_ids: cells(doc.topk_ids, L, T * k),
      // A first view has no probabilities (it draws entropy and the top-1 token): nulls.
      topk_probs: doc.topk_probs ? cells(doc.topk_probs, L, T * k) : null,
      entropy: cells(doc.entropy, L, T), groups: []
    };
    var W = doc.positions;  // a long prompt's first view: the first W positions only
    if (W !== undefined && W < T) {
      d.topk_ids = widen(cells(doc.topk_ids, L, W * k), L, W * k, T * k);
      if (d.topk_probs) d.topk_probs = widen(d.topk_probs, L, W * k, T * k);
      d.entropy = widen(cells(doc.entropy, L, W), L, W, T);
    }
    if (doc.kl_to_final) d.kl_to_final = cells(doc.kl_to_final, L, T);
    if (doc.next_token_prob) {
      d.next_token_prob = cells(doc.next_token_prob, L, T);
      d.next_token_rank = cells(doc.next_token_rank, L, T);
      d.next_token_logp = logs(d.next_token_prob);
    }
    if (doc.target_prob) {
      d.target_prob = cells(doc.target_prob, L, T);
      d.target_rank = cells(doc.target_rank, L, T);
      d.target_logp = logs(d.target_prob);
    }
    (doc.target_groups || []).forEach(function (g) {
      var m = cellWidth(g.top_ids, 0), probs = cells(g.prob, L, T);
      d.groups.push({ name: g.name, ids: g.ids, m: m, prob: probs, logp: logs(probs), rank: cells(g.rank, L, T),
        top_ids: cells(g.top_ids, L, T * m), top_probs: cells(g.top_probs, L, T * m) });
    });
    if (doc.tracked_ids) {
      d.tracked_ids = doc.tracked_ids;
      d.tracked_probs = trackedProbs(doc.tracked_probs, doc.tracked_ids, L);
    }
    return d;
  }

  /* "Download CSV" without a file in data/ (site.csv_files false): the browser writes the
     CSV of lensreport/site/tables.py run_csv from the document, byte for byte: numbers as
     Python writes them, a text cell that a spreadsheet would read as a formula quoted. */
  function pyFloat(x) {
    if (Number.isInteger(x)) return x.toFixed(1);
    var parts = x.toExponential().split('e'), exp = Number(parts[1]);
    if (exp < -4 || exp >= 16) return parts[0] + 'e' + (exp < 0 ? '-' : '+') + (Math.abs(exp) < 10 ? '0' : '') + Math.abs(exp);
    return String(x);
  }
  function csvCell(v, integer) {
    if (v === null || v === undefined) return '';
    if (typeof v === 'number') return integer ? String(v) : pyFloat(v);
    var s = /^[=+\-@]/.test(v) ? "'" + v : v;  // tables.py FORMULA_START
    return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }
  Figure.prototype.csv = function () {
    var d = this.d, T = this.T, self = this;
    var header = ['layer', 'position', 'input_token', 'top1_token', 'top1_prob', 'entropy', 'kl_to_final',
      'next_token_prob', 'next_token_rank', 'target_prob', 'target_rank'];
    d.groups.forEach(function (g) { header.push('group ' + g.name + ' prob', 'group ' + g.name + ' rank'); });
    var lines = [header.map(function (h) { return csvCell(h); }).join(',')];
    function at(a, l, t) { return a ? self.at(a, l, t) : null; }
    for (var l = 0; l < this.L; l++) {
      for (var t = 0; t < T; t++) {
        var top = d.topk_ids[(l * T + t) * this.k], p = d.topk_probs[(l * T + t) * this.k];
        var row = [csvCell(l, true), csvCell(t, true), csvCell(this.token(d.input_ids[t])),
          csvCell(top === null || top === undefined ? null : this.token(top)), csvCell(p === undefined ? null : p),
          csvCell(at(d.entropy, l, t)), csvCell(at(d.kl_to_final, l, t)), csvCell(at(d.next_token_prob, l, t)),
          csvCell(at(d.next_token_rank, l, t), true), csvCell(at(d.target_prob, l, t)), csvCell(at(d.target_rank, l, t), true)];
        d.groups.forEach(function (g) { row.push(csvCell(at(g.prob, l, t)), csvCell(at(g.rank, l, t), true)); });
        lines.push(row.join(','));
      }
    }
    return lines.join('\r\n') + '\r\n';
  };
  /* A click on a CSV link (data-csv: the lens's index, data-file: the file's name) saves the
     CSV the browser writes. */
  Figure.prototype.setupCsv = function () {
    var self = this;
    this.root.querySelectorAll('a[data-csv]').forEach(function (a) {
      a.addEventListener('click', function (event) {
        event.preventDefault();
        self.loadFull().then(function () {
          if (self.partial) return;  // the note says why (file://)
          var lens = Number(a.getAttribute('data-csv')), shown = self.lens;
          self.use(lens);
          var text = a.getAttribute('data-csv-of') === 'attribution' ? api.attributionCsv(self) : self.csv();
          self.use(shown);
          var url = URL.createObjectURL(new Blob([text], { type: 'text/csv' })), link = document.createElement('a');
          link.href = url;
          link.download = a.getAttribute('data-file');
          document.body.appendChild(link);
          link.click();
          link.remove();
          setTimeout(function () { URL.revokeObjectURL(url); }, 1000);
        });
      });
    });
  };

  var WINDOW = 120;  // tokens shown at once for long prompts (a range slider pans)
  var CELL_TEXT_LIMIT = 200;  // longer prompts show the top-1 token on hover only
  /* One figure: `data` is what its page inlines ({id, model, lenses: [{style, gap_text,
     depth}], documents, fetch}): every lens's document, or the first view of the first one
     and the documents' URLs (`fetch`) for the rest. */
  function Figure(root, data) {
    this.root = root;
    this.info = data;
    this.lens = 0;
    this.partial = !!data.fetch;  // the first view: entropy and top-1 only, until fetched
    this.setDocuments(data.documents);
  }
  Figure.prototype.setDocuments = function (documents) {
    var lenses = this.info.lenses;
    this.variants = documents.map(function (doc, i) { return fromDocument(doc, lenses[i]); });
    this.use(Math.min(this.lens, this.variants.length - 1));
  };
  Figure.prototype.use = function (lens) {  // same tokens and layers, another lens's numbers
    this.lens = lens;
    this.d = this.variants[lens];
    this.L = this.d.layers; this.T = this.d.length; this.k = this.d.k;
  };
  /* The first view's figure fetches its documents once drawn (over HTTP; not from file://). */
  Figure.prototype.loadFull = function () {
    var urls = this.info.fetch, self = this;
    if (!this.partial || !urls) return Promise.resolve();
    if (this.loading) return this.loading;
    var fetched = location.protocol === 'file:'
      ? Promise.reject(new Error('file://'))  // browsers refuse; do not even try (no console error)
      : Promise.all(urls.map(function (url) {
        return fetch(url).then(function (r) { if (!r.ok) throw new Error(url + ': HTTP ' + r.status); return r.json(); }).then(unpackDocument);
      }));
    this.loading = fetched.then(function (documents) {
      var key = self.metric && self.metric.key;
      self.partial = false;
      self.setDocuments(documents);
      self.metricList = self.metrics();
      self.metric = self.metricList.filter(function (m) { return m.key === key; })[0] || self.metricList[0];
      self.fillSelect();
      self.enableLens(true);
      self.note('');
      return self.root.hasAttribute('data-lazy') ? null : self.draw().then(function () { self.defaultTrajectory(); });
    }).catch(function (error) {
      self.note(location.protocol === 'file:'
        ? 'This page shows the first view (entropy and the top-1 token). Other metrics, the top-k ' +
          'list, trajectories and the CSV load from ' + urls.join(', ') + ', which browsers do not fetch from ' +
          'file:// pages: open the site through a web server (lensreport serve, GitHub Pages).'
        : 'This page shows the first view (entropy and the top-1 token): the rest did not load (' + error.message + ').');
    });
    return this.loading;
  };
  Figure.prototype.note = function (text) {
    var el = this.root.querySelector('.figure-note');
    if (el) { el.textContent = text; el.hidden = !text; }
  };
  Figure.prototype.enableLens = function (on) {
    var select = this.root.querySelector('.lens-select');
    if (select) select.disabled = !on;
  };
  /* A row's depth (where the heatmap, trajectories and comparisons place it) and name. */
  Figure.prototype.depth = function (row) { return this.d.depths[row]; };
  Figure.prototype.rowName = function (row) {
    var depth = this.depth(row);
    return depth % 1 ? 'after attention ' + (depth + 0.5) : 'layer ' + depth;
  };
  /* Whether the current lens has numbers for this row. */
  Figure.prototype.covered = function (layer) {
    return !this.d.rows || this.d.rows.indexOf(layer) >= 0;
  };
  Figure.prototype.gapText = function () {
    return this.d.gap_text || 'no reading for this row';
  };
  Figure.prototype.at = function (array, layer, pos) {
    var v = array[layer * this.T + pos];
    return v === null || v === undefined ? null : v;
  };
  Figure.prototype.token = function (id) {
    var s = this.d.vocab[String(id)];
    return s === undefined ? '#' + id : s;
  };
  Figure.prototype.topk = function (layer, pos) {
    var out = [], base = (layer * this.T + pos) * this.k;
    if (!this.covered(layer)) return out;
    for (var j = 0; j < this.k; j++) {
      var id = this.d.topk_ids[base + j], p = this.d.topk_probs ? this.d.topk_probs[base + j] : null;
      if (id === null || id === undefined) continue;
      out.push({ id: id, p: p === null || p === undefined ? null : p });
    }
    return out;
  };
  Figure.prototype.metrics = function () {
    var d = this.d, self = this, list = [
      { key: 'entropy', label: 'Entropy (nats)', get: function (l, t) { return self.at(d.entropy, l, t); }, colorscale: 'Viridis', zmin: 0 },
      { key: 'top1', label: 'Top-1 probability', get: function (l, t) { var v = d.topk_probs[(l * self.T + t) * self.k]; return v === null || v === undefined ? null : v; }, colorscale: 'Blues', zmin: 0, zmax: 1 },
      { key: 'kl', label: 'KL(final ‖ layer) (nats)', get: function (l, t) { return self.at(d.kl_to_final, l, t); }, colorscale: 'Magma', zmin: 0 },
      { key: 'next', label: 'P(actual next token)', get: function (l, t) { return self.at(d.next_token_prob, l, t); }, colorscale: 'Greens', zmin: 0, zmax: 1 }
    ];
    list = list.filter(function (m) {
      return { entropy: d.entropy, top1: d.topk_probs, kl: d.kl_to_final, next: d.next_token_prob }[m.key];
    });
    /* Next to a probability: its log10 (LOG_MIN … 0) and the rank coloured by log10(rank),
       reversed, so rank 1 gets the colour of a high probability. Keys are stable strings:
       next_log, next_rank, target_log, target_rank, group:NAME, group_log:NAME, group_rank:NAME. */
    function logAndRank(logKey, rankKey, what, logp, ranks, colorscale, rankLabel) {
      if (logp) list.push({ key: logKey, label: 'log₁₀ P(' + what + ')', short: 'log₁₀ P', colorscale: colorscale,
        get: function (l, t) { return self.at(logp, l, t); }, zmin: LOG_MIN, zmax: 0, ticks: logTicks(LOG_MIN, 0, false) });
      if (ranks) list.push({ key: rankKey, label: (rankLabel || 'rank of ' + what) + ' (log scale)', short: 'log₁₀ rank', colorscale: colorscale, reversescale: true,
        get: function (l, t) { var r = self.at(ranks, l, t); return r === null ? null : Math.log10(r); },
        zmin: 0, zmax: self.rankMax(ranks), ticks: logTicks(0, self.rankMax(ranks), true) });
    }
    if (d.next_token_prob) logAndRank('next_log', 'next_rank', 'actual next token', d.next_token_logp, d.next_token_rank, 'Greens');
    if (d.target_prob) {
      list.push({ key: 'target', label: 'P(target ' + JSON.stringify(d.target) + ')', get: function (l, t) { return self.at(d.target_prob, l, t); }, colorscale: 'Oranges', zmin: 0, zmax: 1 });
      logAndRank('target_log', 'target_rank', 'target ' + JSON.stringify(d.target), d.target_logp, d.target_rank, 'Oranges');
    }
    (d.groups || []).forEach(function (g, i) {  // one per token group: P(name), its log, its best rank
      var colorscale = GROUP_SCALES[i % GROUP_SCALES.length];
      list.push({ key: 'group:' + g.name, label: 'P(' + g.name + ')', group: g, colorscale: colorscale, zmin: 0, zmax: 1,
        get: function (l, t) { return self.at(g.prob, l, t); } });
      logAndRank('group_log:' + g.name, 'group_rank:' + g.name, g.name, g.logp, g.rank, colorscale, 'best rank in ' + g.name);
    });
    return list;
  };
  /* The top of a rank colour scale: the vocabulary size (else the largest rank shown). */
  Figure.prototype.rankMax = function (ranks) {
    var top = this.d.vocab_size;
    if (!top) { top = 1; ranks.forEach(function (r) { if (r > top) top = r; }); }
    return Math.max(1, Math.log10(top));
  };
  /* The heatmap's colour attributes for a metric (log metrics: ticks 10⁻⁸ … 1, 1, 10, 100, …). */
  function colours(metric) {
    var ticks = metric.ticks || { tickmode: 'auto', tickvals: null, ticktext: null };
    return {
      colorscale: colourScale(metric.colorscale), reversescale: !!metric.reversescale,
      zmin: metric.zmin, zmax: metric.zmax === undefined ? null : metric.zmax, zauto: metric.zmax === undefined,
      colorbar: { title: { text: plotlyText(metric.label), side: 'right' }, thickness: 12,
        tickmode: ticks.tickmode, tickvals: ticks.tickvals, ticktext: ticks.ticktext }
    };
  }
  /* What a long prompt's light hover says of the value (a log metric's is a log10). */
  function valueHover(metric) {
    return '<b>layer %{y} · position %{x}</b><br>top-1: %{text}<br>' + plotlyText(metric.short || 'value') + ': %{z:.3f}<extra></extra>';
  }
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
        var lines = ['<b>' + this.rowName(l) + (l === this.L - 1 ? ' (output)' : '') + ' · position ' + t + '</b>',
          'input: ' + plotlyText(JSON.stringify(this.token(d.input_ids[t]))) + this.positionNote(t)];
        if (!this.covered(l)) {  // no numbers at all: none of this lens's, none of another's
          lines.push(plotlyText(this.gapText()));
          row.push(lines.join('<br>'));
          continue;
        }
        lines.push(
          'entropy ' + this.at(d.entropy, l, t).toFixed(2) + ' nats' +
            (d.kl_to_final ? ' · KL ' + this.at(d.kl_to_final, l, t).toFixed(2) : ''));
        if (t < this.T - 1 && d.next_token_prob) {
          lines.push('next ' + plotlyText(JSON.stringify(this.token(d.input_ids[t + 1]))) + ': ' +
            pct(this.at(d.next_token_prob, l, t)) + ' (rank ' + d.next_token_rank[l * this.T + t] + ')');
        }
        this.topk(l, t).forEach(function (c, j) {
          lines.push((j + 1) + '. ' + plotlyText(JSON.stringify(this.token(c.id))) + '  ' + pct(c.p));
        }, this);
        (d.groups || []).forEach(function (g) { lines.push(this.groupLine(g, l, t)); }, this);
        row.push(lines.join('<br>'));
      }
      rows.push(row);
    }
    return rows;
  };
  /* A token group at one cell: P(group), its best rank, and its most likely members. */
  Figure.prototype.groupMembers = function (g, layer, pos) {
    var out = [], base = (layer * this.T + pos) * g.m;
    for (var j = 0; j < g.m; j++) {
      var id = g.top_ids[base + j], p = g.top_probs[base + j];
      if (id === null || id === undefined) continue;
      out.push({ id: id, p: p === null || p === undefined ? null : p });
    }
    return out;
  };
  Figure.prototype.groupProb = function (g, layer, pos) {
    return this.at(g.prob, layer, pos);
  };
  Figure.prototype.groupLine = function (g, layer, pos) {
    var members = this.groupMembers(g, layer, pos).map(function (c) {
      return plotlyText(JSON.stringify(this.token(c.id))) + ' ' + (c.p ? pct(c.p) : plotlyText('<0.01%'));
    }, this);
    return 'P(' + plotlyText(g.name) + ') ' + prob(this.groupProb(g, layer, pos)) +
      ' · rank ' + g.rank[layer * this.T + pos] + (members.length ? ': ' + members.join(', ') : '');
  };
  /* What a position is, beyond its token: the chat template's, or generated by the model. */
  Figure.prototype.positionKind = function (pos) {
    var d = this.d;
    if (d.generated_from !== undefined && d.generated_from !== null && pos >= d.generated_from) return 'generated';
    if (d.template_mask && d.template_mask[pos]) return 'template';
    return '';
  };
  Figure.prototype.positionNote = function (pos) {
    return { generated: ' (generated)', template: ' (chat template)', '': '' }[this.positionKind(pos)];
  };
  /* The prompt's last position: the token before any generated text (what follows the prompt). */
  Figure.prototype.lastPrompt = function () {
    var g = this.d.generated_from;
    return g === undefined || g === null ? this.T - 1 : g - 1;
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
    return ticks.map(this.depth, this);
  };
  /* The heatmap's height in pixels (draw() sizes it so; placeholders keep it). */
  Figure.prototype.height = function () { return heatmapHeight(this.L, this.T); };
  function heatmapHeight(L, T) { return Math.max(260, 110 + 21 * L) + (T > WINDOW ? 50 : 0); }
  /* Give the heatmap's plot back (its data stays); returns the height it had. */
  Figure.prototype.release = function () {
    var el = this.root.querySelector('.heatmap'), height = el.offsetHeight || this.height();
    Plotly.purge(el);
    this.bound = false;  // purge drops the click handler too
    return height;
  };
  Figure.prototype.draw = function () {
    var el = this.root.querySelector('.heatmap'), th = theme(this.root), self = this;
    var positions = [], ticktext = [];
    for (var t = 0; t < this.T; t++) { positions.push(t); ticktext.push(this.tickLabel(t)); }
    this.metricList = this.metrics();
    this.metric = this.metric || this.metricList[0];
    var long = this.T > WINDOW, withText = this.T <= CELL_TEXT_LIMIT;
    var available = el.parentNode.clientWidth || 600;
    var width = long ? Math.max(available, 600) : Math.max(available, 90 + 62 * this.T);
    var height = this.height(), step = this.L > 1 ? this.depth(1) - this.depth(0) : 1;
    var trace = {
      type: 'heatmap', z: this.matrix(this.metric), x: positions, y: this.d.depths,
      text: this.cellText(), texttemplate: withText ? '%{text}' : '', textfont: { size: 10 },
      // Long prompts: a light hover (top-1 and the value), no string built per cell up
      // front; clicking a cell lists its top-k. Short ones: the full hover.
      customdata: long ? undefined : this.hover(),
      // A blank cell (a row the lens does not cover): its hover says so on short prompts, and
      // long prompts (whose hover shows the value) have none there.
      hoverongaps: !long,
      hovertemplate: long ? valueHover(this.metric) : '%{customdata}<extra></extra>',
      xgap: 1, ygap: 1
    };
    Object.assign(trace, colours(this.metric));
    var marks = this.generatedMarks();
    // ticklabeloverflow 'allow': the plot is as wide as its cells, so no label passes the
    // div; Plotly's default ('hide past div') measures every label (a layout each), which
    // took half of a 2,048-token page's first draw (benchmarks/first_view_benchmark.py).
    var layout = {
      width: width, height: height, margin: { l: 60, r: 20, t: marks.shapes.length ? 26 : 10, b: 90 },
      shapes: marks.shapes, annotations: marks.annotations,
      paper_bgcolor: th.paper_bgcolor, plot_bgcolor: th.plot_bgcolor, font: th.font,
      xaxis: long
        ? { tickmode: 'array', tickvals: positions, ticktext: ticktext, tickangle: -45, ticklabeloverflow: 'allow', title: { text: 'input token' },
            range: [-0.5, WINDOW - 0.5], rangeslider: { visible: true, thickness: 0.08 }, zeroline: false }
        : { tickmode: 'array', tickvals: positions, ticktext: ticktext, tickangle: -45, ticklabeloverflow: 'allow', title: { text: 'input token' }, fixedrange: false, zeroline: false },
      // Every row keeps its place, a blank one (a row the lens does not cover) included.
      yaxis: { tickmode: 'array', tickvals: this.layerTicks(), title: { text: 'layer' }, fixedrange: false,
        range: [-step / 2, this.depth(this.L - 1) + step / 2], zeroline: false },
      hoverlabel: { align: 'left', font: { family: 'ui-monospace, monospace', size: 12 } }
    };
    el.style.width = width + 'px';
    return Plotly.react(el, [trace], layout, { displaylogo: false, responsive: false }).then(function () {
      if (!self.bound) {
        self.bound = true;
        el.on('plotly_click', function (ev) {
          if (ev.points && ev.points[0]) self.pick(self.d.depths.indexOf(ev.points[0].y), ev.points[0].x);
        });
      }
    });
  };
  /* An x tick label: the chat template's tokens dimmed, generated ones bold in the accent
     colour (the token itself escaped; only our own tags around it). */
  Figure.prototype.tickLabel = function (pos) {
    var text = plotlyText(shortText(this.token(this.d.input_ids[pos]), 12)), kind = this.positionKind(pos);
    if (kind === 'template') return '<span style="color:' + cssColour(this.root, '--template-token', '#8d939c') + '">' + text + '</span>';
    if (kind === 'generated') return '<span style="color:' + cssColour(this.root, '--accent', '#2f6fde') + '"><b>' + text + '</b></span>';
    return text;
  };
  /* A dashed line before the first generated token, labelled "generated →". */
  Figure.prototype.generatedMarks = function () {
    var g = this.d.generated_from;
    if (g === undefined || g === null || g >= this.T) return { shapes: [], annotations: [] };
    var colour = cssColour(this.root, '--accent', '#2f6fde');
    return {
      shapes: [{ type: 'line', xref: 'x', yref: 'paper', x0: g - 0.5, x1: g - 0.5, y0: 0, y1: 1,
        line: { color: colour, width: 2, dash: 'dash' }, layer: 'above', name: 'generated' }],
      annotations: [{ xref: 'x', yref: 'paper', x: g - 0.5, y: 1, xanchor: 'left', yanchor: 'bottom',
        text: 'generated →', showarrow: false, font: { color: colour, size: 12 }, name: 'generated' }]
    };
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
      self.metricList = self.metricList || self.metrics();  // set by draw(): none yet if lazy
      self.metric = self.metricList.filter(function (m) { return m.key === select.value; })[0];
      // A figure not drawn (yet, or any more: a gallery page's, waiting to be seen) is drawn
      // with this metric when it is seen.
      var el = self.root.querySelector('.heatmap');
      if (self.root.hasAttribute('data-lazy') || !el.data) return;
      var c = colours(self.metric), update = {
        z: [self.matrix(self.metric)], colorscale: [c.colorscale], reversescale: [c.reversescale],
        zmin: [c.zmin], zmax: [c.zmax], zauto: [c.zauto], 'colorbar.title.text': [c.colorbar.title.text],
        'colorbar.tickmode': [c.colorbar.tickmode], 'colorbar.tickvals': [c.colorbar.tickvals],
        'colorbar.ticktext': [c.colorbar.ticktext]
      };
      if (self.T > WINDOW) update.hovertemplate = [valueHover(self.metric)];
      Plotly.restyle(el, update);
    });
  };
  /* The lens switch: same tokens and layers, another lens's numbers. */
  Figure.prototype.setupLens = function () {
    var select = this.root.querySelector('.lens-select'), self = this;
    if (!select) return;
    select.addEventListener('change', function () {
      var key = self.metric && self.metric.key;
      self.use(Number(select.value));
      self.metricList = self.metrics();
      self.metric = self.metricList.filter(function (m) { return m.key === key; })[0] || self.metricList[0];
      var el = self.root.querySelector('.trajectory');
      if (el && self.trajectoryDrawn) { Plotly.purge(el); self.trajectoryDrawn = false; self.tracks = []; }
      if (self.root.hasAttribute('data-lazy')) return;  // drawn with this lens when seen
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
        ys.push(!this.covered(l) || v === null || v === undefined ? null : v);
      }
      return ys;
    }
    return null;
  };
  /* P(group) at one position, layer by layer (null at rows the lens does not cover). */
  Figure.prototype.groupTrack = function (g, pos) {
    var ys = [];
    for (var l = 0; l < this.L; l++) ys.push(this.covered(l) ? this.at(g.prob, l, pos) : null);
    return ys;
  };
  /* A line on the trajectory chart: token `id` (or `label`, e.g. a group's "P(name)", with
     `id` its key) at position `pos`. */
  Figure.prototype.addTrajectory = function (pos, id, probs, label) {
    var el = this.root.querySelector('.trajectory');
    if (!el) return;
    var th = theme(this.root), key = pos + ':' + id;
    this.tracks = this.tracks || [];
    if (this.tracks.indexOf(key) >= 0) return;
    this.tracks.push(key);
    var trace = {
      type: 'scatter', mode: 'lines+markers', x: this.d.depths, y: probs,
      connectgaps: false,  // null at rows the lens does not cover
      name: (label === undefined ? plotlyText(JSON.stringify(this.token(id))) : plotlyText(label)) + ' @ ' + plotlyText(shortText(this.token(this.d.input_ids[pos]), 12)) + ' (pos ' + pos + ')',
      hovertemplate: 'layer %{x}: %{y:.2%}<extra>%{fullData.name}</extra>'
    };
    if (!this.trajectoryDrawn) {
      this.trajectoryDrawn = true;
      el.style.minHeight = '';  // the room a lazy page kept for it (drawWhenSeen)
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
      label.textContent = capital(this.rowName(layer)) + ', position ' + pos + ' — ' + this.gapText() + '.';
      picker.appendChild(label);
      return;
    }
    label.textContent = capital(this.rowName(layer)) + ', position ' + pos + ' — follow: ';
    this.root.dispatchEvent(new CustomEvent('lensreport:pick', { bubbles: true,
      detail: { figure: this, layer: layer, position: pos } }));
    picker.appendChild(label);
    this.topk(layer, pos).forEach(function (c) {
      var b = document.createElement('button');
      b.type = 'button'; b.className = 'token';
      b.textContent = self.token(c.id);
      b.title = JSON.stringify(self.token(c.id)) + ' ' + pct(c.p);
      b.addEventListener('click', function () { var ys = self.track(pos, c.id); if (ys) self.addTrajectory(pos, c.id, ys); });
      picker.appendChild(b);
    });
    (this.d.groups || []).forEach(function (g) {  // token groups: P(group) at this position
      var b = document.createElement('button');
      b.type = 'button'; b.className = 'token group';
      b.setAttribute('data-group', g.name);
      b.textContent = 'P(' + g.name + ')';
      b.title = 'P(' + g.name + ') ' + prob(self.groupProb(g, layer, pos)) + ': the summed probability of its ' + g.ids.length + ' token(s)';
      b.addEventListener('click', function () { self.addTrajectory(pos, 'group:' + g.name, self.groupTrack(g, pos), 'P(' + g.name + ')'); });
      picker.appendChild(b);
    });
  };
  Figure.prototype.defaultTrajectory = function () {
    var d = this.d, last = this.lastPrompt(), self = this;
    if (!this.root.querySelector('.trajectory')) return;
    if (d.target_prob) {
      var ys = [];
      for (var l = 0; l < this.L; l++) ys.push(this.at(d.target_prob, l, last));
      this.addTrajectory(last, d.target_id, ys);
    } else {
      var top = this.topk(this.L - 1, last)[0];  // none yet past a long first view's window
      var track = top && this.track(last, top.id);
      if (track) this.addTrajectory(last, top.id, track);
    }
    (d.groups || []).forEach(function (g) { self.addTrajectory(last, 'group:' + g.name, self.groupTrack(g, last), 'P(' + g.name + ')'); });
  };
  /* Per lens, at the prompt's last position (before any generated text): the probability of
     the model's final answer there, and of each token group. */
  Figure.prototype.answerCurves = function () {
    var L = this.depth(this.L - 1), curves = [], self = this;
    this.info.lenses.forEach(function (lens) {
      lens.depth.forEach(function (c) {
        curves.push({ x: c.y.map(function (_, l) { return L ? self.depth(l) / L : 0; }), y: c.y, label: c.label, curve: c.curve, lens: lens.style });
      });
    });
    return curves;
  };

  function drawComparison(figures, scope) {
    var el = (scope || document).querySelector('.comparison-chart');
    if (!el) return null;
    // A gallery (more models than LAZY_AFTER): lines only and no legend, hover names each curve.
    var th = theme(el), traces = [], colour = {}, many = figures.length > LAZY_AFTER;
    figures.forEach(function (f) {
      f.answerCurves().forEach(function (c) {
        // One colour per (model, curve): a model's lenses differ by dash only.
        var key = f.info.model + '\u0000' + c.curve;
        if (!(key in colour)) colour[key] = PALETTE[Object.keys(colour).length % PALETTE.length];
        traces.push({ type: 'scatter', mode: many ? 'lines' : 'lines+markers', x: c.x, y: c.y, connectgaps: false,
          line: { dash: c.lens.dash, color: colour[key] }, marker: { color: colour[key] },
          name: plotlyText(f.info.model) + (f.info.lenses.length > 1 ? ' (' + plotlyText(c.lens.label) + ')' : '') + ': ' + plotlyText(c.label),
          hovertemplate: 'depth %{x:.2f}: %{y:.2%}<extra>%{fullData.name}</extra>' });
      });
    });
    return Plotly.react(el, traces, {
      height: 300, margin: { l: 50, r: 10, t: 10, b: 40 }, paper_bgcolor: th.paper_bgcolor, plot_bgcolor: th.plot_bgcolor, font: th.font,
      xaxis: { title: { text: 'normalised depth (layer / layers)' }, range: [0, 1] }, yaxis: { title: { text: 'probability' }, range: [0, 1] },
      legend: { orientation: 'h', y: -0.25 }, showlegend: !many
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
          if (!s.values[metric]) return;  // a token group this series does not have
          var L = s.layers - 1, colour = PALETTE[i % PALETTE.length];
          var values = s.values[metric];
          var xs = values.map(function (_, l) { return byDepth ? (L ? l / L : 0) : l; });
          var ci = s.ci[metric], name = plotlyText(s.model) + ' (' + plotlyText(s.style.label) + ')';
          // A row the lens does not cover is null in the curve and in its interval: a gap.
          function bound(i) { return function (c) { return c ? c[i] : null; }; }
          if (ci) {  // no interval below the minimum number of documents
            traces.push({ type: 'scatter', mode: 'lines', x: xs, y: ci.map(bound(1)), line: { width: 0, color: colour },
              connectgaps: false, hoverinfo: 'skip', showlegend: false, legendgroup: name });
            traces.push({ type: 'scatter', mode: 'lines', x: xs, y: ci.map(bound(0)), line: { width: 0, color: colour },
              connectgaps: false, fill: 'tonexty', fillcolor: colour + '33', hoverinfo: 'skip', showlegend: false, legendgroup: name });
          }
          traces.push({ type: 'scatter', mode: 'lines+markers', x: xs, y: values, name: name, legendgroup: name,
            line: { color: colour, dash: s.style.dash }, marker: { size: 4 }, connectgaps: false,
            customdata: values.map(function (_, l) { return ci && ci[l] ? [l, ci[l][0], ci[l][1]] : [l, null, null]; }),
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

  /* A page with more figures than this (a prompt across a gallery of models) draws each
     heatmap when it comes near the screen: its place is kept by a placeholder of its height,
     so the scrollbar does not jump, and the first one is drawn at once. A heatmap far off
     screen (or hidden by the model picker) gives its plot back and keeps only its data. */
  var LAZY_AFTER = 12;
  var NEAR = '600px 0px', FAR = '3000px 0px';
  function drawWhenSeen(figures) {
    var pending = new Map(), drawn = new Map();
    function wait(f, height) {
      f.root.setAttribute('data-lazy', '');
      f.root.querySelector('.heatmap').style.minHeight = height + 'px';
      pending.set(f.root, f);
      near.observe(f.root);
    }
    function draw(f) {
      f.root.removeAttribute('data-lazy');
      return f.draw().then(function () {
        f.root.querySelector('.heatmap').style.minHeight = '';
        f.defaultTrajectory();
        drawn.set(f.root, f);
        far.observe(f.root);
        f.loadFull();  // the documents, after the first view is on screen
      });
    }
    var near = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) {
        var f = pending.get(entry.target);
        if (!entry.isIntersecting || !f) return;
        pending.delete(entry.target);
        near.unobserve(entry.target);
        draw(f);
      });
    }, { rootMargin: NEAR });
    var far = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) {
        var f = drawn.get(entry.target);
        if (entry.isIntersecting || !f) return;
        drawn.delete(entry.target);
        far.unobserve(entry.target);
        wait(f, f.release());
      });
    }, { rootMargin: FAR });
    figures.slice(1).forEach(function (f) {
      // Room for the default trajectory, except where it never comes: a first view on a
      // file:// page, which cannot fetch the tracked tokens.
      var trajectory = f.root.querySelector('.trajectory');
      if (trajectory && !(f.partial && location.protocol === 'file:')) trajectory.style.minHeight = '260px';
      wait(f, f.height());
    });
    return figures.length ? [draw(figures[0])] : [];
  }

  /* Resolves once the browser has painted what is drawn so far (the next frame, then a task). */
  function afterPaint() {
    return new Promise(function (resolve) {
      requestAnimationFrame(function () { setTimeout(resolve, 0); });
    });
  }

  var mounted = [];
  /* Draw every figure inside `scope` (the page, or one notebook output) exactly once. */
  function mount(scope) {
    var pending = [], lazy = scope.querySelectorAll('section.figure').length > LAZY_AFTER && 'IntersectionObserver' in window;
    scope.querySelectorAll('section.figure').forEach(function (root) {
      var script = root.querySelector('script.figure-data');
      if (!script || root.hasAttribute('data-mounted')) return;
      root.setAttribute('data-mounted', '');
      var data = JSON.parse(script.textContent), doc = data.documents[0];
      // Keep a lazy figure's room now, before its documents are unpacked (asynchronously), so
      // that nothing above a figure a link scrolled to grows after the scroll.
      if (lazy) root.querySelector('.heatmap').style.minHeight = heatmapHeight(doc.layers.length, doc.input_ids.length) + 'px';
      pending.push(Promise.all(data.documents.map(unpackDocument)).then(function (documents) {
        data.documents = documents;
        return [root, data];
      }));
    });
    return Promise.all(pending).then(function (found) { return mountFigures(scope, found); });
  }
  function mountFigures(scope, found) {
    var figures = [];
    found.forEach(function (item) {
      var f = new Figure(item[0], item[1]);
      f.setupSelect();
      f.setupLens();
      f.setupCsv();
      f.enableLens(!f.partial);
      // A first view on a file:// page says at once what it cannot fetch (so its note is in
      // the layout before any figure is drawn).
      if (f.partial && location.protocol === 'file:') f.loadFull();
      figures.push(f);
    });
    var all = figures.length > LAZY_AFTER && 'IntersectionObserver' in window
      ? drawWhenSeen(figures)
      : figures.map(function (f) {
        return f.draw().then(function () { f.defaultTrajectory(); f.loadFull(); });
      });
    // After the first heatmap is on screen: with a gallery of models the depth comparison
    // is the slowest plot of the page.
    all.push((all[0] || Promise.resolve()).then(afterPaint).then(function () {
      return drawComparison(figures, scope);
    }));
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
        if (f.root.hasAttribute('data-lazy')) return;  // drawn in the new colours when seen
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

  // attributionCsv: set by assets/attribution.js (the attribution CSV of a figure's
  // document), which may have run first.
  var api = { figures: [], curves: [], plotlyText: plotlyText, theme: theme, mount: mount, retheme: retheme,
    csvCell: csvCell, attributionCsv: (window.lensreport && window.lensreport.attributionCsv) || null };
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
