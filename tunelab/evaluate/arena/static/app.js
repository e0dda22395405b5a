// The vote page: load a pair, vote with a button or a key, reveal the models, go on.
"use strict";
const $ = (id) => document.getElementById(id);
const LABELS = { left: "A is better", right: "B is better", tie: "Tie", both_bad: "Both bad" };
const KEYS = { "1": "left", a: "left", "2": "right", b: "right", "3": "tie", t: "tie", "4": "both_bad", x: "both_bad" };
let current = null; // the shown pair's id, null once voted
let busy = false;

function counts(data) {
  $("counts").textContent = `your votes: ${data.you} · all votes: ${data.total}`;
}

function setButtons(enabled) {
  document.querySelectorAll("button[data-verdict]").forEach((b) => { b.disabled = !enabled; });
  $("next").disabled = enabled;
}

async function loadNext() {
  if (busy) return;
  busy = true;
  try {
    const response = await fetch("/api/next", { credentials: "same-origin" });
    const data = await response.json();
    counts(data);
    document.querySelectorAll(".answer").forEach((c) => c.classList.remove("winner", "loser"));
    $("model-left").textContent = "";
    $("model-right").textContent = "";
    $("status").textContent = "";
    $("status").className = "status";
    if (data.id === null) {
      $("prompt").textContent = "No answers to compare: start the page with an arena folder (tunelab arena serve DIR).";
      $("left").textContent = "";
      $("right").textContent = "";
      current = null;
      setButtons(false);
      $("next").disabled = true;
      return;
    }
    current = data.id;
    $("prompt").textContent = data.prompt;
    $("system").hidden = !data.system;
    $("system").textContent = data.system ? `System prompt: ${data.system}` : "";
    $("left").textContent = data.left;
    $("right").textContent = data.right;
    setButtons(true);
  } catch (err) {
    $("status").textContent = `Could not load a pair: ${err}`;
    $("status").className = "status error";
  } finally {
    busy = false;
  }
}

async function vote(verdict) {
  if (current === null || busy) return;
  busy = true;
  setButtons(false);
  $("next").disabled = true;
  try {
    const response = await fetch("/api/vote", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ id: current, verdict }),
    });
    const data = await response.json();
    if (!response.ok) throw new Error(data.detail || response.statusText);
    current = null;
    counts(data);
    $("model-left").textContent = `· ${data.left_model}`;
    $("model-right").textContent = `· ${data.right_model}`;
    if (verdict === "left" || verdict === "right") {
      $(`card-${verdict}`).classList.add("winner");
      $(`card-${verdict === "left" ? "right" : "left"}`).classList.add("loser");
    }
    $("status").textContent = `Vote saved: ${LABELS[verdict]}. A was ${data.left_model}, B was ${data.right_model}.`;
    $("status").className = "status saved";
    $("next").disabled = false;
    $("next").focus();
  } catch (err) {
    $("status").textContent = `Vote not saved: ${err.message}. Try again.`;
    $("status").className = "status error";
    setButtons(true);
  } finally {
    busy = false;
  }
}

document.querySelectorAll("button[data-verdict]").forEach((b) => {
  b.addEventListener("click", () => vote(b.dataset.verdict));
});
$("next").addEventListener("click", loadNext);
document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const key = event.key.toLowerCase();
  if (KEYS[key] && current !== null) {
    event.preventDefault();
    vote(KEYS[key]);
  } else if ((key === "enter" || key === "n") && current === null && !$("next").disabled) {
    event.preventDefault();
    loadNext();
  }
});
loadNext();
