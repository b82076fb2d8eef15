// The dashboard page: fetches the JSON API every few seconds and shows it.
//
// Every value from the API enters the page through textContent (or an SVG
// <title>'s textContent), never as markup: user names, replica ids and the
// autoscaler's reasons are shown exactly as they are.
//
// After each refresh the <body> carries data-refreshes (how many have been
// shown) and data-health (the overall status), for people and tests alike.
"use strict";

const REFRESH_MS = 5000;

function byId(id) {
  return document.getElementById(id);
}

function make(tag, className, text) {
  const element = document.createElement(tag);
  if (className) {
    element.className = className;
  }
  if (text !== undefined && text !== null) {
    element.textContent = String(text);
  }
  return element;
}

function setText(id, text) {
  byId(id).textContent = text;
}

function show(value, digits) {
  if (value === null || value === undefined) {
    return "–";
  }
  return digits === undefined ? String(value) : Number(value).toFixed(digits);
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) {
    return "–";
  }
  const s = Math.floor(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (h > 0) {
    return `${h}h ${String(m).padStart(2, "0")}m`;
  }
  return m > 0 ? `${m}m ${String(s % 60).padStart(2, "0")}s` : `${s % 60}s`;
}

function timeOfDay(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });
}

function replaceChildren(parent, children) {
  while (parent.firstChild) {
    parent.removeChild(parent.firstChild);
  }
  for (const child of children) {
    parent.appendChild(child);
  }
}

async function getJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  // /api/health answers 503 with a body when the system is down.
  return response.json();
}

function showCards(status) {
  setText("online-count", show(status.online_users));
  setText("registered", `${show(status.total_users)} registered`);
  const desired = status.desired_replicas;
  setText("replica-ready", `${show(status.ready_replicas)} / ${show(status.replicas)}`);
  setText("replica-desired",
    `ready / running; desired ${desired === null ? "unknown" : desired}`);
  setText("message-total", show(status.total_messages));
  setText("message-rate", `${show(status.messages_per_second, 2)} per second`);
  setText("scaler-state", status.autoscaler_status);
  const decisions = (status.autoscaler && status.autoscaler.decisions) || [];
  setText("scaler-detail", decisions.length
    ? `last: ${decisions[0].action || "?"} at ${timeOfDay(decisions[0].time)}`
    : "no decision recorded");
}

function healthItem(name, component) {
  const item = make("li", component.status);
  item.appendChild(make("span", "name", name));
  let detail = component.status;
  if (component.latency_ms !== undefined && component.status === "up") {
    detail = `${component.latency_ms.toFixed(1)} ms`;
  } else if (component.error) {
    detail = `${component.status}: ${component.error}`;
  } else if (component.state) {
    detail = component.state;
  } else if (component.age_seconds !== undefined) {
    detail = `${component.status}, seen ${duration(component.age_seconds)} ago`;
  }
  item.appendChild(make("span", "detail", detail));
  item.title = `${name}: ${component.status}`;
  return item;
}

function showHealth(health) {
  const engines = { postgresql: "PostgreSQL", sqlite: "SQLite" };
  const names = { redis: "Redis", autoscaler: "Autoscaler" };
  const items = [];
  for (const [key, component] of Object.entries(health.components)) {
    if (key === "replicas") {
      continue;
    }
    const name = key === "database"
      ? engines[component.engine] || component.engine
      : names[key] || key.replace(/^replica:/, "replica ");
    items.push(healthItem(name, component));
  }
  if (!Object.keys(health.components).some((key) => key.startsWith("replica:"))) {
    items.push(healthItem("replicas", { status: "down", state: "none running" }));
  }
  replaceChildren(byId("health"), items);
  const badge = byId("overall");
  badge.textContent = health.status;
  badge.className = `badge ${health.status}`;
  document.body.dataset.health = health.status;
}

function showReplicas(status) {
  const rows = (status.pods || []).map((pod) => {
    const row = make("tr", pod.status);
    row.appendChild(make("td", "id", pod.id));
    row.appendChild(make("td", "", pod.status));
    for (const value of [pod.connections, pod.users, pod.messages_in, pod.messages_out]) {
      row.appendChild(make("td", "number", value));
    }
    row.appendChild(make("td", "number", duration(pod.uptime_seconds)));
    row.appendChild(make("td", "", pod.draining ? "yes" : "no"));
    return row;
  });
  if (rows.length === 0) {
    const row = make("tr", "none");
    const cell = make("td", "", status.pods === null ? "Redis cannot be read" : "none");
    cell.colSpan = 8;
    row.appendChild(cell);
    rows.push(row);
  }
  replaceChildren(byId("replicas").tBodies[0], rows);
}

function showOnline(status) {
  const people = (status.online || []).map((person) => {
    const item = make("li", "person");
    item.appendChild(make("span", "name", person.name));
    item.appendChild(make("span", "where", `on ${person.server}`));
    return item;
  });
  if (status.online_truncated) {
    people.push(make("li", "none", `and ${status.online_users - people.length} more`));
  }
  if (people.length === 0) {
    people.push(make("li", "none", status.online === null ? "unknown" : "nobody"));
  }
  replaceChildren(byId("online"), people);
}

function decisionText(decision) {
  const from = show(decision.current);
  const to = show(decision.target);
  return `${from} → ${to}, ${show(decision.users)} online`;
}

function showDecisions(status) {
  const decisions = (status.autoscaler && status.autoscaler.decisions) || [];
  const items = decisions.map((decision) => {
    const item = make("li", decision.action);
    let action = decision.action;
    if (decision.dry_run) {
      action += " (dry run)";
    } else if (decision.applied === false && decision.action !== "hold") {
      action += " (not applied)";
    }
    item.appendChild(make("span", "action", action));
    item.appendChild(make("span", "sizes", decisionText(decision)));
    item.appendChild(make("span", "when", timeOfDay(decision.time)));
    item.appendChild(make("span", "reason", decision.reason));
    return item;
  });
  if (items.length === 0) {
    items.push(make("li", "none", "none recorded"));
  }
  replaceChildren(byId("decisions"), items);
}

function showCharts(metrics) {
  const times = metrics.timestamps;
  Charts.line(byId("chart-users"), {
    times,
    integer: true,
    series: [{ name: "online", values: metrics.user_count, className: "series-users" }],
  });
  const markers = metrics.decisions
    .filter((d) => d.action === "scale-up" || d.action === "scale-down")
    .map((d) => ({
      time: d.time,
      className: d.action === "scale-up" ? "marker-up" : "marker-down",
      label: `${timeOfDay(d.time)} ${d.action} ${decisionText(d)}: ${d.reason}`,
    }));
  Charts.line(byId("chart-replicas"), {
    times,
    integer: true,
    markers,
    series: [
      { name: "replicas", values: metrics.replica_count, className: "series-total" },
      { name: "ready", values: metrics.ready_pods, className: "series-ready" },
      { name: "desired", values: metrics.desired_replicas, className: "series-desired" },
    ],
  });
  Charts.line(byId("chart-messages"), {
    times,
    series: [
      { name: "messages per second", values: metrics.message_rate,
        className: "series-messages" },
    ],
  });
}

async function refresh() {
  let status, health, metrics;
  try {
    [status, health, metrics] = await Promise.all(
      ["/api/status", "/api/health", "/api/metrics"].map(getJson));
  } catch (error) {
    const badge = byId("overall");
    badge.textContent = "dashboard unreachable";
    badge.className = "badge unreachable";
    return;
  }
  showCards(status);
  showHealth(health);
  showReplicas(status);
  showOnline(status);
  showDecisions(status);
  showCharts(metrics);
  setText("updated", `updated ${timeOfDay(status.generated_at)}`);
  const body = document.body;
  body.dataset.refreshes = String(Number(body.dataset.refreshes || 0) + 1);
}

async function loop() {
  await refresh();
  setTimeout(loop, REFRESH_MS);
}

loop();
