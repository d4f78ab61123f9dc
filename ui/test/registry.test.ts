import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import {
  basicAuthorization,
  grantedActions,
  isRepositoryName,
  parseChallenge,
  parseNextLink,
  realmPath,
  Registry,
  RegistryError,
} from '../src/registry';

const SERVICE = 'registry.example.com';
const CHALLENGE = `Bearer realm="https://${SERVICE}/token",service="${SERVICE}"`;
const PASSWORD = 'correct horse battery';

interface Call {
  readonly path: string;
  readonly init: RequestInit;
  readonly headers: Record<string, string>;
}

function b64url(s: string): string {
  return Buffer.from(s).toString('base64url');
}

/** A token shaped like the njs endpoint's: the grants are in `access`. */
function jwt(access: { type: string; name: string; actions: string[] }[], n: number): string {
  return `${b64url('{"alg":"ES256"}')}.${b64url(JSON.stringify({ access, jti: n }))}.sig`;
}

/** A registry behind a token endpoint, as nginx and distribution answer; records each call. */
function fakeRegistry(opts: { push?: boolean; anonymous?: boolean } = {}) {
  const calls: Call[] = [];
  const issued: string[] = [];
  const revoked = new Set<string>();
  const manifests = new Map<string, string>();
  const routes: ((path: string, method: string, headers: Record<string, string>) => Response | null)[] = [];
  const fetchFn = async (path: string, init: RequestInit): Promise<Response> => {
    const headers = { ...(init.headers as Record<string, string>) };
    calls.push({ path, init, headers });
    const method = init.method ?? 'GET';
    if (path === '/v2/') {
      return new Response('{"errors":[{"code":"UNAUTHORIZED"}]}', { status: 401, headers: { 'WWW-Authenticate': CHALLENGE } });
    }
    if (path.startsWith('/token?')) {
      const auth = headers['Authorization'];
      const user = auth === basicAuthorization({ user: 'admin', password: PASSWORD }) ? 'admin' : null;
      if (auth !== undefined && user === null) {
        return new Response('', { status: 401, headers: { 'WWW-Authenticate': 'Basic realm="Registry"' } });
      }
      if (user === null && !opts.anonymous) {
        return new Response('', { status: 401, headers: { 'WWW-Authenticate': 'Basic realm="Registry"' } });
      }
      const q = new URLSearchParams(path.slice('/token?'.length));
      assert.equal(q.get('service'), SERVICE);
      const access = q.getAll('scope').flatMap((scope) => {
        const [type, name, actions] = [scope.split(':')[0]!, scope.split(':').slice(1, -1).join(':'), scope.split(':').at(-1)!];
        if (type === 'registry') {
          return user ? [{ type, name, actions: ['*'] }] : [];
        }
        const held = user && opts.push ? ['pull', 'push', 'delete'] : ['pull'];
        return [{ type, name, actions: held.filter((a) => actions.split(',').includes(a)) }];
      });
      const token = jwt(access, issued.length);
      issued.push(token);
      return Response.json({ token, expires_in: 300 });
    }
    const bearer = headers['Authorization']?.replace(/^Bearer /, '');
    if (bearer === undefined || !issued.includes(bearer) || revoked.has(bearer)) {
      return new Response('{"errors":[{"code":"UNAUTHORIZED"}]}', { status: 401, headers: { 'WWW-Authenticate': CHALLENGE } });
    }
    for (const r of routes) {
      const res = r(path, method, headers);
      if (res !== null) {
        return res;
      }
    }
    const m = /^\/v2\/(.+)\/manifests\/(.+)$/.exec(path);
    if (m && manifests.has(m[2]!)) {
      const body = manifests.get(m[2]!)!;
      const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
      return new Response(body, { headers: { 'Docker-Content-Digest': digest, 'Content-Type': JSON.parse(body).mediaType } });
    }
    return new Response('{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}', { status: 404 });
  };
  return { calls, issued, revoked, manifests, routes, fetchFn };
}

async function signedIn(opts: { push?: boolean } = {}) {
  const f = fakeRegistry(opts);
  const r = new Registry(f.fetchFn);
  await r.discover();
  await r.signIn({ user: 'admin', password: PASSWORD });
  return { f, r };
}

test('parsing the challenge, the Link header and names', () => {
  assert.deepEqual(parseChallenge(CHALLENGE), { realm: `https://${SERVICE}/token`, service: SERVICE });
  assert.deepEqual(parseChallenge('Bearer realm="/token",service="x",scope="repository:a:pull",error="insufficient_scope"'), {
    realm: '/token',
    service: 'x',
  });
  assert.equal(parseChallenge('Basic realm="Registry"'), null);
  assert.equal(parseChallenge(null), null);
  assert.equal(parseNextLink('</v2/_catalog?last=b&n=2>; rel="next"'), '/v2/_catalog?last=b&n=2');
  assert.equal(parseNextLink('<https://elsewhere.example/v2/_catalog?last=b>; rel="next"'), null);
  assert.equal(parseNextLink('</v2/_catalog?last=b>; rel="prev"'), null);
  assert.equal(parseNextLink(null), null);
  assert.equal(realmPath(`https://${SERVICE}/token`), '/token');
  assert.equal(realmPath('https://other.example:5001/auth/token?x=1'), '/auth/token');
  assert.equal(realmPath('/token'), '/token');
  assert.ok(isRepositoryName('team/api') && isRepositoryName('a.b_c-d/e__f'));
  for (const bad of ['', 'Team/api', '../etc', 'a//b', 'a/', '-a', 'a:b', 'a?b']) {
    assert.ok(!isRepositoryName(bad), bad);
  }
});

test('signing in sends the password once, to the token endpoint only, and every request omits browser credentials', async () => {
  const { f, r } = await signedIn();
  f.routes.push((path) => (path.startsWith('/v2/_catalog') ? Response.json({ repositories: ['team/api'] }) : null));
  assert.deepEqual((await r.catalog(null)).items, ['team/api']);
  await r.manifest('team/api', '1.0').catch(() => null);
  const basic = f.calls.filter((c) => c.headers['Authorization']?.startsWith('Basic '));
  assert.equal(basic.length, 2, 'one token at sign-in, one for the repository');
  for (const c of basic) {
    assert.ok(c.path.startsWith('/token?'), c.path);
  }
  for (const c of f.calls) {
    // `omit` keeps the browser's own authentication (and its password prompt) out.
    assert.equal(c.init.credentials, 'omit', c.path);
    assert.equal(c.init.redirect, 'error', c.path);
    assert.equal(c.init.cache, 'no-store', c.path);
    assert.ok(c.path.startsWith('/'), `${c.path} leaves this host`);
  }
  const v2 = f.calls.filter((c) => c.path.startsWith('/v2/_catalog'));
  assert.match(v2[0]!.headers['Authorization']!, /^Bearer /);
  assert.equal(r.user, 'admin');
  assert.equal(r.service, SERVICE);
});

test('a wrong password is an error that names it, and nothing is kept', async () => {
  const f = fakeRegistry();
  const r = new Registry(f.fetchFn);
  await r.discover();
  await assert.rejects(r.signIn({ user: 'admin', password: 'wrong password' }), (e: unknown) => {
    assert.ok(e instanceof RegistryError);
    assert.equal(e.status, 401);
    assert.equal(e.message, 'Wrong user name or password.');
    return true;
  });
  assert.equal(r.user, null);
  // Without a sign-in and without anonymous pull, the catalog needs one.
  await assert.rejects(r.catalog(null), /Sign in/);
});

test('anonymous pull is detected from the token endpoint, and anonymous tokens carry no credentials', async () => {
  for (const anonymous of [false, true]) {
    const f = fakeRegistry({ anonymous });
    const r = new Registry(f.fetchFn);
    await r.discover();
    assert.equal(await r.anonymousAllowed(), anonymous);
    assert.ok(f.calls.every((c) => c.headers['Authorization'] === undefined));
  }
  const f = fakeRegistry({ anonymous: true });
  f.manifests.set('1.0', JSON.stringify({ mediaType: 'application/vnd.oci.image.manifest.v1+json', config: {}, layers: [] }));
  const r = new Registry(f.fetchFn);
  await r.discover();
  assert.ok((await r.manifest('team/api', '1.0')).digest.startsWith('sha256:'));
  assert.equal(await r.canDelete('team/api'), false);
});

test('the token path is the realm path on this host, with service and scope', async () => {
  const f = fakeRegistry();
  const r = new Registry(f.fetchFn);
  await r.discover();
  await r.signIn({ user: 'admin', password: PASSWORD });
  assert.equal(f.calls[1]!.path, `/token?service=${SERVICE}&scope=registry%3Acatalog%3A*`);
});

test('rows loading at once share one token; an expired token is renewed', async () => {
  let now = 1_000_000;
  const f = fakeRegistry({ push: true });
  const r = new Registry(f.fetchFn, () => now);
  await r.discover();
  await r.signIn({ user: 'admin', password: PASSWORD });
  f.manifests.set('a', JSON.stringify({ mediaType: 'application/vnd.oci.image.manifest.v1+json', config: {}, layers: [] }));
  const before = f.issued.length;
  await Promise.all([r.manifest('team/api', 'a'), r.manifest('team/api', 'a'), r.manifest('team/api', 'a')]);
  assert.equal(f.issued.length, before + 1);
  now += 200_000;
  await r.manifest('team/api', 'a');
  assert.equal(f.issued.length, before + 1, 'still valid after 200 s');
  now += 80_000;
  await r.manifest('team/api', 'a');
  assert.equal(f.issued.length, before + 2, 'renewed 30 s before its 300 s ran out');
});

test('a token the registry refuses is replaced once, then the error shows', async () => {
  const { f, r } = await signedIn();
  await r.catalog(null).catch(() => null);
  for (const t of f.issued) {
    f.revoked.add(t);
  }
  f.routes.push((path) => (path.startsWith('/v2/_catalog') ? Response.json({ repositories: ['a'] }) : null));
  assert.deepEqual((await r.catalog(null)).items, ['a']);
  // Every token refused: one retry, then a clear error rather than a loop.
  f.routes.length = 0;
  f.routes.push((path, _m, headers) => {
    f.revoked.add(headers['Authorization']!.replace(/^Bearer /, ''));
    return path.startsWith('/v2/_catalog') ? new Response('{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}', { status: 401 }) : null;
  });
  const before = f.calls.length;
  await assert.rejects(r.catalog(null), /not allowed/);
  assert.ok(f.calls.length - before <= 4, `${f.calls.length - before} requests`);
});

test('the catalog is read page by page along the Link header', async () => {
  const { f, r } = await signedIn();
  f.routes.push((path) => {
    if (path === '/v2/_catalog?n=100') {
      return Response.json({ repositories: ['a', 'b'] }, { headers: { Link: '</v2/_catalog?last=b&n=100>; rel="next"' } });
    }
    if (path === '/v2/_catalog?last=b&n=100') {
      return Response.json({ repositories: ['c'] });
    }
    return null;
  });
  const first = await r.catalog(null);
  assert.deepEqual(first, { items: ['a', 'b'], next: '/v2/_catalog?last=b&n=100' });
  assert.deepEqual(await r.catalog(first.next), { items: ['c'], next: null });
});

test('tags: null after every tag was deleted, and names that are not tags are dropped', async () => {
  const { f, r } = await signedIn();
  f.routes.push((path) => (path === '/v2/gone/tags/list' ? Response.json({ name: 'gone', tags: null }) : null));
  f.routes.push((path) => (path === '/v2/team/api/tags/list' ? Response.json({ name: 'team/api', tags: ['1.0', 'latest', '../x'] }) : null));
  assert.deepEqual((await r.tags('gone', null)).items, []);
  assert.deepEqual((await r.tags('team/api', null)).items, ['1.0', 'latest']);
  await assert.rejects(r.tags('nothing', null), (e: unknown) => e instanceof RegistryError && e.code === 'NAME_UNKNOWN' && /no such repository/.test(e.message));
});

test('a manifest must match the digest the registry names', async () => {
  const { f, r } = await signedIn();
  const body = JSON.stringify({ mediaType: 'application/vnd.oci.image.manifest.v1+json', config: {}, layers: [] });
  f.routes.push((path) =>
    path.endsWith('/manifests/bad') ? new Response(body, { headers: { 'Docker-Content-Digest': `sha256:${'0'.repeat(64)}` } }) : null,
  );
  await assert.rejects(r.manifest('team/api', 'bad'), /does not match its digest/);
  f.manifests.set('good', body);
  const m = await r.manifest('team/api', 'good');
  assert.equal(m.digest, `sha256:${createHash('sha256').update(body).digest('hex')}`);
  assert.ok(f.calls.at(-1)!.headers['Accept']!.includes('application/vnd.oci.image.index.v1+json'));
});

test('delete: shown to push users only, sent as DELETE of the manifest by digest', async () => {
  const pull = await signedIn({ push: false });
  assert.equal(await pull.r.canDelete('team/api'), false);
  const push = await signedIn({ push: true });
  assert.equal(await push.r.canDelete('team/api'), true);
  const digest = `sha256:${'a'.repeat(64)}`;
  push.f.routes.push((path, method) => (method === 'DELETE' && path === `/v2/team/api/manifests/${digest}` ? new Response(null, { status: 202 }) : null));
  await push.r.deleteManifest('team/api', digest);
  const del = push.f.calls.at(-1)!;
  assert.equal(del.init.method, 'DELETE');
  assert.match(del.headers['Authorization']!, /^Bearer /);
  // A registry without deletes says so.
  push.f.routes.length = 0;
  push.f.routes.push((_p, method) =>
    method === 'DELETE' ? new Response('{"errors":[{"code":"UNSUPPORTED","message":"The operation is unsupported."}]}', { status: 405 }) : null,
  );
  await assert.rejects(push.r.deleteManifest('team/api', digest), /does not accept deletes/);
});

test('granted actions are read from the token claims, and junk grants nothing', () => {
  const t = jwt([{ type: 'repository', name: 'a', actions: ['pull', 'delete'] }], 0);
  assert.deepEqual(grantedActions(t, 'repository', 'a'), ['pull', 'delete']);
  assert.deepEqual(grantedActions(t, 'repository', 'b'), []);
  assert.deepEqual(grantedActions('not.a.jwt', 'repository', 'a'), []);
  assert.deepEqual(grantedActions('', 'repository', 'a'), []);
});

test('credentials are UTF-8 in Basic, as nginx compares bytes', () => {
  assert.equal(basicAuthorization({ user: 'zoë', password: 'pässword' }), `Basic ${Buffer.from('zoë:pässword', 'utf8').toString('base64')}`);
});

test('no answer at all is a RegistryError with status 0, after three more tries of a read', async () => {
  let tries = 0;
  const waits: number[] = [];
  const r = new Registry(
    async () => {
      tries++;
      throw new TypeError('Failed to fetch');
    },
    Date.now,
    async (ms) => {
      waits.push(ms);
    },
  );
  await assert.rejects(r.discover(), (e: unknown) => e instanceof RegistryError && e.status === 0 && /did not answer/.test(e.message));
  assert.equal(tries, 4);
  assert.deepEqual(waits, [250, 1000, 4000]);
});

test('an answer cut off after its headers is tried again, body and all', async () => {
  const f = fakeRegistry({ push: true });
  let cut = 0;
  const cutting = async (path: string, init: RequestInit): Promise<Response> => {
    const r = await f.fetchFn(path, init);
    if (path.startsWith('/token') && cut++ === 0) {
      // Headers arrive; the body's stream then fails, as when the network changes under it.
      const body = new ReadableStream<Uint8Array>({
        pull(controller) {
          controller.error(new TypeError('Failed to fetch'));
        },
      });
      return new Response(body, { status: r.status, headers: r.headers });
    }
    return r;
  };
  const r = new Registry(cutting, Date.now, async () => {});
  await r.discover();
  await r.signIn({ user: 'admin', password: PASSWORD });
  assert.equal(r.user, 'admin');
  assert.equal(cut, 2);
});

test('a request that loses its answer is tried again; a DELETE that did reach the registry is done', async () => {
  const f = fakeRegistry({ push: true });
  let failures = 0;
  const flaky = async (path: string, init: RequestInit): Promise<Response> => {
    // Every request fails once, as when the network changes under it.
    if (failures++ % 2 === 0) {
      throw new TypeError('net::ERR_NETWORK_CHANGED');
    }
    return f.fetchFn(path, init);
  };
  const r2 = new Registry(flaky, Date.now, async () => {});
  await r2.discover();
  await r2.signIn({ user: 'admin', password: PASSWORD });
  f.routes.push((path) => (path.startsWith('/v2/_catalog') ? Response.json({ repositories: ['a'] }) : null));
  assert.deepEqual((await r2.catalog(null)).items, ['a']);
  const digest = `sha256:${'b'.repeat(64)}`;
  let deletes = 0;
  f.routes.push((_p, method) => (method === 'DELETE' ? (deletes++, new Response(null, { status: 202 })) : null));
  failures = 0;
  // The token request succeeds on its retry; the DELETE's first try gets no answer, the
  // second deletes.
  await r2.canDelete('team/api');
  failures = 0;
  await r2.deleteManifest('team/api', digest);
  assert.equal(deletes, 1);
  // A first try that deleted but lost its answer: the retry's 404 means done.
  let reached = 0;
  const lost = async (path: string, init: RequestInit): Promise<Response> => {
    if (init.method === 'DELETE' && reached++ === 0) {
      throw new TypeError('net::ERR_NETWORK_CHANGED');
    }
    if (init.method === 'DELETE') {
      return Response.json({ errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown' }] }, { status: 404 });
    }
    return f.fetchFn(path, init);
  };
  const r3 = new Registry(lost, Date.now, async () => {});
  await r3.discover();
  await r3.signIn({ user: 'admin', password: PASSWORD });
  await r3.deleteManifest('team/api', digest);
  assert.equal(reached, 2);
  // A DELETE answered 404 at its first try is an error, as before.
  await assert.rejects(r3.deleteManifest('team/api', digest), /no such tag or manifest/);
});
