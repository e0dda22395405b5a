// The leaderboard page: ratings with their intervals drawn to scale, and the win-rate matrix.
"use strict";
const fmt = (x, digits = 0) => (x === null ? "–" : x.toFixed(digits));

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function intervalBar(td, r, lo, hi) {
  const span = hi - lo || 1;
  const bar = document.createElement("div");
  bar.className = "bar";
  if (r.lower !== null) {
    const range = document.createElement("span");
    range.className = "range";
    range.style.left = `${(100 * (r.lower - lo)) / span}%`;
    range.style.width = `${Math.max((100 * (r.upper - r.lower)) / span, 0.5)}%`;
    bar.appendChild(range);
  }
  const dot = document.createElement("span");
  dot.className = "dot";
  dot.style.left = `${(100 * (r.bt - lo)) / span}%`;
  bar.appendChild(dot);
  const label = document.createElement("span");
  label.className = "label";
  label.textContent = r.lower === null ? "–" : `${fmt(r.lower)} – ${fmt(r.upper)}`;
  td.append(bar, label);
}

async function refresh() {
  const data = await (await fetch("/api/leaderboard")).json();
  document.getElementById("total").textContent = `${data.votes} vote${data.votes === 1 ? "" : "s"}`;
  document.getElementById("few").hidden = !data.ratings.some((r) => r.battles < 10);
  const v = data.voters;
  const pct = (x) => (x === null ? "n/a" : `${(100 * x).toFixed(0)}%`);
  document.getElementById("voters").textContent = `Position bias of the votes: the answer shown as A won ${pct(
    v.first_slot_win_rate)} of decisive votes (50% = no bias); ${v.pairs_both_orders} pairs were voted in both orders, ${pct(
    v.position_consistency)} of them the same way. Ties and both bad: ${pct(v.tie_rate)}.`;
  const body = document.querySelector("#board tbody");
  body.replaceChildren();
  const bounds = data.ratings.flatMap((r) => [r.lower ?? r.bt, r.upper ?? r.bt]);
  const lo = Math.min(...bounds) - 5;
  const hi = Math.max(...bounds) + 5;
  data.ratings.forEach((r, i) => {
    const row = body.insertRow();
    row.dataset.model = r.model;
    cell(row, String(i + 1));
    cell(row, r.model, "name");
    cell(row, fmt(r.bt), "rating");
    intervalBar(cell(row, "", "ci"), r, lo, hi);
    cell(row, fmt(r.elo));
    cell(row, String(r.battles), "battles");
    cell(row, r.win_rate === null ? "–" : `${fmt(100 * r.win_rate, 1)}%`);
  });
  const head = document.querySelector("#matrix thead");
  const mbody = document.querySelector("#matrix tbody");
  head.replaceChildren();
  mbody.replaceChildren();
  const hrow = head.insertRow();
  cell(hrow, "", "name");
  data.models.forEach((m) => cell(hrow, m));
  data.models.forEach((m, i) => {
    const row = mbody.insertRow();
    cell(row, m, "name");
    data.win_rates[i].forEach((x) => {
      const td = cell(row, x === null ? "–" : `${Math.round(100 * x)}%`);
      if (x !== null) td.style.background = `rgba(31, 95, 168, ${(0.08 + 0.5 * x).toFixed(2)})`;
    });
  });
}

refresh();
setInterval(refresh, 10000);
