// A real OpenID provider (node-oidc-provider, certified) for tessera's tests, on loopback.
//
//   PORT=0 STATE_DIR=/tmp/x SIGNING_KIDS=k1 node tests/oidc/provider.mjs
//
// Prints "listening <port>" once it serves; exits on SIGTERM. Its store is in memory: a
// restart forgets the opaque tokens it issued, as the tests intend.
//
// - Signing keys: one ES256 key per id in SIGNING_KIDS (comma-separated, the first signs),
//   kept in STATE_DIR/<kid>.jwk.json so that a restart with another list rotates them.
// - Clients that get tokens (client credentials, client_secret_basic, secret "<id>-secret"):
//   alice and bob of organization "acme" with otp.check; ops of "acme" with otp.admin and
//   otp.check; mallory of "globex" with otp.check. Each token carries ZITADEL's organization
//   and role claims, and `sub` is the client id.
// - Resource indicators pick the access token's format: RESOURCE_OPAQUE (the default) gives
//   opaque tokens, RESOURCE_JWT gives JWTs; both have the audience AUDIENCE.
// - Clients that introspect: "tessera" (client_secret_basic, secret "tessera-secret") and
//   "tessera-key" (private_key_jwt, RS256) whose key is ZITADEL's JSON key file of an API
//   application, STATE_DIR/tessera-key.json, made at the first start.
import { generateKeyPairSync, createPublicKey } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';

import Provider from 'oidc-provider';

const PORT = Number(process.env.PORT ?? 0);
const STATE_DIR = process.env.STATE_DIR;
const SIGNING_KIDS = (process.env.SIGNING_KIDS ?? 'k1').split(',').filter(Boolean);
export const AUDIENCE = '290146371530489879';
const RESOURCE_OPAQUE = 'https://tessera.test/opaque';
const RESOURCE_JWT = 'https://tessera.test/jwt';
const ORG_CLAIM = 'urn:zitadel:iam:user:resourceowner:id';
const ROLES_CLAIM = 'urn:zitadel:iam:org:project:roles';

if (!STATE_DIR) {
  console.error('STATE_DIR is required');
  process.exit(2);
}

function signingKey(kid) {
  const path = join(STATE_DIR, `${kid}.jwk.json`);
  if (!existsSync(path)) {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const jwk = { ...privateKey.export({ format: 'jwk' }), kid, alg: 'ES256', use: 'sig' };
    writeFileSync(path, JSON.stringify(jwk));
  }
  return JSON.parse(readFileSync(path, 'utf8'));
}

// ZITADEL's key file of an API application: its private key as PKCS#1 PEM.
function introspectionKeyFile() {
  const path = join(STATE_DIR, 'tessera-key.json');
  if (!existsSync(path)) {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    writeFileSync(path, JSON.stringify({
      type: 'application',
      keyId: '290146371530489880',
      key: privateKey.export({ format: 'pem', type: 'pkcs1' }),
      appId: '290146371530489881',
      clientId: 'tessera-key',
    }));
  }
  return JSON.parse(readFileSync(path, 'utf8'));
}

const keyFile = introspectionKeyFile();
const keyFilePublic = {
  ...createPublicKey(keyFile.key).export({ format: 'jwk' }),
  kid: keyFile.keyId,
  alg: 'RS256',
  use: 'sig',
};

const tokenClient = (clientId, org, roles) => ({
  client_id: clientId,
  client_secret: `${clientId}-secret`,
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: 'client_secret_basic',
  tessera_org: org,
  tessera_roles: roles,
});

const introspector = {
  grant_types: [],
  response_types: [],
  redirect_uris: [],
};

// The issuer names the port, which is known once the server listens (PORT=0 picks one).
const server = createServer();
await new Promise((resolve) => { server.listen(PORT, '127.0.0.1', resolve); });
const { port } = server.address();

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [
    tokenClient('alice', 'acme', ['otp.check']),
    tokenClient('bob', 'acme', ['otp.check']),
    tokenClient('ops', 'acme', ['otp.admin', 'otp.check']),
    tokenClient('mallory', 'globex', ['otp.check']),
    {
      ...introspector,
      client_id: 'tessera',
      client_secret: 'tessera-secret',
      token_endpoint_auth_method: 'client_secret_basic',
    },
    {
      ...introspector,
      client_id: keyFile.clientId,
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'RS256',
      jwks: { keys: [keyFilePublic] },
    },
  ],
  jwks: { keys: SIGNING_KIDS.map(signingKey) },
  clientDefaults: { id_token_signed_response_alg: 'ES256' },
  extraClientMetadata: { properties: ['tessera_org', 'tessera_roles'] },
  // ZITADEL's claims: the user's organization and the project roles by organization.
  async extraTokenClaims(ctx, token) {
    const client = await ctx.oidc.provider.Client.find(token.clientId);
    const org = client?.tessera_org;
    if (!org) return undefined;
    const roles = Object.fromEntries(
      (client.tessera_roles ?? []).map((role) => [role, { [org]: `${org}.localhost` }]),
    );
    return { sub: token.clientId, [ORG_CLAIM]: org, [ROLES_CLAIM]: roles };
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    // Only tessera's clients introspect; a client revokes its own tokens.
    introspection: {
      enabled: true,
      allowedPolicy: (ctx, client) => client.clientId.startsWith('tessera'),
    },
    revocation: {
      enabled: true,
      allowedPolicy: (ctx, client, token) => client.clientId === token.clientId,
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => RESOURCE_OPAQUE,
      useGrantedResource: () => true,
      getResourceServerInfo(ctx, resource) {
        if (resource !== RESOURCE_OPAQUE && resource !== RESOURCE_JWT) {
          throw new Error(`unknown resource ${resource}`);
        }
        return {
          scope: 'otp',
          audience: AUDIENCE,
          accessTokenTTL: 3600,
          accessTokenFormat: resource === RESOURCE_JWT ? 'jwt' : 'opaque',
          jwt: { sign: { alg: 'ES256' } },
        };
      },
    },
  },
  clientAuthMethods: ['client_secret_basic', 'private_key_jwt'],
  ttl: { ClientCredentials: 3600 },
});

server.on('request', provider.callback());
console.log(`listening ${port}`);
process.on('SIGTERM', () => server.close(() => process.exit(0)));
