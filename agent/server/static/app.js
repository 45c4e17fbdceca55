// recagent chat page: plain JavaScript, no build step. Every piece of data is written with textContent
// (never as HTML markup), so item texts and replies cannot inject markup or script.
"use strict";

const SESSION_KEY = "recagent.session";
const TOKEN_KEY = "recagent.token";
const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.hint = err.hint || "";
    this.type = err.type || "";
  }
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function headers(extra) {
  const h = Object.assign({ "Content-Type": "application/json" }, extra || {});
  const token = localStorage.getItem(TOKEN_KEY);
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}

async function api(method, path, body) {
  const resp = await fetch(path, {
    method,
    headers: headers(),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  if (!resp.ok) {
    if (resp.status === 401) showToken();
    throw new ApiError(resp.status, data);
  }
  return data;
}

function showToken() {
  $("token-box").hidden = false;
  $("token").focus();
}

function setStatus(text, isError) {
  const s = $("status");
  s.textContent = text || "";
  s.className = isError ? "error" : "";
}

function scrollDown() {
  const log = $("log");
  log.scrollTop = log.scrollHeight;
}

function sessionLabel() {
  const id = localStorage.getItem(SESSION_KEY);
  $("session-label").textContent = id ? "session " + id : "no session yet";
}

// ---------------------------------------------------------------------------------------------- rendering
function addBubble(role, text) {
  const turn = el("div", "turn " + role);
  turn.appendChild(el("div", "who", role === "user" ? "you" : "recagent"));
  const body = el("div", "text", text);
  turn.appendChild(body);
  $("log").appendChild(turn);
  scrollDown();
  return turn;
}

function metaLine(metadata) {
  if (!metadata) return "";
  const parts = [];
  if (metadata.year !== undefined) parts.push(String(metadata.year));
  if (Array.isArray(metadata.genres)) parts.push(metadata.genres.join(", "));
  return parts.join(" · ");
}

const PENDING_FLAG = "justification_pending";

function badge(item) {
  if (Array.isArray(item.flags) && item.flags.includes(PENDING_FLAG)) return el("span", "badge pending", "writing…");
  if (item.grounded === true) return el("span", "badge grounded", "grounded");
  if (item.grounded === false) return el("span", "badge ungrounded", "not verified");
  return null;
}

function itemCard(item, index) {
  const card = el("li", "item");
  card.dataset.itemId = item.item_id || item.id || "";
  const head = el("div", "item-head");
  head.appendChild(el("span", "rank", String(index + 1) + "."));
  head.appendChild(el("span", "title", item.title || item.item_id || item.id));
  const b = badge(item);
  if (b) head.appendChild(b);
  card.appendChild(head);
  const meta = metaLine(item.metadata);
  if (meta) card.appendChild(el("div", "meta", meta));
  if (item.justification) card.appendChild(el("div", "justification", item.justification));
  if (Array.isArray(item.flags) && item.flags.includes(PENDING_FLAG)) card.classList.add("reason-pending");
  return card;
}

// One justification written after the items were shown: replace the card's template reason and badge.
function fillJustification(turn, data) {
  const card = Array.from(turn.querySelectorAll("ol.items li.item")).find((c) => c.dataset.itemId === data.item_id);
  if (!card) return;
  card.classList.remove("reason-pending");
  let why = card.querySelector(".justification");
  if (!why) {
    why = el("div", "justification");
    card.appendChild(why);
  }
  why.textContent = data.justification || "";
  const head = card.querySelector(".item-head");
  const old = head.querySelector(".badge");
  if (old) old.remove();
  const b = badge(data);
  if (b) head.appendChild(b);
  const note = card.querySelector(".reason-note");
  if (note) note.remove();
  if (data.error) card.appendChild(el("div", "reason-note", "template reason: " + data.error));
}

// The turn's timing line from the ChatReply's timings (seconds from the turn's start).
function renderTimings(turn, timings) {
  let line = turn.querySelector(".timing");
  if (line) line.remove();
  if (!timings) return;
  const parts = [];
  const add = (key, label) => {
    if (typeof timings[key] === "number") parts.push(`${label} ${timings[key].toFixed(1)} s`);
  };
  add("items_s", "items");
  add("ttft_s", "first token");
  add("reply_s", "reply");
  add("justified_s", "reasons");
  add("total_s", "total");
  if (!parts.length) return;
  line = el("div", "timing", parts.join(" · "));
  turn.appendChild(line);
}

function renderItems(turn, items) {
  let list = turn.querySelector("ol.items");
  if (list) list.remove();
  if (!items || !items.length) return;
  list = el("ol", "items");
  items.forEach((item, i) => list.appendChild(itemCard(item, i)));
  turn.appendChild(list);
  scrollDown();
}

function itemsOf(data) {
  if (!data) return [];
  if (Array.isArray(data.items)) return data.items;
  if (data.recommendation && Array.isArray(data.recommendation.items)) return data.recommendation.items;
  return [];
}

function renderReply(turn, reply) {
  turn.querySelector(".text").textContent = reply.reply || "";
  if (reply.clarifying) turn.classList.add("clarifying");
  renderItems(turn, itemsOf(reply));
  renderTimings(turn, reply.timings);
}

async function renderStoredTurns(state) {
  $("log").textContent = "";
  for (const t of state.turns || []) {
    const turn = addBubble(t.role, t.content);
    if (t.role === "assistant" && t.item_ids && t.item_ids.length) {
      const items = await Promise.all(
        t.item_ids.map((id) => api("GET", "/v1/items/" + encodeURIComponent(id)).then(
          (it) => ({ item_id: it.id, title: it.title, metadata: it.metadata }),
          () => ({ item_id: id, title: id }))));
      renderItems(turn, items);
    }
  }
}

// ---------------------------------------------------------------------------------------------- session
async function ensureSession() {
  let id = localStorage.getItem(SESSION_KEY);
  if (id) return id;
  const state = await api("POST", "/v1/sessions", {});
  id = state.session_id;
  localStorage.setItem(SESSION_KEY, id);
  sessionLabel();
  return id;
}

async function restore() {
  sessionLabel();
  const id = localStorage.getItem(SESSION_KEY);
  if (!id) return;
  try {
    await renderStoredTurns(await api("GET", "/v1/sessions/" + encodeURIComponent(id)));
  } catch (e) {
    if (e.status === 404) {
      localStorage.removeItem(SESSION_KEY);
      sessionLabel();
    } else {
      setStatus(describe(e), true);
    }
  }
}

function describe(e) {
  return e.hint ? `${e.message} (${e.hint})` : e.message;
}

// ---------------------------------------------------------------------------------------------- sending
async function sendJson(sessionId, message, turn) {
  const reply = await api("POST", "/v1/sessions/" + encodeURIComponent(sessionId) + "/messages", { message });
  renderReply(turn, reply);
}

// Server-sent events over fetch (EventSource cannot POST or send a token).
async function sendStream(sessionId, message, turn) {
  const resp = await fetch("/v1/sessions/" + encodeURIComponent(sessionId) + "/messages", {
    method: "POST",
    headers: headers({ Accept: "text/event-stream" }),
    body: JSON.stringify({ message }),
  });
  if (!resp.ok) {
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (resp.status === 401) showToken();
    throw new ApiError(resp.status, data);
  }
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  const text = turn.querySelector(".text");
  let buffer = "";
  let done = false;
  let streamed = "";
  const handle = (event, data) => {
    if (event === "delta") {
      streamed += data.text || data.delta || "";
      text.textContent = streamed;
      scrollDown();
    } else if (event === "replace") {
      // the checked reply is not what was streamed (e.g. the LLM reply failed its check): show the kept one
      streamed = data.text || "";
      text.textContent = streamed;
      scrollDown();
    } else if (event === "items") {
      renderItems(turn, itemsOf(data));
    } else if (event === "justification") {
      fillJustification(turn, data);
    } else if (event === "done") {
      renderReply(turn, data);
      done = true;
    } else if (event === "error") {
      throw new ApiError(data.code || 500, { error: data });
    }
  };
  for (;;) {
    const { value, done: finished } = await reader.read();
    if (value) buffer += decoder.decode(value, { stream: true });
    buffer = buffer.replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message";
      const lines = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) lines.push(line.slice(5).replace(/^ /, ""));
      }
      if (lines.length) handle(event, JSON.parse(lines.join("\n")));
    }
    if (finished) break;
  }
  if (!done) throw new Error("the stream ended before the reply was complete; send the message again");
}

async function send(message) {
  addBubble("user", message);
  const turn = addBubble("assistant", "…");
  turn.classList.add("pending");
  setStatus("thinking…");
  const stream = $("stream").checked;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const sessionId = await ensureSession();
      if (stream) await sendStream(sessionId, message, turn);
      else await sendJson(sessionId, message, turn);
      turn.classList.remove("pending");
      setStatus("");
      return;
    } catch (e) {
      if (e.status === 404 && attempt === 0) {  // the session is gone (new database): start a new one
        localStorage.removeItem(SESSION_KEY);
        continue;
      }
      turn.classList.remove("pending");
      turn.classList.add("failed");
      turn.querySelector(".text").textContent = "error: " + describe(e);
      setStatus(describe(e), true);
      return;
    }
  }
}

function init() {
  const token = localStorage.getItem(TOKEN_KEY);
  if (token) {
    $("token").value = token;
    $("token-box").hidden = false;
  }
  $("token").addEventListener("change", () => {
    const value = $("token").value.trim();
    if (value) localStorage.setItem(TOKEN_KEY, value);
    else localStorage.removeItem(TOKEN_KEY);
    restore();
  });
  $("new-session").addEventListener("click", () => {
    localStorage.removeItem(SESSION_KEY);
    $("log").textContent = "";
    setStatus("");
    sessionLabel();
  });
  $("composer").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const box = $("message");
    const message = box.value.trim();
    if (!message) return;
    box.value = "";
    $("send").disabled = true;
    try { await send(message); } finally { $("send").disabled = false; box.focus(); }
  });
  $("message").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) {
      ev.preventDefault();
      $("composer").requestSubmit();
    }
  });
  restore();
}

document.addEventListener("DOMContentLoaded", init);
