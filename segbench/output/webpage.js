// segbench's page script, embedded in every HTML page (no network at view time, no library).
// Tables: click a header to sort (numbers by value), type above a table to filter its rows.
// Trends: SVG drawn from each figure's JSON; hover a point for its row, wheel to zoom, double-click to reset.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const tip = document.querySelector(".tip");

  function cellKey(row, index) {
    const cell = row.cells[index];
    if (!cell) return "";
    return cell.dataset.value !== undefined ? Number(cell.dataset.value) : cell.textContent;
  }

  function sortBy(table, header, index) {
    const ascending = header.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("th").forEach((th) => th.removeAttribute("aria-sort"));
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    const body = table.tBodies[0];
    const rows = Array.from(body.rows);
    rows.sort((a, b) => {
      const x = cellKey(a, index);
      const y = cellKey(b, index);
      const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
      return ascending ? order : -order;
    });
    rows.forEach((row) => body.appendChild(row));
  }

  document.querySelectorAll("table.sortable").forEach((table) => {
    table.querySelectorAll("th").forEach((header, index) => {
      header.addEventListener("click", () => sortBy(table, header, index));
    });
    const filter = table.parentElement.previousElementSibling;
    if (filter && filter.classList.contains("filter")) {
      filter.addEventListener("input", () => {
        const text = filter.value.toLowerCase();
        Array.from(table.tBodies[0].rows).forEach((row) => {
          row.hidden = text !== "" && !row.textContent.toLowerCase().includes(text);
        });
      });
    }
  });

  function element(name, attributes, parent) {
    const node = document.createElementNS(SVG, name);
    Object.entries(attributes).forEach(([key, value]) => node.setAttribute(key, value));
    parent.appendChild(node);
    return node;
  }

  function showTip(event, text) {
    tip.textContent = text;
    tip.style.display = "block";
    tip.style.left = event.clientX + 12 + "px";
    tip.style.top = event.clientY + 12 + "px";
  }

  function describe(run) {
    const lines = Object.entries(run.row)
      .filter(([, value]) => value !== null && value !== "" && !Array.isArray(value))
      .map(([key, value]) => key + ": " + value);
    return lines.join("\n");
  }

  function drawTrend(figure) {
    const data = JSON.parse(figure.querySelector("script").textContent);
    const width = 800;
    const height = 320;
    const margin = { left: 70, right: 20, top: 20, bottom: 40 };
    const svg = element("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" }, figure);
    figure.insertBefore(svg, figure.querySelector("figcaption"));
    const full = [0.5, data.runs.length + 0.5];
    let domain = full.slice();

    function render() {
      while (svg.firstChild) svg.removeChild(svg.firstChild);
      const visible = data.runs.filter((run, i) => i + 1 >= domain[0] && i + 1 <= domain[1]);
      const shown = visible.length ? visible : data.runs;
      const lows = shown.map((run) => (run.low !== null ? run.low : run.value));
      const highs = shown.map((run) => (run.high !== null ? run.high : run.value));
      let low = Math.min(...lows);
      let high = Math.max(...highs);
      const pad = (high - low) * 0.08 || Math.abs(high) * 0.05 || 1;
      low -= pad;
      high += pad;
      const x = (i) => margin.left + ((i - domain[0]) / (domain[1] - domain[0])) * (width - margin.left - margin.right);
      const y = (v) => height - margin.bottom - ((v - low) / (high - low)) * (height - margin.top - margin.bottom);
      element("rect", { x: margin.left, y: margin.top, width: width - margin.left - margin.right,
        height: height - margin.top - margin.bottom, fill: "none", stroke: "#999" }, svg);
      for (let t = 0; t <= 4; t++) {
        const v = low + ((high - low) * t) / 4;
        element("line", { x1: margin.left - 4, x2: margin.left, y1: y(v), y2: y(v), stroke: "#999" }, svg);
        element("text", { x: margin.left - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 11 }, svg).textContent =
          v.toPrecision(4);
      }
      const label = element("text", { x: 14, y: height / 2, "font-size": 12, transform: `rotate(-90 14 ${height / 2})`,
        "text-anchor": "middle" }, svg);
      label.textContent = data.metric;
      element("text", { x: width / 2, y: height - 8, "font-size": 12, "text-anchor": "middle" }, svg).textContent =
        "run (in time order)";
      const clip = (i) => i >= domain[0] && i <= domain[1];
      data.changes.forEach((change) => {
        const at = change.index + 0.5;
        if (!clip(at)) return;
        element("line", { x1: x(at), x2: x(at), y1: margin.top, y2: height - margin.bottom,
          stroke: change.regression ? "#d62728" : "#2ca02c", "stroke-dasharray": "6 4", class: "change" }, svg);
        element("text", { x: x(at) + 4, y: margin.top + 12, "font-size": 11 }, svg).textContent =
          "x" + change.ratio.toFixed(3);
      });
      let path = "";
      data.runs.forEach((run, i) => {
        if (clip(i + 1)) path += (path ? " L " : "M ") + x(i + 1) + " " + y(run.value);
      });
      if (path) element("path", { d: path, fill: "none", stroke: "#1f77b4" }, svg);
      data.runs.forEach((run, i) => {
        if (!clip(i + 1)) return;
        if (run.low !== null && run.high !== null) {
          element("line", { x1: x(i + 1), x2: x(i + 1), y1: y(run.low), y2: y(run.high), stroke: "#1f77b4",
            "stroke-opacity": 0.6 }, svg);
        }
        const point = element("circle", { cx: x(i + 1), cy: y(run.value), r: 5, fill: "#1f77b4", class: "point" }, svg);
        point.addEventListener("mousemove", (event) => showTip(event, describe(run)));
        point.addEventListener("mouseleave", () => (tip.style.display = "none"));
      });
      for (let i = Math.ceil(domain[0]); i <= Math.floor(domain[1]); i++) {
        element("text", { x: x(i), y: height - margin.bottom + 15, "font-size": 11, "text-anchor": "middle" }, svg)
          .textContent = String(i);
      }
    }

    svg.addEventListener("wheel", (event) => {
      event.preventDefault();
      const box = svg.getBoundingClientRect();
      const fraction = ((event.clientX - box.left) / box.width * width - margin.left) / (width - margin.left - margin.right);
      const centre = domain[0] + Math.min(1, Math.max(0, fraction)) * (domain[1] - domain[0]);
      const scale = event.deltaY < 0 ? 0.8 : 1.25;
      const span = Math.min(full[1] - full[0], Math.max(1, (domain[1] - domain[0]) * scale));
      const start = Math.min(full[1] - span, Math.max(full[0], centre - (centre - domain[0]) * (span / (domain[1] - domain[0]))));
      domain = [start, start + span];
      render();
    }, { passive: false });
    svg.addEventListener("dblclick", () => {
      domain = full.slice();
      render();
    });
    render();
  }

  document.querySelectorAll("figure.trend").forEach(drawTrend);
})();
