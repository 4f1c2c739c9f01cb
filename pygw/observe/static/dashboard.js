// pygw's live dashboard: polls /dashboard.json and draws the figures with the vendored Chart.js.
// Each poll's figures are over the selected window (computed by the gateway from its counters);
// the charts keep the last MAX_POINTS polls. `?refresh=MS` sets the poll interval.
"use strict";

(function () {
  const MAX_POINTS = 150;
  const params = new URLSearchParams(location.search);
  const refreshMs = Math.max(200, Number(params.get("refresh")) || 2000);
  const PALETTE = [
    "#3366cc", "#dc3912", "#ff9900", "#109618", "#990099", "#0099c6",
    "#dd4477", "#66aa00", "#b82e2e", "#316395", "#994499", "#22aa99",
  ];
  const state = { updates: 0, failures: 0, paused: false, charts: {}, timer: null };
  window.pygwDashboard = state;

  const $ = (id) => document.getElementById(id);
  const colour = (i) => PALETTE[i % PALETTE.length];

  function lineChart(id, yTitle) {
    return new Chart($(id), {
      type: "line",
      data: { labels: [], datasets: [] },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        spanGaps: true,
        elements: { point: { radius: 0 }, line: { borderWidth: 1.5, tension: 0.2 } },
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { ticks: { maxTicksLimit: 6, autoSkip: true } },
          y: { beginAtZero: true, title: { display: Boolean(yTitle), text: yTitle } },
        },
        plugins: { legend: { position: "bottom", labels: { boxWidth: 10, font: { size: 11 } } } },
      },
    });
  }

  function stageChart(id) {
    return new Chart($(id), {
      type: "bar",
      data: { labels: [], datasets: [] },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        indexAxis: "y",
        scales: { x: { stacked: true, beginAtZero: true, title: { display: true, text: "µs" } }, y: { stacked: true } },
        plugins: { legend: { position: "bottom", labels: { boxWidth: 10, font: { size: 11 } } } },
      },
    });
  }

  // Appends one point per named series; series seen for the first time start with gaps.
  function pushPoints(chart, label, values) {
    const data = chart.data;
    data.labels.push(label);
    const byName = new Map(data.datasets.map((d) => [d.label, d]));
    for (const [name, value] of Object.entries(values)) {
      let dataset = byName.get(name);
      if (!dataset) {
        const i = data.datasets.length;
        dataset = {
          label: name,
          data: new Array(data.labels.length - 1).fill(null),
          borderColor: colour(i),
          backgroundColor: colour(i),
        };
        data.datasets.push(dataset);
        byName.set(name, dataset);
      }
      dataset.data.push(value);
    }
    for (const dataset of data.datasets) {
      while (dataset.data.length < data.labels.length) dataset.data.push(null);
    }
    while (data.labels.length > MAX_POINTS) {
      data.labels.shift();
      for (const dataset of data.datasets) dataset.data.shift();
    }
    chart.update("none");
  }

  function setStages(chart, styles) {
    const names = Object.keys(styles);
    const steps = [];
    for (const style of names) {
      for (const step of Object.keys(styles[style].stage_share || {})) {
        if (!steps.includes(step)) steps.push(step);
      }
    }
    // "other" (routing, parsing, writing) last, whatever order the stages came in.
    steps.sort((a, b) => (a === "other") - (b === "other"));
    chart.data.labels = names.map((s) => s.toUpperCase());
    chart.data.datasets = steps.map((step, i) => ({
      label: step,
      backgroundColor: step === "other" ? "#b0b7c6" : colour(i),
      data: names.map((s) => {
        const share = (styles[s].stage_share || {})[step] || 0;
        const mean = styles[s].overhead_mean || 0;
        return +(share * mean * 1e6).toFixed(2);
      }),
    }));
    chart.update("none");
  }

  const fmt = {
    ms(seconds) {
      if (seconds === null || seconds === undefined) return "–";
      if (seconds < 0.001) return (seconds * 1e6).toFixed(0) + " µs";
      return (seconds * 1e3).toFixed(seconds < 0.1 ? 2 : 0) + " ms";
    },
    pct(ratio) {
      return ratio === null || ratio === undefined ? "–" : (ratio * 100).toFixed(1) + "%";
    },
    rate(value) {
      return value >= 100 ? value.toFixed(0) : value.toFixed(value >= 10 ? 1 : 2);
    },
    count(value) {
      return Math.round(value).toLocaleString("en");
    },
  };

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function routeName(r) {
    return `${r.api}/${r.stage} ${r.route}`;
  }

  function renderRoutes(routes) {
    const body = $("routes").tBodies[0];
    body.replaceChildren();
    for (const r of routes) {
      const tr = document.createElement("tr");
      tr.dataset.route = routeName(r);
      cell(tr, r.api);
      cell(tr, r.stage);
      const where = cell(tr, r.route);
      where.title = (r.hosts.length ? r.hosts.join(", ") + " " : "") + (r.path_prefix || "/");
      cell(tr, r.style);
      const pipeline = cell(tr, "");
      const chips = document.createElement("div");
      chips.className = "pipeline";
      for (const step of [...r.pipeline, r.integration]) {
        if (chips.childElementCount) {
          const arrow = document.createElement("span");
          arrow.className = "arrow";
          arrow.textContent = "→";
          chips.appendChild(arrow);
        }
        const chip = document.createElement("span");
        chip.className = step === r.integration ? "step integration" : "step";
        chip.textContent = step;
        const mean = (r.stage_mean || {})[step];
        if (mean !== undefined && mean !== null) chip.title = "mean " + fmt.ms(mean);
        chips.appendChild(chip);
      }
      pipeline.appendChild(chips);
      cell(tr, fmt.rate(r.rate), "num");
      cell(tr, fmt.ms(r.p50), "num");
      cell(tr, fmt.ms(r.p99), "num");
      cell(tr, fmt.pct(r.error_rate), r.error_rate ? "num bad" : "num");
      cell(tr, fmt.count(r.requests_total), "num");
      body.appendChild(tr);
    }
  }

  function renderUpstreams(upstreams) {
    const body = $("upstreams").tBodies[0];
    body.replaceChildren();
    if (!upstreams.length) {
      const tr = document.createElement("tr");
      cell(tr, "no http_proxy upstreams").colSpan = 3;
      body.appendChild(tr);
    }
    for (const u of upstreams) {
      const tr = document.createElement("tr");
      cell(tr, u.target);
      cell(tr, u.healthy ? "up" : u.healthy_fraction > 0 ? "partly ejected" : "ejected", u.healthy ? "good" : "bad");
      cell(tr, fmt.count(u.queue_length), "num");
      body.appendChild(tr);
    }
  }

  function renderReloads(reloads) {
    $("reload-counts").textContent = `(${fmt.count(reloads.ok)} ok, ${fmt.count(reloads.error)} refused since start)`;
    const body = $("reloads").tBodies[0];
    body.replaceChildren();
    if (!reloads.recent.length) {
      const tr = document.createElement("tr");
      cell(tr, "none since the admin listener started").colSpan = 3;
      body.appendChild(tr);
    }
    for (const event of reloads.recent) {
      const tr = document.createElement("tr");
      cell(tr, event.at.replace("T", " ").replace("+00:00", ""));
      cell(tr, event.ok ? "reloaded" : "refused", event.ok ? "good" : "bad");
      const detail = cell(tr, "");
      const pre = document.createElement("pre");
      pre.textContent = event.detail;
      detail.appendChild(pre);
      body.appendChild(tr);
    }
  }

  function render(f) {
    const t = f.totals;
    $("t-rate").textContent = fmt.rate(t.rate);
    $("t-errors").textContent = fmt.pct(t.error_rate);
    $("t-p50").textContent = fmt.ms(t.p50);
    $("t-p99").textContent = fmt.ms(t.p99);
    $("t-cache").textContent = fmt.pct(f.cache.hit_ratio ?? f.cache.hit_ratio_total);
    $("t-ws").textContent = fmt.count(f.websocket.connections);
    const throttled = Object.values(f.throttled).reduce((sum, level) => sum + level.rate, 0);
    $("t-throttled").textContent = fmt.rate(throttled);
    $("t-total").textContent = fmt.count(t.requests_total);

    const label = new Date(f.generated_at).toISOString().slice(11, 19);
    const rates = {}, p99s = {}, errors = {};
    for (const r of f.routes) {
      // Routes that served nothing yet would only flatten the charts.
      if (!r.requests_total) continue;
      const name = routeName(r);
      rates[name] = +r.rate.toFixed(3);
      p99s[name] = r.p99 === null ? null : +(r.p99 * 1e3).toFixed(3);
      errors[name] = r.error_rate === null ? null : +(r.error_rate * 100).toFixed(2);
    }
    const c = state.charts;
    pushPoints(c.rate, label, rates);
    pushPoints(c.p99, label, p99s);
    pushPoints(c.errors, label, errors);
    const overhead = {};
    for (const [style, s] of Object.entries(f.styles)) {
      // The mean, from the exact sum: the latency buckets are too coarse below 500 µs for a p50.
      overhead[style.toUpperCase()] = s.overhead_mean === null ? null : +(s.overhead_mean * 1e6).toFixed(1);
    }
    pushPoints(c.overhead, label, overhead);
    setStages(c.stages, f.styles);
    const levels = {};
    for (const [level, v] of Object.entries(f.throttled)) levels[level] = +v.rate.toFixed(3);
    pushPoints(c.throttled, label, levels);
    const ratio = f.cache.hit_ratio;
    pushPoints(c.cache, label, { "hit ratio": ratio === null ? null : +(ratio * 100).toFixed(1) });
    pushPoints(c.ws, label, { connections: f.websocket.connections });

    renderRoutes(f.routes);
    renderUpstreams(f.upstreams);
    renderReloads(f.reloads);
    const workers = f.workers ? `, ${f.workers} workers` : "";
    $("status").textContent = `updated ${label} UTC · over the last ${f.window_seconds.toFixed(0)} s${workers}`;
    $("status").classList.remove("bad");
  }

  async function poll() {
    if (state.paused) return;
    try {
      const answer = await fetch(`/dashboard.json?window=${$("window").value}`, { cache: "no-store" });
      if (answer.status === 401) {
        throw new Error("the admin token is needed: open /?token=TOKEN once");
      }
      if (!answer.ok) throw new Error(`HTTP ${answer.status}`);
      render(await answer.json());
      state.updates += 1;
      document.body.dataset.updates = String(state.updates);
    } catch (failure) {
      state.failures += 1;
      $("status").textContent = `no figures: ${failure.message}`;
      $("status").classList.add("bad");
    }
  }

  function start() {
    state.charts = {
      rate: lineChart("c-rate"),
      p99: lineChart("c-p99"),
      errors: lineChart("c-errors"),
      overhead: lineChart("c-overhead"),
      stages: stageChart("c-stages"),
      throttled: lineChart("c-throttled"),
      cache: lineChart("c-cache"),
      ws: lineChart("c-ws"),
    };
    $("pause").addEventListener("click", () => {
      state.paused = !state.paused;
      $("pause").textContent = state.paused ? "resume" : "pause";
    });
    // One poll at a time: the next is scheduled when this one is done.
    const loop = async () => {
      await poll();
      state.timer = setTimeout(loop, refreshMs);
    };
    loop();
  }

  start();
})();
