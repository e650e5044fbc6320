// agentclone run viewer. Every string from a run reaches the page through textContent or an
// attribute set with setAttribute on an element we create: never innerHTML.
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("ac-index").textContent);
  var DETAILS = null; // parsed on the first episode view (the big block)
  var PAGE = 100;
  var COLORS = ["#2a7ab9", "#e07b39", "#55a868", "#c44e52", "#8172b2", "#937860", "#da8bc3", "#8c8c8c"];
  // episode index columns
  var ID = 0, TASK = 1, KIND = 2, POL = 3, OK = 4, STEPS = 5, INV = 6, ERR = 7, RET = 8;

  function el(tag, attrs, kids) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) {
      if (k === "text") e.textContent = attrs[k];
      else if (k === "cls") e.className = attrs[k];
      else if (k.slice(0, 2) === "on") e.addEventListener(k.slice(2), attrs[k]);
      else e.setAttribute(k, attrs[k]);
    }
    (kids || []).forEach(function (c) { if (c != null) e.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return e;
  }
  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); return e; }
  function pct(x) { return x == null ? "-" : (100 * x).toFixed(1) + "%"; }
  function fmt(x) { return typeof x === "number" ? (Math.abs(x) >= 100 || x === Math.round(x) ? String(Math.round(x * 100) / 100) : x.toPrecision(3)) : String(x); }

  // -- rows of the task table: one per episode id, one cell per policy ---------------------------
  var rows = [], byId = {};
  D.episodes.forEach(function (e, i) {
    var r = byId[e[ID]];
    if (!r) { r = byId[e[ID]] = { id: e[ID], task: e[TASK], kind: e[KIND], cells: {} }; rows.push(r); }
    r.cells[e[POL]] = i;
  });
  var kinds = Object.keys(rows.reduce(function (m, r) { m[r.kind || "(none)"] = 1; return m; }, {})).sort();

  var state = { view: "summary", failed: false, invalid: false, errored: false, kind: "", policy: "", search: "",
                page: 0, episode: null, left: 0, right: D.policies.length > 1 ? 1 : 0 };

  var main = document.getElementById("main");
  document.getElementById("title").textContent = D.title;
  document.title = D.title + " · agentclone";
  var views = [["summary", "Summary"], ["tasks", "Tasks"], ["episode", "Episode"]];
  if (D.tables.length) views.push(["table", D.kind === "rounds" ? "Rounds" : "Comparison"]);
  if (D.curves.length) views.push(["training", "Training"]);
  if (D.curate.length) views.push(["quality", "Data quality"]);
  if (D.kind === "curate") { views = [["quality", "Data quality"]]; state.view = "quality"; } // a curate report alone
  var nav = document.getElementById("nav");
  function drawNav() {
    clear(nav);
    views.forEach(function (v) {
      nav.appendChild(el("button", { text: v[1], "data-view": v[0], cls: state.view === v[0] ? "on" : "",
                                      onclick: function () { go(v[0]); } }));
    });
  }
  function go(view) { state.view = view; render(); window.scrollTo(0, 0); }

  function render() {
    drawNav();
    clear(main);
    ({ summary: summary, tasks: tasks, episode: episode, table: tables, training: training, quality: quality })[state.view]();
    document.body.setAttribute("data-rendered", state.view);
  }

  // -- summary -------------------------------------------------------------------------------------
  function summary() {
    main.appendChild(el("p", { cls: "muted", text: D.source + " · " + D.kind + " run · " + D.episodes.length + " episodes" }));
    var t = el("table", { id: "summary" }, [el("tr", null, ["policy", "episodes", "success rate", "95% CI", "successes",
      "mean return", "mean steps", "invalid actions", "errored", "from"].map(function (h) { return el("th", { text: h }); }))]);
    D.summary.forEach(function (s) {
      var ci = s.success_ci95 || [null, null];
      t.appendChild(el("tr", { "data-policy": s.policy, cls: "link", onclick: function () { showPolicy(s.policy); } }, [
        el("td", { text: s.policy }), el("td", { cls: "num", text: String(s.episodes) }),
        el("td", { cls: "num rate", "data-value": String(s.success_rate), text: pct(s.success_rate) }),
        el("td", { cls: "num ci", "data-lo": String(ci[0]), "data-hi": String(ci[1]), text: pct(ci[0]) + " – " + pct(ci[1]) }),
        el("td", { cls: "num", text: String(s.successes) }),
        el("td", { cls: "num", text: s.mean_return == null ? "-" : s.mean_return.toFixed(2) }),
        el("td", { cls: "num", text: s.mean_steps == null ? "-" : s.mean_steps.toFixed(1) }),
        el("td", { cls: "num", text: pct(s.invalid_action_rate) }), el("td", { cls: "num", text: String(s.errored) }),
        el("td", { cls: "muted", text: s.source })]));
    });
    main.appendChild(el("h2", { text: "Held-out success" }));
    main.appendChild(t);
    if (D.report && D.report.improvement) {
      main.appendChild(el("p", { text: "Adapter minus base: " + D.report.improvement.success_rate_points + " points of success rate." }));
    }
    if (D.report_png) main.appendChild(el("img", { cls: "report", id: "report-png", alt: "report.png", src: D.report_png }));
    if (D.curate.length) {
      main.appendChild(el("h2", { text: "Data quality" }));
      D.curate.forEach(function (c) {
        var b = c.report.before, a = c.report.after;
        main.appendChild(el("p", { cls: "curate-line" }, [c.name + " (" + c.path + "): " + b.episodes + " → " + a.episodes +
          " trajectories, " + b.loss_steps + " → " + a.loss_steps + " steps with loss. ",
          el("button", { text: "details", onclick: function () { go("quality"); } })]));
      });
    }
    if (D.timings) {
      main.appendChild(el("h2", { text: "Stage timings (s)" }));
      var tt = el("table", { id: "timings" }, [el("tr", null, [el("th", { text: "stage" }), el("th", { text: "seconds" })])]);
      Object.keys(D.timings).forEach(function (k) {
        tt.appendChild(el("tr", null, [el("td", { text: k }), el("td", { cls: "num", text: typeof D.timings[k] === "number" ? D.timings[k].toFixed(1) : String(D.timings[k]) })]));
      });
      main.appendChild(tt);
    }
    if (D.report && D.report.run) {
      main.appendChild(el("h2", { text: "Run" }));
      main.appendChild(el("pre", { text: JSON.stringify(D.report.run, null, 2) }));
    }
  }
  function showPolicy(name) {
    var p = D.policies.indexOf(name);
    state.policy = p >= 0 ? String(p) : ""; state.page = 0; go("tasks");
  }

  // -- task table ----------------------------------------------------------------------------------
  function passes(r) {
    if (state.kind && (r.kind || "(none)") !== state.kind) return false;
    if (state.search && r.id.toLowerCase().indexOf(state.search.toLowerCase()) < 0) return false;
    var pols = state.policy === "" ? Object.keys(r.cells) : [state.policy];
    for (var j = 0; j < pols.length; j++) {
      var i = r.cells[pols[j]];
      if (i === undefined) continue;
      var e = D.episodes[i];
      if (state.failed && e[OK]) continue;
      if (state.invalid && !e[INV]) continue;
      if (state.errored && !e[ERR]) continue;
      return true;
    }
    return false;
  }
  function checkbox(key, label) {
    var box = el("input", { type: "checkbox", id: "f-" + key, onchange: function () { state[key] = box.checked; state.page = 0; render(); } });
    box.checked = state[key];
    return el("label", null, [box, " " + label]);
  }
  function select(id, options, value, onchange) {
    var s = el("select", { id: id, onchange: function () { onchange(s.value); } });
    options.forEach(function (o) { var opt = el("option", { value: o[0], text: o[1] }); s.appendChild(opt); });
    s.value = value;
    return s;
  }
  function outcome(i) {
    if (i === undefined) return el("td", { cls: "muted", text: "–" });
    var e = D.episodes[i];
    var td = el("td", null, [el("span", { cls: e[OK] ? "ok" : "bad", text: e[OK] ? "✓ success" : "✗ fail" }),
                             el("span", { cls: "muted", text: " " + e[STEPS] + " steps" })]);
    if (e[INV]) td.appendChild(el("span", { cls: "tag invalid", text: e[INV] + " invalid" }));
    if (e[ERR]) td.appendChild(el("span", { cls: "tag err", text: "error" }));
    return td;
  }
  function tasks() {
    var f = el("div", { cls: "filters" }, [
      checkbox("failed", "failed only"), checkbox("invalid", "has invalid actions"), checkbox("errored", "errored"),
      el("label", null, ["task kind ", select("f-kind", [["", "all"]].concat(kinds.map(function (k) { return [k, k]; })), state.kind,
        function (v) { state.kind = v; state.page = 0; render(); })]),
      el("label", null, ["policy ", select("f-policy", [["", "any"]].concat(D.policies.map(function (p, i) { return [String(i), p]; })),
        state.policy, function (v) { state.policy = v; state.page = 0; render(); })]),
    ]);
    var search = el("input", { type: "text", id: "f-search", placeholder: "episode id contains…" });
    search.value = state.search;
    search.addEventListener("change", function () { state.search = search.value; state.page = 0; render(); });
    f.appendChild(search);
    main.appendChild(f);
    var shown = rows.filter(passes);
    var pages = Math.max(1, Math.ceil(shown.length / PAGE));
    state.page = Math.min(state.page, pages - 1);
    var start = state.page * PAGE, slice = shown.slice(start, start + PAGE);
    var pager = el("div", { cls: "pager" }, [
      el("button", { text: "‹ prev", onclick: function () { if (state.page > 0) { state.page--; render(); } } }),
      el("span", { id: "count", "data-shown": String(shown.length), text: (shown.length ? (start + 1) + "–" + (start + slice.length) : "0") +
        " of " + shown.length + " episodes (" + rows.length + " in all) · page " + (state.page + 1) + "/" + pages }),
      el("button", { text: "next ›", onclick: function () { if (state.page < pages - 1) { state.page++; render(); } } })]);
    main.appendChild(pager);
    var t = el("table", { id: "tasks" }, [el("tr", null, [el("th", { text: "episode" }), el("th", { text: "task kind" })].concat(
      D.policies.map(function (p) { return el("th", { text: p }); })))]);
    slice.forEach(function (r) {
      t.appendChild(el("tr", { cls: "link", "data-id": r.id, onclick: function () { openEpisode(r.id); } },
        [el("td", { text: r.id }), el("td", { text: r.kind })].concat(D.policies.map(function (p, i) { return outcome(r.cells[i]); }))));
    });
    main.appendChild(t);
  }
  function openEpisode(id) {
    state.episode = id;
    var r = byId[id], have = Object.keys(r.cells).map(Number);
    if (state.policy !== "" && r.cells[state.policy] !== undefined) {
      state.left = Number(state.policy);
      state.right = have.filter(function (p) { return p !== state.left; })[0];
      if (state.right === undefined) state.right = state.left;
    } else if (r.cells[state.left] === undefined || r.cells[state.right] === undefined) {
      state.left = have[0]; state.right = have.length > 1 ? have[1] : have[0];
    }
    go("episode");
  }

  // -- episode view: two policies side by side ------------------------------------------------------
  function field(label, text, cls) {
    return el("div", { cls: "field" + (cls ? " " + cls : "") }, [el("b", { text: label }), el("pre", { text: text })]);
  }
  function pane(which) {
    var r = byId[state.episode], p = state[which], i = r.cells[p];
    var box = el("div", { cls: "pane", id: "pane-" + which });
    box.appendChild(select("pick-" + which, D.policies.map(function (n, j) { return [String(j), n]; }), String(p),
      function (v) { state[which] = Number(v); render(); }));
    if (i === undefined) { box.appendChild(el("p", { cls: "muted", text: D.policies[p] + " has no episode " + r.id })); return box; }
    var e = D.episodes[i], d = DETAILS[i];
    box.setAttribute("data-policy", D.policies[p]);
    box.setAttribute("data-episode", e[ID]);
    box.appendChild(el("h3", null, [el("span", { cls: e[OK] ? "ok" : "bad", text: e[OK] ? "✓ success" : "✗ fail" }),
      " " + D.policies[p] + " · return " + fmt(e[RET]) + " · " + e[STEPS] + " steps" + (e[INV] ? " · " + e[INV] + " invalid" : "")]));
    if (d.error) box.appendChild(field("error", d.error, "bad"));
    var meta = [d.model ? "model " + d.model : null, d.seed != null ? "seed " + d.seed : null].filter(Boolean).join(" · ");
    if (meta) box.appendChild(el("div", { cls: "muted", text: meta }));
    box.appendChild(el("details", null, [el("summary", { text: "instructions" }), el("pre", { text: d.instructions || "" })]));
    d.steps.forEach(function (s, n) {
      var head = el("div", { cls: "head" }, ["step " + (n + 1), el("span", { cls: "tag", text: "reward " + fmt(s.r) })]);
      if (s.i) head.appendChild(el("span", { cls: "tag invalid", text: "invalid" }));
      head.appendChild(el("span", { cls: "tag" + (s.nl ? " noloss" : ""), text: s.nl ? "no loss" : "loss" }));
      if (s.ag !== undefined) head.appendChild(el("span", { cls: "tag " + (s.ag ? "agree" : "disagree"), text: s.ag ? "= expert" : "≠ expert" }));
      var st = el("div", { cls: "step", "data-step": String(n) }, [head, field("observation", s.o, "obs")]);
      if (s.t) st.appendChild(field("thought", s.t, "thought"));
      st.appendChild(field("action", s.a, "action"));
      if (!s.a) st.lastChild.firstChild.appendChild(el("span", { cls: "tag invalid", text: "empty" }));
      if (s.raw !== undefined) st.appendChild(field("raw output (JSON)", JSON.stringify(s.raw)));
      if (s.e) st.appendChild(field("expert", (s.e.action != null ? s.e.action : "(none)") + (s.e.error ? "  [" + s.e.error + "]" : "") +
                                    (s.e.thought ? "\n  thought: " + s.e.thought : ""), "expert"));
      if (s.s) st.appendChild(field("selection", JSON.stringify(s.s), "selection"));
      if (s.info) st.appendChild(field("info", JSON.stringify(s.info)));
      box.appendChild(st);
    });
    if (d.final != null) box.appendChild(field("final observation", d.final, "final"));
    return box;
  }
  function episode() {
    if (state.episode === null || !byId[state.episode]) {
      if (!rows.length) { main.appendChild(el("p", { cls: "muted", text: "No episodes in this run." })); return; }
      state.episode = rows[0].id; // the first one; the Tasks view picks others
    }
    if (DETAILS === null) DETAILS = JSON.parse(document.getElementById("ac-details").textContent);
    var r = byId[state.episode];
    main.appendChild(el("h2", { id: "episode-id", text: "Episode " + r.id + " · task " + r.task + (r.kind ? " · " + r.kind : "") }));
    var pos = rows.indexOf(r);
    main.appendChild(el("div", { cls: "pager" }, [
      el("button", { text: "‹ previous episode", onclick: function () { if (pos > 0) openEpisode(rows[pos - 1].id); } }),
      el("button", { text: "next episode ›", onclick: function () { if (pos < rows.length - 1) openEpisode(rows[pos + 1].id); } }),
      el("button", { text: "back to tasks", onclick: function () { go("tasks"); } })]));
    // one pane when there is one policy to show, else two side by side
    main.appendChild(D.policies.length > 1 ? el("div", { cls: "pair" }, [pane("left"), pane("right")])
                                           : el("div", null, [pane("left")]));
  }

  // -- comparison / rounds tables -------------------------------------------------------------------
  function tables() {
    D.tables.forEach(function (tab) {
      main.appendChild(el("h2", { text: tab.title }));
      main.appendChild(el("p", { cls: "muted", text: "Click a row to see its episodes." }));
      var t = el("table", { cls: "runtable" }, [el("tr", null, tab.columns.map(function (c) { return el("th", { text: c }); }))]);
      tab.rows.forEach(function (r) {
        var linked = D.policies.indexOf(r.policy) >= 0;
        t.appendChild(el("tr", { cls: linked ? "link" : "", "data-policy": r.policy || "",
                                 onclick: function () { if (linked) showPolicy(r.policy); } },
          r.cells.map(function (c) { return el("td", { text: c }); })));
      });
      main.appendChild(t);
    });
  }

  // -- data quality: agentclone curate's reports (curate.json) -------------------------------------
  function num(x, digits) { return x == null ? "-" : digits == null ? fmt(x) : x.toFixed(digits); }
  function spread(s) { return s ? [s.min, s.median, s.max].map(function (x) { return num(x); }).join(" / ") : "-"; }
  var QUALITY = [ // [key, label, the cell's text from a quality report]
    ["episodes", "trajectories", function (q) { return num(q.episodes); }],
    ["steps", "steps", function (q) { return num(q.steps); }],
    ["loss_steps", "steps with loss", function (q) { return num(q.loss_steps); }],
    ["duplicates", "duplicate trajectories (their steps)", function (q) {
      return q.duplicates ? q.duplicates.trajectories + " (" + q.duplicates.steps + ")" : "-"; }],
    ["repeated_states", "states reached more than once", function (q) { return num(q.repeated_states); }],
    ["conflicting_states", "conflicting states", function (q) { return num(q.conflicting_states); }],
    ["conflicting_steps", "conflicting steps (not their state's majority)", function (q) { return num(q.conflicting_steps); }],
    ["action_entropy_bits", "action entropy at repeated states (bits)", function (q) { return num(q.action_entropy_bits, 3); }],
    ["looping", "looping trajectories (repeated pairs)", function (q) {
      return q.looping ? q.looping.trajectories + " (" + q.looping.repeated_pairs + ")" : "-"; }],
    ["length", "length in steps: min / median / max", function (q) { return spread(q.length); }],
    ["return", "return: min / median / max", function (q) { return spread(q["return"]); }],
    ["invalid_action_rate", "invalid-action rate", function (q) { return pct(q.invalid_action_rate); }],
    ["success_rate", "success rate", function (q) { return pct(q.success_rate); }],
    ["errored", "errored episodes", function (q) { return num(q.errored); }],
    ["tasks", "distinct tasks", function (q) { return num(q.tasks); }],
  ];
  function qualityTable(b, a) {
    var t = el("table", { cls: "quality" }, [el("tr", null, ["", "before", "after"].map(function (h) { return el("th", { text: h }); }))]);
    function row(key, label, before, after) {
      t.appendChild(el("tr", { "data-key": key, cls: before !== after ? "changed" : "" }, [el("td", { text: label }),
        el("td", { cls: "num before", text: before }), el("td", { cls: "num after", text: after })]));
    }
    QUALITY.forEach(function (m) { row(m[0], m[1], m[2](b), m[2](a)); });
    var kinds = Object.keys(Object.assign({}, b.tasks_per_kind || {}, a.tasks_per_kind || {})).sort();
    kinds.forEach(function (k) {
      row("tasks_per_kind." + k, "tasks of kind " + k, num((b.tasks_per_kind || {})[k] || 0), num((a.tasks_per_kind || {})[k] || 0));
    });
    return t;
  }
  function removedTable(removed) {
    var reasons = Object.keys(removed || {});
    if (!reasons.length) return el("p", { cls: "muted removed-none", text: "No filter ran: the output is the input, byte for byte." });
    var t = el("table", { cls: "removed" }, [el("tr", null, ["filter", "trajectories removed", "steps removed",
      "steps with loss turned off", "trajectories touched"].map(function (h) { return el("th", { text: h }); }))]);
    reasons.forEach(function (r) {
      var c = removed[r] || {};
      t.appendChild(el("tr", { "data-reason": r }, [el("td", { text: r })].concat(
        ["trajectories", "steps", "steps_loss_off", "trajectories_touched"].map(function (k) {
          return el("td", { cls: "num", "data-field": k, text: num(c[k]) }); }))));
    });
    return t;
  }
  function quality() {
    D.curate.forEach(function (c) {
      var r = c.report, box = el("section", { cls: "curate", "data-name": c.name });
      box.appendChild(el("h2", { text: "Data quality: " + c.name }));
      box.appendChild(el("p", { cls: "muted", text: c.path + " · " + (r.input != null ? String(r.input) : "?") + " → " +
                                                    (r.output != null ? String(r.output) : "?") }));
      box.appendChild(qualityTable(r.before, r.after));
      box.appendChild(el("h3", { text: "Filters, in the order they ran" }));
      box.appendChild(removedTable(r.removed));
      box.appendChild(el("h3", { text: "Options" }));
      var opts = r.options || {};
      var t = el("table", { cls: "options" }, [el("tr", null, [el("th", { text: "option" }), el("th", { text: "value" })])]);
      Object.keys(opts).forEach(function (k) {
        var v = opts[k], on = v !== null && v !== false;
        t.appendChild(el("tr", { "data-option": k, cls: on ? "" : "muted" }, [el("td", { text: k }),
          el("td", { text: !on ? "off" : v === true ? "on" : typeof v === "object" ? JSON.stringify(v) : String(v) })]));
      });
      box.appendChild(t);
      main.appendChild(box);
    });
    main.appendChild(el("p", { cls: "muted", text: "From agentclone curate's report: duplicates are later copies with the same task " +
      "and steps; a conflicting state is one observation history where loss-carrying steps took different actions." }));
  }

  // -- training curves as SVG -------------------------------------------------------------------------
  var SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, text) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text != null) e.textContent = text;
    return e;
  }
  function chart(title, col) {
    var W = 380, H = 220, L = 56, R = 10, T = 24, B = 30;
    var series = D.curves.map(function (c, ci) {
      return { name: c.name, color: COLORS[ci % COLORS.length],
               pts: c.points.filter(function (p) { return p[col] != null; }).map(function (p) { return [p[0], p[col]]; }) };
    }).filter(function (s) { return s.pts.length; });
    if (!series.length) return null;
    var xs = [], ys = [];
    series.forEach(function (s) { s.pts.forEach(function (p) { xs.push(p[0]); ys.push(p[1]); }); });
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs), y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    if (y1 === y0) { var pad = Math.abs(y0) * 0.05 || 1; y0 -= pad; y1 += pad; }
    function X(v) { return L + (v - x0) / (x1 - x0) * (W - L - R); }
    function Y(v) { return H - B - (v - y0) / (y1 - y0) * (H - T - B); }
    var s = svg("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, "data-metric": title });
    s.appendChild(svg("text", { x: L, y: 14, "font-weight": "600" }, title));
    s.appendChild(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#999" }));
    s.appendChild(svg("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#999" }));
    // enough digits that the 5 y labels differ; x labels are whole steps
    var digits = Math.max(0, Math.min(8, 1 - Math.floor(Math.log10((y1 - y0) / 4))));
    var big = Math.max(Math.abs(y0), Math.abs(y1)) >= 1e5 || (Math.max(Math.abs(y0), Math.abs(y1)) < 1e-3);
    var seen = {};
    for (var k = 0; k <= 4; k++) {
      var yv = y0 + (y1 - y0) * k / 4, xv = Math.round(x0 + (x1 - x0) * k / 4);
      s.appendChild(svg("line", { x1: L, y1: Y(yv), x2: W - R, y2: Y(yv), stroke: "#eee" }));
      s.appendChild(svg("text", { x: L - 4, y: Y(yv) + 4, "text-anchor": "end" }, big ? yv.toExponential(2) : yv.toFixed(digits)));
      if (!seen[xv]) { seen[xv] = 1; s.appendChild(svg("text", { x: X(xv), y: H - B + 14, "text-anchor": "middle" }, String(xv))); }
    }
    s.appendChild(svg("text", { x: (L + W - R) / 2, y: H - 2, "text-anchor": "middle" }, "optimizer step"));
    series.forEach(function (se) {
      var d = se.pts.map(function (p, i) { return (i ? "L" : "M") + X(p[0]).toFixed(1) + " " + Y(p[1]).toFixed(1); }).join(" ");
      s.appendChild(svg("path", { d: d, fill: "none", stroke: se.color, "stroke-width": 1.8, "data-series": se.name }));
      se.pts.forEach(function (p) { s.appendChild(svg("circle", { cx: X(p[0]), cy: Y(p[1]), r: 2.2, fill: se.color })); });
    });
    return el("div", { cls: "chart" }, [s]);
  }
  function training() {
    var legend = el("div", { cls: "legend" });
    D.curves.forEach(function (c, ci) {
      var sw = el("i"); sw.style.background = COLORS[ci % COLORS.length];
      legend.appendChild(el("span", null, [sw, c.name]));
    });
    main.appendChild(legend);
    var box = el("div", { cls: "charts", id: "charts" });
    [["loss", 1], ["learning rate", 2], ["tokens/s", 3]].forEach(function (m) { var c = chart(m[0], m[1]); if (c) box.appendChild(c); });
    main.appendChild(box);
    main.appendChild(el("p", { cls: "muted", text: "From each adapter's metrics.json (log_history). Tokens/s per logging interval where the log " +
      "entries carry elapsed_s; otherwise the run's average." }));
  }

  render();
  window.__viewer = { state: state, go: go, openEpisode: openEpisode, render: render };
  if (window.performance && performance.mark) performance.mark("viewer-rendered");
})();
