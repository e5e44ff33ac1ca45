// Static promises of the client, checked without a browser: no inline
// script or style (the CSP would refuse them), no HTML-from-strings sinks
// anywhere in the modules, and every module preloaded by index.html (no
// import waterfall on a first load).

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { ROOT } from "./harness.mjs";

const WEB = join(ROOT, "web");
const html = readFileSync(join(WEB, "index.html"), "utf8");
const modules = readdirSync(join(WEB, "assets")).filter((f) => f.endsWith(".js"));

test("index.html has no inline script, style or handler", () => {
  for (const m of html.matchAll(/<script\b[^>]*>([\s\S]*?)<\/script>/g)) {
    assert.match(m[0], /\bsrc="\/assets\//, "scripts come from /assets/");
    assert.equal(m[1].trim(), "", "no inline script body");
  }
  assert.doesNotMatch(html, /<style\b|\sstyle=|\son[a-z]+=/i);
});

test("every module is preloaded", () => {
  for (const f of modules) {
    if (f === "app.js") continue;
    assert.ok(html.includes(`<link rel="modulepreload" href="/assets/${f}">`), `${f} is not preloaded`);
  }
});

test("no module builds HTML from strings or evaluates code", () => {
  const sinks = /\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML|document\.write|\beval\(|new Function\(|setAttribute\(\s*["']on/;
  for (const f of modules) {
    const src = readFileSync(join(WEB, "assets", f), "utf8");
    assert.doesNotMatch(src, sinks, `${f} uses an HTML or code sink`);
  }
});
