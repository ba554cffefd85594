// The receivables dashboard: reads the same /v1 API as any frontend, with the user's bearer token.
// The token comes from the URL fragment (#token=..., which browsers never send to servers), from
// ?token=, or from the sign-in form, and lives in sessionStorage for this tab only.
"use strict";

const REFRESH_MS = 15000;
const BUCKETS = [["current", "Current"], ["d1_30", "1–30"], ["d31_60", "31–60"], ["d61_90", "61–90"], ["d90_plus", "90+"]];
const state = { token: null, currency: "USD", sort: "total", order: "desc", cursor: null, timer: null };
const $ = (id) => document.getElementById(id);

function takeToken() {
  const fragment = new URLSearchParams(location.hash.slice(1)).get("token");
  const query = new URLSearchParams(location.search).get("token");
  const token = fragment || query;
  if (token) {
    sessionStorage.setItem("payloop.token", token);
    history.replaceState(null, "", location.pathname);  // keep it out of the address bar and history
  }
  return token || sessionStorage.getItem("payloop.token");
}

class Unauthorized extends Error {}

async function api(path, params = {}) {
  const url = new URL(path, location.origin);
  for (const [key, value] of Object.entries(params)) if (value !== "" && value != null) url.searchParams.set(key, value);
  const response = await fetch(url, { headers: { Authorization: `Bearer ${state.token}` } });
  if (response.status === 401 || response.status === 403) throw new Unauthorized((await response.json()).detail);
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response;
}

// Money arrives in integer minor units; it is split into units and cents as integers, so no
// floating-point rounding ever touches an amount.
function money(minor, currency = state.currency) {
  const sign = minor < 0 ? "-" : "";
  const abs = Math.abs(minor);
  const units = new Intl.NumberFormat(undefined).format(Math.trunc(abs / 100));
  const cents = String(abs % 100).padStart(2, "0");
  return `${sign}${currency} ${units}.${cents}`;
}
const percent = (ratio) => (ratio == null ? "—" : `${(ratio * 100).toFixed(1)}%`);
const days = (value) => (value == null ? "—" : `${value.toFixed(1)} days`);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value; else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  return node;
}

function filters() {
  const form = new FormData($("filters"));
  return Object.fromEntries([...form.entries()].filter(([, value]) => value !== ""));
}

async function loadProfile() {
  try {
    const profile = await (await api("/v1/tenant-profile")).json();
    state.currency = profile.currency;
    $("brand-name").textContent = `${profile.name} · Receivables`;
    document.title = `${profile.name} · Receivables`;
    const brand = profile.branding || {};
    if (brand.primary_color) document.documentElement.style.setProperty("--brand", brand.primary_color);
    if (brand.logo_url) { $("brand-logo").src = brand.logo_url; $("brand-logo").alt = profile.name; $("brand-logo").hidden = false; }
  } catch (error) {
    if (error instanceof Unauthorized) throw error;  // no profile yet: keep the defaults
  }
}

function renderKpis(metrics) {
  $("kpi-ar").textContent = money(metrics.receivables_minor);
  $("kpi-ar-note").textContent = `${metrics.open_invoices} open invoices`;
  $("kpi-dso").textContent = days(metrics.dso);
  $("kpi-dso-note").textContent = `best possible ${days(metrics.best_possible_dso)}`;
  $("kpi-overdue").textContent = percent(metrics.overdue_rate.by_amount);
  $("kpi-overdue-note").textContent = `${percent(metrics.overdue_rate.by_count)} of invoices`;
  $("kpi-ontime").textContent = percent(metrics.on_time_ratio);
  $("kpi-ontime-note").textContent = `avg ${days(metrics.average_days_to_pay)} to pay`;
}

function renderChart(totals) {
  const chart = $("aging-chart");
  const highest = Math.max(1, ...BUCKETS.map(([key]) => totals[key]));
  chart.replaceChildren(...BUCKETS.map(([key, label], index) => {
    const fill = el("div", { class: `fill ${index >= 3 ? "late" : index >= 1 ? "warn" : ""}`, "data-bucket": key });
    fill.style.height = `${Math.round((totals[key] / highest) * 150)}px`;
    return el("div", { class: "bar-col" }, el("span", { class: "amount" }, money(totals[key])), fill, el("span", {}, label));
  }));
  chart.setAttribute("aria-label", "Aging: " + BUCKETS.map(([key, label]) => `${label} ${money(totals[key])}`).join(", "));
}

function clientRow(client) {
  const cells = BUCKETS.map(([key], index) =>
    el("td", { class: `num${index >= 2 && client.buckets[key] > 0 ? " late" : ""}` }, money(client.buckets[key])));
  const collection = client.collection_state === "none" ? "—"
    : [client.collection_state, client.collection_level, client.promised_on && `by ${client.promised_on}`].filter(Boolean).join(" · ");
  const open = el("button", { type: "button", class: "client-link" }, client.name || client.client_id);
  open.addEventListener("click", () => showClient(client.client_id).catch(() => {}));
  return el("tr", { "data-client": client.client_id },
    el("th", { scope: "row" }, open), ...cells,
    el("td", { class: "num total" }, money(client.buckets.total)),
    el("td", {}, client.autopay_enrolled ? "Enrolled" : "—"), el("td", {}, el("span", { class: "pill" }, collection)));
}

async function loadClients(append = false) {
  const params = { ...filters(), sort: state.sort, order: state.order, limit: 50, cursor: append ? state.cursor : null };
  const report = await (await api("/v1/aging", params)).json();
  const body = $("clients").querySelector("tbody");
  const rows = report.clients.map(clientRow);
  if (append) body.append(...rows); else body.replaceChildren(...rows);
  if (!append && !rows.length) body.append(el("tr", {}, el("td", { colspan: "9", class: "muted" }, "No open balances match.")));
  state.cursor = report.next_cursor;
  $("more").hidden = !report.next_cursor;
  const csv = new URL("/v1/aging", location.origin);
  for (const [key, value] of Object.entries({ ...filters(), sort: state.sort, order: state.order, format: "csv" })) csv.searchParams.set(key, value);
  $("csv").dataset.href = csv.pathname + csv.search;
  return report;
}

async function showClient(clientId) {
  const detail = await (await api(`/v1/clients/${encodeURIComponent(clientId)}`)).json();
  const metrics = detail.metrics;
  $("client-title").textContent = detail.name || detail.client_id;
  $("client-summary").textContent = [
    `AR ${money(metrics.receivables_minor)}`, `avg ${days(metrics.average_days_to_pay)} to pay`,
    `on time ${percent(metrics.on_time_ratio)}`, `contracts: ${detail.contract_kinds.join(", ") || "—"}`,
    `auto-pay ${detail.autopay_enrolled ? "on" : "off"}`, `collection: ${detail.collection_state}`,
  ].join(" · ");
  $("client-timeline").replaceChildren(...detail.timeline.slice(0, 15).map((entry) =>
    el("li", { "data-kind": entry.kind }, `${entry.occurred_at.slice(0, 10)} · ${entry.summary}`,
      entry.amount_minor == null ? "" : ` · ${money(entry.amount_minor, entry.currency || state.currency)}`)));
  $("client-dialog").showModal();  // modal: focus moves in, Escape closes, focus returns to the row
}

function renderDrift(report) {
  const items = report.alerts.map((alert) => el("li", { "data-client": alert.client_id }, alert.message));
  $("drift").replaceChildren(...(items.length ? items : [el("li", { class: "muted" }, "No client is paying slower.")]));
}

function renderExceptions(page) {
  const items = page.items.map((item) => {
    const action = item.action_href && item.action_href.startsWith("https://")
      ? el("a", { href: item.action_href, target: "_blank", rel: "noopener" }, item.action) : item.action;
    return el("li", { "data-kind": item.kind }, el("strong", {}, item.title), " ", el("span", {}, item.detail),
      el("span", { class: "action" }, "What to do: ", action));
  });
  $("exceptions").replaceChildren(...(items.length ? items : [el("li", { class: "muted" }, "Nothing needs attention.")]));
}

async function refresh() {
  try {
    const [metrics, drift, exceptions] = await Promise.all([
      api("/v1/metrics").then((r) => r.json()), api("/v1/drift").then((r) => r.json()),
      api("/v1/exceptions", { limit: 20 }).then((r) => r.json()), loadClients(),
    ]);
    renderKpis(metrics);
    renderChart(metrics.aging);
    renderDrift(drift);
    renderExceptions(exceptions);
    $("status").textContent = `Updated ${new Date().toLocaleTimeString()} · as of ${metrics.as_of}`;
  } catch (error) {
    if (error instanceof Unauthorized) return signIn(error.message);
    $("status").textContent = `Could not refresh (${error.message}); retrying`;
  }
}

function setSort(th) {
  const key = th.dataset.sort;
  state.order = state.sort === key && state.order === "desc" ? "asc" : state.sort === key ? "desc" : key === "name" ? "asc" : "desc";
  state.sort = key;
  for (const other of document.querySelectorAll("th[data-sort]")) other.setAttribute("aria-sort", "none");
  th.setAttribute("aria-sort", state.order === "asc" ? "ascending" : "descending");
  loadClients().catch(() => {});
}

async function downloadCsv(event) {
  event.preventDefault();
  const blob = await (await api($("csv").dataset.href)).blob();
  const link = el("a", { href: URL.createObjectURL(blob), download: "aging.csv" });
  link.click();
  URL.revokeObjectURL(link.href);
}

function signIn(message = "") {
  clearInterval(state.timer);
  sessionStorage.removeItem("payloop.token");
  $("main").hidden = true; $("sign-out").hidden = true; $("login").hidden = false;
  $("login-error").textContent = message;
  $("status").textContent = "Signed out";
  $("token-input").focus();
}

async function start() {
  $("login").hidden = true; $("main").hidden = false; $("sign-out").hidden = false;
  try {
    await loadProfile();
  } catch (error) {
    return signIn(error.message);
  }
  await refresh();
  state.timer = setInterval(refresh, REFRESH_MS);  // live numbers without a reload
}

document.addEventListener("DOMContentLoaded", () => {
  for (const th of document.querySelectorAll("th[data-sort]")) th.querySelector("button").addEventListener("click", () => setSort(th));
  $("filters").addEventListener("input", () => loadClients().catch(() => {}));
  $("filters").addEventListener("submit", (event) => event.preventDefault());
  $("more").addEventListener("click", () => loadClients(true).catch(() => {}));
  $("csv").addEventListener("click", downloadCsv);
  $("sign-out").addEventListener("click", () => signIn());
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    state.token = $("token-input").value.trim();
    sessionStorage.setItem("payloop.token", state.token);
    start();
  });
  state.token = takeToken();
  if (state.token) start(); else signIn();
});
