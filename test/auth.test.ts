import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { eq, like, sql } from 'drizzle-orm'
import { SignJWT } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { UserService } from '../src/auth/users.js'
import { ledgerAccounts, users } from '../src/db/schema.js'
import { Ledger, userWallet } from '../src/ledger/index.js'
import { graphql, startTestApp, TEST_JWT_SECRET, type TestApp } from './support/app.js'

// Bearer tokens against the real server: who a request is, and the users and
// wallets that tokens create. No field needs a signed-in user yet, so the
// catalog query carries the tokens, and the viewer itself is read from the
// same function the server's context calls.

const CATALOG = '{ coinPackages { id } }'
const ISSUER = 'https://id.giftledger.test'
const AUDIENCE = 'giftledger-api'

let app: TestApp

beforeAll(async () => {
  app = await startTestApp({ env: { JWT_ISSUER: ISSUER, JWT_AUDIENCE: AUDIENCE } })
}, 60_000)

afterAll(async () => {
  await app?.stop()
})

const bearer = (token: string) => ({ authorization: `Bearer ${token}` })

async function userRows(subject: string) {
  return app.database.db.select().from(users).where(eq(users.subject, subject))
}

async function walletRows(userId: string) {
  return app.database.db
    .select()
    .from(ledgerAccounts)
    .where(like(ledgerAccounts.code, `user:${userId}:%`))
}

async function expectUnauthenticated(headers: Record<string, string>) {
  const { status, body } = await graphql(app, CATALOG, undefined, headers)
  expect(status).toBe(401)
  expect(body.data ?? null).toBeNull()
  expect(body.errors).toHaveLength(1)
  expect(body.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED')
  expect(body.errors?.[0]?.message).toMatch(/^Invalid credentials: /)
  return body.errors?.[0]?.message
}

describe('over HTTP', () => {
  it('serves anonymous requests without a token', async () => {
    const { status, body } = await graphql(app, CATALOG)
    expect(status).toBe(200)
    expect(body.errors).toBeUndefined()
  })

  it('accepts a valid token', async () => {
    const { status, body } = await graphql(app, CATALOG, undefined, bearer(await app.token({ sub: 'ok-1' })))
    expect(status).toBe(200)
    expect(body.errors).toBeUndefined()
    expect(await userRows('ok-1')).toHaveLength(1)
  })

  it('refuses a forged signature with UNAUTHENTICATED (401)', async () => {
    const token = await app.token({ sub: 'forger', roles: ['admin'] })
    const [header, payload, signature] = token.split('.') as [string, string, string]
    const flipped = `${signature.slice(0, -2)}${signature.endsWith('AA') ? 'BB' : 'AA'}`
    expect(await expectUnauthenticated(bearer(`${header}.${payload}.${flipped}`))).toBe(
      'Invalid credentials: token signature invalid.',
    )
    const wrongKey = await new SignJWT({ sub: 'forger' })
      .setProtectedHeader({ alg: 'HS256' })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setExpirationTime('1h')
      .sign(new TextEncoder().encode('x'.repeat(48)))
    await expectUnauthenticated(bearer(wrongKey))
    expect(await userRows('forger')).toHaveLength(0)
  })

  it('refuses an expired token', async () => {
    const token = await app.token({ sub: 'late' }, { expiresIn: -60 })
    expect(await expectUnauthenticated(bearer(token))).toBe('Invalid credentials: token expired.')
  })

  it('refuses alg none', async () => {
    const encode = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url')
    const payload = encode({
      sub: 'nobody',
      iss: ISSUER,
      aud: AUDIENCE,
      exp: Math.floor(Date.now() / 1000) + 600,
    })
    await expectUnauthenticated(bearer(`${encode({ alg: 'none', typ: 'JWT' })}.${payload}.`))
  })

  it('refuses another issuer or audience, and tokens without them', async () => {
    for (const options of [
      { issuer: 'https://elsewhere.test' },
      { audience: 'another-api' },
      { issuer: undefined },
      { audience: undefined },
    ]) {
      await expectUnauthenticated(bearer(await app.token({ sub: 'wanderer' }, options)))
    }
  })

  it('refuses a header that is not a Bearer token, and sends WWW-Authenticate', async () => {
    await expectUnauthenticated({ authorization: 'Basic dXNlcjpwYXNz' })
    const response = await fetch(`${app.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer nonsense' },
      body: JSON.stringify({ query: CATALOG }),
    })
    expect(response.status).toBe(401)
    expect(response.headers.get('www-authenticate')).toBe('Bearer error="invalid_token"')
  })
})

describe('users from tokens', () => {
  it('the first token of a subject creates one user and one wallet, even 20 requests at once', async () => {
    const token = await app.token({ sub: 'crowd', preferred_username: 'crowd', name: 'The Crowd' })
    const results = await Promise.all(
      Array.from({ length: 20 }, () => graphql(app, CATALOG, undefined, bearer(token))),
    )
    for (const { status, body } of results) {
      expect(status).toBe(200)
      expect(body.errors).toBeUndefined()
    }
    const rows = await userRows('crowd')
    expect(rows).toHaveLength(1)
    expect(rows[0]).toMatchObject({ handle: 'crowd', displayName: 'The Crowd', roles: [] })
    const accounts = await walletRows(rows[0]?.id ?? '')
    expect(accounts.map((a) => [a.code, a.type, a.unit, a.ownerId, a.allowNegative])).toEqual([
      [`user:${rows[0]?.id}:wallet`, 'liability', 'COIN', rows[0]?.id, false],
    ])
  })

  it('several processes signing in the same new subject at once create one user and one wallet', async () => {
    // Separate services, as in separate processes: no shared cache, only the database.
    const services = Array.from({ length: 4 }, () => {
      const ledger = new Ledger(app.database.db)
      return new UserService(app.database.db, ledger)
    })
    const claims = { subject: 'racer', handle: 'racer', displayName: 'Racer', roles: [] }
    const ids = await Promise.all(services.flatMap((s) => Array.from({ length: 5 }, () => s.signIn(claims))))
    expect(new Set(ids).size).toBe(1)
    expect(await userRows('racer')).toHaveLength(1)
    expect(await walletRows(ids[0] ?? '')).toHaveLength(1)
  })

  it('the viewer is the user the token stands for, with the token’s roles', async () => {
    const token = await app.token({ sub: 'viewer-1', preferred_username: 'vee', roles: ['creator', 'root'] })
    const viewer = await app.services.auth.viewerFor(`Bearer ${token}`)
    const [row] = await userRows('viewer-1')
    expect(viewer).toEqual({ userId: row?.id, roles: ['creator'] })
    expect(row?.roles).toEqual(['creator'])
  })

  it('changed claims update the user; unchanged ones write nothing', async () => {
    const first = await app.token({ sub: 'changer', preferred_username: 'old', roles: [] })
    await graphql(app, CATALOG, undefined, bearer(first))
    const [before] = await userRows('changer')

    app.queries.reset()
    await graphql(
      app,
      CATALOG,
      undefined,
      bearer(await app.token({ sub: 'changer', preferred_username: 'old' })),
    )
    // Known subject, same claims: the catalog's one query and nothing else.
    expect(app.queries.statements).toHaveLength(1)

    const second = await app.token({
      sub: 'changer',
      preferred_username: 'new',
      name: 'New Name',
      roles: ['admin'],
    })
    await graphql(app, CATALOG, undefined, bearer(second))
    const [after] = await userRows('changer')
    expect(after?.id).toBe(before?.id)
    expect(after).toMatchObject({ handle: 'new', displayName: 'New Name', roles: ['admin'] })
    expect(after?.updatedAt).not.toBe(before?.updatedAt)
    expect(await walletRows(after?.id ?? '')).toHaveLength(1)
  })

  it('a process that does not know the subject yet reads it without rewriting it', async () => {
    const claims = { subject: 'steady', handle: 'steady', displayName: 'Steady', roles: [] }
    const id = await app.services.users.signIn(claims)
    const [before] = await userRows('steady')
    const fresh = new UserService(app.database.db, new Ledger(app.database.db))
    expect(await fresh.signIn(claims)).toBe(id)
    const [after] = await userRows('steady')
    expect(after?.updatedAt).toBe(before?.updatedAt)
  })

  it('a wallet missing after a crash is created at the next sign-in', async () => {
    const claims = { subject: 'crashed', handle: 'crashed', displayName: 'Crashed', roles: [] }
    // The user row alone, as if the process died before creating the wallet.
    await app.database.db
      .insert(users)
      .values({ subject: claims.subject, handle: claims.handle, displayName: claims.displayName, roles: [] })
    const id = await new UserService(app.database.db, new Ledger(app.database.db)).signIn(claims)
    expect(await walletRows(id)).toHaveLength(1)
    const [{ count } = { count: 0 }] = await app.database.db
      .select({ count: sql<number>`count(*)::int` })
      .from(ledgerAccounts)
      .where(eq(ledgerAccounts.code, userWallet(id).code))
    expect(count).toBe(1)
  })

  it('keeps a bounded number of subjects in memory', async () => {
    const service = new UserService(app.database.db, new Ledger(app.database.db), 3)
    for (let i = 0; i < 5; i++) {
      await service.signIn({ subject: `lru-${i}`, handle: `lru${i}`, displayName: 'L', roles: [] })
    }
    expect((service as unknown as { known: Map<string, unknown> }).known.size).toBe(3)
  })
})

describe('npm run token', () => {
  it('prints a token that the server accepts, with the claims asked for', async () => {
    const run = promisify(execFile)
    const { stdout } = await run(
      'npx',
      [
        'tsx',
        'src/scripts/token.ts',
        '--sub',
        'script-user',
        '--handle',
        'scripty',
        '--roles',
        'creator,admin',
      ],
      {
        env: {
          ...process.env,
          NODE_ENV: 'test',
          JWT_SECRET: TEST_JWT_SECRET,
          JWT_ISSUER: ISSUER,
          JWT_AUDIENCE: AUDIENCE,
        },
      },
    )
    const token = stdout.trim()
    expect(token).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/)
    const { status, body } = await graphql(app, CATALOG, undefined, bearer(token))
    expect(status).toBe(200)
    expect(body.errors).toBeUndefined()
    const [row] = await userRows('script-user')
    expect(row).toMatchObject({ handle: 'scripty', roles: ['creator', 'admin'] })
  })

  it('refuses to run in production without JWT_SECRET', async () => {
    const run = promisify(execFile)
    const env: NodeJS.ProcessEnv = { ...process.env, NODE_ENV: 'production' }
    delete env.JWT_SECRET
    const error = await run('npx', ['tsx', 'src/scripts/token.ts', '--sub', 'x'], { env }).then(
      () => null,
      (err: { code: number; stdout: string; stderr: string }) => err,
    )
    expect(error?.code).toBe(1)
    expect(error?.stdout).toBe('')
    expect(error?.stderr).toMatch(/JWT_SECRET: is required when NODE_ENV=production/)
  })
}, 60_000)
