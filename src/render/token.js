// Managed by terraform-provider-docker: hand edits are undone by the next apply.
// The registry's token endpoint (nginx njs): turns a password, checked once by nginx's
// auth_basic in front of this handler, into a short-lived ES256 JWT that the registry verifies
// on every request with its public key (distribution's `auth: token`).
//
// nginx sets, per request: $remote_user (auth_basic; empty for an anonymous request, which
// nginx lets through only when anonymous pull is on), $registry_token_issuer,
// $registry_token_service, $registry_token_kid, $registry_token_anonymous_pull ("on"/"off"),
// $registry_token_key (path of the PKCS#8 signing key), $registry_token_push_users (path of
// the push users' htpasswd). Files are read per request, so user and access changes apply
// without a reload; nothing is cached between requests.

import fs from 'fs';

// Docker Hub's lifetime. A removed user or a revoked push right keeps working for at most
// this long; docker asks for a new token when it expires (it never asks for less than 60 s).
const TOKEN_SECONDS = 300;

// distribution's repository name grammar (reference.NameRegexp without a domain).
const COMPONENT = '[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*';
const NAME = new RegExp('^' + COMPONENT + '(?:/' + COMPONENT + ')*$');

function pushUsers(path) {
    const names = {};
    const text = fs.readFileSync(path, 'utf8');
    text.split('\n').forEach(function (line) {
        const colon = line.indexOf(':');
        if (colon > 0) {
            names[line.slice(0, colon)] = true;
        }
    });
    return names;
}

// `scope` may be repeated, and one value may hold several scopes separated by spaces.
function requestedScopes(r) {
    let raw = r.args.scope;
    if (raw === undefined) {
        return [];
    }
    if (!Array.isArray(raw)) {
        raw = [raw];
    }
    const out = [];
    raw.forEach(function (value) {
        String(value).split(' ').forEach(function (s) {
            if (s.length > 0) {
                out.push(s);
            }
        });
    });
    return out;
}

// What `who` may do on one requested scope: the requested actions it holds, or null.
function grant(scope, who) {
    const first = scope.indexOf(':');
    const last = scope.lastIndexOf(':');
    if (first <= 0 || last === first) {
        return null;
    }
    const type = scope.slice(0, first);
    const name = scope.slice(first + 1, last);
    const wanted = scope.slice(last + 1).split(',');
    if (type === 'registry' && name === 'catalog') {
        // Listing every repository name: users only, never anonymous clients.
        if (who.user !== '' && wanted.indexOf('*') >= 0) {
            return { type: 'registry', name: 'catalog', actions: ['*'] };
        }
        return null;
    }
    if (type !== 'repository' || !NAME.test(name) || name.length > 255) {
        return null;
    }
    const held = who.push ? ['pull', 'push', 'delete'] : ['pull'];
    const actions = held.filter(function (a) {
        return wanted.indexOf(a) >= 0 || wanted.indexOf('*') >= 0;
    });
    if (actions.length === 0) {
        return null;
    }
    return { type: 'repository', name: name, actions: actions };
}

function b64url(bytes) {
    return Buffer.from(bytes).toString('base64url');
}

// WebCrypto returns ECDSA signatures as r||s (IEEE P1363), which is what JWS ES256 wants;
// a DER signature (SEQUENCE of two INTEGERs) is converted, should an njs build return one.
function joseSignature(sig) {
    const b = Buffer.from(sig);
    if (b.length === 64 || b[0] !== 0x30) {
        return b;
    }
    let i = b[1] & 0x80 ? 2 + (b[1] & 0x7f) : 2;
    const ints = [];
    for (let n = 0; n < 2; n++) {
        const len = b[i + 1];
        let v = b.slice(i + 2, i + 2 + len);
        while (v.length > 32 && v[0] === 0) {
            v = v.slice(1);
        }
        const padded = Buffer.alloc(32);
        v.copy(padded, 32 - v.length);
        ints.push(padded);
        i += 2 + len;
    }
    return Buffer.concat(ints);
}

async function signingKey(path) {
    const pem = fs.readFileSync(path, 'utf8');
    const body = pem.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, '');
    return crypto.subtle.importKey('pkcs8', Buffer.from(body, 'base64'),
        { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
}

// A JWT for `user` holding `access`, valid TOKEN_SECONDS from `now`.
async function sign(v, user, access, now) {
    const header = { typ: 'JWT', alg: 'ES256', kid: v.registry_token_kid };
    const claims = {
        iss: v.registry_token_issuer,
        sub: user,
        aud: v.registry_token_service,
        exp: now + TOKEN_SECONDS,
        nbf: now - 10,
        iat: now,
        jti: b64url(crypto.getRandomValues(new Uint8Array(16))),
        access: access,
    };
    const input = b64url(JSON.stringify(header)) + '.' + b64url(JSON.stringify(claims));
    const key = await signingKey(v.registry_token_key);
    const sig = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, key,
        Buffer.from(input));
    return input + '.' + b64url(joseSignature(sig));
}

async function token(r) {
    try {
        const v = r.variables;
        // containerd (and so buildkit and kubelets) first tries OAuth2's POST with the password
        // in the body, which auth_basic cannot check; 405 makes it fall back to GET with Basic
        // credentials. Answering the POST with an anonymous token would leave it unable to push.
        if (r.method !== 'GET' && r.method !== 'HEAD') {
            r.headersOut['Allow'] = 'GET';
            r.return(405, '');
            return;
        }
        // A token for another service would be refused by the registry anyway; say so here.
        if (r.args.service !== undefined && r.args.service !== v.registry_token_service) {
            r.return(400, '{"details":"unknown service"}\n');
            return;
        }
        const user = v.remote_user || '';
        if (user === '' && v.registry_token_anonymous_pull !== 'on') {
            // auth_basic already refuses this; kept so a config mistake cannot mint tokens.
            r.return(401, '');
            return;
        }
        const push = user !== '' && pushUsers(v.registry_token_push_users)[user] === true;
        const who = { user: user, push: push };
        const access = [];
        requestedScopes(r).forEach(function (s) {
            const g = grant(s, who);
            if (g !== null) {
                access.push(g);
            }
        });
        const now = Math.floor(Date.now() / 1000);
        const jwt = await sign(v, user, access, now);
        r.headersOut['Content-Type'] = 'application/json';
        r.headersOut['Cache-Control'] = 'no-store';
        r.return(200, JSON.stringify({
            token: jwt,
            access_token: jwt,
            expires_in: TOKEN_SECONDS,
            issued_at: new Date(now * 1000).toISOString(),
        }) + '\n');
    } catch (e) {
        // The message names a file or a parse step, never a credential.
        r.error('registry token: ' + e.message);
        r.return(500, '');
    }
}

// `GET /v2/_catalog` with a password (a browser, `curl -u`), which auth_basic checked: the
// registry's listing, fetched by a subrequest with a token that holds the catalog scope only
// (the grant every user has), so what a user sees is what their token would show.
async function catalog(r) {
    try {
        const v = r.variables;
        const user = v.remote_user || '';
        if (r.method !== 'GET' && r.method !== 'HEAD') {
            r.headersOut['Allow'] = 'GET, HEAD';
            r.return(405, '');
            return;
        }
        const g = grant('registry:catalog:*', { user: user, push: false });
        if (g === null) {
            // auth_basic already refuses a request without a user.
            r.return(401, '');
            return;
        }
        const jwt = await sign(v, user, [g], Math.floor(Date.now() / 1000));
        v.registry_catalog_bearer = 'Bearer ' + jwt;
        const reply = await r.subrequest('/_registry/catalog-upstream',
            { method: 'GET', args: v.args || '' });
        ['Content-Type', 'Link'].forEach(function (h) {
            const value = reply.headersOut[h];
            if (value !== undefined) {
                r.headersOut[h] = value;
            }
        });
        r.headersOut['Cache-Control'] = 'no-store';
        r.return(reply.status, reply.responseText || '');
    } catch (e) {
        r.error('registry catalog: ' + e.message);
        r.return(502, '');
    }
}

export default { token, catalog };
