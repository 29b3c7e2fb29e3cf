// cnnprov dashboard: sortable tables and Plotly charts, some of which follow a run as it trains.
"use strict";

// When each chart was first drawn (ms since navigation start), for the browser benchmark and the tests.
window.cnnprovDrawn = {};

function cellValue(row, index, type) {
  const text = row.children[index].textContent.trim();
  if (type === "number" || type === "auto") {
    const number = parseFloat(text);
    if (!Number.isNaN(number) && /^[-+0-9.eE]+$/.test(text)) return number;
    if (type === "number") return text === "" ? -Infinity : text;
  }
  return text;
}

function makeSortable(table) {
  table.querySelectorAll("thead th").forEach((header, index) => {
    header.addEventListener("click", () => {
      const body = table.tBodies[0];
      const ascending = header.dataset.sorted !== "ascending";
      table.querySelectorAll("thead th").forEach((other) => delete other.dataset.sorted);
      header.dataset.sorted = ascending ? "ascending" : "descending";
      const type = header.dataset.type || "text";
      const rows = Array.from(body.rows);
      rows.sort((a, b) => {
        const x = cellValue(a, index, type), y = cellValue(b, index, type);
        const order = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0) : typeof x === "number" ? -1 : 1;
        return ascending ? order : -order;
      });
      rows.forEach((row) => body.appendChild(row));
    });
  });
}

function countPoints(figure) {
  return figure.data.reduce((total, trace) => total + (trace.x ? trace.x.length : 0), 0);
}

function draw(element, figure) {
  const first = !element.dataset.drawn;
  Plotly.react(element, figure.data, figure.layout, {responsive: true, displaylogo: false});
  element.dataset.points = String(countPoints(figure));
  element.dataset.traces = String(figure.data.length);
  if (first) {
    element.dataset.drawn = "1";
    window.cnnprovDrawn[element.id] = performance.now();
  }
}

async function follow(element) {
  try {
    const response = await fetch(element.dataset.live, {credentials: "same-origin"});
    if (response.ok) {
      draw(element, await response.json());
      element.dataset.updates = String(Number(element.dataset.updates || 0) + 1);
    } else {
      element.dataset.error = await response.text();
    }
  } catch (error) {
    element.dataset.error = String(error);
  }
  setTimeout(() => follow(element), 2000);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("table.sortable").forEach(makeSortable);
  document.querySelectorAll(".chart[data-figure]").forEach((element) => draw(element, JSON.parse(element.dataset.figure)));
  document.querySelectorAll(".chart[data-live]").forEach(follow);
  window.cnnprovDrawn.page = performance.now();
});
