// OpenRFT dashboard: reads the /v1 API with the user's key (kept in sessionStorage for this tab only).
// No framework and nothing from a CDN; every value from the API is written with textContent, never as HTML.
"use strict";

(() => {
  const KEY = "openrft_api_key";
  const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
  const SVG_NS = "http://www.w3.org/2000/svg";
  const $ = (selector) => document.querySelector(selector);

  // ---------------------------------------------------------------- DOM helpers

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === undefined || value === null) continue;
      if (name === "class") node.className = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child === undefined || child === null) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs = {}, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function show(selector, visible) {
    const node = typeof selector === "string" ? $(selector) : selector;
    if (node) node.hidden = !visible;
  }

  function setError(selector, error) {
    const node = $(selector);
    if (!node) return;
    node.textContent = error ? String(error.message || error) : "";
    node.hidden = !error;
  }

  const when = (ts) => (ts ? new Date(ts * 1000).toLocaleString() : "–");
  const clock = (ts) => (ts ? new Date(ts * 1000).toLocaleTimeString() : "");
  const fmt = (v) => (typeof v === "number" && Number.isFinite(v) ? v.toFixed(3) : "–");

  function duration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    if (h) return `${h}h${String(m).padStart(2, "0")}m`;
    if (m) return `${m}m${String(r).padStart(2, "0")}s`;
    return `${r}s`;
  }

  function badge(status) {
    return el("span", { class: `badge status-${status}` }, status);
  }

  // ---------------------------------------------------------------- API access

  class ApiError extends Error {
    constructor(status, body) {
      const err = body && body.error ? body.error : {};
      super(err.message || `Request failed (${status}).`);
      this.status = status;
      this.code = err.code || null;
    }
  }

  function headers(json) {
    const h = { Authorization: `Bearer ${sessionStorage.getItem(KEY) || ""}` };
    if (json) h["Content-Type"] = "application/json";
    return h;
  }

  async function failure(response) {
    let body = null;
    try { body = await response.json(); } catch (_) { /* not JSON */ }
    const error = new ApiError(response.status, body);
    if (response.status === 401) askForKey(error.message);
    return error;
  }

  async function api(path, { method = "GET", body } = {}) {
    const response = await fetch(`/v1${path}`, {
      method, headers: headers(body !== undefined), body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!response.ok) throw await failure(response);
    return response.json();
  }

  // ---------------------------------------------------------------- the key

  let started = false;

  function askForKey(message) {
    sessionStorage.removeItem(KEY);
    show("#content", false);
    show("#sign-out", false);
    show("#auth", true);
    setError("#auth-error", message ? new Error(message) : null);
    $("#auth-key").focus();
  }

  async function unlock(key) {
    sessionStorage.setItem(KEY, key);
    await api("/models"); // any authenticated call: a wrong key answers 401 here
    show("#auth", false);
    show("#content", true);
    show("#sign-out", true);
    if (!started) {
      started = true;
      (document.body.dataset.page === "job" ? startJobPage : startJobsPage)();
    }
  }

  function setUpAuth() {
    $("#auth-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        await unlock($("#auth-key").value.trim());
        $("#auth-key").value = "";
      } catch (error) {
        if (!(error instanceof ApiError && error.status === 401)) askForKey(error.message);
      }
    });
    $("#sign-out").addEventListener("click", () => askForKey(null));
    const login = new URLSearchParams(location.hash.slice(1)).get("login");
    if (login) {
      // The one-time link `openrft serve` printed: off the address bar and history at once, then redeemed.
      history.replaceState(null, "", location.pathname + location.search);
      redeemLogin(login).then(unlock).catch((error) => askForKey(error.message));
      return;
    }
    const key = sessionStorage.getItem(KEY);
    if (key) unlock(key).catch((error) => askForKey(error.message));
    else askForKey(null);
  }

  async function redeemLogin(token) {
    const response = await fetch("/dashboard/login", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token }),
    });
    if (!response.ok) {
      let body = null;
      try { body = await response.json(); } catch (_) { /* not JSON */ }
      throw new ApiError(response.status, body);
    }
    return (await response.json()).api_key;
  }

  // ---------------------------------------------------------------- polling

  function every(ms, task) {
    let timer = null;
    const run = async () => {
      try { await task(); } catch (error) { console.warn(error); }
      timer = setTimeout(run, typeof ms === "function" ? ms() : ms);
    };
    run();
    return () => clearTimeout(timer);
  }

  // ---------------------------------------------------------------- jobs page

  function startJobsPage() {
    let pages = 1;
    const pageSize = 20;

    async function refresh() {
      try {
        const list = await api(`/fine_tuning/jobs?limit=${Math.min(100, pages * pageSize)}`);
        renderJobs(list.data);
        show("#jobs-more", list.has_more && pages * pageSize < 100);
        $("#jobs-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
        setError("#jobs-error", null);
      } catch (error) {
        setError("#jobs-error", error);
      }
    }

    $("#jobs-more").addEventListener("click", () => { pages += 1; refresh(); });
    every(5000, refresh);
  }

  function renderJobs(jobs) {
    const body = $("#jobs tbody");
    body.replaceChildren(...jobs.map((job) => el("tr", { "data-job-id": job.id },
      el("td", {}, el("a", { href: `/dashboard/jobs/${encodeURIComponent(job.id)}` }, job.id)),
      el("td", {}, badge(job.status)),
      el("td", {}, job.model),
      el("td", { class: "mono" }, job.fine_tuned_model || "–"),
      el("td", {}, when(job.created_at)),
      el("td", {}, when(job.finished_at)),
    )));
    show("#jobs-empty", jobs.length === 0);
  }

  // ---------------------------------------------------------------- job page

  function startJobPage() {
    const jobId = document.body.dataset.jobId;
    const path = `/fine_tuning/jobs/${encodeURIComponent(jobId)}`;
    const state = { job: null, events: [], newestId: null, checkpoints: [], models: [] };

    async function fetchNewEvents() {
      // Events come newest first: read pages until the newest one already shown.
      const fresh = [];
      let after = null;
      for (;;) {
        const query = `limit=${state.newestId ? 100 : 1000}${after ? `&after=${encodeURIComponent(after)}` : ""}`;
        const page = await api(`${path}/events?${query}`);
        let reached = false;
        for (const event of page.data) {
          if (event.id === state.newestId) { reached = true; break; }
          fresh.push(event);
        }
        if (reached || !page.has_more || page.data.length === 0) break;
        after = page.data[page.data.length - 1].id;
      }
      if (fresh.length) state.newestId = fresh[0].id;
      return fresh.reverse();
    }

    async function refresh() {
      state.job = await api(path);
      renderJob(state.job);
      const fresh = await fetchNewEvents();
      if (fresh.length || state.checkpoints.length === 0) {
        state.events.push(...fresh);
        renderEvents(fresh);
        const kind = chartKind(state.job);
        renderChart(state.events, kind);
        // Supervised jobs have no rewards and no rollouts: their curve is the loss.
        show("#rollouts-card", kind.name === "reward");
        if (kind.name === "reward") renderRollouts(state.events);
        state.checkpoints = (await api(`${path}/checkpoints?limit=100`)).data;
        renderCheckpoints(state.checkpoints, kind);
        renderModels(state);
      }
      $("#events-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    }

    every(() => (state.job && TERMINAL.has(state.job.status) ? 15000 : 2000), async () => {
      try {
        await refresh();
        setError("#job-error", state.job && state.job.error ? new Error(`${state.job.error.code}: ${state.job.error.message}`) : null);
      } catch (error) {
        setError("#job-error", error);
      }
    });

    for (const action of ["pause", "resume", "cancel"]) {
      $(`#job-${action}`).addEventListener("click", async () => {
        try {
          renderJob(await api(`${path}/${action}`, { method: "POST" }));
        } catch (error) {
          setError("#job-error", error);
        }
      });
    }
    $("#try-form").addEventListener("submit", (event) => { event.preventDefault(); tryModel(); });
  }

  function renderJob(job) {
    $("#job-title").textContent = job.id;
    $("#job-status").replaceWith(Object.assign(badge(job.status), { id: "job-status" }));
    const facts = [
      ["Base model", job.model],
      ["Method", job.method && job.method.type],
      ["Fine-tuned model", job.fine_tuned_model || "–"],
      ["Training file", job.training_file],
      ["Validation file", job.validation_file || "–"],
      ["Created", when(job.created_at)],
      ["Finished", when(job.finished_at)],
    ];
    if (!TERMINAL.has(job.status) && job.estimated_finish) {
      facts.push(["Time left", `≈ ${duration(job.estimated_finish - Date.now() / 1000)}`]);
    }
    $("#job-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v ?? "–")]));
    show("#job-pause", job.status === "running" || job.status === "queued");
    show("#job-resume", job.status === "paused");
    show("#job-cancel", !TERMINAL.has(job.status));
  }

  function renderEvents(fresh) {
    const list = $("#events");
    for (const event of fresh) {
      const item = el("li", { class: `level-${event.level}`, "data-event-id": event.id },
        el("time", {}, clock(event.created_at)), " ", el("span", {}, event.message));
      list.prepend(item); // newest first, like the API
    }
  }

  // ---------------------------------------------------------------- rollouts

  function latestRollouts(events) {
    // The newest metrics event that carries a group of rollouts (RL steps only).
    for (let i = events.length - 1; i >= 0; i--) {
      const data = events[i].data;
      if (events[i].type === "metrics" && data && data.rollouts && Array.isArray(data.rollouts.completions)) {
        return { step: data.step, ...data.rollouts };
      }
    }
    return null;
  }

  function renderRollouts(events) {
    const latest = latestRollouts(events);
    show("#rollouts-empty", !latest);
    if (!latest) return;
    $("#rollouts-step").textContent = `step ${latest.step}, ${latest.group_size} completions of one prompt`;
    const labels = latest.completions.length > 1 ? ["best", "worst"] : ["only"];
    $("#rollouts").replaceChildren(
      el("pre", { class: "output prompt" }, latest.prompt),
      ...latest.completions.map((c, i) => el("div", { class: "rollout", "data-rank": labels[i] },
        el("div", { class: "muted" },
          `${labels[i]}: reward ${fmt(c.reward)} (outcome ${fmt(c.outcome_reward)}, process ${fmt(c.process_reward)})`),
        el("pre", { class: "output" }, c.text))),
    );
  }

  // ---------------------------------------------------------------- reward (or loss) chart

  // What a job's curve shows: rewards for reinforcement jobs, the loss for supervised ones.
  const KINDS = {
    reward: {
      name: "reward",
      title: "Reward per step",
      // Metrics events nest the means under `scores`; checkpoint metrics may have them flat.
      train: (d) => d.train_mean_reward ?? d.train_reward_mean ?? (d.scores || {}).train_reward_mean,
      valid: (d) => d.full_valid_mean_reward ?? d.valid_reward_mean ?? (d.scores || {}).valid_reward_mean,
      labels: ["train mean reward", "validation mean reward"],
      columns: ["Valid reward", "Train reward"],
      keys: ["full_valid_mean_reward", "valid_reward_mean", "train_mean_reward", "train_reward_mean"],
      upTo1: true,
    },
    loss: {
      name: "loss",
      title: "Loss per step",
      train: (data) => data.train_loss,
      valid: (data) => data.valid_loss ?? data.full_valid_loss,
      labels: ["train loss", "validation loss"],
      columns: ["Valid loss", "Train loss"],
      keys: ["valid_loss", "full_valid_loss", "train_loss"],
      upTo1: false,
    },
  };

  function chartKind(job) {
    return job && job.method && job.method.type === "supervised" ? KINDS.loss : KINDS.reward;
  }

  function metricPoints(events, kind) {
    // One point per step (a resumed job may report a step again: the latest report wins).
    const byStep = new Map();
    for (const event of events) {
      const data = event.data;
      if (event.type !== "metrics" || !data || typeof data.step !== "number") continue;
      byStep.set(data.step, { step: data.step, train: kind.train(data), valid: kind.valid(data) });
    }
    return [...byStep.values()].sort((a, b) => a.step - b.step);
  }

  function renderChart(events, kind = KINDS.reward) {
    const points = metricPoints(events, kind);
    const box = $("#chart");
    $("#chart-title").textContent = kind.title;
    const series = [
      { key: "train", label: kind.labels[0], cls: "series-train" },
      { key: "valid", label: kind.labels[1], cls: "series-valid" },
    ].map((s) => ({
      ...s, values: points.filter((p) => typeof p[s.key] === "number").map((p) => [p.step, p[s.key]]),
    }));
    if (!series.some((s) => s.values.length)) {
      box.replaceChildren(el("p", { class: "muted" }, `No ${kind.name} metrics yet.`));
      $("#chart-legend").replaceChildren();
      return;
    }
    const W = 760, H = 280, m = { l: 48, r: 16, t: 14, b: 34 };
    const all = series.flatMap((s) => s.values);
    let [x0, x1] = [Math.min(...all.map((v) => v[0])), Math.max(...all.map((v) => v[0]))];
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    const top = Math.max(...all.map((v) => v[1]));
    // Rewards are read against [0, 1]; a loss has no fixed top: a little room above its largest value.
    const y0 = Math.min(0, ...all.map((v) => v[1])), y1 = kind.upTo1 ? Math.max(1, top) : (top > 0 ? top * 1.1 : 1);
    const x = (v) => m.l + ((v - x0) / (x1 - x0)) * (W - m.l - m.r);
    const y = (v) => H - m.b - ((v - y0) / (y1 - y0)) * (H - m.t - m.b);

    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": kind.title.toLowerCase() });
    for (let i = 0; i <= 4; i++) {
      const v = y0 + ((y1 - y0) * i) / 4;
      chart.append(svg("line", { x1: m.l, x2: W - m.r, y1: y(v), y2: y(v), class: "grid-line" }));
      chart.append(svg("text", { x: m.l - 8, y: y(v) + 4, "text-anchor": "end", class: "tick" }, v.toFixed(2)));
    }
    const steps = [...new Set(all.map((v) => v[0]))].sort((a, b) => a - b);
    const stride = Math.max(1, Math.ceil(steps.length / 10));
    steps.forEach((s, i) => {
      if (i % stride) return;
      chart.append(svg("text", { x: x(s), y: H - m.b + 18, "text-anchor": "middle", class: "tick" }, String(s)));
    });
    chart.append(svg("text", { x: (W + m.l) / 2, y: H - 2, "text-anchor": "middle", class: "axis-label" }, "step"));
    chart.append(svg("line", { x1: m.l, x2: W - m.r, y1: y(y0), y2: y(y0), class: "axis" }));
    for (const s of series) {
      if (!s.values.length) continue;
      const line = svg("polyline", {
        points: s.values.map(([a, b]) => `${x(a).toFixed(1)},${y(b).toFixed(1)}`).join(" "),
        class: `line ${s.cls}`, "data-series": s.key, fill: "none",
      });
      chart.append(line);
      for (const [a, b] of s.values) {
        const dot = svg("circle", { cx: x(a), cy: y(b), r: 3.5, class: `dot ${s.cls}`, "data-series": s.key });
        dot.append(svg("title", {}, `step ${a}: ${s.label} ${fmt(b)}`));
        chart.append(dot);
      }
    }
    box.replaceChildren(chart);
    $("#chart-legend").replaceChildren(...series.filter((s) => s.values.length).map((s) =>
      el("span", { class: `key ${s.cls}` }, `${s.label} (last ${fmt(s.values[s.values.length - 1][1])})`)));
  }

  // ---------------------------------------------------------------- checkpoints and models

  function renderCheckpoints(checkpoints, kind = KINDS.reward) {
    $("#checkpoints-valid").textContent = kind.columns[0];
    $("#checkpoints-train").textContent = kind.columns[1];
    const rows = [...checkpoints].sort((a, b) => a.step_number - b.step_number).map((c) => {
      const metrics = c.metrics || {};
      const valid = kind.valid(metrics);
      const train = kind.train(metrics);
      const shown = new Set(["step", ...kind.keys]);
      const other = Object.entries(metrics)
        .filter(([k, v]) => !shown.has(k) && typeof v === "number")
        .map(([k, v]) => `${k}=${fmt(v)}`).join(", ");
      return el("tr", { "data-step": c.step_number },
        el("td", {}, c.step_number), el("td", { class: "mono" }, c.fine_tuned_model_checkpoint),
        el("td", {}, fmt(valid)), el("td", {}, fmt(train)), el("td", { class: "muted" }, other || "–"));
    });
    $("#checkpoints tbody").replaceChildren(...rows);
    show("#checkpoints-empty", rows.length === 0);
  }

  function renderModels(state) {
    const models = [];
    if (state.job && state.job.fine_tuned_model) models.push([state.job.fine_tuned_model, "final model"]);
    for (const c of [...state.checkpoints].sort((a, b) => b.step_number - a.step_number)) {
      models.push([c.fine_tuned_model_checkpoint, `checkpoint, step ${c.step_number}`]);
    }
    const key = models.map((m) => m[0]).join("|");
    if (key === state.modelsKey) return; // keep the user's selection
    state.modelsKey = key;
    $("#try-model").replaceChildren(...models.map(([id, label]) => el("option", { value: id }, `${id} (${label})`)));
    show("#try-form", models.length > 0);
    show("#try-none", models.length === 0);
  }

  async function tryModel() {
    const model = $("#try-model").value;
    const text = $("#try-input").value.trim();
    if (!model || !text) return;
    const output = $("#try-output");
    output.textContent = "";
    show(output, true);
    setError("#try-error", null);
    $("#try-send").disabled = true;
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: headers(true),
        body: JSON.stringify({ model, messages: [{ role: "user", content: text }], stream: true, max_tokens: 256 }),
      });
      if (!response.ok) throw await failure(response);
      await readStream(response, (delta) => { output.textContent += delta; });
    } catch (error) {
      setError("#try-error", error);
    } finally {
      $("#try-send").disabled = false;
    }
  }

  async function readStream(response, onText) {
    // Server-sent events: "data: {chunk}" blocks separated by blank lines, ending with "data: [DONE]".
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message || "The stream failed.");
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && delta.content) onText(delta.content);
      }
    }
  }

  document.addEventListener("DOMContentLoaded", setUpAuth);
})();
