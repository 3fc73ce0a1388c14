// Drives Debian's Chromium (headless, through playwright-core) against a
// running authgw, for gateway/tests/browser.rs, which starts the gateway, the
// test app (app/) and the attacker's page (evil/) and asserts what this
// script reports. Usage:
//
//   AUTHGW_URL=http://localhost:G APP_URL=http://localhost:A EVIL_URL=http://localhost:E \
//   LOGIN=... PASSWORD=... [SCREENSHOT=path.png] [CHROMIUM=/usr/bin/chromium] \
//   node drive.mjs session|evil
//
// Protocol on stdout: `CHECKPOINT <name> <json>` then a wait for one line
// `go` on stdin (the test checks the database meanwhile); at the end
// `DONE <json>`. The JSON holds what the browser saw. Any failure (a
// timeout waiting for the page, an unexpected answer) exits non-zero with
// the reason on stderr. Nothing here sleeps: every wait is for an event.
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import readline from 'node:readline';

import { chromium } from 'playwright-core';

const WAIT_MS = 15_000; // any single wait for the page
const CHECKPOINT_MS = 60_000; // the test's answer to a checkpoint
const WHOLE_RUN_MS = 150_000; // the whole script, watchdog

function need(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

const GATEWAY = need('AUTHGW_URL');
const APP = need('APP_URL');
const EVIL = need('EVIL_URL');
const LOGIN = need('LOGIN');
const PASSWORD = need('PASSWORD');
const SCREENSHOT = process.env.SCREENSHOT || '';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const scenario = process.argv[2];

const watchdog = setTimeout(() => {
  console.error(`drive.mjs: still running after ${WHOLE_RUN_MS} ms, giving up`);
  process.exit(3);
}, WHOLE_RUN_MS);

// --- the checkpoint protocol ---------------------------------------------------
const stdinLines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function checkpoint(name, data) {
  process.stdout.write(`CHECKPOINT ${name} ${JSON.stringify(data)}\n`);
  const { value, done } = await within(stdinLines.next(), CHECKPOINT_MS, `the answer to checkpoint ${name}`);
  if (done || value.trim() !== 'go') {
    throw new Error(`checkpoint ${name}: got ${done ? 'end of input' : JSON.stringify(value)} instead of "go"`);
  }
}

// --- what the browser sees -------------------------------------------------------
const isRefresh = (r) => r.url() === `${GATEWAY}/api/v1/auth/refresh` && r.request().method() === 'POST';

/** A response as data: status, body (JSON when it parses), its Set-Cookie lines. */
async function describe(response) {
  const text = await response.text();
  let body = text;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: keep the text
  }
  return {
    status: response.status(),
    content_type: response.headers()['content-type'] || null,
    set_cookie: await response.headerValues('set-cookie'),
    body,
  };
}

/** Every cookie of the browser context (HttpOnly ones too: the test's view, not the page's). */
async function jar(context) {
  return (await context.cookies()).map(({ name, value, domain, path, httpOnly, secure, sameSite }) => ({
    name,
    value,
    domain,
    path,
    http_only: httpOnly,
    secure,
    same_site: sameSite,
  }));
}

async function waitState(page, state) {
  try {
    await page.waitForSelector(`#status[data-state="${state}"]`, { timeout: WAIT_MS });
  } catch (err) {
    const now = await shown(page).catch(() => 'unknown');
    throw new Error(`the app never reached state ${state}; it shows ${JSON.stringify(now)}`, { cause: err });
  }
}

/** What the app shows of the session. */
async function shown(page) {
  return page.evaluate(() => ({
    state: document.getElementById('status').dataset.state,
    status: document.getElementById('status').textContent,
    user_login: document.getElementById('user-login').textContent,
    user_id: document.getElementById('user-id').textContent,
    upstream_login: document.getElementById('upstream-login').textContent,
    upstream_cookie: document.getElementById('upstream-login').dataset.cookie || '',
    error: document.getElementById('error').textContent,
  }));
}

/** Opens (or reloads) the app, returning the answer to its silent refresh. */
async function openApp(page, how = 'goto') {
  const [refresh] = await Promise.all([
    page.waitForResponse(isRefresh, { timeout: WAIT_MS }),
    how === 'reload' ? page.reload() : page.goto(APP),
  ]);
  return describe(refresh);
}

/** Logs in through the app's form; returns the login response. */
async function logIn(page) {
  await page.fill('#login', LOGIN);
  await page.fill('#password', PASSWORD);
  const [login] = await Promise.all([
    page.waitForResponse(
      (r) => r.url() === `${GATEWAY}/api/v1/auth/login` && r.request().method() === 'POST',
      { timeout: WAIT_MS },
    ),
    page.click('#login-button'),
  ]);
  const described = await describe(login);
  await waitState(page, 'logged-in');
  return described;
}

// --- scenarios -------------------------------------------------------------------

/** Login, reload, the proxied route, an injected script, logout. */
async function session(context, page) {
  const first = await openApp(page);
  await waitState(page, 'logged-out');

  const login = await logIn(page);
  const afterLogin = await shown(page);
  if (SCREENSHOT) {
    await mkdir(dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
  }
  await checkpoint('logged_in', {
    first_refresh: first,
    login,
    shown: afterLogin,
    cookies: await jar(context),
    document_cookie: await page.evaluate(() => document.cookie),
  });

  // An XSS in the app: a script running in the app's origin, with the app's
  // powers. It can make the gateway rotate the session, but can never hold
  // the refresh token itself.
  const before = await jar(context);
  const xss = await page.evaluate(async (gateway) => {
    const cookie = document.cookie;
    const res = await fetch(`${gateway}/api/v1/auth/refresh`, {
      method: 'POST',
      credentials: 'include',
      headers: { 'X-Requested-With': 'authgw' },
    });
    const text = await res.text();
    return {
      document_cookie: cookie,
      document_cookie_after: document.cookie,
      status: res.status,
      body_text: text,
      set_cookie_header: res.headers.get('set-cookie'),
      readable_headers: [...res.headers.keys()],
    };
  }, GATEWAY);
  const afterXss = await jar(context);

  const reload = await openApp(page, 'reload');
  await waitState(page, 'logged-in');
  await checkpoint('reloaded', {
    cookies_before_xss: before,
    xss,
    cookies_after_xss: afterXss,
    reload,
    shown: await shown(page),
    cookies: await jar(context),
    document_cookie: await page.evaluate(() => document.cookie),
  });

  // A state-changing proxied request from the app itself (cookie + header).
  await page.click('#post-button');
  await page.waitForSelector('#post-result[data-status]', { timeout: WAIT_MS });
  const post = await page.evaluate(() => ({
    status: document.getElementById('post-result').dataset.status,
    text: document.getElementById('post-result').textContent,
  }));

  const [logout] = await Promise.all([
    page.waitForResponse(
      (r) => r.url() === `${GATEWAY}/api/v1/auth/logout` && r.request().method() === 'POST',
      { timeout: WAIT_MS },
    ),
    page.click('#logout-button'),
  ]);
  const loggedOut = await describe(logout);
  await waitState(page, 'logged-out');
  await checkpoint('logged_out', { post, logout: loggedOut, cookies: await jar(context) });

  const again = await openApp(page, 'reload');
  await waitState(page, 'logged-out');
  return { reload_after_logout: again, shown: await shown(page), cookies: await jar(context) };
}

/** A cross-origin form POST from the attacker's page; returns what came back. */
async function submitForm(page, id) {
  await page.goto(EVIL);
  const action = await page.$eval(`#${id}`, (form) => form.action);
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url() === action && r.request().method() === 'POST', { timeout: WAIT_MS }),
    page.click(`#${id} button`),
  ]);
  const request = response.request();
  const sent = await request.allHeaders();
  const described = await describe(response);
  await page.waitForURL(action, { timeout: WAIT_MS });
  return {
    action,
    sent: { origin: sent.origin || null, cookie: sent.cookie || '', x_requested_with: sent['x-requested-with'] || null },
    ...described,
    page_url: page.url(),
    page_text: await page.evaluate(() => document.body.innerText),
  };
}

/** The attacker's page, with the user logged in to the app in the same browser. */
async function evil(context, page) {
  await openApp(page);
  await waitState(page, 'logged-out');
  await logIn(page);
  await checkpoint('logged_in', { cookies: await jar(context), shown: await shown(page) });

  const forms = {};
  for (const id of ['logout-all', 'refresh', 'transfer']) {
    forms[id] = await submitForm(page, id);
  }
  await page.goto(EVIL);
  const fetches = await page.evaluate(async () => {
    const out = {};
    for (const [name, run] of Object.entries(window.attempts)) out[name] = await run();
    return out;
  });
  await checkpoint('after_evil', { forms, fetches, cookies: await jar(context) });

  // The user comes back to the app: the session is intact.
  const back = await openApp(page);
  await waitState(page, 'logged-in');
  return { refresh: back, shown: await shown(page) };
}

const scenarios = { session, evil };

async function main() {
  if (!scenarios[scenario]) throw new Error(`usage: node drive.mjs ${Object.keys(scenarios).join('|')}`);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: WAIT_MS,
    // As root (CI containers) Chromium's sandbox cannot start; Playwright
    // passes --no-sandbox by default too (chromiumSandbox: false).
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 900, height: 600 } });
    context.setDefaultTimeout(WAIT_MS);
    context.setDefaultNavigationTimeout(WAIT_MS);
    const page = await context.newPage();
    page.on('console', (msg) => console.error(`[page console.${msg.type()}] ${msg.text()}`));
    page.on('pageerror', (err) => console.error(`[page uncaught] ${err.message}`));
    const result = await scenarios[scenario](context, page);
    process.stdout.write(`DONE ${JSON.stringify({ chromium: browser.version(), ...result })}\n`);
  } finally {
    await browser.close();
  }
}

try {
  await main();
  clearTimeout(watchdog);
  process.exit(0);
} catch (err) {
  console.error(`drive.mjs ${scenario}: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
}
