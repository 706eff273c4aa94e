// Keyboard shortcuts on the review queue (a approve, r reject, s skip) and select-all for
// bulk actions. Everything also works without this script: these are buttons and links.
"use strict";
const shortcuts = { a: "approve", r: "reject", s: "skip" };

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
  const target = event.target;
  if (target instanceof HTMLElement && target.closest("input, select, textarea, [contenteditable]")) return;
  const id = shortcuts[event.key.toLowerCase()];
  const control = id && document.getElementById(id);
  if (control) {
    event.preventDefault();
    control.click();
  }
});

// A row of a list opens its item: a click anywhere on it but its checkbox or a link follows
// the row's own link (the links in the row work without this script).
document.addEventListener("click", (event) => {
  const target = event.target;
  if (!(target instanceof Element) || target.closest("a, input, button, label")) return;
  const row = target.closest("tr[data-href]");
  if (row) window.location.assign(row.dataset.href);
});

document.addEventListener("DOMContentLoaded", () => {
  const all = document.getElementById("select-all");
  if (!all) return;
  all.addEventListener("change", () => {
    for (const box of document.querySelectorAll('form.bulk input[name="ids"]')) box.checked = all.checked;
  });
});
