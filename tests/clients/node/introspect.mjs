// Drives Keysmith with openid-client 6, as a resource server would: RFC 8414
// discovery from the issuer alone, then RFC 7662 introspection with
// client_secret_basic. Run by tests/integration/bearer/oauth_clients.rs.
//
// Input (environment, so nothing secret shows in `ps`):
//   KEYSMITH_ISSUER         the issuer identifier, e.g. http://127.0.0.1:3000
//   KEYSMITH_CLIENT_ID      the introspection client's id
//   KEYSMITH_CLIENT_SECRET  its secret
//   KEYSMITH_TOKENS         a JSON array of tokens to introspect
// Output (stdout, one JSON object):
//   {"metadata": {...the discovered document...},
//    "results": [{"response": {...}} | {"error": {...}}, ...]}
// or {"discovery_error": {...}} with exit status 1.

import * as client from 'openid-client';

function describe(e) {
  // Only what identifies the failure; never the request (it carries the secret).
  return {
    name: e?.name,
    code: e?.code,
    status: e?.status ?? e?.response?.status,
    error: e?.error,
    error_description: e?.error_description,
    // A WWW-Authenticate challenge (scheme and parameters) if that is what failed.
    challenges: Array.isArray(e?.cause) ? e.cause : undefined,
    message: e?.message,
  };
}

const issuer = new URL(process.env.KEYSMITH_ISSUER);
const clientId = process.env.KEYSMITH_CLIENT_ID;
const secret = process.env.KEYSMITH_CLIENT_SECRET;
const tokens = JSON.parse(process.env.KEYSMITH_TOKENS ?? '[]');

let config;
try {
  config = await client.discovery(
    issuer,
    clientId,
    undefined,
    client.ClientSecretBasic(secret),
    // The tests talk plain HTTP to 127.0.0.1.
    { algorithm: 'oauth2', execute: [client.allowInsecureRequests] },
  );
} catch (e) {
  process.stdout.write(JSON.stringify({ discovery_error: describe(e) }) + '\n');
  process.exit(1);
}

const results = [];
for (const token of tokens) {
  try {
    const response = await client.tokenIntrospection(config, token, {
      token_type_hint: 'access_token',
    });
    results.push({ response });
  } catch (e) {
    results.push({ error: describe(e) });
  }
}
process.stdout.write(
  JSON.stringify({ metadata: config.serverMetadata(), results }) + '\n',
);
