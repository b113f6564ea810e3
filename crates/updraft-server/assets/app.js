// Updraft dashboard: progressive enhancement only. Every page reads and
// every form works without this file; it adds confirmations and live updates.
"use strict";

// Forms with data-confirm ask before they post (rollout actions).
document.addEventListener("submit", (e) => {
  const form = e.target;
  const what = form.getAttribute("data-confirm");
  if (what && !window.confirm(what)) {
    e.preventDefault();
  }
});

// An element with data-live holds a part of the page the server streams
// (server-sent events, each the part's new HTML, escaped by the server).
for (const el of document.querySelectorAll("[data-live]")) {
  const source = new EventSource(el.getAttribute("data-live"));
  source.addEventListener("status", (e) => {
    el.innerHTML = e.data;
    el.setAttribute("data-updated", String(Date.now()));
  });
}
