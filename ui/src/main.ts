// The page: sign-in, the repository list, a repository's tags with digest, size, platforms
// and creation time, a pull command to copy, and deleting a tag for users who may.

import { append, h, replace } from './dom';
import { formatBytes, formatTime, pullCommand, shortDigest } from './format';
import { configFacts, summarize, type Child } from './manifest';
import { isRepositoryName, Registry, RegistryError } from './registry';

const registry = new Registry((path, init) => fetch(path, init));

/** Rows whose details load at once: enough to fill a screen fast, few enough to leave the
 *  droplet's connections to pulls. */
const DETAIL_CONCURRENCY = 4;
/** Tags rendered per step: a repository with thousands of tags stays responsive. */
const TAGS_PER_STEP = 100;

function byId<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (el === null) {
    throw new Error(`#${id} is missing from index.html`);
  }
  return el as T;
}

const main = byId<HTMLElement>('main');
const session = byId<HTMLElement>('session');
const live = byId<HTMLElement>('status');

let anonymous = false;
/** Bumped by every render: work started for a view that is gone stops touching the page. */
let generation = 0;

function message(e: unknown): string {
  return e instanceof RegistryError || e instanceof Error ? e.message : String(e);
}

/** Tells screen readers what just happened (copied, deleted, signed in). */
function announce(text: string): void {
  live.textContent = '';
  // A change of content is what a live region announces; the same text twice needs a reset.
  window.setTimeout(() => {
    live.textContent = text;
  }, 50);
}

function host(): string {
  return registry.service || location.host;
}

type Route = { readonly view: 'home' } | { readonly view: 'repository'; readonly name: string };

function route(): Route {
  const m = /^#\/r\/(.+)$/.exec(location.hash);
  if (m) {
    try {
      const name = decodeURIComponent(m[1]!);
      if (isRepositoryName(name)) {
        return { view: 'repository', name };
      }
    } catch {
      // A malformed escape: the home view.
    }
  }
  return { view: 'home' };
}

function repositoryHref(name: string): string {
  return `#/r/${name}`;
}

/** A limit on concurrent tasks. */
function limiter(limit: number): <T>(task: () => Promise<T>) => Promise<T> {
  let active = 0;
  const waiting: (() => void)[] = [];
  return async (task) => {
    while (active >= limit) {
      await new Promise<void>((resolve) => waiting.push(resolve));
    }
    active++;
    try {
      return await task();
    } finally {
      active--;
      waiting.shift()?.();
    }
  };
}

function renderSession(): void {
  const user = registry.user;
  if (user !== null) {
    const out = h('button', { type: 'button', class: 'link' }, 'Sign out');
    out.addEventListener('click', () => {
      registry.signOut();
      announce('Signed out');
      if (location.hash === '' || location.hash === '#/') {
        void render();
      } else {
        location.hash = '#/';
      }
    });
    replace(session, h('span', { class: 'who' }, 'Signed in as ', h('strong', {}, user)), out);
  } else if (route().view === 'repository') {
    replace(session, h('a', { href: '#/' }, 'Sign in'));
  } else {
    replace(session);
  }
}

/** The view's heading takes the focus, so keyboard and screen reader users start there. */
function show(view: HTMLElement, title: string, focus: HTMLElement): void {
  replace(main, view);
  document.title = `${title} · ${host()}`;
  focus.focus();
}

async function render(): Promise<void> {
  const g = ++generation;
  const alive = (): boolean => g === generation;
  renderSession();
  const r = route();
  if (r.view === 'repository' && (registry.user !== null || anonymous)) {
    repositoryView(r.name, alive);
  } else if (r.view === 'home' && registry.user !== null) {
    repositoriesView(alive);
  } else {
    signInView();
  }
}

function openRepositoryForm(label: string): HTMLFormElement {
  const input = h('input', {
    id: 'open-name',
    name: 'repository',
    autocomplete: 'off',
    autocapitalize: 'none',
    spellcheck: 'false',
    placeholder: 'team/app',
    'aria-describedby': 'open-error',
  });
  const error = h('p', { id: 'open-error', class: 'error', role: 'alert' });
  const form = h(
    'form',
    { class: 'open', method: 'post' },
    h('label', { for: 'open-name' }, label),
    h('div', { class: 'inline' }, input, h('button', { type: 'submit' }, 'Open')),
    error,
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const name = input.value.trim();
    if (!isRepositoryName(name)) {
      error.textContent = name === '' ? 'Enter a repository name.' : `${name} is not a repository name (lowercase letters, digits, . _ - and /).`;
      input.focus();
      return;
    }
    location.hash = repositoryHref(name);
  });
  return form;
}

function signInView(): void {
  const user = h('input', {
    id: 'user',
    name: 'username',
    autocomplete: 'username',
    autocapitalize: 'none',
    spellcheck: 'false',
    required: true,
  });
  const password = h('input', {
    id: 'password',
    name: 'password',
    type: 'password',
    autocomplete: 'current-password',
    required: true,
  });
  const error = h('p', { id: 'signin-error', class: 'error', role: 'alert' });
  const button = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const heading = h('h1', { id: 'signin-title', tabindex: '-1' }, 'Sign in');
  // method=post and no action: should the script ever not run, the CSP (form-action 'none')
  // stops the browser from sending the password anywhere by itself.
  const form = h(
    'form',
    { class: 'card signin', method: 'post', 'aria-labelledby': 'signin-title', novalidate: true },
    heading,
    h('p', { class: 'hint' }, `The user name and password you use with docker login ${host()}.`),
    h('label', { for: 'user' }, 'User name'),
    user,
    h('label', { for: 'password' }, 'Password'),
    password,
    error,
    button,
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    void (async () => {
      if (user.value === '' || password.value === '') {
        error.textContent = 'Enter your user name and password.';
        (user.value === '' ? user : password).focus();
        return;
      }
      button.disabled = true;
      error.textContent = '';
      try {
        await registry.signIn({ user: user.value, password: password.value });
        password.value = '';
        announce(`Signed in as ${user.value}`);
        await render();
      } catch (err) {
        error.textContent = message(err);
        password.select();
        password.focus();
      } finally {
        button.disabled = false;
      }
    })();
  });
  const parts: HTMLElement[] = [form];
  if (anonymous) {
    parts.push(
      h(
        'section',
        { class: 'card', 'aria-labelledby': 'anonymous-title' },
        h('h2', { id: 'anonymous-title' }, 'Or browse without signing in'),
        h('p', { class: 'hint' }, 'Anyone may pull from this registry. Listing every repository needs a sign-in; open one by its name:'),
        openRepositoryForm('Repository'),
      ),
    );
  }
  show(h('div', { class: 'stack narrow' }, ...parts), 'Sign in', user);
}

function repositoriesView(alive: () => boolean): void {
  const heading = h('h1', { tabindex: '-1' }, 'Repositories');
  const list = h('ul', { class: 'repos', 'aria-labelledby': 'repos-title' });
  const note = h('p', { class: 'hint', role: 'status' }, 'Loading…');
  const more = h('button', { type: 'button', hidden: true }, 'Show more repositories');
  heading.id = 'repos-title';
  let next: string | null = null;
  const load = async (fromButton: boolean): Promise<void> => {
    more.disabled = true;
    try {
      const page = await registry.catalog(next);
      if (!alive()) {
        return;
      }
      const added = page.items.map((name) => h('li', {}, h('a', { href: repositoryHref(name) }, name)));
      append(list, ...added);
      next = page.next;
      more.hidden = next === null;
      note.textContent =
        list.children.length === 0
          ? `No repositories yet. Push one with docker push ${host()}/team/app:1.0`
          : `${list.children.length}${next === null ? '' : '+'} repositories`;
      if (fromButton && next === null) {
        added[0]?.querySelector('a')?.focus();
      }
    } catch (err) {
      if (alive()) {
        note.textContent = message(err);
      }
    } finally {
      more.disabled = false;
    }
  };
  more.addEventListener('click', () => void load(true));
  show(
    h('section', { class: 'stack' }, heading, openRepositoryForm('Open a repository by name'), note, list, more),
    'Repositories',
    heading,
  );
  void load(false);
}

/** Where one tag's details go. */
interface Row {
  readonly tr: HTMLTableRowElement;
  readonly digest: HTMLElement;
  readonly platform: HTMLElement;
  readonly size: HTMLElement;
  readonly created: HTMLElement;
  readonly actions: HTMLElement | null;
  digestValue: string | null;
}

function cell(label: string, ...children: (Node | string)[]): HTMLTableCellElement {
  return h('td', { 'data-label': label }, ...children);
}

function copyButton(text: string, label: string, target: HTMLElement): HTMLButtonElement {
  const button = h('button', { type: 'button', class: 'copy', 'aria-label': label }, 'Copy');
  button.addEventListener('click', () => {
    void (async () => {
      try {
        await navigator.clipboard.writeText(text);
        button.textContent = 'Copied';
        announce('Pull command copied');
      } catch {
        // No clipboard access (an old browser, a denied permission): select it for Ctrl+C.
        const range = document.createRange();
        range.selectNodeContents(target);
        const selection = window.getSelection();
        selection?.removeAllRanges();
        selection?.addRange(range);
        button.textContent = 'Press Ctrl+C';
        announce('Selected: press Control C to copy');
      }
      window.setTimeout(() => {
        button.textContent = 'Copy';
      }, 2500);
    })();
  });
  return button;
}

/** Loads what one tag points to into its row. */
async function loadDetails(name: string, tag: string, row: Row, alive: () => boolean): Promise<void> {
  try {
    const m = await registry.manifest(name, tag);
    if (!alive()) {
      return;
    }
    row.digestValue = m.digest;
    row.tr.dataset['digest'] = m.digest;
    replace(row.digest, h('code', { class: 'digest', title: m.digest }, m.digest));
    const s = summarize(m.json, m.contentType);
    if (s.kind === 'image') {
      replace(row.size, formatBytes(s.size));
      if (s.artifactType !== null) {
        replace(row.platform, h('span', { class: 'muted' }, `artifact: ${s.artifactType}`));
        replace(row.created, '—');
      } else if (s.config !== null) {
        const facts = configFacts(await registry.config(name, s.config.digest, s.config.size).catch(() => null));
        if (!alive()) {
          return;
        }
        replace(row.platform, facts.platform ?? '—');
        replace(row.created, facts.created !== null ? h('time', { datetime: facts.created }, formatTime(facts.created)) : '—');
      }
    } else if (s.kind === 'index') {
      await loadIndex(name, s.children, row, alive);
    } else {
      replace(row.platform, h('span', { class: 'muted' }, s.mediaType || 'unknown manifest type'));
      replace(row.size, '—');
      replace(row.created, '—');
    }
  } catch (err) {
    if (alive()) {
      replace(row.digest, h('span', { class: 'error' }, message(err)));
      replace(row.platform, '—');
      replace(row.size, '—');
      replace(row.created, '—');
    }
  }
}

/** A multi-platform image: each platform with its own size, the total and the newest time. */
async function loadIndex(name: string, children: readonly Child[], row: Row, alive: () => boolean): Promise<void> {
  const platforms = children.filter((c) => !c.attestation);
  const details = await Promise.all(
    platforms.map(async (c) => {
      try {
        const m = await registry.manifest(name, c.digest);
        const s = summarize(m.json, m.contentType);
        if (s.kind !== 'image') {
          return { child: c, size: null, created: null };
        }
        const facts = s.config ? configFacts(await registry.config(name, s.config.digest, s.config.size).catch(() => null)) : null;
        return { child: c, size: s.size, created: facts?.created ?? null };
      } catch {
        return { child: c, size: null, created: null };
      }
    }),
  );
  if (!alive()) {
    return;
  }
  const attestations = children.length - platforms.length;
  replace(
    row.platform,
    h('span', { class: 'index-label' }, `Index of ${platforms.length} platform${platforms.length === 1 ? '' : 's'}`),
    h(
      'ul',
      { class: 'platforms' },
      ...details.map((d) =>
        h('li', { title: d.child.digest }, d.child.platform, h('span', { class: 'muted' }, ` ${d.size === null ? '' : formatBytes(d.size)}`)),
      ),
    ),
    attestations > 0 ? h('span', { class: 'muted' }, `+ ${attestations} attestation${attestations === 1 ? '' : 's'}`) : null,
  );
  const sizes = details.map((d) => d.size).filter((x): x is number => x !== null);
  replace(row.size, sizes.length > 0 ? h('span', { title: `Sum of ${sizes.length} platforms` }, formatBytes(sizes.reduce((a, b) => a + b, 0))) : '—');
  const newest = details
    .map((d) => d.created)
    .filter((x): x is string => x !== null)
    .sort((a, b) => Date.parse(b) - Date.parse(a))[0];
  replace(row.created, newest !== undefined ? h('time', { datetime: newest }, formatTime(newest)) : '—');
}

function repositoryView(name: string, alive: () => boolean): void {
  const heading = h('h1', { tabindex: '-1', class: 'repo-name' }, name);
  const note = h('p', { class: 'hint', role: 'status' }, 'Loading tags…');
  const failure = h('p', { class: 'error', role: 'alert' });
  const more = h('button', { type: 'button', hidden: true }, 'Show more tags');
  const body = h('tbody');
  const headRow = h('tr');
  const table = h(
    'table',
    { class: 'tags', hidden: true },
    h('caption', { class: 'visually-hidden' }, `Tags of ${name}`),
    h('thead', {}, headRow),
    body,
  );
  const back = registry.user !== null ? h('p', { class: 'crumbs' }, h('a', { href: '#/' }, '← Repositories')) : null;
  show(h('section', { class: 'stack' }, back, heading, note, failure, table, more), name, heading);

  const run = limiter(DETAIL_CONCURRENCY);
  const rows = new Map<string, Row>();
  let tags: string[] = [];
  let shown = 0;
  let next: string | null = null;
  let deletable = false;

  const addRow = (tag: string): void => {
    const command = pullCommand(host(), name, tag);
    const code = h('code', { class: 'pull' }, command);
    const row: Row = {
      tr: h('tr', { 'data-tag': tag }),
      digest: h('span', { class: 'muted' }, '…'),
      platform: h('span', { class: 'muted' }, '…'),
      size: h('span', { class: 'muted' }, '…'),
      created: h('span', { class: 'muted' }, '…'),
      actions: deletable ? h('span') : null,
      digestValue: null,
    };
    append(
      row.tr,
      h('th', { scope: 'row', 'data-label': 'Tag' }, tag),
      cell('Digest', row.digest),
      cell('Platform', row.platform),
      cell('Size', row.size),
      cell('Created', row.created),
      cell('Pull', h('div', { class: 'inline' }, code, copyButton(command, `Copy pull command for ${name}:${tag}`, code))),
    );
    if (row.actions !== null) {
      const del = h('button', { type: 'button', class: 'danger', 'aria-label': `Delete tag ${tag}` }, 'Delete');
      del.addEventListener('click', () => void deleteTag(tag, del));
      replace(row.actions, del);
      row.tr.append(cell('', row.actions));
    }
    body.append(row.tr);
    rows.set(tag, row);
    void run(() => (alive() ? loadDetails(name, tag, row, alive) : Promise.resolve()));
  };

  const showMore = async (fromButton: boolean): Promise<void> => {
    more.disabled = true;
    try {
      if (shown >= tags.length && next !== null) {
        const page = await registry.tags(name, next);
        if (!alive()) {
          return;
        }
        tags = tags.concat(page.items);
        next = page.next;
      }
      const start = shown;
      for (const tag of tags.slice(shown, shown + TAGS_PER_STEP)) {
        addRow(tag);
      }
      shown = Math.min(tags.length, shown + TAGS_PER_STEP);
      more.hidden = shown >= tags.length && next === null;
      note.textContent = `${tags.length}${next === null ? '' : '+'} tag${tags.length === 1 ? '' : 's'}`;
      if (fromButton) {
        rows.get(tags[start] ?? '')?.tr.querySelector('th')?.setAttribute('tabindex', '-1');
        (rows.get(tags[start] ?? '')?.tr.querySelector('th') as HTMLElement | null)?.focus();
      }
    } catch (err) {
      if (alive()) {
        failure.textContent = message(err);
      }
    } finally {
      more.disabled = false;
    }
  };

  const deleteTag = async (tag: string, button: HTMLButtonElement): Promise<void> => {
    const row = rows.get(tag);
    const digest = row?.digestValue ?? null;
    if (digest === null) {
      failure.textContent = `The digest of ${name}:${tag} is not loaded yet; try again in a moment.`;
      return;
    }
    const others = Array.from(rows.entries())
      .filter(([t, r]) => t !== tag && r.digestValue === digest)
      .map(([t]) => t);
    const ok = await confirmDelete(name, tag, digest, others);
    if (!ok || !alive()) {
      button.focus();
      return;
    }
    button.disabled = true;
    failure.textContent = '';
    try {
      await registry.deleteManifest(name, digest);
      announce(`Deleted ${name}:${tag}`);
      await render();
    } catch (err) {
      failure.textContent = message(err);
      button.disabled = false;
      button.focus();
    }
  };

  more.addEventListener('click', () => void showMore(true));

  void (async () => {
    try {
      const [page, canDelete] = await Promise.all([registry.tags(name, null), registry.canDelete(name).catch(() => false)]);
      if (!alive()) {
        return;
      }
      deletable = canDelete;
      append(
        headRow,
        h('th', { scope: 'col' }, 'Tag'),
        h('th', { scope: 'col' }, 'Digest'),
        h('th', { scope: 'col' }, 'Platform'),
        h('th', { scope: 'col' }, 'Size'),
        h('th', { scope: 'col' }, 'Created'),
        h('th', { scope: 'col' }, 'Pull command'),
        deletable ? h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Actions')) : null,
      );
      tags = [...page.items];
      next = page.next;
      if (tags.length === 0 && next === null) {
        note.textContent = 'This repository has no tags.';
        return;
      }
      table.hidden = false;
      await showMore(false);
    } catch (err) {
      if (alive()) {
        note.textContent = '';
        failure.textContent = message(err);
      }
    }
  })();
}

/** Asks before deleting; resolves true only on the explicit Delete button. */
function confirmDelete(name: string, tag: string, digest: string, others: readonly string[]): Promise<boolean> {
  const dialog = byId<HTMLDialogElement>('confirm');
  const cancel = h('button', { type: 'button' }, 'Cancel');
  const ok = h('button', { type: 'button', class: 'danger' }, `Delete ${tag}`);
  replace(
    dialog,
    h('h2', { id: 'confirm-title' }, `Delete ${name}:${tag}?`),
    h(
      'p',
      { id: 'confirm-text' },
      'This deletes the manifest ',
      h('code', { class: 'digest-full' }, shortDigest(digest)),
      others.length > 0 ? `, and with it the tags that point to it too: ${others.join(', ')}.` : '.',
      ' Pulls of this tag fail from now on; this cannot be undone.',
    ),
    h('div', { class: 'actions' }, cancel, ok),
  );
  return new Promise((resolve) => {
    // Answered by the buttons directly, not by the dialog's `close` event: that event is
    // queued, and a keyboard user (input runs before queued tasks) can open the next dialog
    // before the previous one's `close` arrives, which would then answer the new one.
    let settled = false;
    const finish = (value: boolean): void => {
      if (settled) {
        return;
      }
      settled = true;
      dialog.removeEventListener('close', onClose);
      if (dialog.open) {
        dialog.close();
      }
      resolve(value);
    };
    // Escape closes the dialog without a button: no. A late `close` of an earlier opening
    // finds this one open, and is not ours.
    const onClose = (): void => {
      if (!dialog.open) {
        finish(false);
      }
    };
    cancel.addEventListener('click', () => finish(false));
    ok.addEventListener('click', () => finish(true));
    dialog.addEventListener('close', onClose);
    dialog.showModal();
    // The safe choice first: Enter on an unread dialog must not delete.
    cancel.focus();
  });
}

async function start(): Promise<void> {
  try {
    await registry.discover();
    anonymous = await registry.anonymousAllowed();
  } catch (err) {
    replace(main, h('p', { class: 'error', role: 'alert' }, `This registry cannot be browsed here: ${message(err)}`));
    return;
  }
  byId<HTMLElement>('brand').textContent = host();
  window.addEventListener('hashchange', () => void render());
  await render();
}

void start();
