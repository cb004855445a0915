"use strict";
// Shared by flagpost's and flagpost-receiver's status pages: the token kept for this tab only
// (sessionStorage, never a URL or a cookie), requests that carry it, DOM building that never
// parses data as HTML (text nodes and attributes only), and the refresh loop.
const StatusPage = (() => {
  const TOKEN_KEY = "flagpost-status-token";
  const REFRESH_MS = 1500;

  class Unauthorized extends Error {}

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  function setToken(value) {
    if (value) {
      sessionStorage.setItem(TOKEN_KEY, value);
    } else {
      sessionStorage.removeItem(TOKEN_KEY);
    }
  }

  async function request(method, path, body) {
    const headers = { Accept: "application/json" };
    if (token()) headers.Authorization = "Bearer " + token();
    const init = { method, headers, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      // Not JSON: the status alone says what happened.
    }
    const message = (data && data.error) || "HTTP " + response.status;
    if (response.status === 401) throw new Unauthorized(message);
    if (!response.ok) throw new Error(message);
    return data;
  }

  // el("td", {class: "num", "data-sequence": 3}, "text", otherNode): attributes are set one by
  // one and children become text nodes, so nothing from the server is ever read as markup.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== undefined && value !== null) node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child === undefined || child === null) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function fillRows(tbody, items, makeRow, emptyText) {
    const made = items.map(makeRow);
    if (made.length === 0) {
      const columns = tbody.closest("table").querySelectorAll("thead th").length;
      made.push(el("tr", { class: "empty" }, el("td", { colspan: columns }, emptyText)));
    }
    tbody.replaceChildren(...made);
  }

  function duration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
    return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
  }

  function ago(atMs, nowMs) {
    if (atMs === null || atMs === undefined) return "never";
    return duration((nowMs - atMs) / 1000) + " ago";
  }

  function utc(atMs) {
    if (atMs === null || atMs === undefined) return "";
    return new Date(atMs).toISOString().slice(0, 19).replace("T", " ") + " UTC";
  }

  function millis(value) {
    return value === null || value === undefined ? "" : value.toFixed(1) + " ms";
  }

  // Wires the token form and refreshes every REFRESH_MS: `load` fetches, `render` draws.
  function start(load, render) {
    const form = document.getElementById("token-form");
    const input = document.getElementById("token");
    const line = document.getElementById("status-line");
    let timer = null;
    async function refresh() {
      clearTimeout(timer);
      try {
        render(await load());
        document.body.classList.remove("locked");
        line.textContent = "Updated " + new Date().toLocaleTimeString();
        line.className = "ok";
      } catch (error) {
        const locked = error instanceof Unauthorized;
        document.body.classList.toggle("locked", locked);
        line.textContent = locked
          ? (token() ? "Token refused: " : "A token is needed: ") + error.message
          : "Cannot refresh: " + error.message;
        line.className = "error";
      }
      timer = setTimeout(refresh, REFRESH_MS);
    }
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      setToken(input.value.trim());
      input.value = "";
      refresh();
    });
    document.getElementById("forget-token").addEventListener("click", () => {
      setToken("");
      refresh();
    });
    refresh();
    return refresh;
  }

  return { request, el, fillRows, ago, duration, utc, millis, start, Unauthorized };
})();
