"use strict";
// flagpost-receiver's status page: reads GET /admin/status (with the status token, when one is
// set) and shows each environment and the latest web hooks.
(() => {
  const { request, el, fillRows, duration, utc } = StatusPage;
  const SOURCES = { flagpost: "flagpost", flagsmith: "Flagsmith upstream", web_hooks: "web hooks only" };
  // Older than this without a change or a document, an environment is shown as stale: a poll
  // of an upstream Flagsmith comes every minute by default.
  const STALE_SECONDS = 300;

  function document_(e, nowMs) {
    if (e.flagsmith_document) {
      const d = e.flagsmith_document;
      return "updated_at " + (d.updated_at || "?") + ", fetched " + duration(d.age_seconds) + " ago";
    }
    const f = e.flagpost_document;
    if (f.last_sequence === null || f.last_sequence === undefined) return "none loaded";
    const loaded = f.loaded_at ? ", loaded " + duration(nowMs / 1000 - f.loaded_at) + " ago" : "";
    return "sequence " + f.last_sequence + loaded;
  }

  function fetches(f) {
    if (!f) return "";
    const failing = f.failures_in_a_row > 0 ? ", " + f.failures_in_a_row + " failed in a row: " + (f.last_error || "") : "";
    return f.fetched + " good" + failing;
  }

  function environmentRow(e, nowMs) {
    const age = e.data_age_seconds;
    const freshness = age === null || age === undefined ? "waiting" : age > STALE_SECONDS ? "stale" : "fresh";
    return el("tr", { "data-environment": e.id },
      el("td", {}, e.id),
      el("td", {}, e.name ?? ""),
      el("td", {}, SOURCES[e.source] || e.source),
      el("td", { "data-field": "data-age" },
        el("span", { class: "badge " + freshness }, age === null || age === undefined ? "no data yet" : duration(age))),
      el("td", {}, document_(e, nowMs)),
      el("td", { class: "num" }, e.features ?? ""),
      el("td", { class: "wrap" }, fetches(e.fetches)));
  }

  function webhookRow(w) {
    const result = w.accepted ? "accepted" : "refused";
    return el("tr", { "data-result": result, "data-outcome": w.outcome },
      el("td", {}, utc(w.at_ms)),
      el("td", {}, el("span", { class: "badge " + (w.accepted ? w.outcome : "refused") }, result)),
      el("td", {}, w.outcome.replaceAll("_", " ")),
      el("td", {}, w.environment ?? ""),
      el("td", {}, w.feature ?? ""));
  }

  function counts(webhooks) {
    const items = [];
    for (const [outcome, n] of Object.entries(webhooks.accepted)) {
      items.push(el("span", { "data-accepted": outcome }, "accepted, " + outcome.replaceAll("_", " ") + ": " + n));
    }
    for (const [reason, n] of Object.entries(webhooks.refused)) {
      items.push(el("span", { "data-refused": reason }, "refused, " + reason.replaceAll("_", " ") + ": " + n));
    }
    if (items.length === 0) items.push(el("span", {}, "No web hooks yet."));
    return items;
  }

  function render(data) {
    const message = document.getElementById("message");
    message.className = data.storage_error ? "error" : "";
    message.textContent = data.storage_error ? "Storage cannot commit: " + data.storage_error : "";
    fillRows(document.querySelector("#environments tbody"), data.environments,
      (e) => environmentRow(e, data.now_ms), "No environment is configured or known.");
    document.getElementById("open-streams").textContent = String(data.open_streams);
    document.getElementById("webhook-counts").replaceChildren(...counts(data.webhooks));
    fillRows(document.querySelector("#webhooks tbody"), data.webhooks.latest, webhookRow, "No web hooks yet.");
  }

  StatusPage.start(() => request("GET", "/admin/status"), render);
})();
