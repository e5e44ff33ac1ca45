// A tiny DOM builder. Text only ever goes in through textContent (never
// innerHTML), so a message or name like `<img src=x onerror=…>` is shown as
// those characters. Event handlers are functions attached with
// addEventListener: no inline handlers, which the CSP would refuse anyway.

/**
 * h("button", {class: "x", on: {click: fn}, "aria-label": "Send"}, "Send")
 * Children: strings (text), nodes, arrays, null/false (skipped).
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "on") {
      for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    } else if (k === "dataset") {
      Object.assign(el.dataset, v);
    } else if (k === "value") {
      el.value = v;
    } else if (k.startsWith("on")) {
      throw new Error(`inline handler attribute ${k} refused`);
    } else {
      el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** Replaces every child of `el` with `children`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Sets the text of `el` (and nothing else). */
export function text(el, s) {
  el.textContent = s;
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);
