// The local dashboard: reads /dashboard/data and draws it with uPlot (vendored, served by the gateway).
(function () {
  "use strict";
  const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];
  const REFRESH_MS = 30000;
  // What the page shows, for people and for the browser test: the data, and each chart's uPlot.
  const state = { window: "hour", tenant: "", data: null, charts: {} };
  window.llmGatewayDashboard = state;

  function number(value, digits) {
    return value === null || value === undefined ? "–" : Number(value).toLocaleString("en-US", { maximumFractionDigits: digits });
  }
  function percent(value) {
    return value === null || value === undefined ? "–" : number(value * 100, 1) + " %";
  }
  function ms(value) {
    return value === null || value === undefined ? "–" : number(value, 1) + " ms";
  }

  function tick(value) {
    // small values (a request's cost in dollars) keep their significant digits
    if (value === 0 || Math.abs(value) >= 1) return Number(value).toLocaleString("en-US", { maximumFractionDigits: 2 });
    return Number(value.toPrecision(2)).toString();
  }

  function series(label, index, extra) {
    return Object.assign({ label: label, stroke: PALETTE[index % PALETTE.length], width: 2, spanGaps: false, points: { show: true, size: 4 } }, extra || {});
  }

  function draw(id, labels, columns, extra) {
    const el = document.getElementById(id);
    if (state.charts[id]) {
      state.charts[id].destroy();
    }
    const data = [state.data.times].concat(columns);
    const opts = Object.assign(
      {
        width: Math.max(el.clientWidth, 300),
        height: 220,
        series: [{}].concat(labels.map(function (label, i) { return series(label, i); })),
        axes: [{}, { size: 70, values: function (u, splits) { return splits.map(tick); } }],
        legend: { live: true },
      },
      extra || {}
    );
    state.charts[id] = new uPlot(opts, data, el);
  }

  function keyed(map) {
    const names = Object.keys(map).sort();
    return { labels: names, columns: names.map(function (name) { return map[name]; }) };
  }

  function render() {
    const data = state.data;
    const s = data.series;
    const t = data.totals;
    const shown = {
      requests: number(t.requests, 0),
      error_rate: percent(t.error_rate),
      latency_p95: ms(t.latency_ms.p95),
      ttft_p95: ms(t.ttft_ms.p95),
      cost_usd: "$" + number(t.cost_usd, 6),
      cache_hit_rate: percent(t.cache_hit_rate),
      guard_triggered: number(t.guard_triggered, 0),
      satisfaction: t.satisfaction === null ? "–" : number(t.satisfaction * 100, 0) + " (" + t.feedback + ")",
      review_pending: number(t.review_pending, 0),
      alerts_firing: number(t.alerts_firing, 0),
    };
    document.querySelectorAll("[data-total]").forEach(function (el) {
      el.textContent = shown[el.dataset.total];
      el.classList.toggle("firing", el.dataset.total === "alerts_firing" && t.alerts_firing > 0);
    });

    draw(
      "chart-latency",
      ["latency p50", "latency p95", "latency p99", "TTFT p50", "TTFT p95"],
      [s.latency_ms.p50, s.latency_ms.p95, s.latency_ms.p99, s.ttft_ms.p50, s.ttft_ms.p95]
    );
    draw("chart-traffic", ["requests", "errors", "refused"], [s.requests, s.errors, s.refused]);
    const cost = keyed(s.cost_usd);
    draw("chart-cost", cost.labels, cost.columns);
    draw("chart-cache", ["hit rate"], [s.cache_hit_rate.map(function (v) { return v === null ? null : v * 100; })], {
      scales: { y: { range: [0, 100] } },
    });
    const guards = keyed(s.guard_triggers);
    draw("chart-guards", guards.labels, guards.columns);
    draw("chart-feedback", ["satisfaction"], [s.satisfaction.map(function (v) { return v === null ? null : v * 100; })], {
      scales: { y: { range: [0, 100] } },
    });

    fill("alerts", data.alerts.map(function (a) {
      return [a.tenant, a.alert, a.value === null ? "n/a" : number(a.value, 4), number(a.threshold, 4)];
    }), "No alert is firing.", [2, 3]);
    fill("cost-by-model", data.cost_by_model.map(function (r) {
      return [r.tenant, r.model, number(r.requests, 0), number(r.prompt_tokens, 0), number(r.completion_tokens, 0), number(r.cost_usd, 6)];
    }), "No model was paid in this window.", [2, 3, 4, 5]);
    fill("rollouts", (data.rollouts || []).map(function (r) {
      return [r.rollout_id, r.tenant + "/" + r.route, r.change, r.status, number(r.share, 2) + " %"];
    }), "No rollout.", [4]);
    const rows = [];
    (data.experiments || []).forEach(function (e) {
      Object.keys(e.variants).forEach(function (name) {
        const v = e.variants[name];
        const c = e.against_control[name];
        const verdict = c ? c.verdict + " (" + number(c.difference, 3) + ", p " + number(c.p_value, 3) + ")" : "control";
        const rate = v.metric_rate === null ? "–" : number(v.metric_rate, 3) + " of " + v.metric_n;
        rows.push([e.experiment_id, e.tenant + "/" + e.route, e.status + (e.winner ? ", winner " + e.winner : ""), name, number(v.requests, 0), rate, verdict]);
      });
    });
    fill("experiments", rows, "No experiment.", [4, 5]);
    document.getElementById("updated").textContent = "updated " + new Date(data.at * 1000).toLocaleTimeString();
    document.body.dataset.loaded = "true";
  }

  function fill(id, rows, empty, numeric) {
    const body = document.querySelector("#" + id + " tbody");
    body.replaceChildren();
    if (!rows.length) {
      const tr = body.insertRow();
      const td = tr.insertCell();
      td.colSpan = 8;
      td.className = "muted";
      td.textContent = empty;
      return;
    }
    rows.forEach(function (row) {
      const tr = body.insertRow();
      row.forEach(function (cell, i) {
        const td = tr.insertCell();
        td.textContent = cell; // text only: tenant and model names are never markup
        if ((numeric || []).indexOf(i) >= 0) td.className = "num";
      });
    });
  }

  function tenants(names) {
    const select = document.getElementById("tenant");
    if (select.options.length > 1) return;
    names.forEach(function (name) {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = name;
      select.appendChild(option);
    });
  }

  async function load() {
    const query = new URLSearchParams({ window: state.window });
    if (state.tenant) query.set("tenant", state.tenant);
    const response = await fetch("/dashboard/data?" + query.toString(), { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (response.status === 401) {
      window.location.assign("/dashboard");
      return;
    }
    if (!response.ok) {
      document.getElementById("updated").textContent = "could not load the data (HTTP " + response.status + ")";
      return;
    }
    state.data = await response.json();
    tenants(state.data.tenants);
    render();
  }

  document.querySelectorAll("nav button").forEach(function (button) {
    button.addEventListener("click", function () {
      state.window = button.dataset.window;
      document.querySelectorAll("nav button").forEach(function (b) { b.setAttribute("aria-pressed", String(b === button)); });
      load();
    });
  });
  document.getElementById("tenant").addEventListener("change", function (event) {
    state.tenant = event.target.value;
    load();
  });
  let resizing = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizing);
    resizing = setTimeout(function () { if (state.data) render(); }, 200);
  });
  load();
  setInterval(load, REFRESH_MS);
})();
