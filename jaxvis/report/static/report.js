/* jaxvis run report: lays out window.JAXVIS_DATA (written by jaxvis.report from a run's results.jsonl and
   axes.json). Plain JavaScript, no library, no network: works from file:// and from any static server.
   Views: a sweep (tiles, compare, point detail), a saliency run, a folder of runs. */
(function () {
  "use strict";

  var D = window.JAXVIS_DATA;
  var app = document.getElementById("app");
  var J = (window.JAXVIS = { broken: 0, brokenSrc: [], ready: null });

  // ---------------------------------------------------------------------------------------------------
  // Small helpers.

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === null || v === undefined || v === false) return;
        if (k === "text") node.textContent = v;
        else if (k === "class") node.className = v;
        else if (k.slice(0, 2) === "on") node.addEventListener(k.slice(2), v);
        else node.setAttribute(k, v === true ? "" : v);
      });
    }
    (children || []).forEach(function (c) {
      if (c === null || c === undefined || c === false) return;
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }

  var SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, children) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }

  function img(src, attrs) {
    if (!src) {  // a run written without PNGs (--nopngs): the arrays hold the images
      return el("div", { class: "noimg", text: "no PNG written" });
    }
    var node = el("img", Object.assign({ src: src, alt: "" }, attrs || {}));
    node.addEventListener("error", function () { J.broken += 1; J.brokenSrc.push(src); });
    return node;
  }

  function fmt(v, digits) {
    if (v === null || v === undefined) return "–";
    if (typeof v !== "number") return String(v);
    if (!isFinite(v)) return String(v);
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential((digits || 4) - 1);
    return String(Number(v.toPrecision(digits || 4)));
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  function ready() {
    if (J.ready === null) {
      J.ready = performance.now();
      document.body.setAttribute("data-ready", "1");
    }
  }

  function header(title, status, links) {
    var statusClass = !status ? "" : !status.finished ? "partial" : status.diverged ? "diverged" : "finished";
    return el("header", null, [
      el("h1", { text: title }),
      status ? el("span", { class: "status " + statusClass, id: "status", text: status.text }) : null,
      links && links.length ? el("nav", { class: "files" }, links.map(function (l) {
        return el("a", { href: l[1], text: l[0] });
      })) : null,
    ]);
  }

  function select(id, label, options, value, onchange) {
    var s = el("select", { id: id });
    options.forEach(function (o) {
      var opt = el("option", { value: o[0], text: o[1] });
      if (String(o[0]) === String(value)) opt.selected = true;
      s.appendChild(opt);
    });
    s.addEventListener("change", function () { onchange(s.value); });
    return el("label", { class: "control" }, [el("span", { text: label }), s]);
  }

  // A line chart of one series over steps, drawn as SVG; null values break the line; ``mark`` is a step.
  function chart(title, values, colour, mark) {
    var W = 420, H = 190, L = 58, R = 12, T = 24, B = 30;
    var finite = values.filter(function (v) { return v !== null && isFinite(v); });
    var lo = finite.length ? Math.min.apply(null, finite) : 0;
    var hi = finite.length ? Math.max.apply(null, finite) : 1;
    if (hi - lo < 1e-12) { lo -= 0.5; hi += 0.5; }
    var n = values.length;
    function x(i) { return L + (W - L - R) * (n > 1 ? i / (n - 1) : 0); }
    function y(v) { return H - B - (H - B - T) * ((v - lo) / (hi - lo)); }
    var root = svg("svg", { viewBox: "0 0 " + W + " " + H, class: "chart", width: W, height: H, role: "img",
                            "aria-label": title });
    root.appendChild(svg("rect", { x: L, y: T, width: W - L - R, height: H - B - T, class: "frame" }));
    var label = svg("text", { x: L, y: 15, class: "title" });
    label.textContent = title;
    root.appendChild(label);
    [[hi, T + 4], [lo, H - B]].forEach(function (t) {
      var tick = svg("text", { x: L - 6, y: t[1], class: "tick", "text-anchor": "end" });
      tick.textContent = fmt(t[0], 3);
      root.appendChild(tick);
    });
    [[0, "start"], [n - 1, "end"]].forEach(function (t) {
      var tick = svg("text", { x: x(t[0]), y: H - B + 16, class: "tick", "text-anchor": t[1] });
      tick.textContent = "step " + (t[0] + 1);
      root.appendChild(tick);
    });
    var runs = [], cur = [];
    values.forEach(function (v, i) {
      if (v === null || !isFinite(v)) { if (cur.length) runs.push(cur); cur = []; }
      else cur.push(x(i).toFixed(1) + "," + y(v).toFixed(1));
    });
    if (cur.length) runs.push(cur);
    runs.forEach(function (pts) {
      root.appendChild(svg("polyline", { points: pts.join(" "), fill: "none", stroke: colour, "stroke-width": 2,
                                         class: "series" }));
    });
    if (mark !== null && mark !== undefined && mark >= 0) {
      root.appendChild(svg("line", { x1: x(mark), x2: x(mark), y1: T, y2: H - B, class: "mark" }));
    }
    return root;
  }

  // ---------------------------------------------------------------------------------------------------
  // A class-model sweep.

  function Sweep() {
    var A = D.axes, P = D.points;
    var axes = {};
    A.axes.forEach(function (a) { axes[a.name] = a; });
    var varying = A.varying.slice();
    var byIndex = {};
    P.forEach(function (p) { byIndex[p.index] = p; });
    var state = { filters: {}, sort: "index", reverse: false, mode: A.display || "stretch",
                  rows: null, cols: null };
    varying.forEach(function (n) { state.filters[n] = "all"; });
    if (varying.length) {
      state.cols = varying.indexOf("loss") >= 0 ? "loss" : varying[varying.length - 1];
      var rest = varying.filter(function (n) { return n !== state.cols; });
      state.rows = rest.indexOf("lr") >= 0 ? "lr" : (rest[0] || null);
    }
    var curves = {}, curveWaiters = {};
    window.JAXVIS_CURVES = function (chunk, data) {
      curves[chunk] = data;
      (curveWaiters[chunk] || []).forEach(function (f) { f(); });
      delete curveWaiters[chunk];
    };

    // width and height attributes give lazily loaded images their shape before they load
    var IW = A.input_size ? A.input_size[1] : 128, IH = A.input_size ? A.input_size[0] : 128;
    function sized(extra) { return Object.assign({ width: IW, height: IH }, extra); }
    function axisLabel(name, p) { return axes[name].labels[p.at[name]]; }
    function fileOf(p) { return (p.files && p.files[state.mode]) || p.file; }
    function caption(p) {
      return p.diverged ? "diverged at step " + p.diverged_step
        : "S=" + fmt(p.final_score, 3) + "  p=" + (p.final_prob === null || p.final_prob === undefined ? "–" : p.final_prob.toFixed(2));
    }
    function describe(p) {
      var lines = ["#" + p.index + "  " + p.label];
      A.axes.forEach(function (a) { lines.push(a.name + ": " + axisLabel(a.name, p)); });
      lines.push("final score: " + fmt(p.final_score), "probability: " + fmt(p.final_prob),
                 "final loss: " + fmt(p.final_loss),
                 "diverged: " + (p.diverged ? "at step " + p.diverged_step : "no"));
      return lines.join("\n");
    }
    function matches(p, skip) {
      for (var i = 0; i < varying.length; i++) {
        var n = varying[i];
        if (skip && skip.indexOf(n) >= 0) continue;
        var f = state.filters[n];
        if (f !== "all" && p.at[n] !== Number(f)) return false;
      }
      return true;
    }
    var SORTS = {
      index: { label: "grid order", key: function (p) { return p.index; }, desc: false },
      score: { label: "final score (highest first)", key: function (p) { return p.final_score; }, desc: true },
      prob: { label: "probability (highest first)", key: function (p) { return p.final_prob; }, desc: true },
      loss: { label: "final loss (lowest first)", key: function (p) { return p.final_loss; }, desc: false },
      divergence: { label: "divergence (earliest first)", desc: false,
                    key: function (p) { return p.diverged ? p.diverged_step : Infinity; } },
    };
    function sorted(list) {
      var s = SORTS[state.sort], sign = (s.desc ? -1 : 1) * (state.reverse ? -1 : 1);
      return list.slice().sort(function (a, b) {
        var ka = s.key(a), kb = s.key(b);
        var na = ka === null || ka === undefined || (typeof ka === "number" && isNaN(ka));
        var nb = kb === null || kb === undefined || (typeof kb === "number" && isNaN(kb));
        if (na !== nb) return na ? 1 : -1;                     // missing values last
        if (!na && ka !== kb) return ka < kb ? -sign : sign;
        return a.index - b.index;
      });
    }

    // Layout.
    var links = [["results.jsonl", "results.jsonl"], ["axes.json", "axes.json"]];
    (D.figures || []).forEach(function (f) { links.push([f, f]); });
    var s = A.settings || {};
    clear(app);
    // small images are enlarged with visible pixels; large ones are smoothed when shown smaller
    app.className = "sweep" + (A.input_size && Math.max(A.input_size[0], A.input_size[1]) < 160 ? " pixelated" : "");
    app.appendChild(header(D.title, D.status, links));
    if ((D.warnings || []).length) {
      // what the run said while it ran (warnings.jsonl): chunk files set aside, diverged points
      app.appendChild(el("div", { class: "warnings", id: "warnings" }, [
        el("p", { text: D.warnings.length + " warning(s) from the run:" }),
        el("ul", null, D.warnings.map(function (w) { return el("li", { text: w }); })),
      ]));
    }
    app.appendChild(el("p", { class: "summary", text: A.n_points + " points (" +
      (varying.length ? varying.map(function (n) { return axes[n].values.length + " " + n; }).join(" × ") : "one point") +
      "), " + (A.steps || s.steps) + " steps, optimiser " + (s.optimizer || "?") + ". Hover a tile for its values; " +
      "click it for its detail." }));
    var tabs = el("nav", { class: "tabs" });
    var controls = el("div", { class: "controls", id: "controls" });
    var view = el("main", { id: "view" });
    var tip = el("div", { id: "tip", class: "tip" });
    app.appendChild(tabs);
    app.appendChild(controls);
    app.appendChild(view);
    document.body.appendChild(tip);

    function buildControls() {
      clear(controls);
      var filters = el("div", { class: "group", id: "filters" }, [el("strong", { text: "Filter" })]);
      varying.forEach(function (n) {
        var opts = [["all", "all"]].concat(axes[n].labels.map(function (l, i) { return [i, l]; }));
        filters.appendChild(select("filter-" + n, n, opts, state.filters[n], function (v) {
          state.filters[n] = v; route();
        }));
      });
      if (!varying.length) filters.appendChild(el("span", { text: "nothing varies" }));
      controls.appendChild(filters);
      var sortOpts = Object.keys(SORTS).map(function (k) { return [k, SORTS[k].label]; });
      controls.appendChild(el("div", { class: "group" }, [
        select("sort", "sort by", sortOpts, state.sort, function (v) { state.sort = v; route(); }),
        el("label", { class: "control" }, [
          el("input", { type: "checkbox", id: "reverse", checked: state.reverse,
                        onchange: function (e) { state.reverse = e.target.checked; route(); } }),
          el("span", { text: "reverse" })]),
      ]));
      var modes = el("div", { class: "group", id: "modes" }, [el("strong", { text: "Display" })]);
      [["stretch", "stretched"], ["clip", "clipped"]].forEach(function (m) {
        modes.appendChild(el("label", { class: "control" }, [
          el("input", { type: "radio", name: "mode", value: m[0], id: "mode-" + m[0], checked: state.mode === m[0],
                        onchange: function () { state.mode = m[0]; swapImages(); } }),
          el("span", { text: m[1] })]));
      });
      controls.appendChild(modes);
    }

    function swapImages() {
      Array.prototype.forEach.call(document.querySelectorAll("img[data-point]"), function (node) {
        var p = byIndex[node.getAttribute("data-point")];
        if (p) node.src = fileOf(p);
      });
    }

    function showTip(e, text) {
      tip.textContent = text;
      tip.style.display = "block";
      var x = Math.min(e.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
      var y = Math.min(e.clientY + 14, window.innerHeight - tip.offsetHeight - 8);
      tip.style.left = x + "px";
      tip.style.top = y + "px";
    }
    function hideTip() { tip.style.display = "none"; }

    // Tiles: one element per point, made once and reordered.
    var tileNodes = {};
    function tile(p) {
      if (tileNodes[p.index]) return tileNodes[p.index];
      var node = el("a", { class: "tile" + (p.diverged ? " bad" : ""), href: "#point=" + p.index,
                           "data-index": p.index }, [
        img(fileOf(p), sized({ loading: "lazy", "data-point": p.index })),
        el("span", { class: "name", text: p.label }),
        el("span", { class: "cap", text: caption(p) }),
      ]);
      node.addEventListener("mousemove", function (e) { showTip(e, describe(p)); });
      node.addEventListener("mouseleave", hideTip);
      tileNodes[p.index] = node;
      return node;
    }

    function tilesView() {
      var shown = sorted(P.filter(function (p) { return matches(p); }));
      var grid = el("div", { class: "tiles", id: "tiles" });
      var frag = document.createDocumentFragment();
      shown.forEach(function (p) { frag.appendChild(tile(p)); });
      grid.appendChild(frag);
      view.appendChild(el("p", { class: "count", id: "count",
        text: shown.length + " of " + P.length + " points shown" +
              (D.status && !D.status.finished ? " (" + D.status.text + ")" : "") }));
      view.appendChild(grid);
    }

    function compareView() {
      if (varying.length === 0) {
        view.appendChild(el("p", { text: "Only one point: nothing to compare." }));
        return;
      }
      var names = varying.map(function (n) { return [n, n]; });
      var rowOpts = [["", "(none)"]].concat(names);
      view.appendChild(el("div", { class: "controls compare-axes" }, [
        select("rows", "rows", rowOpts, state.rows || "", function (v) { state.rows = v || null; route(); }),
        select("cols", "columns", names, state.cols, function (v) { state.cols = v; route(); }),
        el("span", { class: "hint", text: "The other axes are fixed by the filters above; a cell shows the first " +
                                          "matching point in the sort order." }),
      ]));
      var rowAxis = state.rows && state.rows !== state.cols ? state.rows : null;
      var colAxis = state.cols;
      var pool = sorted(P.filter(function (p) { return matches(p, [rowAxis, colAxis]); }));
      var rowVals = rowAxis ? axes[rowAxis].labels.map(function (l, i) { return i; }) : [null];
      var colVals = axes[colAxis].labels.map(function (l, i) { return i; });
      var table = el("table", { class: "compare", id: "compare", "data-rows": rowAxis || "", "data-cols": colAxis });
      var head = el("tr", null, [el("th", { class: "corner", text: (rowAxis || "") + " \\ " + colAxis })]);
      colVals.forEach(function (c) { head.appendChild(el("th", { class: "col", text: axes[colAxis].labels[c] })); });
      table.appendChild(el("thead", null, [head]));
      var body = el("tbody");
      rowVals.forEach(function (r) {
        var tr = el("tr", null, [el("th", { class: "row", text: rowAxis ? axes[rowAxis].labels[r] : "" })]);
        colVals.forEach(function (c) {
          var hits = pool.filter(function (p) { return p.at[colAxis] === c && (rowAxis === null || p.at[rowAxis] === r); });
          var td = el("td");
          if (hits.length) {
            var p = hits[0];
            var a = el("a", { href: "#point=" + p.index, class: p.diverged ? "bad" : "", "data-index": p.index }, [
              img(fileOf(p), sized({ loading: "lazy", "data-point": p.index })),
              el("span", { class: "cap", text: caption(p) }),
              hits.length > 1 ? el("span", { class: "more", text: "+" + (hits.length - 1) + " more" }) : null,
            ]);
            a.addEventListener("mousemove", function (e) { showTip(e, describe(p)); });
            a.addEventListener("mouseleave", hideTip);
            td.appendChild(a);
          } else {
            td.appendChild(el("span", { class: "empty", text: "—" }));
          }
          tr.appendChild(td);
        });
        body.appendChild(tr);
      });
      table.appendChild(body);
      view.appendChild(el("div", { class: "scroll" }, [table]));
    }

    function detailView(index) {
      var p = byIndex[index];
      if (!p) {
        view.appendChild(el("p", { text: "Point " + index + " is not finished (or does not exist)." }));
        return;
      }
      var order = sorted(P.filter(function (q) { return matches(q); }));
      var at = order.indexOf(p);
      var prev = at > 0 ? order[at - 1] : null, next = at >= 0 && at < order.length - 1 ? order[at + 1] : null;
      view.appendChild(el("div", { class: "detail-nav" }, [
        el("a", { href: "#tiles", text: "← all points" }),
        prev ? el("a", { href: "#point=" + prev.index, id: "detail-prev", text: "‹ previous" }) : null,
        next ? el("a", { href: "#point=" + next.index, id: "detail-next", text: "next ›" }) : null,
        el("span", { class: "hint", text: "(← → keys)" }),
      ]));
      var box = el("section", { class: "detail", id: "detail", "data-index": p.index });
      box.appendChild(el("h2", { text: "#" + p.index + " " + p.label }));
      var strip = el("div", { class: "strip", id: "strip" });
      (p.snapshots || []).forEach(function (s) {
        strip.appendChild(el("figure", null, [img(s[1], sized({})),
                                               el("figcaption", { text: "after " + s[0] + " steps" })]));
      });
      var finalImage = img(fileOf(p), sized({ "data-point": p.index }));
      if (p.boxes && p.boxes.length) {             // a detector's target boxes, in network-input pixels
        var frame = svg("svg", { viewBox: "0 0 " + IW + " " + IH, class: "boxes", preserveAspectRatio: "none" });
        p.boxes.forEach(function (b) {
          frame.appendChild(svg("rect", { x: b[0], y: b[1], width: b[2] - b[0], height: b[3] - b[1], class: "target",
                                          "vector-effect": "non-scaling-stroke" }));
        });
        finalImage = el("div", { class: "stack" }, [finalImage, frame]);
      }
      strip.appendChild(el("figure", { class: "final" }, [finalImage,
        el("figcaption", { text: "final (" + (state.mode === "clip" ? "clipped" : "stretched") + ")" +
                                 (p.boxes && p.boxes.length ? ", target box" + (p.boxes.length > 1 ? "es" : "") : "") })]));
      box.appendChild(strip);
      var charts = el("div", { class: "charts", id: "charts" }, [el("span", { text: "loading curves…" })]);
      box.appendChild(charts);
      function drawCurves() {
        var c = (curves[p.chunk] || {})[p.index];
        clear(charts);
        if (!c) { charts.appendChild(el("span", { text: "no curves stored for this point" })); return; }
        charts.appendChild(chart("loss", c.loss, "#1f77b4", c.diverged_step));
        charts.appendChild(chart("score of the target", c.score, "#d62728", c.diverged_step));
      }
      if (curves[p.chunk]) drawCurves();
      else {
        (curveWaiters[p.chunk] = curveWaiters[p.chunk] || []).push(drawCurves);
        var name = ("0000" + p.chunk).slice(-5);
        var tag = el("script", { src: D.curves_dir + "/" + name + ".js" });
        tag.addEventListener("error", function () {
          clear(charts); charts.appendChild(el("span", { text: "the curves file " + name + ".js is missing" }));
        });
        document.body.appendChild(tag);
      }
      var rows = [];
      A.axes.forEach(function (a) { rows.push([a.name, axisLabel(a.name, p)]); });
      rows.push(["weights", Object.keys(p.weights || {}).map(function (k) { return k + "=" + fmt(p.weights[k]); }).join(", ")]);
      rows.push(["final score", fmt(p.final_score, 6)], ["probability", fmt(p.final_prob, 6)],
                ["final loss", fmt(p.final_loss, 6)], ["diverged", p.diverged ? "at step " + p.diverged_step : "no"]);
      box.appendChild(el("table", { class: "settings" }, rows.map(function (r) {
        return el("tr", null, [el("th", { text: r[0] }), el("td", { text: r[1] })]);
      })));
      var files = el("ul", { class: "links" });
      Object.keys(p.files || {}).forEach(function (m) {
        files.appendChild(el("li", null, [el("a", { href: p.files[m], text: p.files[m] }), " (" + m + ")"]));
      });
      (p.snapshots || []).forEach(function (s) {
        files.appendChild(el("li", null, [el("a", { href: s[1], text: s[1] })]));
      });
      if (p.curve_png) files.appendChild(el("li", null, [el("a", { href: p.curve_png, text: p.curve_png }), " (curves as PNG)"]));
      files.appendChild(el("li", { text: "images.npy[" + p.index + "] (network input space), results.jsonl line " + (p.index + 1) }));
      box.appendChild(el("h3", { text: "Files" }));
      box.appendChild(files);
      box.appendChild(el("details", null, [el("summary", { text: "run settings" }),
                                           el("pre", { text: JSON.stringify(A.settings, null, 2) })]));
      view.appendChild(box);
    }

    function route() {
      hideTip();
      var hash = location.hash.replace(/^#/, "");
      var name = hash.indexOf("point=") === 0 ? "detail" : hash === "compare" ? "compare" : "tiles";
      clear(tabs);
      [["tiles", "Tiles"], ["compare", "Compare"]].forEach(function (t) {
        tabs.appendChild(el("a", { href: "#" + t[0], id: "tab-" + t[0], class: name === t[0] ? "active" : "", text: t[1] }));
      });
      if (name === "detail") tabs.appendChild(el("span", { class: "active", id: "tab-detail", text: "Point detail" }));
      clear(view);
      view.setAttribute("data-view", name);
      if (name === "tiles") tilesView();
      else if (name === "compare") compareView();
      else detailView(Number(hash.slice(6)));
    }

    buildControls();
    window.addEventListener("hashchange", route);
    // in the detail view, the arrow keys step through the points in the current filter and sort order
    document.addEventListener("keydown", function (e) {
      if (view.getAttribute("data-view") !== "detail" || /^(INPUT|SELECT|TEXTAREA)$/.test(e.target.tagName)) return;
      var link = e.key === "ArrowLeft" ? "prev" : e.key === "ArrowRight" ? "next" : null;
      var a = link && document.getElementById("detail-" + link);
      if (a) location.hash = a.getAttribute("href");
    });
    route();
    ready();
  }

  // ---------------------------------------------------------------------------------------------------
  // A saliency run.

  function Saliency() {
    var state = { method: "all", image: "all", opacity: 0.6 };
    clear(app);
    app.className = "saliency";
    app.appendChild(header(D.title, D.status, [["results.jsonl", "results.jsonl"]]));
    var controls = el("div", { class: "controls", id: "controls" });
    var view = el("main", { id: "view" });
    app.appendChild(controls);
    app.appendChild(el("p", { class: "legend" }, [
      el("span", { class: "key explained" }), "explained box or detection ",
      el("span", { class: "key derived" }), "box derived from the map ",
      el("span", { class: "key gt" }), "ground truth"]));
    app.appendChild(view);

    var methodOpts = [["all", "all"]].concat(D.methods.map(function (m) { return [m, m]; }));
    var imageOpts = [["all", "all"]].concat(D.groups.map(function (g, i) { return [i, g.image.split(/[\\/]/).pop()]; }));
    var slider = el("input", { type: "range", id: "opacity", min: 0, max: 1, step: 0.05, value: state.opacity });
    var shownValue = el("span", { id: "opacity-value", text: Math.round(state.opacity * 100) + "%" });
    slider.addEventListener("input", function () {
      state.opacity = Number(slider.value);
      shownValue.textContent = Math.round(state.opacity * 100) + "%";
      Array.prototype.forEach.call(document.querySelectorAll("img.heat.over"), function (n) { n.style.opacity = state.opacity; });
    });
    controls.appendChild(el("div", { class: "group" }, [
      el("strong", { text: "Filter" }),
      select("filter-method", "method", methodOpts, "all", function (v) { state.method = v; draw(); }),
      select("filter-image", "image", imageOpts, "all", function (v) { state.image = v; draw(); }),
    ]));
    controls.appendChild(el("div", { class: "group" }, [
      el("label", { class: "control" }, [el("span", { text: "map opacity" }), slider, shownValue])]));

    function boxes(w, h, list) {
      var root = svg("svg", { viewBox: "0 0 " + w + " " + h, class: "boxes", preserveAspectRatio: "none" });
      list.forEach(function (b) {
        if (!b[0] || b[0].length !== 4) return;
        var x1 = Math.min(b[0][0], b[0][2]), x2 = Math.max(b[0][0], b[0][2]);
        var y1 = Math.min(b[0][1], b[0][3]), y2 = Math.max(b[0][1], b[0][3]);
        root.appendChild(svg("rect", { x: x1, y: y1, width: x2 - x1, height: y2 - y1, class: b[1],
                                       "vector-effect": "non-scaling-stroke" }));
      });
      return root;
    }

    function stack(g, r, withMap) {
      var w = g.width || (r.map_size || [1, 1])[0], h = g.height || (r.map_size || [1, 1])[1];
      var box = el("div", { class: "stack", style: "aspect-ratio: " + w + " / " + h });
      if (g.file) box.appendChild(img(g.file, { class: "base", loading: "lazy" }));
      if (withMap && r && r.map_png) {
        var heat = img(r.map_png, { class: g.file ? "heat over" : "heat", loading: "lazy" });
        heat.style.opacity = g.file ? state.opacity : 1;
        box.appendChild(heat);
      }
      var list = [];
      if (r) {
        list.push([r.box, "explained"], [r.derived_box, "derived"], [r.gt_box, "gt"]);
      } else {
        var gts = {};
        g.methods.forEach(function (m) { m.items.forEach(function (it) { if (it.gt_box) gts[JSON.stringify(it.gt_box)] = it.gt_box; }); });
        Object.keys(gts).forEach(function (k) { list.push([gts[k], "gt"]); });
      }
      box.appendChild(boxes(w, h, list));
      return box;
    }

    function card(g, r) {
      var title = (r.label || r.target || "?") + (r.detection !== undefined && r.detection !== null ? " (detection " + r.detection + ")" : "");
      var facts = [["kind", r.kind], ["score", fmt(r.score)], ["detector score", r.det_score !== undefined ? fmt(r.det_score) : null],
                   ["label", r.label], ["target", r.target]];
      Object.keys(r.metrics || {}).forEach(function (k) {
        var v = r.metrics[k];
        facts.push([k.replace(/_/g, " "), typeof v === "boolean" ? (v ? "yes" : "no") : fmt(v)]);
      });
      var links = [];
      if (r.png) links.push(el("a", { href: r.png, text: "PNG" }));
      if (r.map) links.push(el("a", { href: r.map, text: "map (.npy)" }));
      return el("figure", { class: "card", "data-method": r.method || "gradient" }, [
        stack(g, r, true),
        r.map_png ? el("div", { class: "maponly" }, [img(r.map_png, { loading: "lazy", title: "the map alone" })]) : null,
        el("figcaption", null, [
          el("strong", { text: title }),
          el("table", { class: "facts" }, facts.filter(function (f) { return f[1] !== null && f[1] !== undefined; })
            .map(function (f) { return el("tr", null, [el("th", { text: f[0] }), el("td", { text: String(f[1]) })]); })),
          el("div", { class: "links" }, links),
        ]),
      ]);
    }

    function draw() {
      clear(view);
      var n = 0;
      D.groups.forEach(function (g, gi) {
        if (state.image !== "all" && Number(state.image) !== gi) return;
        var methods = g.methods.filter(function (m) { return state.method === "all" || m.method === state.method; });
        if (!methods.length) return;
        var section = el("section", { class: "image-group", "data-image": gi }, [el("h2", { text: g.image })]);
        var rows = el("div", { class: "rows" });
        methods.forEach(function (m) {
          var row = el("div", { class: "method-row", "data-method": m.method }, [
            el("div", { class: "method-name", text: m.method }),
            el("figure", { class: "card source" }, [stack(g, null, false), el("figcaption", { text: "image" })]),
          ]);
          m.items.forEach(function (r) { row.appendChild(card(g, r)); n += 1; });
          rows.appendChild(row);
        });
        section.appendChild(rows);
        view.appendChild(section);
      });
      view.insertBefore(el("p", { class: "count", id: "count", text: n + " maps shown" }), view.firstChild);
    }
    draw();
    ready();
  }

  // ---------------------------------------------------------------------------------------------------
  // The atlas of a layer's channels.

  function Atlas() {
    var C = D.channels, classes = Object.keys(D.classes), imp = D.importance || {};
    var dis = D.dissection || null, vis = D.visualisation || null, sheets = D.sheets || {};
    var state = { top: 8, measure: D.rank_by || "ablation", sort: "index", label: "all" };
    var measures = ["ablation", "contribution"].filter(function (m) {
      return classes.some(function (c) { return imp[c] && imp[c][m]; });
    });
    if (measures.indexOf(state.measure) < 0) state.measure = measures[0];
    clear(app);
    app.className = "atlas";
    app.appendChild(header(D.title, D.status, [["atlas.json", "atlas.json"]]));
    var summary = D.images + " images; " + C + " channels of " + D.layer + "; classes ranked by " + D.rank_by;
    if (dis) summary += "; dissection at the top " + fmt(100 * dis.top) + " % of each channel: " + dis.labelled +
      " of " + C + " channels labelled (IoU ≥ " + fmt(dis.min_iou) + ")";
    if (vis) summary += "; pictures: " + vis.seeds.length + " seed(s), " + vis.steps + " steps";
    app.appendChild(el("p", { class: "summary", text: summary }));
    if (D.skipped && D.skipped.length) {
      app.appendChild(el("div", { class: "warnings", id: "skipped" }, [
        el("p", { text: D.skipped.length + " thing(s) were left out of the dataset:" }),
        el("ul", null, D.skipped.slice(0, 50).map(function (w) { return el("li", { text: w }); }))]));
    }
    var tabs = el("nav", { class: "tabs", id: "tabs" });
    var controls = el("div", { class: "controls", id: "controls" });
    var view = el("main", { id: "view" });
    app.appendChild(tabs);
    app.appendChild(controls);
    app.appendChild(view);

    function score(cls, ch, m) {
      var v = imp[cls] && imp[cls][m || state.measure];
      return v ? v[ch] : null;
    }
    function label(ch) { return dis ? dis.labels[ch] : null; }
    function bestIou(ch) {
      return dis ? Math.max.apply(null, dis.iou[ch].map(function (v) { return v === null ? 0 : v; })) : null;
    }
    function tile(kind, ch, k, scale) {
      var sh = sheets[kind];
      if (!sh) return el("div", { class: "noimg", text: "no picture" });
      var col = (ch % sh.columns) * sh.per + k, row = Math.floor(ch / sh.columns);
      var w = sh.tile[0] * scale, h = sh.tile[1] * scale;
      return el("div", { class: "sprite", "data-sheet": kind, style: "width:" + w + "px;height:" + h + "px;" +
        "background-image:url(" + sh.file + ");background-size:" + sh.size[0] * scale + "px " + sh.size[1] * scale +
        "px;background-position:-" + col * w + "px -" + row * h + "px" });
    }
    function card(ch, cls) {
      var lab = label(ch);
      var lines = [el("span", { class: "name", text: "#" + ch })];
      if (cls) {
        lines.push(el("span", { class: "cap", text: state.measure + " " + fmt(score(cls, ch), 3) }));
      }
      if (lab) lines.push(el("span", { class: "chip", text: lab }));
      if (vis && !(vis.activation[ch][0] > 0)) {
        // zero all over the near-grey start, the channel had no gradient: its top regions show it instead
        lines.push(el("span", { class: "cap", text: "zero from a grey start" }));
      }
      return el("a", { class: "tile channel", href: "#channel=" + ch, "data-channel": ch,
                       title: "channel " + ch + (lab ? " (" + lab + ")" : "") }, [
        tile(sheets.pictures ? "pictures" : "patches", ch, 0, 1), el("div", { class: "caption" }, lines)]);
    }

    function faithTable() {
      var f = D.faithfulness;
      if (!f) return null;
      var agree = dis && dis.agreement;
      var rows = [el("tr", null, ["class", "targets", "top " + f.k + " zeroed", "median of " + f.random_sets +
        " random sets", "ratio"].concat(agree ? ["of the top " + f.k + ", labelled the class"] : []).map(
        function (h) { return el("th", { text: h }); }))];
      Object.keys(f.classes).forEach(function (c) {
        var r = f.classes[c];
        rows.push(el("tr", { "data-class": c }, [el("td", { text: c }), el("td", { text: String(r.count) }),
          el("td", { text: fmt(r.top) }), el("td", { text: fmt(r.median_random) }),
          el("td", { class: r.ratio >= 3 ? "good" : "bad", text: r.ratio === null ? "∞" : fmt(r.ratio, 3) }),
          agree ? el("td", { text: agree[c] === undefined ? "–" : String(agree[c]) }) : null]));
      });
      return el("section", null, [el("h3", { text: "Faithfulness: the mean drop of each class's score with its top " +
        f.k + " channels zeroed, on " + f.images + " held-out images, against random sets of " + f.k }),
        el("table", { class: "runs faith", id: "faithfulness" }, rows)]);
    }

    function byClass() {
      controls.appendChild(select("top", "channels per class", [[4, "4"], [8, "8"], [16, "16"], [32, "32"],
        [C, "all"]], state.top, function (v) { state.top = +v; draw(); }));
      controls.appendChild(select("measure", "order by", measures.map(function (m) { return [m, m]; }),
        state.measure, function (v) { state.measure = v; draw(); }));
      var list = el("div", { id: "classes" });
      view.appendChild(list);
      var faith = faithTable();
      if (faith) view.appendChild(faith);
      function draw() {
        clear(list);
        classes.forEach(function (c) {
          var order = D.classes[c].slice();
          if (state.measure !== D.rank_by) {
            order.sort(function (a, b) { return (score(c, b) || 0) - (score(c, a) || 0); });
          }
          var row = el("div", { class: "tiles class-row", "data-class": c });
          order.slice(0, state.top).forEach(function (ch) { row.appendChild(card(ch, c)); });
          list.appendChild(el("section", null, [el("h2", { text: c + " (" + (imp[c] ? imp[c].count : 0) +
            " targets)" }), row]));
        });
      }
      draw();
    }

    function allChannels() {
      var sorts = [["index", "channel index"], ["activation", "mean activation"]];
      if (dis) sorts.push(["iou", "best dissection IoU"]);
      classes.forEach(function (c) { sorts.push(["class:" + c, "importance for " + c]); });
      controls.appendChild(select("sort", "sort by", sorts, state.sort, function (v) { state.sort = v; draw(); }));
      if (dis) {
        controls.appendChild(select("label", "label", [["all", "all"], ["none", "none"]].concat(
          dis.classes.map(function (c) { return [c, c]; })), state.label, function (v) { state.label = v; draw(); }));
      }
      var grid = el("div", { class: "tiles", id: "tiles" });
      var count = el("p", { class: "count", id: "count" });
      view.appendChild(count);
      view.appendChild(grid);
      function key(ch) {
        if (state.sort === "activation") return -(D.mean_activation[ch] || 0);
        if (state.sort === "iou") return -bestIou(ch);
        if (state.sort.slice(0, 6) === "class:") return -(score(state.sort.slice(6), ch) || 0);
        return ch;
      }
      function draw() {
        clear(grid);
        var chans = [];
        for (var ch = 0; ch < C; ch++) {
          var lab = label(ch);
          if (state.label === "all" || (state.label === "none" ? !lab : lab === state.label)) chans.push(ch);
        }
        chans.sort(function (a, b) { return key(a) - key(b) || a - b; });
        var cls = state.sort.slice(0, 6) === "class:" ? state.sort.slice(6) : null;
        var frag = document.createDocumentFragment();
        chans.forEach(function (ch) { frag.appendChild(card(ch, cls)); });
        grid.appendChild(frag);
        count.textContent = chans.length + " channels shown";
      }
      draw();
    }

    function detail(ch) {
      var nav = el("div", { class: "detail-nav" }, [
        ch > 0 ? el("a", { href: "#channel=" + (ch - 1), text: "← #" + (ch - 1) }) : null,
        el("a", { href: "#", text: "classes" }), el("a", { href: "#channels", text: "all channels" }),
        ch < C - 1 ? el("a", { href: "#channel=" + (ch + 1), text: "#" + (ch + 1) + " →" }) : null]);
      var box = el("div", { class: "detail", id: "detail", "data-channel": ch });
      box.appendChild(el("h2", { text: "Channel " + ch + " of " + D.layer + (label(ch) ? ": " + label(ch) : "") }));
      if (sheets.pictures) {
        var pics = el("div", { class: "strip", id: "pictures" });
        for (var s = 0; s < sheets.pictures.per; s++) {
          pics.appendChild(el("figure", { class: "card" }, [tile("pictures", ch, s, 2),
            el("figcaption", { text: "seed " + vis.seeds[s] + ", mean activation " + fmt(vis.activation[ch][s], 3) })]));
        }
        box.appendChild(el("h3", { text: "What it responds to most (feature visualisation)" }));
        box.appendChild(pics);
        if (!vis.activation[ch].some(function (v) { return v > 0; })) {
          box.appendChild(el("p", { class: "hint", text: "The channel is zero all over the near-grey image the " +
            "pictures start from, so it has no gradient there and the picture stays grey: its strongest dataset " +
            "regions below show what it responds to." }));
        }
      }
      var pat = el("div", { class: "strip", id: "patches" });
      for (var k = 0; k < sheets.patches.per; k++) {
        pat.appendChild(el("figure", { class: "card" }, [tile("patches", ch, k, 1.5),
          el("figcaption", { text: D.patches.names[ch][k] + ": " + fmt(D.patches.values[ch][k], 3) })]));
      }
      box.appendChild(el("h3", { text: "Its strongest dataset regions (" + D.patches.side + " px around the cell)" }));
      box.appendChild(pat);
      var rows = [el("tr", null, ["class", "rank"].concat(measures).concat(dis ? ["dissection IoU"] : []).map(
        function (h) { return el("th", { text: h }); }))];
      classes.forEach(function (c) {
        var cells = [el("td", { text: c }), el("td", { text: String(D.classes[c].indexOf(ch) + 1) })];
        measures.forEach(function (m) { cells.push(el("td", { text: fmt(score(c, ch, m), 3) })); });
        if (dis) {
          var j = dis.classes.indexOf(c);
          cells.push(el("td", { text: j < 0 ? "–" : fmt(dis.iou[ch][j], 3) }));
        }
        rows.push(el("tr", { "data-class": c }, cells));
      });
      box.appendChild(el("h3", { text: "Importance per class (mean over the class's targets) and dissection" }));
      box.appendChild(el("table", { class: "runs", id: "per-class" }, rows));
      box.appendChild(el("p", { class: "summary", text: "mean activation over the dataset " +
        fmt(D.mean_activation[ch], 3) + (dis ? "; threshold (top " + fmt(100 * dis.top) + " %) " +
        fmt(dis.thresholds[ch], 3) : "") }));
      view.appendChild(nav);
      view.appendChild(box);
    }

    function route() {
      var h = location.hash.replace(/^#/, "");
      clear(controls);
      clear(view);
      clear(tabs);
      var which = h.indexOf("channel=") === 0 ? "detail" : h === "channels" ? "channels" : "classes";
      [["classes", "#", "classes"], ["channels", "#channels", "all channels"]].forEach(function (t) {
        tabs.appendChild(el("a", { href: t[1], class: which === t[0] ? "active" : null, text: t[2] }));
      });
      view.dataset.view = which;
      controls.style.display = which === "detail" ? "none" : "";
      if (which === "detail") {
        var ch = parseInt(h.slice(8), 10);
        detail(isFinite(ch) && ch >= 0 && ch < C ? ch : 0);
      } else if (which === "channels") allChannels();
      else byClass();
    }
    window.addEventListener("hashchange", route);
    route();
    ready();
  }

  // ---------------------------------------------------------------------------------------------------
  // A folder of runs.

  function Folder() {
    clear(app);
    app.className = "folder";
    app.appendChild(header(D.title, null, []));
    if (!D.runs.length) {
      app.appendChild(el("p", { text: "No run directories found here." }));
      ready();
      return;
    }
    var table = el("table", { class: "runs", id: "runs" }, [el("tr", null,
      ["run", "kind", "model", "grid", "points", "date", "status"].map(function (h) { return el("th", { text: h }); }))]);
    var unreadable = D.runs.filter(function (r) { return r.status && r.status.unreadable; });
    if (unreadable.length) {
      // runs whose data could not be read are named, with the reason, above the table as well as in it
      app.appendChild(el("div", { class: "unreadable", id: "unreadable" }, [
        el("p", { text: unreadable.length + " run(s) could not be read:" }),
        el("ul", null, unreadable.map(function (r) { return el("li", { text: r.path + ": " + r.error }); })),
      ]));
    }
    D.runs.forEach(function (r) {
      var st = r.status || {};
      var cls = st.unreadable ? "unreadable" : !st.finished ? "partial" : st.diverged ? "diverged" : "finished";
      table.appendChild(el("tr", { "data-path": r.path, class: "run " + cls }, [
        el("td", null, [r.link ? el("a", { href: r.link, text: r.path }) : el("span", { text: r.path })]),
        el("td", { text: r.kind }), el("td", { text: r.model || "–" }), el("td", { text: r.grid }),
        el("td", { text: st.unreadable ? "–" : st.finished ? String(r.points) : st.done + " / " + r.points }),
        el("td", { text: (r.date || "").replace("T", " ").replace("+00:00", " UTC") }),
        el("td", null, [el("span", { class: "status " + cls, text: st.text })]),
      ]));
    });
    app.appendChild(table);
    ready();
  }

  if (!D) {
    app.textContent = "No data: report/data.js is missing or damaged; rewrite the page with python -m experiments.report.";
    return;
  }
  try {
    if (D.kind === "sweep") Sweep();
    else if (D.kind === "saliency") Saliency();
    else if (D.kind === "folder") Folder();
    else if (D.kind === "atlas") Atlas();
    else app.textContent = "Unknown report kind " + D.kind;
  } finally {
    app.classList.remove("loading");
  }
})();
