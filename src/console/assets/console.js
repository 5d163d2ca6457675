// Homestead operator console: one page, plain DOM, no dependencies. Every request goes to
// /console/api/ with the session cookie; state-changing ones carry the session's CSRF token.
"use strict";

const API = "api/";
const PAGE_SIZE = 20;
const SVG = "http://www.w3.org/2000/svg";
let csrfToken = "";
let refreshTimer = 0;
let resizeTimer = 0;

const $ = (id) => document.getElementById(id);

/** An element with attributes and children (strings become text, never HTML). */
function h(tag, attrs = {}, ...children) {
  const el = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "onclick") el.addEventListener("click", value);
    else if (value !== null && value !== undefined && value !== false) el.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) el.append(child);
  }
  return el;
}

/** An API failure: the server's one-line reason. */
class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Calls the console API; JSON or text on success, an ApiError with the server's reason otherwise. */
async function api(method, path, body) {
  const headers = {};
  if (method !== "GET") headers["X-CSRF-Token"] = csrfToken;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(API + path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin", cache: "no-store",
    });
  } catch (err) {
    throw new ApiError(0, "The server did not answer: " + err.message);
  }
  const text = await response.text();
  if (!response.ok) {
    const reason = oneLine(text, response.status, response.statusText);
    if (response.status === 401 && path !== "sign-in") showSignIn(reason);
    throw new ApiError(response.status, reason);
  }
  const type = response.headers.get("content-type") || "";
  return type.includes("application/json") && text ? JSON.parse(text) : text;
}

/** A failure's reason as one readable line, even if some proxy answered with a page or JSON: JSON
 * without an `error` or `message` string, or an empty body, gives a sentence naming the status. */
function oneLine(text, status, statusText) {
  const plain = `The server answered ${status}${statusText ? " " + statusText : ""}.`;
  let line = text.trim();
  if (line.startsWith("<")) line = line.replace(/<[^>]*>/g, " ");
  if (line.startsWith("{") || line.startsWith("[")) {
    let parsed;
    try { parsed = JSON.parse(line); } catch (_) { parsed = undefined; /* plain text after all */ }
    if (parsed !== undefined) {
      const reason = [parsed && parsed.error, parsed && parsed.message].find((r) => typeof r === "string" && r.trim());
      line = reason || plain;
    }
  }
  return line.replace(/\s+/g, " ").trim().slice(0, 300) || plain;
}

function showError(id, err) { $(id).textContent = err ? (err.message || String(err)) : ""; }

function fmtBytes(bytes) {
  if (bytes === null || bytes === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = Number(bytes), unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit++; }
  return (unit === 0 ? value : value.toFixed(value < 10 ? 1 : 0)) + " " + units[unit];
}
function fmtTime(text) { return text ? text.replace("T", " ").slice(0, 19) + " UTC" : "–"; }
function fmtDuration(secs) {
  const d = Math.floor(secs / 86400), hh = Math.floor(secs % 86400 / 3600), m = Math.floor(secs % 3600 / 60);
  return d ? `${d} d ${hh} h` : hh ? `${hh} h ${m} min` : m ? `${m} min ${secs % 60} s` : `${secs} s`;
}
function fmtQuota(mb) { return mb === "unlimited" ? "unlimited" : mb === undefined ? "default" : mb + " MB"; }
function shortKey(key) { return key ? key.slice(0, 10) + "…" + key.slice(-4) : "–"; }

// ---------------------------------------------------------------- pages

const PAGES = ["overview", "users", "tokens", "events"];

function currentPage() {
  const name = location.hash.slice(1);
  return PAGES.includes(name) ? name : "overview";
}

function showPage(name) {
  for (const section of document.querySelectorAll(".page")) section.hidden = section.id !== "page-" + name;
  for (const link of document.querySelectorAll("nav a")) {
    if (link.getAttribute("href") === "#" + name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  $("nav").hidden = name === "sign-in";
  $("sign-out").hidden = name === "sign-in";
  clearInterval(refreshTimer);
  if (name !== "events") stopEvents();
  const title = { overview: "Overview", users: "Users", tokens: "Signup tokens", events: "Live events", "sign-in": "Sign in" };
  document.title = title[name] + " · Homestead console";
}

/** Shows the page the hash names; `focusHeading` moves the focus to its heading (a route change). */
function route(focusHeading) {
  if (!csrfToken) return;
  const name = currentPage();
  showPage(name);
  if (focusHeading === true) $(name + "-title").focus();
  if (name === "overview") {
    loadOverview();
    refreshTimer = setInterval(loadOverview, 5000);
  } else if (name === "users") loadUsers(null);
  else if (name === "tokens") loadTokens(null);
  else if (name === "events") startEvents();
}

function showSignIn(reason) {
  csrfToken = "";
  showPage("sign-in");
  $("sign-in-error").textContent = reason || "";
  $("password").focus();
}

async function signIn(event) {
  event.preventDefault();
  const button = event.submitter;
  if (button) button.disabled = true;
  showError("sign-in-error", null);
  try {
    const answer = await api("POST", "sign-in", { password: $("password").value });
    csrfToken = answer.csrf_token;
    $("password").value = "";
    route();
    $("main").focus();
  } catch (err) {
    showError("sign-in-error", err);
    $("password").select();
  } finally {
    if (button) button.disabled = false;
  }
}

async function signOut() {
  try { await api("POST", "sign-out"); } catch (_) { /* signed out either way */ }
  showSignIn("Signed out.");
}

// ---------------------------------------------------------------- overview

function card(title, value, detail, extra) {
  return h("section", { class: "card", "aria-label": title },
    h("h2", {}, title), h("p", { class: "value" }, value), detail ? h("p", { class: "detail" }, detail) : null, extra || null);
}

/** Users' bytes of the blob volume's total, with its free space; memory and S3 have no fixed total. */
function storageCard(used, store, defaultQuota) {
  const quota = h("p", { class: "detail" }, `Default quota: ${fmtQuota(defaultQuota)} per user`);
  if (store.total_bytes === null) {
    const why = store.error || `The blob store, ${store.describe}, has no fixed total.`;
    return card("Storage used", fmtBytes(used), why, quota);
  }
  const taken = store.total_bytes - store.free_bytes;
  const share = store.total_bytes ? 100 * taken / store.total_bytes : 0;
  const bar = h("span");
  bar.style.width = Math.min(100, share).toFixed(1) + "%";
  const meter = h("div", { class: "meter", role: "img", "aria-label": `${share.toFixed(1)}% of the blob volume in use` }, bar);
  // The meter is the volume's fill (other data on it included), not the users' share: the text says so.
  return card("Storage used", fmtBytes(used),
    `by users' files; on the blob volume: ${share.toFixed(0)}% of ${fmtBytes(store.total_bytes)} in use, ` +
    `${fmtBytes(store.free_bytes)} free`, [meter, quota]);
}

function status(ok, yes, no) { return h("span", { class: ok ? "ok" : "bad" }, ok ? yes : no); }

async function loadOverview() {
  let o;
  try {
    o = await api("GET", "overview");
    showError("overview-error", null);
  } catch (err) {
    showError("overview-error", err);
    return;
  }
  const c = o.counts;
  const cards = [];
  if (c.error) {
    cards.push(card("Users", "–", c.error));
  } else {
    cards.push(card("Users", String(c.users), `${c.disabled_users} disabled`));
    cards.push(storageCard(c.used_bytes, o.blob_store, o.default_quota_mb));
    cards.push(card("Signup tokens", `${c.unused_signup_tokens} unused`, `${c.signup_tokens - c.unused_signup_tokens} used of ${c.signup_tokens} minted`));
  }
  const down = [o.health.database ? null : "Database", o.health.blobs ? null : "Blob store"].filter(Boolean);
  cards.push(card("Dependencies", status(!down.length, "All up", down.join(" and ") + " down"),
    h("span", {}, "Database: ", status(o.health.database, "up", "down"), " · Blob store: ", status(o.health.blobs, "up", "down"))));
  const p = o.publish;
  const published = p.last_attempt && !p.last_error;
  cards.push(card("Server record",
    p.last_attempt ? status(published, "Published", "Publish failing") : h("span", { class: "warn" }, "Not published yet"),
    p.last_error ? `Last error: ${p.last_error} (${fmtTime(p.last_attempt)})`
      : p.last_attempt ? `Last publish ${fmtTime(p.last_attempt)} · ${p.published} ok, ${p.failed} failed` : "The first publish is under way"));
  const r = o.republisher;
  cards.push(card("User records republisher",
    r ? `${r.republished + r.restored} republished` : "Not run yet",
    r ? `${fmtTime(r.finished_at)} · ${r.restored} restored, ${r.elsewhere} moved, ${r.missing} missing, ${r.failed} failed` : "Runs on its interval after start-up"));
  cards.push(card("Uptime", fmtDuration(o.uptime_secs), `Version ${o.version}`));
  cards.push(card("Server key", h("span", { class: "mono" }, shortKey(o.public_key)),
    [o.pubky_address, o.icann_domain].filter(Boolean).join(" · ") || null));
  $("overview-cards").replaceChildren(...cards);
  $("overview-cards").lastChild.querySelector(".value").title = o.public_key;
  drawRate(o.request_rate);
  loadStorageChart();
}

/** A chart's drawing width: its box's CSS pixels, so that its 11 px labels stay 11 px at any width. */
function chartWidth(id) { return Math.max(240, Math.round($(id).clientWidth) || 300); }

/** The request-rate sparkline: an inline SVG polyline over the server's own per-slot counts. */
function drawRate(rate) {
  const per = rate.counts.map((n) => n / rate.slot_secs);
  // Ten minutes wide from the start: the slots before the server started count as quiet.
  while (per.length < 600 / rate.slot_secs) per.unshift(0);
  const max = Math.max(...per, 0.1);
  const w = chartWidth("rate-chart"), top = 14, bottom = 62, n = Math.max(per.length - 1, 1);
  const points = per.map((v, i) => [(w * i / n).toFixed(1), (bottom - (bottom - top) * v / max).toFixed(1)]);
  const line = points.map((p) => p.join(",")).join(" ");
  const now = per.length ? per[per.length - 1] : 0;
  const svg = h("svg:svg", { viewBox: `0 0 ${w} 78`, role: "img", "aria-labelledby": "rate-caption rate-summary" },
    h("svg:title", { id: "rate-summary" }, `Now ${now.toFixed(2)} requests per second, peak ${Math.max(...per, 0).toFixed(2)}`),
    h("svg:path", { class: "area", d: `M0,${bottom} L${line.replace(/ /g, " L")} L${w},${bottom} Z` }),
    h("svg:polyline", { class: "line", points: line }),
    h("svg:text", { x: 0, y: 10, class: "axis" }, `peak ${Math.max(...per, 0).toFixed(2)}/s`),
    h("svg:text", { x: w, y: 10, "text-anchor": "end" }, `now ${now.toFixed(2)}/s`),
    h("svg:text", { x: 0, y: 76, class: "axis" }, `${Math.round(per.length * rate.slot_secs / 60)} min ago`),
    h("svg:text", { x: w, y: 76, "text-anchor": "end", class: "axis" }, "now"));
  $("rate-chart").replaceChildren(svg);
}

/** Storage by user: horizontal bars of the largest users, each against the largest. */
async function loadStorageChart() {
  let page;
  try {
    page = await api("GET", "users?sort_by=used_bytes&reverse=true&limit=10");
  } catch (err) {
    $("storage-chart").replaceChildren(h("p", { class: "error" }, err.message));
    return;
  }
  const users = page.items;
  if (!users.length) {
    $("storage-chart").replaceChildren(h("p", { class: "muted" }, "No users yet."));
    return;
  }
  const max = Math.max(...users.map((u) => u.used_bytes), 1);
  const row = 22, w = chartWidth("storage-chart"), label = 100, value = 120;
  const rows = users.map((u, i) => {
    const y = i * row;
    const width = ((w - label - value) * u.used_bytes / max).toFixed(1);
    return h("svg:g", {},
      h("svg:title", {}, `${u.pubky}: ${fmtBytes(u.used_bytes)} of ${fmtQuota(u.quota.effective.storage_quota_mb)}`),
      h("svg:text", { x: 0, y: y + 15, class: "mono" }, u.pubky.slice(0, 12) + "…"),
      h("svg:rect", { class: "track", x: label, y: y + 4, width: w - label - value, height: 14, rx: 3 }),
      h("svg:rect", { class: "fill", x: label, y: y + 4, width, height: 14, rx: 3 }),
      h("svg:text", { x: w, y: y + 15, "text-anchor": "end" },
        fmtBytes(u.used_bytes) + (u.quota.effective.storage_quota_mb === "unlimited" ? "" : ` / ${fmtQuota(u.quota.effective.storage_quota_mb)}`)));
  });
  $("storage-chart").replaceChildren(h("svg:svg", { viewBox: `0 0 ${w} ${users.length * row}`, role: "img", "aria-labelledby": "storage-caption" }, rows));
}

// ---------------------------------------------------------------- users

/** Empties a table while its rows load, so that no stale row can be acted on. */
function loading(table, columns) {
  $(table).tBodies[0].replaceChildren(h("tr", {}, h("td", { colspan: columns, class: "empty" }, "Loading…")));
}

const users = { next: null };

function usersQuery(cursor) {
  const params = new URLSearchParams({
    limit: PAGE_SIZE, sort_by: $("users-sort").value, state: $("users-state").value,
    reverse: $("users-order").value === "desc",
  });
  if (cursor) params.set("cursor", cursor);
  return "users?" + params;
}

async function loadUsers(cursor) {
  showError("users-error", null);
  $("users-note").textContent = "";
  const prefix = $("users-prefix").value.trim();
  loading("users-table", 6);
  let page;
  try {
    page = prefix ? await api("GET", "user_search?" + new URLSearchParams({ prefix })) : await api("GET", usersQuery(cursor));
  } catch (err) {
    showError("users-error", err);
    return;
  }
  users.next = page.next_cursor || null;
  if (prefix) {
    $("users-note").textContent = `${page.items.length} user(s) whose key starts with “${prefix}”` +
      (page.complete ? "." : " (search stopped early; type more of the key).");
  }
  $("users-next").disabled = !users.next;
  $("users-first").disabled = !cursor;
  const rows = page.items.map(userRow);
  if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No users.")));
  $("users-table").tBodies[0].replaceChildren(...rows);
}

function userRow(u) {
  const toggle = h("button", { type: "button", class: u.disabled ? "quiet" : "danger" }, u.disabled ? "Enable" : "Disable");
  toggle.setAttribute("aria-label", `${u.disabled ? "Enable" : "Disable"} user ${shortKey(u.pubky)}`);
  const edit = h("button", { type: "button", class: "quiet", "aria-expanded": "false", "aria-label": `Edit quota of ${shortKey(u.pubky)}` }, "Edit quota");
  const row = h("tr", { "data-key": u.pubky },
    h("td", { class: "key", "data-label": "Key" }, u.pubky),
    h("td", { "data-label": "Signed up" }, fmtTime(u.created_at)),
    h("td", { "data-label": "Used" }, fmtBytes(u.used_bytes)),
    h("td", { "data-label": "Quota" }, fmtQuota(u.quota.effective.storage_quota_mb),
      u.quota.overrides.storage_quota_mb === undefined ? null : h("span", { class: "muted" }, " (own)")),
    h("td", { "data-label": "Status" }, u.disabled ? h("span", { class: "bad" }, "Disabled") : h("span", { class: "ok" }, "Enabled")),
    h("td", { class: "actions" }, toggle, edit, h("p", { class: "error", role: "alert" })));
  toggle.addEventListener("click", async () => {
    toggle.disabled = true;
    const error = row.querySelector(".actions .error");
    error.textContent = "";
    try {
      await api("POST", `users/${u.pubky}/${u.disabled ? "enable" : "disable"}`);
      const fresh = await api("GET", `users/${u.pubky}`);
      const replacement = userRow(fresh);
      row.replaceWith(replacement);
      replacement.querySelector(".actions button").focus();
    } catch (err) {
      error.textContent = `${u.disabled ? "Enable" : "Disable"} failed: ${err.message}`;
      toggle.disabled = false;
    }
  });
  edit.addEventListener("click", () => toggleQuotaEditor(row, u, edit));
  return row;
}

function toggleQuotaEditor(row, u, button) {
  const open = row.nextElementSibling && row.nextElementSibling.classList.contains("editor") ? row.nextElementSibling : null;
  if (open) {
    open.remove();
    button.setAttribute("aria-expanded", "false");
    return;
  }
  const o = u.quota.overrides, id = "q-" + u.pubky.slice(0, 8);
  const field = (name, label, value, hint) => h("label", { for: `${id}-${name}` }, label,
    h("input", { id: `${id}-${name}`, name, value: value === undefined ? "" : String(value), placeholder: hint, autocomplete: "off" }));
  const error = h("p", { class: "error", role: "alert" });
  const done = h("p", { class: "status", role: "status" });
  const form = h("form", { class: "quota-form", "aria-label": `Quota of ${shortKey(u.pubky)}` },
    field("storage_quota_mb", "Storage (MB)", o.storage_quota_mb, `default: ${fmtQuota(u.quota.effective.storage_quota_mb)}`),
    field("rate_read", "Read rate", o.rate_read, "default, e.g. 10mb/s"),
    field("rate_write", "Write rate", o.rate_write, "default, e.g. 1mb/s"),
    h("button", { type: "submit" }, "Save quota"),
    h("button", { type: "button", class: "quiet", onclick: () => toggleQuotaEditor(row, u, button) }, "Cancel"),
    error, done);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = done.textContent = "";
    const patch = {};
    for (const name of ["storage_quota_mb", "rate_read", "rate_write"]) {
      const text = form.elements[name].value.trim();
      // Empty means the server default; digits are a number; anything else goes as typed, so that
      // the server's validation message says what is wrong with it.
      patch[name] = text === "" ? null : name === "storage_quota_mb" && /^\d+$/.test(text) ? Number(text) : text;
    }
    try {
      await api("PATCH", `users/${u.pubky}/quota`, patch);
      const fresh = await api("GET", `users/${u.pubky}`);
      done.textContent = `Saved: storage ${fmtQuota(fresh.quota.effective.storage_quota_mb)}.`;
      Object.assign(u, fresh);
      row.children[3].firstChild.textContent = fmtQuota(fresh.quota.effective.storage_quota_mb);
    } catch (err) {
      error.textContent = err.message;
    }
  });
  row.after(h("tr", { class: "editor" }, h("td", { colspan: 6 }, form)));
  button.setAttribute("aria-expanded", "true");
  form.elements.storage_quota_mb.focus();
}

// ---------------------------------------------------------------- signup tokens

const tokens = { next: null };

async function copy(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (_) {
    const area = h("textarea", {}, text);
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  const label = button.textContent;
  button.textContent = "Copied";
  setTimeout(() => { button.textContent = label; }, 1500);
}

function copyButton(token) {
  const button = h("button", { type: "button", class: "quiet", "aria-label": `Copy token ${token}` }, "Copy");
  button.addEventListener("click", () => copy(token, button));
  return button;
}

async function mint(event) {
  event.preventDefault();
  showError("mint-error", null);
  const count = Number($("mint-count").value);
  const quotaText = $("mint-quota").value.trim();
  const body = { count };
  if (quotaText) body.quota = { storage_quota_mb: /^\d+$/.test(quotaText) ? Number(quotaText) : quotaText };
  try {
    const answer = await api("POST", "mint", body);
    const items = answer.tokens.map((t) => h("li", {}, h("code", {}, t), copyButton(t)));
    if (answer.tokens.length > 1) {
      const all = h("button", { type: "button", class: "quiet" }, "Copy all");
      all.addEventListener("click", () => copy(answer.tokens.join("\n"), all));
      items.push(h("li", {}, all));
    }
    $("minted").replaceChildren(...items);
    loadTokens(null);
  } catch (err) {
    showError("mint-error", err);
  }
}

async function loadTokens(cursor) {
  showError("tokens-error", null);
  const params = new URLSearchParams({ limit: PAGE_SIZE, state: $("tokens-state").value });
  if (cursor) params.set("cursor", cursor);
  loading("tokens-table", 5);
  let page;
  try {
    page = await api("GET", "signup_tokens?" + params);
  } catch (err) {
    showError("tokens-error", err);
    return;
  }
  tokens.next = page.next_cursor || null;
  $("tokens-next").disabled = !tokens.next;
  $("tokens-first").disabled = !cursor;
  const rows = page.items.map((t) => h("tr", {},
    h("td", { "data-label": "Token" }, h("span", { class: "token" }, h("code", {}, t.token), t.used_at ? null : copyButton(t.token))),
    h("td", { "data-label": "Minted" }, fmtTime(t.created_at)),
    h("td", { "data-label": "Quota" }, fmtQuota(t.quota.storage_quota_mb)),
    h("td", { "data-label": "Used" }, t.used_at ? fmtTime(t.used_at) : h("span", { class: "ok" }, "Unused")),
    h("td", { class: "key", "data-label": "Used by" }, t.used_by || "–")));
  if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 5, class: "empty" }, "No tokens.")));
  $("tokens-table").tBodies[0].replaceChildren(...rows);
}

// ---------------------------------------------------------------- live events

const events = { source: null, cursor: "", paused: false, user: "", generation: 0 };
const MAX_EVENTS = 200;

/** Events of a text/event-stream body: `{type, uri, cursor}`. */
function parseEvents(text) {
  return text.split("\n\n").map(parseEvent).filter(Boolean);
}

function parseEvent(block) {
  let type = "", uri = "", cursor = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event: ")) type = line.slice(7);
    else if (line.startsWith("data: cursor: ")) cursor = line.slice(14);
    else if (line.startsWith("data: ") && !line.startsWith("data: content_hash: ")) uri = line.slice(6);
  }
  return type ? { type, uri, cursor } : null;
}

function addEvent(e, when) {
  const match = /^pubky:\/\/([^/]+)(\/.*)$/.exec(e.uri) || [null, "", e.uri];
  const item = h("li", { "data-cursor": e.cursor },
    h("span", { class: "muted" }, when),
    h("span", { class: "type " + e.type }, e.type),
    h("span", { class: "where", title: e.uri }, shortKey(match[1]), " ", match[2]));
  const list = $("events-list");
  list.prepend(item);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
  if (e.cursor) events.cursor = e.cursor;
}

function eventsQuery(extra) {
  const params = new URLSearchParams(extra);
  if (events.user) params.set("user", events.user);
  return "events-stream?" + params;
}

function setEventsStatus(text) { $("events-status").textContent = text; }

async function startEvents() {
  stopEvents();
  const generation = ++events.generation;
  showError("events-error", null);
  events.user = $("events-user").value.trim();
  events.paused = false;
  setEventsStatus("Loading…");
  $("events-pause").textContent = "Pause";
  $("events-pause").setAttribute("aria-pressed", "false");
  if (!events.cursor) {
    // The recent past first, newest last, then live from the newest.
    try {
      const recent = parseEvents(await api("GET", eventsQuery({ reverse: "true", limit: "20" }))).reverse();
      // A newer start (another filter, another visit) took over while this one waited.
      if (generation !== events.generation) return;
      $("events-list").replaceChildren();
      for (const e of recent) addEvent(e, "earlier");
      events.cursor = events.cursor || "0";
    } catch (err) {
      if (generation !== events.generation) return;
      showError("events-error", err);
      setEventsStatus("Stopped.");
      return;
    }
  }
  openStream();
}

function openStream() {
  const source = new EventSource(API + eventsQuery({ live: "true", cursor: events.cursor }));
  events.source = source;
  setEventsStatus("Connecting…");
  // The status names whom the open stream follows, so a stale one is never mistaken for the new.
  const following = events.user ? shortKey(events.user) : "every user";
  source.onopen = () => setEventsStatus(`Live: ${following}.`);
  const onEvent = (message) => {
    if (events.source !== source) {
      source.close();
      return;
    }
    const e = parseEvent(`event: ${message.type}\n` + message.data.split("\n").map((l) => "data: " + l).join("\n"));
    if (e) addEvent(e, new Date().toLocaleTimeString([], { hour12: false }));
  };
  source.addEventListener("PUT", onEvent);
  source.addEventListener("DEL", onEvent);
  source.onerror = async () => {
    if (events.source !== source) return;
    source.close();
    events.source = null;
    // EventSource hides the reason: ask again without it to show the server's words.
    try {
      await api("GET", eventsQuery({ cursor: events.cursor, limit: "1" }));
      setEventsStatus("Disconnected; reconnecting…");
      setTimeout(() => { if (!events.paused && !events.source && currentPage() === "events") openStream(); }, 2000);
    } catch (err) {
      showError("events-error", err);
      setEventsStatus("Stopped.");
    }
  };
}

function stopEvents() {
  // A start still waiting for the recent past must not open a stream after this.
  events.generation++;
  if (events.source) events.source.close();
  events.source = null;
  setEventsStatus("Stopped.");
}

function togglePause() {
  const button = $("events-pause");
  if (events.paused) {
    events.paused = false;
    button.textContent = "Pause";
    button.setAttribute("aria-pressed", "false");
    openStream();
  } else {
    events.paused = true;
    stopEvents();
    button.textContent = "Resume";
    button.setAttribute("aria-pressed", "true");
    setEventsStatus("Paused; events keep their place and arrive on resume.");
  }
}

// ---------------------------------------------------------------- start

document.addEventListener("DOMContentLoaded", async () => {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  $("users-form").addEventListener("submit", (e) => { e.preventDefault(); loadUsers(null); });
  $("users-next").addEventListener("click", () => loadUsers(users.next));
  $("users-first").addEventListener("click", () => loadUsers(null));
  $("mint-form").addEventListener("submit", mint);
  $("tokens-form").addEventListener("submit", (e) => { e.preventDefault(); loadTokens(null); });
  $("tokens-next").addEventListener("click", () => loadTokens(tokens.next));
  $("tokens-first").addEventListener("click", () => loadTokens(null));
  $("events-form").addEventListener("submit", (e) => {
    e.preventDefault();
    events.cursor = "";
    $("events-list").replaceChildren();
    startEvents();
  });
  $("events-pause").addEventListener("click", togglePause);
  $("events-clear").addEventListener("click", () => $("events-list").replaceChildren());
  window.addEventListener("hashchange", () => route(true));
  window.addEventListener("resize", () => {
    // The charts are drawn for their box's width: drawn again once the window stops changing.
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { if (csrfToken && currentPage() === "overview") loadOverview(); }, 150);
  });
  try {
    csrfToken = (await api("GET", "session")).csrf_token;
    route();
  } catch (err) {
    showSignIn(err.status === 401 ? "" : err.message);
  }
});
