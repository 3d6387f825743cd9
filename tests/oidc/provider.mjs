// A real OpenID provider (panva's certified oidc-provider) for Keysmith's
// SSO tests. Started by tests/integration/oidc.rs with:
//   OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_REDIRECT_URI  the one client
//   OIDC_ACCOUNTS  a JSON file { "<email>": { "email_verified": bool, "groups": [...] } },
//                  read at every sign-in so a test can change someone's claims
// It listens on 127.0.0.1 on a free port and prints "issuer <url>" once ready.
// The login page is a tiny interaction of our own: type the account's email
// (or "deny" to refuse), and the provider signs that account in.
import http from 'node:http';
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const env = (name) => {
  const v = process.env[name];
  if (!v) { console.error(`provider.mjs: ${name} is required`); process.exit(2); }
  return v;
};
const clientId = env('OIDC_CLIENT_ID');
const clientSecret = env('OIDC_CLIENT_SECRET');
const redirectUri = env('OIDC_REDIRECT_URI');
const accountsFile = env('OIDC_ACCOUNTS');
const accounts = () => JSON.parse(readFileSync(accountsFile, 'utf8'));

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: [redirectUri],
    response_types: ['code'],
    grant_types: ['authorization_code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  pkce: { required: () => true },
  // "tamper": "expired": an ID token that lives one second (and the token
  // response is held back two, below), so it has expired when it arrives.
  ttl: {
    IdToken(ctx, token) {
      const sub = token?.available?.sub;
      return sub && accounts()[sub]?.tamper === 'expired' ? 1 : 3600;
    },
  },
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  // Put the scopes' claims in the ID token (Keysmith reads only the ID token).
  conformIdTokenClaims: false,
  cookies: { keys: ['keysmith-tests-only-not-a-secret'] },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, sub) {
    const account = accounts()[sub];
    if (!account) return undefined;
    return {
      accountId: sub,
      async claims() {
        const out = { sub, email: sub, name: sub.split('@')[0], email_verified: account.email_verified ?? true };
        if (account.email === null) delete out.email;
        if (account.groups) out.groups = account.groups;
        return out;
      },
    };
  },
});

const readBody = (req) => new Promise((resolve, reject) => {
  let data = '';
  req.on('data', (c) => { data += c; });
  req.on('end', () => resolve(new URLSearchParams(data)));
  req.on('error', reject);
});

provider.use(async (ctx, next) => {
  const m = ctx.path.match(/^\/interaction\/([A-Za-z0-9_-]+)$/);
  if (!m) return next();
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  if (ctx.method === 'GET') {
    ctx.type = 'html';
    ctx.body = `<!doctype html><html lang="en"><head><title>Test provider: sign in</title></head><body>
<h1>Test provider</h1>
<form method="post" action="/interaction/${details.uid}">
<label for="login">Account email</label> <input id="login" name="login" autofocus>
<button id="provider-continue" type="submit">Continue</button>
</form></body></html>`;
    return;
  }
  if (ctx.method !== 'POST') return next();
  const login = (await readBody(ctx.req)).get('login') || '';
  let result;
  if (login === 'deny') {
    result = { error: 'access_denied', error_description: 'The person declined to sign in' };
  } else {
    const grant = new provider.Grant({ accountId: login, clientId: details.params.client_id });
    grant.addOIDCScope(details.params.scope);
    result = { login: { accountId: login }, consent: { grantId: await grant.save() } };
  }
  const to = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
  ctx.status = 303;
  ctx.redirect(to);
});

// Test knobs: an account with "tamper": "nonce" gets an ID token whose
// nonce is not the one the client sent (a replayed or swapped token), which
// a correct client must refuse.
const setClaim = provider.IdToken.prototype.set;
provider.IdToken.prototype.set = function set(key, value) {
  const sub = this.available && this.available.sub;
  if (key === 'nonce' && sub && accounts()[sub]?.tamper === 'nonce') {
    return setClaim.call(this, key, 'a-nonce-keysmith-never-sent');
  }
  return setClaim.call(this, key, value);
};

// "tamper": "audience": the ID token is made out to another client.
const issue = provider.IdToken.prototype.issue;
provider.IdToken.prototype.issue = function issueTampered(options) {
  const sub = this.available && this.available.sub;
  if (options?.use === 'idtoken' && sub && accounts()[sub]?.tamper === 'audience') {
    const real = this.client;
    this.client = new Proxy(real, {
      get(target, prop) {
        if (prop === 'clientId') return 'another-client';
        const v = Reflect.get(target, prop, target);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
  }
  return issue.call(this, options);
};

// "tamper": "signature": the token endpoint's ID token has one character
// of its signature changed on the way out, as a forger without the key
// would send it.
provider.use(async (ctx, next) => {
  await next();
  const idToken = ctx.body && typeof ctx.body === 'object' && ctx.body.id_token;
  if (!idToken) return;
  const [header, payload, signature] = idToken.split('.');
  const { sub } = JSON.parse(Buffer.from(payload, 'base64url').toString());
  if (accounts()[sub]?.tamper === 'expired') {
    await new Promise((resolve) => { setTimeout(resolve, 2100); });
    return;
  }
  if (accounts()[sub]?.tamper !== 'signature') return;
  const first = signature[0] === 'A' ? 'B' : 'A';
  ctx.body = { ...ctx.body, id_token: `${header}.${payload}.${first}${signature.slice(1)}` };
});

server.on('request', provider.callback());
console.log(`issuer ${issuer}`);
