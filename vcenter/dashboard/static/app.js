// The dashboard's own script: the live tasks/events panel (server-sent events, no reload),
// error display for htmx actions, and the performance chart (uPlot). Everything a template
// would otherwise do inline lives here: the Content-Security-Policy admits no inline script,
// no eval (htmx "js:" values) and no style attributes.
(function () {
  "use strict";
  const body = document.body;

  // --- what templates declare with data- attributes -------------------------------------------
  // data-send-as="name": the element's value is also sent under that parameter name (what
  // hx-vals='js:{...}' did, without eval).
  document.addEventListener("htmx:configRequest", (e) => {
    const el = e.detail.elt;
    if (el && el.dataset && el.dataset.sendAs) e.detail.parameters[el.dataset.sendAs] = el.value;
  });
  // data-depth="n": indentation of a tree row (the snapshot tree), set through the CSSOM.
  function indent(root) {
    root.querySelectorAll("[data-depth]").forEach((el) => { el.style.paddingLeft = (8 + 16 * Number(el.dataset.depth || 0)) + "px"; });
  }
  if (typeof htmx !== "undefined") htmx.onLoad(indent); else indent(document);

  // --- live panel -------------------------------------------------------------------------
  function connectLive() {
    const state = document.getElementById("live-state");
    if (!state) return;
    const after = body.dataset.lastEvent || "0";
    const source = new EventSource("/ui/live?after=" + encodeURIComponent(after));
    source.addEventListener("open", () => { state.textContent = "live"; state.dataset.live = "1"; });
    source.addEventListener("error", () => { state.textContent = "reconnecting…"; state.dataset.live = "0"; });
    source.addEventListener("tasks", (e) => {
      document.getElementById("recent-tasks").innerHTML = e.data;
      refreshWhenOwnTaskEnds();
    });
    source.addEventListener("events", (e) => {
      const tbody = document.getElementById("recent-events");
      const tmp = document.createElement("tbody");
      tmp.innerHTML = e.data;
      const rows = Array.from(tmp.children);
      rows.forEach((row) => tbody.prepend(row));
      while (tbody.children.length > 50) tbody.lastElementChild.remove();
    });
    source.addEventListener("logout", () => { source.close(); window.location = "/ui/login"; });
  }

  // When a task on the object this page shows ends, its state and the actions it offers
  // change: fetch them again (the title and the action buttons only, not the whole page).
  const seen = {};
  let seeded = false;
  function refreshWhenOwnTaskEnds() {
    const title = document.querySelector("h1.obj-title");
    if (!title) return;
    const own = "/ui/" + title.dataset.kind + "/" + title.dataset.id;
    let ended = false;
    document.querySelectorAll("#recent-tasks tr[data-task-id]").forEach((row) => {
      const link = row.querySelector("a");
      if (!link || link.getAttribute("href") !== own) return;
      const id = row.dataset.taskId, state = row.dataset.state;
      const finished = state === "success" || state === "error" || state === "cancelled";
      if (seeded && seen[id] !== state && finished) ended = true;
      seen[id] = state;
    });
    seeded = true;
    if (ended && typeof htmx !== "undefined") {
      htmx.ajax("GET", window.location.href, {target: "h1.obj-title", select: "h1.obj-title", swap: "outerHTML"});
      htmx.ajax("GET", window.location.href, {target: "#actions", select: "#actions", swap: "outerHTML"});
    }
  }

  // --- htmx: show refusals (403, 409...) in the flash area --------------------------------
  document.addEventListener("htmx:responseError", (e) => {
    const flash = document.getElementById("flash");
    if (!flash) return;
    let text = e.detail.xhr.status + " " + e.detail.xhr.statusText;
    try { const b = JSON.parse(e.detail.xhr.responseText); text = b.code + ": " + b.message; }
    catch (_) { if (e.detail.xhr.responseText.startsWith("<div")) { flash.innerHTML = e.detail.xhr.responseText; return; } }
    flash.innerHTML = "";
    const div = document.createElement("div");
    div.className = "flash error"; div.setAttribute("role", "status"); div.textContent = text;
    flash.appendChild(div);
  });
  // Fragments with an error status (our _flash.html) are swapped in too.
  document.addEventListener("htmx:beforeSwap", (e) => {
    if (e.detail.xhr.status >= 400 && e.detail.xhr.responseText.startsWith("<div class=\"flash")) {
      e.detail.shouldSwap = true; e.detail.isError = false;
    }
  });

  // --- performance chart --------------------------------------------------------------------
  let plot = null;
  async function drawChart() {
    const el = document.getElementById("chart");
    if (!el || typeof uPlot === "undefined") return;
    const counter = document.getElementById("chart-counter").value;
    const tier = document.getElementById("chart-tier").value;
    const note = document.getElementById("chart-note");
    const r = await fetch(el.dataset.url + "?counter=" + encodeURIComponent(counter) + "&tier=" + encodeURIComponent(tier), {credentials: "same-origin"});
    const data = await r.json();
    if (!r.ok || !data.available) {
      note.textContent = data.message || "no statistics available";
      el.dataset.samples = "0";
      return;
    }
    const xs = data.points.map((p) => p[0]);
    const ys = data.points.map((p) => p[1]);
    el.dataset.samples = String(xs.length);
    note.textContent = xs.length + " samples of " + counter + " (" + data.unit + "), tier " + data.tier;
    if (plot) { plot.destroy(); plot = null; }
    el.innerHTML = "";
    plot = new uPlot({width: Math.min(el.clientWidth - 12, 960), height: 300, series: [{}, {label: counter + " (" + data.unit + ")", stroke: "#1f6feb", width: 2}], axes: [{}, {label: data.unit}]}, [xs, ys], el);
  }
  function setupChart() {
    const el = document.getElementById("chart");
    if (!el) return;
    document.getElementById("chart-counter").addEventListener("change", drawChart);
    document.getElementById("chart-tier").addEventListener("change", drawChart);
    drawChart();
    setInterval(drawChart, 20000);
  }

  refreshWhenOwnTaskEnds();  // what the page was rendered with
  connectLive();
  setupChart();
})();
