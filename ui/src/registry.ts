// The registry's API as the page uses it: the Bearer token flow (the password goes to the
// token endpoint only, never to /v2/), the paginated catalog and tag lists, manifests, deletes.

import { MANIFEST_ACCEPT, MAX_CONFIG_BYTES } from './manifest';

/** `fetch`, narrowed to what the page sends: a path on its own host and plain options. */
export type Fetch = (path: string, init: RequestInit) => Promise<Response>;

export interface Credentials {
  readonly user: string;
  readonly password: string;
}

/** Where tokens come from, as the registry's `WWW-Authenticate: Bearer` challenge says. */
export interface Challenge {
  readonly realm: string;
  readonly service: string;
}

export interface Page<T> {
  readonly items: readonly T[];
  /** The next page's path on /v2/, from the `Link` header; null on the last page. */
  readonly next: string | null;
}

export interface Manifest {
  readonly digest: string;
  readonly contentType: string | null;
  readonly json: unknown;
}

export class RegistryError extends Error {
  override readonly name = 'RegistryError';

  constructor(
    message: string,
    /** The HTTP status; 0 when no answer came. */
    readonly status: number,
    /** The registry's error code (`NAME_UNKNOWN`, `DENIED`...), when it sent one. */
    readonly code: string | null = null,
  ) {
    super(message);
  }
}

/** The scope that lists repositories; the token endpoint grants it to every signed-in user. */
export const CATALOG_SCOPE = 'registry:catalog:*';

// distribution's repository name grammar (reference.NameRegexp without a domain), and its tag.
const COMPONENT = '[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*';
const NAME = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);
const TAG = /^\w[\w.-]{0,127}$/;

export function isRepositoryName(s: string): boolean {
  return s.length <= 255 && NAME.test(s);
}

export function isTag(s: string): boolean {
  return TAG.test(s);
}

/** Pull, and delete where the user holds it: the granted actions say which controls to show. */
export function repositoryScope(name: string): string {
  return `repository:${name}:pull,delete`;
}

export function parseChallenge(header: string | null): Challenge | null {
  const m = header === null ? null : /^\s*Bearer\s+(.*)$/i.exec(header);
  if (!m) {
    return null;
  }
  const params = new Map<string, string>();
  for (const p of m[1]!.matchAll(/([A-Za-z_]+)="([^"]*)"/g)) {
    params.set(p[1]!.toLowerCase(), p[2]!);
  }
  const realm = params.get('realm');
  return realm ? { realm, service: params.get('service') ?? '' } : null;
}

/** The `rel="next"` target of a `Link` header, if it is a path on /v2/ (no other host). */
export function parseNextLink(header: string | null): string | null {
  for (const part of (header ?? '').split(',')) {
    const m = /^\s*<([^>]*)>\s*;(.*)$/.exec(part);
    if (m && /(?:^|;)\s*rel="?next"?\s*(?:;|$)/.test(m[2]!)) {
      return m[1]!.startsWith('/v2/') ? m[1]! : null;
    }
  }
  return null;
}

/** The path of a realm URL (`https://host/token` or `/token`), without query or fragment. */
export function realmPath(realm: string): string {
  const m = /^(?:[a-z][a-z0-9+.-]*:\/\/[^/?#]*)?(\/[^?#]*)/i.exec(realm);
  return m ? m[1]! : '/token';
}

function base64UrlDecode(s: string): Uint8Array {
  const b64 = s.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((s.length + 3) % 4);
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

/** The actions a token grants on `type:name`. Read to choose what to show; the registry
 *  checks the token itself on every request. */
export function grantedActions(token: string, type: string, name: string): string[] {
  try {
    const claims: unknown = JSON.parse(new TextDecoder().decode(base64UrlDecode(token.split('.')[1] ?? '')));
    const access = (claims as { access?: unknown }).access;
    if (!Array.isArray(access)) {
      return [];
    }
    return access
      .filter((a): a is { actions: unknown[] } => a?.type === type && a?.name === name && Array.isArray(a?.actions))
      .flatMap((a) => a.actions.filter((x): x is string => typeof x === 'string'));
  } catch {
    return [];
  }
}

/** `Basic` credentials, UTF-8 encoded as nginx compares them. */
export function basicAuthorization(c: Credentials): string {
  const bytes = new TextEncoder().encode(`${c.user}:${c.password}`);
  return `Basic ${btoa(String.fromCharCode(...bytes))}`;
}

async function sha256(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const hash = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return `sha256:${Array.from(hash, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

/** The registry's own error message (`{"errors":[{"code","message"}]}`), or the status. */
async function errorOf(r: Response, what: string): Promise<RegistryError> {
  let code: string | null = null;
  let detail = `HTTP ${r.status}`;
  try {
    const body = (await r.json()) as { errors?: { code?: unknown; message?: unknown }[] };
    const first = body.errors?.[0];
    if (first && typeof first.code === 'string') {
      code = first.code;
      detail = typeof first.message === 'string' ? `${first.code}: ${first.message}` : first.code;
    }
  } catch {
    // Not JSON (an nginx error page): the status says enough.
  }
  if (code === 'NAME_UNKNOWN') {
    return new RegistryError(`${what}: no such repository.`, r.status, code);
  }
  if (code === 'MANIFEST_UNKNOWN') {
    return new RegistryError(`${what}: no such tag or manifest.`, r.status, code);
  }
  if (r.status === 401 || r.status === 403) {
    return new RegistryError(`${what}: not allowed for this user (${detail}).`, r.status, code);
  }
  if (r.status === 405 && code === 'UNSUPPORTED') {
    return new RegistryError(`${what}: this registry does not accept deletes.`, r.status, code);
  }
  return new RegistryError(`${what}: ${detail}.`, r.status, code);
}

interface Token {
  readonly value: string;
  readonly expires: number;
}

/** Refresh a little before expiry: a token that runs out in flight costs a retry. */
const TOKEN_MARGIN_SECONDS = 30;

/** Waits before each new try of a read that got no answer: about 5 s in all, what a laptop
 *  changing networks takes to have an address again. */
const RETRY_DELAYS_MS = [250, 1000, 4000];

/** Statuses whose answer has no body (a `Response` made with one would throw). */
const NULL_BODY_STATUS: readonly number[] = [101, 204, 205, 304];

export class Registry {
  private challenge: Challenge | null = null;
  private credentials: Credentials | null = null;
  // Promises, so that rows loading at once share one token request per scope.
  private readonly tokens = new Map<string, Promise<Token>>();

  constructor(
    private readonly fetchFn: Fetch,
    private readonly now: () => number = () => Date.now(),
    private readonly sleep: (ms: number) => Promise<void> = (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  ) {}

  /** Every request: no cookies and no HTTP authentication of the browser's own, so its
   *  password prompt never appears (the page sends its one Authorization header itself); no
   *  cache; no redirect (a blob redirected to object storage would leave this host). */
  private async send(path: string, method: string, headers: Record<string, string>): Promise<Response> {
    return (await this.sendTracked(path, method, headers)).response;
  }

  /** `send`, and whether an earlier try got no answer (it may have reached the registry). */
  private async sendTracked(path: string, method: string, headers: Record<string, string>): Promise<{ response: Response; retried: boolean }> {
    const init: RequestInit = {
      method,
      headers,
      credentials: 'omit',
      cache: 'no-store',
      redirect: 'error',
      referrerPolicy: 'no-referrer',
    };
    // A request that got no answer at all (the network changed under it: a laptop changing
    // Wi-Fi, a phone moving to mobile data) is tried three more times. GET and DELETE are
    // idempotent; a DELETE whose first try did reach the registry answers 404 the second
    // time, which `api` takes as done.
    const retries = method === 'GET' || method === 'DELETE' ? RETRY_DELAYS_MS : [];
    for (let attempt = 0; ; attempt++) {
      try {
        const response = await this.fetchFn(path, init);
        if (retries.length === 0) {
          return { response, retried: attempt > 0 };
        }
        // The body within the same try: a network change can also cut an answer off after
        // its headers (the body's read then fails with "Failed to fetch", seen in a test).
        const body = NULL_BODY_STATUS.includes(response.status) ? null : await response.arrayBuffer();
        const whole = new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers });
        return { response: whole, retried: attempt > 0 };
      } catch (e) {
        const delay = retries[attempt];
        if (delay === undefined) {
          throw new RegistryError(`The registry did not answer (${e instanceof Error ? e.message : String(e)}).`, 0);
        }
        await this.sleep(delay);
      }
    }
  }

  /** The signed-in user; null when browsing anonymously or signed out. */
  get user(): string | null {
    return this.credentials?.user ?? null;
  }

  /** The registry's name (the token service), which `docker pull` needs. */
  get service(): string {
    return this.challenge?.service ?? '';
  }

  /** Reads the Bearer challenge of `/v2/`: where tokens come from, and for which service. */
  async discover(): Promise<Challenge> {
    const r = await this.send('/v2/', 'GET', {});
    const c = r.status === 401 ? parseChallenge(r.headers.get('WWW-Authenticate')) : null;
    if (c === null) {
      throw new RegistryError(`/v2/ answered ${r.status} without a Bearer challenge: this page needs token authentication.`, r.status);
    }
    this.challenge = c;
    return c;
  }

  /** The token endpoint on this host: the realm's path (the page's CSP allows no other host). */
  private tokenPath(scope: string | null): string {
    if (this.challenge === null) {
      throw new RegistryError('The registry was not asked for its token endpoint yet.', 0);
    }
    const query = new URLSearchParams({ service: this.challenge.service });
    if (scope !== null) {
      query.append('scope', scope);
    }
    return `${realmPath(this.challenge.realm)}?${query.toString()}`;
  }

  private async requestToken(scope: string | null, credentials: Credentials | null): Promise<Token> {
    const headers: Record<string, string> = credentials ? { Authorization: basicAuthorization(credentials) } : {};
    const r = await this.send(this.tokenPath(scope), 'GET', headers);
    if (r.status === 401) {
      throw new RegistryError(credentials ? 'Wrong user name or password.' : 'Sign in to see this registry.', 401);
    }
    if (r.status === 429) {
      throw new RegistryError('Too many sign-in attempts from this address: wait a few seconds, then try again.', 429);
    }
    if (!r.ok) {
      throw new RegistryError(`The token endpoint answered HTTP ${r.status}.`, r.status);
    }
    const body = (await r.json()) as { token?: unknown; access_token?: unknown; expires_in?: unknown };
    const value = typeof body.token === 'string' ? body.token : body.access_token;
    if (typeof value !== 'string' || value.length === 0) {
      throw new RegistryError('The token endpoint answered without a token.', r.status);
    }
    // The distribution spec's default lifetime is 60 s when none is given.
    const seconds = typeof body.expires_in === 'number' ? body.expires_in : 60;
    return { value, expires: this.now() + Math.max(0, seconds - TOKEN_MARGIN_SECONDS) * 1000 };
  }

  /** A token for `scope`, as the signed-in user or anonymously; cached until near expiry. */
  async token(scope: string): Promise<string> {
    const cached = this.tokens.get(scope);
    if (cached) {
      const t = await cached.catch(() => null);
      if (t !== null && t.expires > this.now()) {
        return t.value;
      }
      // Expired or failed: ask again, unless another caller already has.
      if (this.tokens.get(scope) === cached) {
        this.tokens.delete(scope);
      }
      return this.token(scope);
    }
    const pending = this.requestToken(scope, this.credentials);
    this.tokens.set(scope, pending);
    return (await pending).value;
  }

  /** Checks `c` against the token endpoint (one password check) and keeps them in memory
   *  only, for the tokens to come: nothing is written to any storage of the browser. */
  async signIn(c: Credentials): Promise<void> {
    const token = await this.requestToken(CATALOG_SCOPE, c);
    this.credentials = c;
    this.tokens.clear();
    this.tokens.set(CATALOG_SCOPE, Promise.resolve(token));
  }

  signOut(): void {
    this.credentials = null;
    this.tokens.clear();
  }

  /** Whether the token endpoint answers a visitor without credentials (`anonymous_pull`). */
  async anonymousAllowed(): Promise<boolean> {
    const r = await this.send(this.tokenPath(null), 'GET', {});
    return r.ok;
  }

  /** A request to /v2/ with a token for `scope`; a 401 gets one fresh token and a retry. */
  private async api(scope: string, path: string, what: string, method = 'GET', accept?: string): Promise<Response> {
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = { Authorization: `Bearer ${await this.token(scope)}` };
      if (accept !== undefined) {
        headers['Accept'] = accept;
      }
      const { response: r, retried } = await this.sendTracked(path, method, headers);
      if (r.status === 401 && attempt === 0) {
        this.tokens.delete(scope);
        continue;
      }
      if (method === 'DELETE' && retried && r.status === 404) {
        // The try that lost its answer deleted it.
        return r;
      }
      if (!r.ok) {
        throw await errorOf(r, what);
      }
      return r;
    }
  }

  /** One page of repository names (the registry's order); `next` from the previous page. */
  async catalog(next: string | null, n = 100): Promise<Page<string>> {
    const r = await this.api(CATALOG_SCOPE, next ?? `/v2/_catalog?n=${n}`, 'Listing repositories');
    const body = (await r.json()) as { repositories?: unknown };
    const items = Array.isArray(body.repositories) ? body.repositories.filter((x): x is string => typeof x === 'string') : [];
    return { items, next: parseNextLink(r.headers.get('Link')) };
  }

  /** One page of `name`'s tags (distribution 2.8 sends them all at once; 3.x pages). */
  async tags(name: string, next: string | null): Promise<Page<string>> {
    const r = await this.api(repositoryScope(name), next ?? `/v2/${name}/tags/list`, `Listing the tags of ${name}`);
    const body = (await r.json()) as { tags?: unknown };
    // A repository whose tags were all deleted answers `"tags": null`.
    const items = Array.isArray(body.tags) ? body.tags.filter((x): x is string => typeof x === 'string' && isTag(x)) : [];
    return { items, next: parseNextLink(r.headers.get('Link')) };
  }

  /** The manifest `reference` (a tag or a digest) points to, checked against its digest. */
  async manifest(name: string, reference: string): Promise<Manifest> {
    const what = `Reading ${name}:${reference}`;
    const r = await this.api(repositoryScope(name), `/v2/${name}/manifests/${reference}`, what, 'GET', MANIFEST_ACCEPT);
    const bytes = new Uint8Array(await r.arrayBuffer());
    const computed = await sha256(bytes);
    const header = r.headers.get('Docker-Content-Digest');
    if (header !== null && header.startsWith('sha256:') && header !== computed) {
      throw new RegistryError(`${what}: the manifest does not match its digest ${header}.`, r.status);
    }
    let json: unknown;
    try {
      json = JSON.parse(new TextDecoder().decode(bytes));
    } catch {
      json = null;
    }
    return { digest: header ?? computed, contentType: r.headers.get('Content-Type'), json };
  }

  /** An image config blob (small JSON): architecture and creation time. */
  async config(name: string, digest: string, size: number): Promise<unknown> {
    if (size > MAX_CONFIG_BYTES) {
      return null;
    }
    const r = await this.api(repositoryScope(name), `/v2/${name}/blobs/${digest}`, `Reading the config of ${name}`);
    return r.json();
  }

  /** Whether the signed-in user's token for `name` holds `delete` (push users). */
  async canDelete(name: string): Promise<boolean> {
    return grantedActions(await this.token(repositoryScope(name)), 'repository', name).includes('delete');
  }

  /** Deletes the manifest `digest` of `name`, and with it every tag that points to it. */
  async deleteManifest(name: string, digest: string): Promise<void> {
    await this.api(repositoryScope(name), `/v2/${name}/manifests/${digest}`, `Deleting ${name}@${digest}`, 'DELETE');
  }
}
