// The trader's console: the order book, a live chart of each bracket, and the place / batch / cancel actions,
// all through the stack's public REST API. The API key lives in this tab's sessionStorage and travels only in the
// X-API-KEY header. Paths are relative, so the page works under the local API and under an API Gateway stage.
"use strict";

const KEY_STORE = "bracketflow.apikey";
const BOOK_EVERY_MS = 3000;
const BRACKET_EVERY_MS = 2000;
const STATUS_EVERY_MS = 5000;
const OPEN = new Set(["CREATED", "ENTRY_PENDING", "ENTRY_FILLED", "PROTECTED", "EXITING", "EXIT_FAILED", "NEEDS_REVIEW"]);
const CANCELLABLE = new Set(["CREATED", "ENTRY_PENDING", "PROTECTED"]);
const BOOK_COLUMNS = ["Time", "Symbol", "Side", "Qty", "Product", "Strategy", "Status", "Entry", "Stop", "Target", "Exit", "P&L", ""];

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
};

const state = { book: null, timers: [], chart: null, bracketId: null };

// ---------- the API ----------
class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { "X-API-KEY": sessionStorage.getItem(KEY_STORE) || "" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await res.json(); } catch { data = null; }
  if (!res.ok) {
    const message = (data && (data.message || data.detail)) || `${res.status} ${res.statusText}`;
    if (res.status === 401) signOut("Your API key was not accepted; sign in again.");
    throw new ApiError(res.status, message);
  }
  return data;
}

// ---------- formatting ----------
const money = (v) => (v === null || v === undefined || v === "" ? "" : Number(v).toLocaleString("en-IN", { minimumFractionDigits: 2, maximumFractionDigits: 2 }));
const signed = (v) => { const n = Number(v); return `${n > 0 ? "+" : ""}${money(v)}`; };
const pnlClass = (v) => (v === null || v === undefined ? "" : Number(v) >= 0 ? "pos" : "neg");
const clock = (iso) => (iso ? new Date(iso).toLocaleTimeString("en-IN", { hour12: false }) : "");
const when = (iso) => (iso ? new Date(iso).toLocaleString("en-IN", { hour12: false, day: "2-digit", month: "short", hour: "2-digit", minute: "2-digit", second: "2-digit" }) : "");
const seconds = (iso) => Math.floor(new Date(iso).getTime() / 1000);

// ---------- sign in / out ----------
function signOut(message = "") {
  sessionStorage.removeItem(KEY_STORE);
  stopTimers();
  $("#book").hidden = true;
  $("#bracket").hidden = true;
  $("#status-panel").hidden = true;
  $("#sign-out").hidden = true;
  $("#sign-in").hidden = false;
  $("#sign-in-error").textContent = message;
}

async function signIn(event) {
  event.preventDefault();
  const key = $("#api-key").value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_STORE, key);
  $("#sign-in-error").textContent = "";
  try {
    await api("api/v1/orderbook");
  } catch (err) {
    sessionStorage.removeItem(KEY_STORE);
    $("#sign-in").hidden = false;
    $("#sign-in-error").textContent = err.status === 401 ? "That API key was not accepted." : `Could not reach the API: ${err.message}`;
    return;
  }
  $("#api-key").value = "";
  route();
}

// ---------- timers ----------
function stopTimers() { state.timers.forEach(clearInterval); state.timers = []; }
function every(ms, fn) {
  fn();
  state.timers.push(setInterval(() => { if (!document.hidden) fn(); }, ms));
}

// ---------- status: the header's components (/health) and the status panel (api/v1/status) ----------
async function loadStatus() {
  await Promise.all([loadHealth(), loadPanel()]);
}

async function loadHealth() {
  const box = $("#status");
  let health;
  try {
    const res = await fetch("health");
    health = await res.json();
  } catch {
    box.replaceChildren(el("span", { class: "down", text: "API unreachable" }));
    return;
  }
  const chips = [];
  for (const [name, value] of Object.entries(health.components || {})) {
    const st = typeof value === "string" ? value : value && (value.state || value.status);
    chips.push(el("span", { class: st === "up" || st === "ok" ? "up" : "down", text: `${name}${st && st !== "up" ? ` ${st}` : ""}` }));
  }
  box.replaceChildren(...chips);
}

function stat(id, state, text, title = "") {
  const box = $(id);
  box.dataset.state = state;
  const v = box.querySelector(".v");
  v.className = `v ${state}`;
  v.textContent = text;
  v.title = title;
  return v;
}

const REPAIRS = (repairs) => Object.entries(repairs || {}).map(([k, n]) => `${k} ${n}`).join(", ");

async function loadPanel() {
  let s;
  try {
    ({ data: s } = await api("api/v1/status"));
  } catch (err) {
    if (err.status !== 401) stat("#st-session", "unknown", `status unavailable: ${err.message}`);
    return;
  }
  $("#status-panel").hidden = false;

  const session = s.broker_session || {};
  const valid = session.state === "valid";
  const sv = stat("#st-session", valid ? "up" : "down", valid ? `valid until ${when(session.expires_at)}` : session.state === "misconfigured" ? "misconfigured " : `${session.state || "unknown"} `, session.error || "");
  if (!valid && session.login) sv.append(el("a", { href: session.login.replace(/^\//, ""), text: "log in" }));

  const st = s.streamer || {};
  stat("#st-streamer", st.state, st.state === "unknown" ? "no heartbeat yet" : `${st.state} · beat ${clock(st.heartbeat_at)} · ${st.watched} watched`, st.reconnects ? `${st.reconnects} reconnects` : "");
  const feed = s.feed || {};
  stat("#st-feed", feed.state === "flowing" || feed.state === "connected" ? "up" : feed.state === "unknown" ? "unknown" : "down",
    feed.messages_per_s == null ? feed.state : `${feed.state} · ${Number(feed.messages_per_s).toFixed(1)} msg/s`, feed.lag_s == null ? "" : `lag ${feed.lag_s} s`);
  $("#st-feed").dataset.feed = feed.state;

  const rec = s.reconciliation || {};
  const box = $("#st-reconcile");
  const list = box.querySelector(".repaired");
  if (rec.error) {
    stat("#st-reconcile", "down", rec.error);
    list.replaceChildren();
  } else if (!rec.last_run) {
    stat("#st-reconcile", "unknown", "no run yet");
    list.replaceChildren();
  } else {
    const last = rec.last_run;
    const what = REPAIRS(last.repairs) || "nothing to repair";
    stat("#st-reconcile", last.errors ? "down" : "up", `${clock(last.at)} · ${last.brackets} checked · ${what}${last.errors ? ` · ${last.errors} not checked` : ""}${last.orphan_gtts ? ` · ${last.orphan_gtts} orphan GTTs` : ""}`);
    box.dataset.at = last.at;
    const rep = rec.last_repair;
    if (rep) {
      box.dataset.repairRun = rep.run_id;
      const items = [el("li", { class: "muted", text: `last repair ${when(rep.at)}: ${REPAIRS(rep.repairs)}` })];
      for (const r of rep.repaired) {
        items.push(el("li", { "data-bracket": r.bracket_id }, el("a", { href: `#/bracket/${r.bracket_id}`, text: r.bracket_id }), ` ${r.repair}`));
      }
      list.replaceChildren(...items);
    } else {
      list.replaceChildren();
    }
  }

  const alarms = s.alarms || { firing: [] };
  const firing = alarms.firing || [];
  stat("#st-alarms", alarms.error ? "unknown" : firing.length ? "down" : "up", alarms.error ? alarms.error : firing.length ? `${firing.length} firing` : `none firing (${alarms.watched} watched)`);
  $("#st-alarm-list").replaceChildren(...firing.map((a) => el("li", { "data-alarm": a.name, title: a.reason || "" },
    el("b", { text: a.name }), el("span", { text: ` since ${when(a.since)}` }), el("div", { class: "muted", text: a.description || "" }))));
}

// ---------- the order book ----------
function filters() {
  const form = new FormData($("#filters"));
  const q = new URLSearchParams();
  for (const [k, v] of form.entries()) if (v) q.set(k, v);
  return q;
}

async function loadBook() {
  try {
    const { data } = await api(`api/v1/orderbook?${filters()}`);
    state.book = data;
    $("#book-error").textContent = "";
    renderBook(data);
  } catch (err) {
    if (err.status !== 401) $("#book-error").textContent = err.message;
  }
}

function renderBook(data) {
  const wanted = new FormData($("#filters")).get("status");
  const chips = Object.entries(data.counts).filter(([, n]) => n > 0).map(([status, n]) =>
    el("button", { type: "button", class: `chip${wanted === status ? " on" : ""}`, "data-status": status,
      onclick: () => { const sel = $("#filters select[name=status]"); sel.value = wanted === status ? "" : status; loadBook(); } },
      status, el("b", { text: String(n) })));
  chips.unshift(el("span", { class: "chip", text: `all ${data.total}` }));
  $("#counts").replaceChildren(...chips);

  const totals = [el("span", { class: `chip ${pnlClass(data.pnl.total)}`, id: "pnl-total", text: `P&L ${signed(data.pnl.total)}` })];
  for (const [name, v] of Object.entries(data.pnl.by_strategy)) totals.push(el("span", { class: `chip ${pnlClass(v)}`, text: `${name || "(no strategy)"} ${signed(v)}` }));
  for (const [day, v] of Object.entries(data.pnl.by_day)) totals.push(el("span", { class: `chip ${pnlClass(v)}`, text: `${day} ${signed(v)}` }));
  $("#totals").replaceChildren(...totals);

  const rows = data.orders.map((o) => {
    const status = el("td", {}, el("span", { class: `badge ${o.status}`, text: o.status }));
    if (o.block) status.append(el("span", { class: "block", title: `${o.block.tag}: ${o.block.explanation}`, text: o.block.tag }));
    const actions = el("td");
    if (CANCELLABLE.has(o.status)) {
      actions.append(el("button", { class: "small danger", type: "button", text: o.status === "PROTECTED" ? "Exit" : "Cancel",
        onclick: (e) => { e.stopPropagation(); cancelBracket(o); } }));
    }
    const cells = [
      el("td", { text: when(o.created_at) }),
      el("td", { class: "sym", text: `${o.exchange}:${o.symbol}` }),
      el("td", { text: o.side }),
      el("td", { class: "num", text: String(o.quantity) }),
      el("td", { text: o.product }),
      el("td", { text: o.strategy || "" }),
      status,
      el("td", { class: "num", text: money(o.average_price || o.entry_price) }),
      el("td", { class: "num", text: money(o.stop_price) }),
      el("td", { class: "num", text: money(o.target_price) }),
      el("td", { text: o.exit_reason || "" }),
      el("td", { class: `num ${pnlClass(o.realised_pnl)}`, text: o.realised_pnl === null ? "" : signed(o.realised_pnl) }),
      actions,
    ];
    // Each cell names its column: on a phone the rows are cards and the header row is hidden (console.css).
    cells.forEach((td, i) => td.setAttribute("data-label", BOOK_COLUMNS[i]));
    return el("tr", { class: "row", "data-bracket": o.bracket_id, onclick: () => { location.hash = `#/bracket/${o.bracket_id}`; } }, ...cells);
  });
  $("#book-table tbody").replaceChildren(...rows);
}

function exportCsv() {
  if (!state.book) return;
  const cols = ["created_at", "bracket_id", "exchange", "symbol", "side", "quantity", "product", "strategy", "status",
    "block", "entry_price", "average_price", "stop_price", "target_price", "exit_reason", "realised_pnl"];
  const cell = (v) => { const s = v === null || v === undefined ? "" : typeof v === "object" ? v.tag : String(v); return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s; };
  const lines = [cols.join(","), ...state.book.orders.map((o) => cols.map((c) => cell(o[c])).join(","))];
  const blob = new Blob([`${lines.join("\n")}\n`], { type: "text/csv" });
  const link = el("a", { href: URL.createObjectURL(blob), download: `bracketflow-orderbook-${new Date().toISOString().slice(0, 10)}.csv` });
  document.body.append(link);
  link.click();
  link.remove();
}

async function cancelBracket(o) {
  const what = o.status === "PROTECTED" ? `exit the open ${o.side} ${o.quantity} ${o.symbol} at market` : `cancel the ${o.side} ${o.quantity} ${o.symbol} entry`;
  if (!confirm(`This will ${what}. Go ahead?`)) return;
  try {
    await api(`api/v1/brackets/${encodeURIComponent(o.bracket_id)}`, { method: "DELETE" });
  } catch (err) {
    alert(err.message);
  }
  if (state.bracketId) loadBracket(); else loadBook();
}

// ---------- one bracket: chart and audit trail ----------
function makeChart() {
  const LC = window.LightweightCharts;
  const box = $("#chart");
  box.replaceChildren();
  const chart = LC.createChart(box, {
    autoSize: true,
    layout: { background: { color: "#ffffff" }, textColor: "#344054" },
    grid: { vertLines: { color: "#f0f2f5" }, horzLines: { color: "#f0f2f5" } },
    timeScale: { timeVisible: true, secondsVisible: true },
    localization: { timeFormatter: (t) => new Date(t * 1000).toLocaleTimeString("en-IN", { hour12: false }) },
  });
  const price = chart.addSeries(LC.LineSeries, { color: "#2f5bd3", lineWidth: 2, title: "price" });
  const stop = chart.addSeries(LC.LineSeries, { color: "#b42318", lineWidth: 2, lineType: LC.LineType.WithSteps, title: "stop" });
  const markers = LC.createSeriesMarkers(price, []);
  return { chart, price, stop, markers, lines: [] };
}

// One value per second (the chart's time resolution): the last one in each second wins.
function perSecond(points) {
  const out = new Map();
  for (const [t, v] of points) out.set(t, v);
  return [...out.entries()].sort((a, b) => a[0] - b[0]).map(([time, value]) => ({ time, value }));
}

const MARKERS = {
  EntryPlaced: ["entry placed", "#667085", "circle"],
  EntryFilled: ["entry filled", "#2f5bd3", "arrowUp"],
  ProtectionPlaced: ["GTT placed", "#13795b", "square"],
  StopTrailed: ["stop moved", "#b54708", "circle"],
  BrokerStopMoved: ["GTT stop moved", "#b54708", "square"],
  ExitRequested: ["exit", "#b42318", "arrowDown"],
  ExitPlaced: ["exit placed", "#b42318", "circle"],
  ExitFilled: ["exit filled", "#b42318", "arrowDown"],
  EmergencyExitPlaced: ["emergency exit", "#b42318", "arrowDown"],
  BracketClosed: ["closed", "#1d2430", "square"],
};

function stopHistory(b) {
  const points = [];
  for (const e of b.events) {
    if (e.type === "ProtectionPlaced" && e.stop_price) points.push([seconds(e.at), Number(e.stop_price)]);
    if (e.type === "StopTrailed" && e.new_stop) points.push([seconds(e.at), Number(e.new_stop)]);
  }
  if (points.length && OPEN.has(b.status)) points.push([Math.floor(Date.now() / 1000), Number(b.stop_price)]);
  return perSecond(points);
}

async function loadBracket() {
  const id = state.bracketId;
  let b, prices;
  try {
    [{ data: b }, { data: prices }] = await Promise.all([
      api(`api/v1/brackets/${encodeURIComponent(id)}`),
      api(`api/v1/brackets/${encodeURIComponent(id)}/prices`),
    ]);
  } catch (err) {
    if (err.status !== 401) $("#bracket-error").textContent = err.message;
    return;
  }
  if (id !== state.bracketId) return;
  $("#bracket-error").textContent = "";
  $("#bracket-title").textContent = `${b.side} ${b.quantity} ${b.exchange}:${b.symbol} ${b.product}${b.strategy ? ` · ${b.strategy}` : ""}`;
  const badge = $("#bracket-status");
  badge.textContent = b.exit && b.exit.reason ? `${b.status} (${b.exit.reason})` : b.status;
  badge.className = `badge ${b.status}`;
  $("#level-entry").textContent = money(b.entry.average_price || b.entry.price) || b.entry.price_type;
  $("#stop-value").textContent = money(b.stop_price);
  $("#stop-value").dataset.value = b.stop_price;
  $("#level-target").textContent = money(b.target_price);
  const last = prices.points.length ? prices.points[prices.points.length - 1][1] : null;
  $("#last-price").textContent = money(last);
  const closed = b.events.find((e) => e.type === "BracketClosed");
  $("#bracket-pnl").textContent = closed && closed.pnl !== undefined ? signed(closed.pnl) : "";
  $("#bracket-pnl").className = closed ? pnlClass(closed.pnl) : "";
  const cancel = $("#bracket-cancel");
  cancel.hidden = !CANCELLABLE.has(b.status);
  cancel.textContent = b.status === "PROTECTED" ? "Exit at market" : "Cancel entry";
  cancel.onclick = () => cancelBracket({ ...b, side: b.side });

  if (window.LightweightCharts) {
    if (!state.chart) state.chart = makeChart();
    const c = state.chart;
    c.price.setData(perSecond(prices.points.map(([at, v]) => [seconds(at), Number(v)])));
    c.stop.setData(stopHistory(b));
    c.lines.forEach((l) => c.price.removePriceLine(l));
    c.lines = [];
    const entry = b.entry.average_price || b.entry.price;
    if (entry) c.lines.push(c.price.createPriceLine({ price: Number(entry), color: "#667085", lineStyle: 2, title: "entry" }));
    c.lines.push(c.price.createPriceLine({ price: Number(b.target_price), color: "#13795b", lineStyle: 2, title: "target" }));
    const markers = [];
    for (const e of b.events) {
      const m = MARKERS[e.type];
      if (m) markers.push({ time: seconds(e.at), position: m[2] === "arrowUp" ? "belowBar" : "aboveBar", color: m[1], shape: m[2], text: m[0] });
    }
    const seen = new Set();
    c.chart.timeScale().fitContent();
    c.markers.setMarkers(markers.sort((x, y) => x.time - y.time).filter((m) => { const k = `${m.time}:${m.text}`; if (seen.has(k)) return false; seen.add(k); return true; }));
  }

  const rows = b.events.map((e) => {
    const { type, at, version, event_id: _id, account_id: _account, ...detail } = e;
    const text = Object.entries(detail).filter(([, v]) => v !== null && typeof v !== "object").map(([k, v]) => `${k} ${v}`).join(" · ");
    return el("tr", { "data-event": type }, el("td", { class: "num", text: String(version) }), el("td", { text: clock(at) }), el("td", { text: type }), el("td", { class: "detail", text }));
  });
  $("#events-table tbody").replaceChildren(...rows);
}

// ---------- placing ----------
function clearFieldErrors(form) { form.querySelectorAll(".field-error").forEach((s) => { s.textContent = ""; }); }

function showFieldError(form, message) {
  // The API's messages name the field they are about first ("sl_price 1472.01 is not ...", "For BUY orders, SL
  // price must be less than entry price"): the field named earliest in the message gets it.
  const lower = message.toLowerCase();
  let best = null;
  for (const span of form.querySelectorAll(".field-error")) {
    const name = span.dataset.for;
    const spoken = name === "sl_price" ? "sl price" : name.replace("_", " ");
    const at = [lower.indexOf(name), lower.indexOf(spoken)].filter((i) => i >= 0);
    if (at.length && (best === null || Math.min(...at) < best.at)) best = { span, at: Math.min(...at) };
  }
  if (best) { best.span.textContent = message; return true; }
  return false;
}

async function placeBracket(event) {
  const form = $("#place-form");
  if (event.submitter && event.submitter.value === "cancel") return;
  event.preventDefault();
  clearFieldErrors(form);
  $("#place-error").textContent = "";
  const f = Object.fromEntries(new FormData(form).entries());
  const body = {
    symbol: f.symbol.trim(), exchange: f.exchange, action: f.action, product: f.product, pricetype: f.pricetype,
    quantity: Number(f.quantity), entry_price: f.entry_price.trim(), sl_price: f.sl_price.trim(), target_price: f.target_price.trim(),
  };
  if (f.trail_type) body.trail = { type: f.trail_type, value: f.trail_value.trim() };
  if (f.strategy.trim()) body.strategy = f.strategy.trim();
  $("#place-submit").disabled = true;
  try {
    const res = await api("api/v1/placebracketorder", { method: "POST", body });
    $("#place-dialog").close();
    form.reset();
    location.hash = `#/bracket/${res.bracket_id}`;
  } catch (err) {
    if (!showFieldError(form, err.message)) $("#place-error").textContent = err.message;
  } finally {
    $("#place-submit").disabled = false;
  }
}

function batchRow() {
  const select = (name, options) => el("select", { name }, ...options.map((o) => el("option", { text: o })));
  return el("tr", {},
    el("td", {}, el("input", { name: "tradingsymbol", placeholder: "INFY" })),
    el("td", {}, select("exchange", ["NSE", "BSE", "NFO", "MCX", "CDS"])),
    el("td", {}, select("transaction_type", ["BUY", "SELL"])),
    el("td", {}, el("input", { name: "quantity", type: "number", min: "1", value: "1" })),
    el("td", {}, select("order_type", ["MARKET", "LIMIT"])),
    el("td", {}, select("product", ["MIS", "CNC", "NRML"])),
    el("td", {}, el("input", { name: "price", inputmode: "decimal", placeholder: "for LIMIT" })),
    el("td", {}, el("button", { type: "button", class: "small quiet", text: "✕", onclick: (e) => e.target.closest("tr").remove() })));
}

async function placeBatch(event) {
  const form = $("#batch-form");
  if (event.submitter && event.submitter.value === "cancel") return;
  event.preventDefault();
  $("#batch-error").textContent = "";
  $("#batch-result").textContent = "";
  const orders = [...form.querySelectorAll("#batch-legs tbody tr")].map((tr) => {
    const v = (n) => tr.querySelector(`[name=${n}]`).value.trim();
    const leg = { tradingsymbol: v("tradingsymbol"), exchange: v("exchange"), transaction_type: v("transaction_type"), quantity: Number(v("quantity")), order_type: v("order_type"), product: v("product") };
    if (v("price")) leg.price = v("price");
    return leg;
  });
  if (orders.length < 1 || orders.length > 10) { $("#batch-error").textContent = "A batch has 1 to 10 orders."; return; }
  $("#batch-submit").disabled = true;
  try {
    const res = await api("api/v1/batchorders", { method: "POST", body: { orders, rollback_on_failure: form.rollback_on_failure.checked, wait: true } });
    const d = res.data || res;
    $("#batch-result").textContent = `Batch ${d.batch_id}: ${d.status || ""} ${d.succeeded ?? ""}/${d.total_orders ?? orders.length} placed`;
  } catch (err) {
    $("#batch-error").textContent = err.message;
  } finally {
    $("#batch-submit").disabled = false;
  }
}

// ---------- routing ----------
function route() {
  if (!sessionStorage.getItem(KEY_STORE)) { signOut(); return; }
  stopTimers();
  $("#sign-in").hidden = true;
  $("#sign-out").hidden = false;
  every(STATUS_EVERY_MS, loadStatus);
  const match = location.hash.match(/^#\/bracket\/([\w-]+)$/);
  if (match) {
    $("#book").hidden = true;
    $("#bracket").hidden = false;
    if (state.bracketId !== match[1]) { state.bracketId = match[1]; if (state.chart) { state.chart.chart.remove(); state.chart = null; } }
    every(BRACKET_EVERY_MS, loadBracket);
  } else {
    state.bracketId = null;
    if (state.chart) { state.chart.chart.remove(); state.chart = null; }
    $("#bracket").hidden = true;
    $("#book").hidden = false;
    every(BOOK_EVERY_MS, loadBook);
  }
}

function init() {
  const statusSelect = $("#filters select[name=status]");
  for (const s of ["CREATED", "ENTRY_PENDING", "ENTRY_FILLED", "PROTECTED", "EXITING", "EXIT_FAILED", "CLOSED", "CANCELLED", "EXPIRED", "FAILED", "NEEDS_REVIEW"]) statusSelect.append(el("option", { text: s }));
  $("#filters input[name=date]").value = new Date().toISOString().slice(0, 10);  // today (the book's days are UTC)
  $("#sign-in-form").addEventListener("submit", signIn);
  $("#sign-out").addEventListener("click", () => { location.hash = ""; signOut(); });
  $("#filters").addEventListener("change", loadBook);
  $("#filters").addEventListener("submit", (e) => { e.preventDefault(); loadBook(); });
  $("#export-csv").addEventListener("click", exportCsv);
  $("#back").addEventListener("click", () => { location.hash = "#/book"; });
  $("#new-bracket").addEventListener("click", () => $("#place-dialog").showModal());
  $("#place-form").addEventListener("submit", placeBracket);
  $("#new-batch").addEventListener("click", () => { const body = $("#batch-legs tbody"); if (!body.children.length) body.append(batchRow()); $("#batch-dialog").showModal(); });
  $("#batch-add").addEventListener("click", () => { const body = $("#batch-legs tbody"); if (body.children.length < 10) body.append(batchRow()); });
  $("#batch-form").addEventListener("submit", placeBatch);
  window.addEventListener("hashchange", route);
  route();
}

document.addEventListener("DOMContentLoaded", init);
