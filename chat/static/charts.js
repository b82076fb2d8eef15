// Line charts drawn as SVG, for the dashboard.
//
// Charts.line(svg, spec) replaces what the SVG element holds with a chart of
// spec.series over spec.times (seconds since the epoch).  A null value
// leaves a gap.  spec.markers are vertical lines at given times, each with a
// tooltip.  Text only ever enters the document through textContent.
//
// Each drawn series is a <path> with data-series (its name), data-count (how
// many values it has) and data-last (its newest value), so that a test can
// read what a chart holds.
"use strict";

const Charts = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const WIDTH = 420;
  const HEIGHT = 220;
  // The narrowest time range drawn, so that a young history is not a dot.
  const MIN_SPAN_SECONDS = 10;
  const MARGIN = { left: 46, right: 14, top: 12, bottom: 26 };
  const Y_TICKS = 4;
  const X_TICKS = 4;

  function node(parent, tag, attributes, text) {
    const element = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      element.setAttribute(name, String(value));
    }
    if (text !== undefined) {
      element.textContent = text;
    }
    parent.appendChild(element);
    return element;
  }

  // A round upper bound for the y axis, at least 1.
  function niceMax(value, integer) {
    if (!(value > 0)) {
      return integer ? Y_TICKS : 1;
    }
    const step = Math.pow(10, Math.floor(Math.log10(value)));
    for (const factor of [1, 2, 2.5, 5, 10]) {
      const top = factor * step;
      if (top >= value && (!integer || Number.isInteger(top / Y_TICKS))) {
        return top;
      }
    }
    return integer ? Math.ceil(value / Y_TICKS) * Y_TICKS : value;
  }

  function clock(seconds) {
    const when = new Date(seconds * 1000);
    return [when.getHours(), when.getMinutes(), when.getSeconds()]
      .map((part) => String(part).padStart(2, "0"))
      .join(":");
  }

  function number(value) {
    if (Number.isInteger(value)) {
      return String(value);
    }
    return value >= 10 ? value.toFixed(0) : value.toFixed(1);
  }

  function line(svg, spec) {
    while (svg.firstChild) {
      svg.removeChild(svg.firstChild);
    }
    svg.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
    const times = spec.times || [];
    svg.dataset.points = String(times.length);
    if (times.length === 0) {
      node(svg, "text", { x: WIDTH / 2, y: HEIGHT / 2, "text-anchor": "middle",
        class: "empty" }, "no data yet");
      return;
    }

    // The range covers the samples and the markers among them.
    const markers = (spec.markers || []).filter((m) => Number.isFinite(m.time));
    const markerTimes = markers.map((marker) => marker.time);
    const first = Math.min(times[0], ...markerTimes);
    const last = Math.max(times[times.length - 1], ...markerTimes);
    const span = Math.max(last - first, MIN_SPAN_SECONDS);
    const start = last - span;
    const values = spec.series.flatMap((s) => s.values.filter((v) => v !== null));
    const top = niceMax(Math.max(0, ...values), spec.integer);
    const plotWidth = WIDTH - MARGIN.left - MARGIN.right;
    const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
    const x = (t) => MARGIN.left + ((t - start) / span) * plotWidth;
    const y = (v) => MARGIN.top + plotHeight - (v / top) * plotHeight;

    for (let i = 0; i <= Y_TICKS; i += 1) {
      const value = (top / Y_TICKS) * i;
      node(svg, "line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(value),
        y2: y(value), class: "grid" });
      node(svg, "text", { x: MARGIN.left - 6, y: y(value) + 4, "text-anchor": "end",
        class: "axis-label" }, number(value));
    }
    for (let i = 0; i <= X_TICKS; i += 1) {
      const t = start + (span / X_TICKS) * i;
      const anchor = i === 0 ? "start" : i === X_TICKS ? "end" : "middle";
      node(svg, "text", { x: x(t), y: HEIGHT - 6, "text-anchor": anchor,
        class: "axis-label" }, clock(t));
    }

    for (const marker of markers) {
      const at = x(marker.time);
      const group = node(svg, "g", { class: `marker-group ${marker.className}` });
      node(group, "title", {}, marker.label);
      node(group, "line", { x1: at, x2: at, y1: MARGIN.top, y2: MARGIN.top + plotHeight,
        class: `marker ${marker.className}` });
      node(group, "path", {
        d: `M ${at - 5} ${MARGIN.top} L ${at + 5} ${MARGIN.top} L ${at} ${MARGIN.top + 7} Z`,
        class: `marker-head ${marker.className}` });
    }

    for (const series of spec.series) {
      let d = "";
      let pen = "M";
      let count = 0;
      let newest = null;
      series.values.forEach((value, i) => {
        if (value === null || value === undefined) {
          pen = "M";
          return;
        }
        d += `${pen} ${x(times[i]).toFixed(1)} ${y(value).toFixed(1)} `;
        pen = "L";
        count += 1;
        newest = { value, time: times[i] };
      });
      const path = node(svg, "path", { d: d.trim() || "M 0 0",
        class: `series ${series.className}` });
      path.dataset.series = series.name;
      path.dataset.count = String(count);
      path.dataset.last = newest === null ? "" : String(newest.value);
      node(path, "title", {}, series.name);
      if (newest !== null) {
        node(svg, "circle", { cx: x(newest.time), cy: y(newest.value), r: 3,
          class: `dot ${series.className}` });
      }
    }
  }

  return { line };
})();
