// Drives Debian's Chromium through playwright-core for tests/support/browser.rs: one JSON
// command per line on stdin ({"id", "op", ...}), one answer per line on stdout.
//
// Environment: PLAYWRIGHT_CORE (the package's folder), BROWSER_PROFILE (a fresh, empty
// --user-data-dir), BROWSER_HOME (holds .pki/nssdb, the NSS database that trusts the
// registry's CA), BROWSER_RESOLVE (a --host-resolver-rules value).

import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';

const require = createRequire(import.meta.url);
const { chromium } = require(process.env.PLAYWRIGHT_CORE);

// The flags this machine needs (no network but the test's own hosts): no background
// requests, no QUIC, no sync or component updates, a fresh profile.
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  `--host-resolver-rules=${process.env.BROWSER_RESOLVE}`,
];

const context = await chromium.launchPersistentContext(process.env.BROWSER_PROFILE, {
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: FLAGS,
  env: { ...process.env, HOME: process.env.BROWSER_HOME },
  viewport: { width: 1280, height: 800 },
  // Starting Chromium took over 60 s while the whole suite booted droplets on two cores.
  timeout: 180_000,
});
// The Rust side waits for this line (with the launch's own, longer, limit) before its first
// command, so that no command's time is spent starting the browser.
process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
// Waits for what the page shows; generous because the whole suite shares two cores (seen:
// 20 s exceeded at a load of 30 while the registry answered). The Rust side gives up at 60 s.
context.setDefaultTimeout(45_000);

/** name -> { page, requests, errors, authPrompts } */
const pages = new Map();

async function watch(page) {
  const entry = { page, requests: [], errors: [], authPrompts: [], networkChanged: 0 };
  page.on('request', (r) => entry.requests.push(r.url()));
  page.on('pageerror', (e) => entry.errors.push(`uncaught: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() !== 'error') {
      return;
    }
    // Chromium logs every 4xx answer to fetch ("Failed to load resource"): the page expects
    // those (a 401 challenge, a wrong password). CSP refusals and script errors are kept.
    if (m.text().startsWith('Failed to load resource: the server responded with a status of 4')) {
      return;
    }
    // A network change aborts requests in flight with ERR_NETWORK_CHANGED, and the page tries
    // them again. The browser runs in a network namespace of its own (tests/support/
    // browser.rs), so the host's namespaces and bridges no longer reach it; counted all the
    // same, as the network's doing rather than the page's.
    if (m.text().includes('net::ERR_NETWORK_CHANGED')) {
      entry.networkChanged++;
      return;
    }
    entry.errors.push(m.text());
  });
  // The browser's own HTTP authentication (its password prompt, had the tab a window):
  // DevTools sees each challenge the browser would handle. The page must cause none.
  const cdp = await context.newCDPSession(page);
  cdp.on('Fetch.requestPaused', (e) => cdp.send('Fetch.continueRequest', { requestId: e.requestId }).catch(() => {}));
  cdp.on('Fetch.authRequired', (e) => {
    entry.authPrompts.push(e.request.url);
    cdp.send('Fetch.continueWithAuth', { requestId: e.requestId, authChallengeResponse: { response: 'CancelAuth' } }).catch(() => {});
  });
  await cdp.send('Fetch.enable', { handleAuthRequests: true, patterns: [{ urlPattern: '*' }] });
  return entry;
}

function get(name) {
  const entry = pages.get(name);
  if (!entry) {
    throw new Error(`no page ${name}`);
  }
  return entry;
}

const ops = {
  async open({ page: name, url, width, height }) {
    let entry = pages.get(name);
    if (!entry) {
      const page = pages.size === 0 && context.pages().length > 0 ? context.pages()[0] : await context.newPage();
      entry = await watch(page);
      pages.set(name, entry);
    }
    if (width && height) {
      await entry.page.setViewportSize({ width, height });
    }
    await entry.page.goto(url, { waitUntil: 'load' });
    return entry.page.url();
  },
  async grant_clipboard({ origin }) {
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin });
  },
  async type({ page, text }) {
    await get(page).page.keyboard.type(text);
  },
  async press({ page, key }) {
    await get(page).page.keyboard.press(key);
  },
  async fill({ page, label, value }) {
    await get(page).page.getByLabel(label, { exact: true }).fill(value);
  },
  async click({ page, role, name }) {
    await get(page).page.getByRole(role, { name, exact: true }).click();
  },
  /**
   * Clicks buttons (by aria-label, else text) one after the other inside one task of the
   * page, so that nothing an earlier click queued (a dialog's `close` event) runs between.
   */
  async click_at_once({ page, names }) {
    await get(page).page.evaluate((names) => {
      for (const name of names) {
        const button = Array.from(document.querySelectorAll('button')).find(
          (b) => (b.getAttribute('aria-label') ?? b.textContent.trim()) === name,
        );
        if (!button) {
          throw new Error(`no button named ${name}`);
        }
        button.click();
      }
    }, names);
  },
  async focus({ page, role, name }) {
    await get(page).page.getByRole(role, { name, exact: true }).focus();
  },
  /** What has the focus: its id, role-ish tag and accessible text. */
  async focused({ page }) {
    return get(page).page.evaluate(() => {
      const el = document.activeElement;
      return el ? { tag: el.tagName.toLowerCase(), id: el.id, label: el.getAttribute('aria-label') ?? '', text: (el.textContent ?? '').trim() } : null;
    });
  },
  async wait_role({ page, role, name }) {
    await get(page).page.getByRole(role, { name, exact: true }).first().waitFor({ state: 'visible' });
  },
  async wait_text({ page, text }) {
    await get(page).page.getByText(text, { exact: false }).first().waitFor({ state: 'visible' });
  },
  async count({ page, role, name }) {
    return get(page).page.getByRole(role, { name, exact: true }).count();
  },
  async count_css({ page, selector }) {
    return get(page).page.locator(selector).count();
  },
  /** A tag's row once its details have loaded: its text and the digest it shows. */
  async row({ page, tag }) {
    const p = get(page).page;
    const row = p.locator(`tr[data-tag="${tag}"]`);
    await row.waitFor({ state: 'visible' });
    await p.waitForFunction(
      (t) => {
        const tr = document.querySelector(`tr[data-tag="${t}"]`);
        return tr !== null && tr.dataset.digest !== undefined && !tr.textContent.includes('…');
      },
      tag,
    );
    return { text: await row.innerText(), digest: await row.getAttribute('data-digest') };
  },
  async wait_gone({ page, selector }) {
    await get(page).page.locator(selector).first().waitFor({ state: 'detached' });
  },
  async text({ page, selector }) {
    return get(page).page.locator(selector).first().innerText();
  },
  async dialog_open({ page }) {
    return get(page).page.evaluate(() => document.querySelector('dialog')?.open === true);
  },
  async clipboard({ page }) {
    return get(page).page.evaluate(() => navigator.clipboard.readText());
  },
  /** How far the page is wider than the window (0: no sideways scrolling). */
  async overflow({ page }) {
    return get(page).page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  },
  async screenshot({ page, path, full_page }) {
    await get(page).page.screenshot({ path, fullPage: Boolean(full_page) });
  },
  /** Every request the page made, what it logged as errors, and the auth challenges. */
  async report({ page }) {
    const e = get(page);
    return { requests: e.requests, errors: e.errors, auth_prompts: e.authPrompts, network_changed: e.networkChanged };
  },
  async quit() {
    await context.close();
    process.exit(0);
  },
};

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const cmd = JSON.parse(line);
  let answer;
  try {
    const op = ops[cmd.op];
    if (!op) {
      throw new Error(`unknown op ${cmd.op}`);
    }
    answer = { id: cmd.id, ok: true, value: (await op(cmd)) ?? null };
  } catch (e) {
    answer = { id: cmd.id, ok: false, error: String(e && e.stack ? e.stack : e) };
  }
  process.stdout.write(`${JSON.stringify(answer)}\n`);
}
// stdin closed (the test ended without quit): close the browser all the same.
await context.close();
