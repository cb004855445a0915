"use strict";
// flagpost's status page: reads the admin API (endpoints with their latest attempts, dead
// letters) and the events API with the API token the operator entered, and replays dead letters.
(() => {
  const { request, el, fillRows, ago, utc, millis } = StatusPage;
  const EVENTS_SHOWN = 15;
  const body = (id) => document.querySelector("#" + id + " tbody");
  const api = (path) => request("GET", path);

  async function load() {
    const summary = await api("/api/v1/admin/endpoints");
    const after = Math.max(0, summary.last_sequence - EVENTS_SHOWN);
    const [dead, events] = await Promise.all([
      api("/api/v1/admin/dead-letters?limit=100"),
      api("/api/v1/events?after=" + after + "&limit=" + EVENTS_SHOWN),
    ]);
    return { summary, dead, events };
  }

  function answer(status, error) {
    if (error) return error;
    return status === null || status === undefined ? "" : "HTTP " + status;
  }

  function endpointRow(e, now) {
    const failure = e.last_failure_at_ms ? ago(e.last_failure_at_ms, now) + ": " + e.last_failure : "never";
    const state = e.backing_off_until_ms
      ? "backing off, probes in " + Math.max(0, Math.ceil((e.backing_off_until_ms - now) / 1000)) + " s"
      : e.state.replace("_", " ");
    return el("tr", { "data-endpoint": e.name, "data-state": e.state },
      el("td", {}, e.name),
      el("td", {}, e.environment ?? "audit / none"),
      el("td", {}, el("span", { class: "badge " + e.state }, state)),
      el("td", { class: "num", "data-field": "pending" }, e.pending),
      el("td", { class: "num" }, e.in_flight),
      el("td", {}, ago(e.last_success_at_ms, now)),
      el("td", { class: "wrap" }, failure),
      el("td", {}, millis(e.last_latency_ms) + (e.average_latency_ms == null ? "" : " / " + millis(e.average_latency_ms))));
  }

  function deadLetterRow(d) {
    const button = el("button", { type: "button", class: "replay", "data-endpoint": d.endpoint, "data-sequence": d.sequence }, "Replay");
    return el("tr", { "data-endpoint": d.endpoint, "data-sequence": d.sequence },
      el("td", {}, d.endpoint),
      el("td", { class: "num" }, d.sequence),
      el("td", {}, d.event_id),
      el("td", {}, d.reason),
      el("td", { class: "num" }, d.attempts),
      el("td", { class: "wrap" }, answer(d.last_status, d.last_error)),
      el("td", {}, utc(d.dead_lettered_at_ms)),
      el("td", {}, button));
  }

  function attemptRow(a) {
    return el("tr", { "data-endpoint": a.endpoint, "data-sequence": a.sequence, "data-result": a.result },
      el("td", {}, utc(a.at_ms)),
      el("td", {}, a.endpoint),
      el("td", { class: "num" }, a.sequence),
      el("td", { class: "num" }, a.attempt),
      el("td", {}, el("span", { class: "badge " + a.result }, a.result.replace("_", " "))),
      el("td", { class: "wrap" }, answer(a.status, a.error)),
      el("td", { class: "num" }, millis(a.latency_ms)));
  }

  // What an event is about, read from its body: the feature or segment it changed.
  function about(body) {
    try {
      const data = JSON.parse(body).data || {};
      const state = data.new_state || data.previous_state;
      if (state && state.feature) {
        const who = state.identity_identifier ? " (identity " + state.identity_identifier + ")"
          : state.feature_segment ? " (segment " + state.feature_segment.segment.name + ")" : "";
        return state.feature.name + who;
      }
      if (data.segment) return "segment " + data.segment.name;
      if (data.log) return data.log;
    } catch (_) {
      // A body that is not JSON is shown without a subject.
    }
    return "";
  }

  function eventRow(item) {
    const e = item.event;
    return el("tr", { "data-sequence": e.sequence },
      el("td", { class: "num" }, e.sequence),
      el("td", {}, e.event_type),
      el("td", {}, about(item.body)),
      el("td", {}, e.environment ?? ""),
      el("td", {}, e.changed_by),
      el("td", {}, utc(e.committed_at_ms)));
  }

  function render({ summary, dead, events }) {
    const now = summary.now_ms;
    fillRows(body("endpoints"), summary.endpoints, (e) => endpointRow(e, now), "No endpoint is configured.");
    fillRows(body("dead-letters"), dead.dead_letters, deadLetterRow, "No dead letters.");
    fillRows(body("attempts"), summary.recent_attempts, attemptRow, "No attempts since flagpost started.");
    fillRows(body("events"), events.events.slice().reverse(), eventRow, "No events yet.");
  }

  const refresh = StatusPage.start(load, render);

  body("dead-letters").addEventListener("click", async (event) => {
    const button = event.target.closest("button.replay");
    if (!button) return;
    const endpoint = button.getAttribute("data-endpoint");
    const sequence = Number(button.getAttribute("data-sequence"));
    const message = document.getElementById("message");
    button.disabled = true;
    try {
      const replayed = await request("POST", "/api/v1/admin/dead-letters/replay", { endpoint, sequence });
      message.className = "";
      message.textContent = "Replayed event " + sequence + " to " + endpoint + " (" + replayed.replayed + " queued again).";
    } catch (error) {
      message.className = "error";
      message.textContent = "Replay of event " + sequence + " to " + endpoint + " failed: " + error.message;
      button.disabled = false;
    }
    refresh();
  });
})();
