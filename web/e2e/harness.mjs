// Shared pieces of the browser tests: the real sotto binary on a free
// loopback port with a fresh database directory, Debian's Chromium driven
// by playwright-core (fresh profile per browser, one context per person),
// and small helpers that act and look the way a person would.

import { spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const CHROMIUM = process.env.SOTTO_CHROMIUM || "/usr/bin/chromium";
export const SOTTO = process.env.SOTTO_BIN || join(ROOT, "target/debug/sotto");
export const WAIT = 15000;

/** Why the browser tests cannot run here, or null. Under
 * SOTTO_REQUIRE_BROWSER=1 a reason is a failure, not a skip. */
export function unavailable() {
  let reason = null;
  if (!existsSync(CHROMIUM)) reason = `no browser at ${CHROMIUM} (apt-get install chromium)`;
  else if (!existsSync(SOTTO)) reason = `no sotto binary at ${SOTTO} (cargo build -p sotto)`;
  if (reason && process.env.SOTTO_REQUIRE_BROWSER === "1") {
    throw new Error(`browser tests are required (SOTTO_REQUIRE_BROWSER=1) but ${reason}`);
  }
  if (reason) console.log(`# browser tests skipped: ${reason}`);
  return reason;
}

async function freePort() {
  const srv = createServer();
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  const { port } = srv.address();
  srv.close();
  await once(srv, "close");
  return port;
}

/** A running sotto: `url`, `dbFiles()`, `stop()`, `restart()` (same port,
 * same database). */
export class Sotto {
  /** `extra`: {"--option": "value"} over the tests' defaults. */
  static async start(extra = {}) {
    const s = new Sotto();
    s.dir = mkdtempSync(join(tmpdir(), "sotto-e2e-"));
    s.port = await freePort();
    s.extra = extra;
    await s.spawn();
    return s;
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  get dbPath() {
    return join(this.dir, "sotto.db");
  }

  async spawn() {
    // Cheap Argon2 and no attempt or send limits, unless a test sets its own.
    const options = {
      "--listen": "127.0.0.1", "--http-port": String(this.port), "--chat-port": "0",
      "--database": this.dbPath, "--argon2-memory-kib": "64", "--argon2-iterations": "1",
      "--login-rate-per-ip": "0", "--login-rate-per-name": "0",
      "--send-rate-per-user": "0", "--presence-interval-ms": "20",
      // SOTTO_E2E_HTML_DIR=web serves the files on disk instead of the
      // copy embedded at build time: edit, re-run, no rebuild.
      ...(process.env.SOTTO_E2E_HTML_DIR ? { "--html-dir": process.env.SOTTO_E2E_HTML_DIR } : {}),
      ...this.extra,
    };
    const args = ["serve", "--disable-dtls", ...Object.entries(options).flat()];
    this.proc = spawn(SOTTO, args, {
      env: { ...process.env, NO_COLOR: "1", SOTTO_LOG: process.env.SOTTO_LOG || "warn,sotto_server::server=info" },
      stdio: ["ignore", "ignore", "pipe"],
    });
    this.log = "";
    await new Promise((ok, fail) => {
      const timer = setTimeout(() => fail(new Error(`sotto did not start:\n${this.log}`)), WAIT);
      this.proc.stderr.on("data", (d) => {
        this.log = (this.log + d).slice(-20000);
        if (this.log.includes("HTTP listening")) {
          clearTimeout(timer);
          ok();
        }
      });
      this.proc.on("exit", (code) => {
        clearTimeout(timer);
        fail(new Error(`sotto exited (${code}):\n${this.log}`));
      });
    });
  }

  async stop() {
    if (!this.proc || this.proc.exitCode !== null) return;
    const exited = once(this.proc, "exit");
    this.proc.kill("SIGTERM");
    const t = setTimeout(() => this.proc.kill("SIGKILL"), 10000);
    await exited;
    clearTimeout(t);
  }

  async restart() {
    await this.stop();
    await this.spawn();
  }

  /** The bytes of the database and its write-ahead log. */
  dbBytes() {
    return ["", "-wal"]
      .map((s) => this.dbPath + s)
      .filter((p) => existsSync(p))
      .map((p) => readFileSync(p));
  }

  async close() {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export async function launch() {
  const { chromium } = await import("playwright-core");
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
}

/** A person: one browser context (own cookies, storage, IndexedDB). */
export async function person(browser, server, opts = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, ...opts });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.dialogs = [];
  page.on("dialog", (d) => {
    page.dialogs.push(d.message());
    d.dismiss().catch(() => {});
  });
  // Uncaught exceptions and anything the CSP refused count as errors.
  page.errors = [];
  page.on("pageerror", (e) => page.errors.push(String(e)));
  page.on("console", (m) => {
    if (m.type() === "error" && /Content Security Policy|Refused to/i.test(m.text())) page.errors.push(m.text());
  });
  page.sockets = [];
  page.on("websocket", (ws) => {
    page.sockets.push(ws);
    ws.on("close", () => {
      ws.closedByServer = true;
    });
  });
  await page.goto(server.url);
  return page;
}

async function submitLogin(page, name, password, button) {
  await page.locator("#name").fill(name);
  await page.locator("#password").fill(password);
  await page.getByRole("button", { name: button, exact: true }).click();
}

export async function register(page, name, password = "pw-" + name) {
  await submitLogin(page, name, password, "Create account");
  await page.locator("#contacts").waitFor({ timeout: WAIT });
}

export async function login(page, name, password = "pw-" + name) {
  await submitLogin(page, name, password, "Log in");
  await page.locator("#contacts").waitFor({ timeout: WAIT });
}

export function contact(page, name) {
  return page.locator(".contact", { has: page.locator(".contact-name", { hasText: new RegExp(`^${name}\\b`) }) });
}

/** Opens the conversation with `name`, found by searching the directory
 * (presence, and so the list, covers contacts and watched users only). */
export async function openConversation(page, name) {
  await page.locator("#search").fill(name);
  await contact(page, name).click();
  // Cleared even where the list is now hidden (phone width).
  await page.locator("#search").evaluate((el) => {
    el.value = "";
    el.dispatchEvent(new Event("input"));
  });
  await page.locator("#conv-title", { hasText: name }).waitFor({ timeout: WAIT });
}

export async function send(page, text) {
  await page.locator("#composer").fill(text);
  await page.locator("#composer").press("Enter");
}

/** The bubble showing exactly `text`. */
export function bubble(page, text) {
  return page.locator(".msg", { has: page.locator(".text", { hasText: exact(text) }) });
}

export function exact(text) {
  return new RegExp(`^${text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`);
}

/** Waits until the state under my message `text` reads `label`. */
export async function expectState(page, text, label) {
  await bubble(page, text).locator(".state", { hasText: label }).waitFor({ timeout: WAIT });
}

/** The texts shown in the open conversation, in order. */
export async function shownTexts(page) {
  return page.locator(".messages .msg .text").allTextContents();
}

/** Asserts that no database byte holds any of `texts`. */
export function assertNoPlaintext(server, texts) {
  const files = server.dbBytes();
  if (!files.length) throw new Error("no database file to check");
  for (const t of texts) {
    const needle = Buffer.from(t, "utf8");
    for (const bytes of files) {
      if (bytes.includes(needle)) throw new Error(`the database holds the plaintext ${JSON.stringify(t)}`);
    }
  }
}

/** The session token of a page (this tab's sessionStorage). */
export function tokenOf(page) {
  return page.evaluate(() => sessionStorage.getItem("sotto.token"));
}
