import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair, SignJWT, UnsecuredJWT } from 'jose'
import { describe, expect, it } from 'vitest'
import { Authenticator } from '../src/auth/authenticate.js'
import { AuthenticationError, loadJwtKey, signToken, TokenVerifier } from '../src/auth/tokens.js'
import type { UserService } from '../src/auth/users.js'
import { loadConfig } from '../src/config.js'

// Token verification without a server or a database: what is accepted,
// what is refused, and why.

const secret = 'a-secret-of-at-least-thirty-two-characters!'
const key = new TextEncoder().encode(secret)
const foreignKey = new TextEncoder().encode('another-secret-of-at-least-thirty-two-chars')
const verifier = new TokenVerifier(key)
const now = () => Math.floor(Date.now() / 1000)

const refusal = async (token: string, v: TokenVerifier = verifier): Promise<string> => {
  const error = await v.verify(token).then(
    () => null,
    (err: unknown) => err,
  )
  expect(error).toBeInstanceOf(AuthenticationError)
  return (error as Error).message
}

describe('accepted tokens', () => {
  it('yield the claims, cleaned up', async () => {
    const token = await signToken(
      key,
      { sub: 'idp|42', preferred_username: '  ann\u0007 ', name: 'Ann Lee', roles: ['admin', 'creator'] },
      { expiresIn: '1h' },
    )
    expect(await verifier.verify(token)).toEqual({
      subject: 'idp|42',
      handle: 'ann',
      displayName: 'Ann Lee',
      roles: ['creator', 'admin'],
    })
  })

  it('fall back to a stable handle from sub, and to the handle for the name', async () => {
    const claims = await verifier.verify(await signToken(key, { sub: 'idp|7' }, { expiresIn: 60 }))
    expect(claims.handle).toMatch(/^user_[0-9a-f]{12}$/)
    expect(claims.displayName).toBe(claims.handle)
    expect(claims.roles).toEqual([])
    const again = await verifier.verify(
      await signToken(key, { sub: 'idp|7', preferred_username: ' ', name: '' }, { expiresIn: 60 }),
    )
    expect(again.handle).toBe(claims.handle)
    expect(claims.handle).not.toContain('idp')
  })

  it('ignore unknown roles and duplicates', async () => {
    const token = await signToken(
      key,
      { sub: 'x', roles: ['superuser', 'accountant', 'accountant', 'Admin'] },
      { expiresIn: 60 },
    )
    expect((await verifier.verify(token)).roles).toEqual(['accountant'])
  })

  it('cut handles and names to a bounded length', async () => {
    const token = await signToken(
      key,
      { sub: 'x', preferred_username: 'h'.repeat(500), name: '😀'.repeat(500) },
      { expiresIn: 60 },
    )
    const claims = await verifier.verify(token)
    expect(claims.handle).toHaveLength(64)
    expect([...claims.displayName]).toHaveLength(128)
  })

  it('take a sub of up to 255 characters (code points)', async () => {
    const sub = '😀'.repeat(255)
    expect((await verifier.verify(await signToken(key, { sub }, { expiresIn: 60 }))).subject).toBe(sub)
  })

  it('expired a moment ago pass within the 5 s clock tolerance', async () => {
    const token = await new SignJWT({ sub: 'x' })
      .setProtectedHeader({ alg: 'HS256' })
      .setExpirationTime(now() - 2)
      .sign(key)
    expect((await verifier.verify(token)).subject).toBe('x')
  })
})

describe('remembered tokens', () => {
  it('are still refused once they expire', async () => {
    let clockMs = Date.now()
    const clocked = new TokenVerifier(key, { now: () => clockMs })
    const token = await signToken(key, { sub: 'x' }, { expiresIn: 60 })
    expect((await clocked.verify(token)).subject).toBe('x')
    clockMs += 60_000 // within the clock tolerance still
    expect((await clocked.verify(token)).subject).toBe('x')
    clockMs += 6_000
    expect(await refusal(token, clocked)).toBe('token expired')
  })

  it('vouch for nothing but the very same token', async () => {
    const fresh = new TokenVerifier(key)
    const token = await signToken(key, { sub: 'x', roles: [] }, { expiresIn: 60 })
    await fresh.verify(token)
    const [header, , signature] = token.split('.')
    const payload = Buffer.from(JSON.stringify({ sub: 'x', roles: ['admin'], exp: now() + 60 })).toString(
      'base64url',
    )
    expect(await refusal(`${header}.${payload}.${signature}`, fresh)).toBe('token signature invalid')
    // A character in the middle of the signature (the last one carries padding bits).
    const at = token.length - 10
    const flipped = `${token.slice(0, at)}${token[at] === 'A' ? 'B' : 'A'}${token.slice(at + 1)}`
    expect(await refusal(flipped, fresh)).toBe('token signature invalid')
    const claims = await fresh.verify(token)
    expect(claims).toEqual({ subject: 'x', handle: claims.handle, displayName: claims.handle, roles: [] })
    // Shared by every request with the token: nobody may change them.
    expect(Object.isFrozen(claims) && Object.isFrozen(claims.roles)).toBe(true)
  })
})

describe('refused tokens', () => {
  it('signed with another key', async () => {
    const token = await signToken(foreignKey, { sub: 'x' }, { expiresIn: 60 })
    expect(await refusal(token)).toBe('token signature invalid')
  })

  it('with a payload changed after signing', async () => {
    const token = await signToken(key, { sub: 'x', roles: [] }, { expiresIn: 60 })
    const [header, , signature] = token.split('.')
    const payload = Buffer.from(JSON.stringify({ sub: 'x', roles: ['admin'], exp: now() + 60 })).toString(
      'base64url',
    )
    expect(await refusal(`${header}.${payload}.${signature}`)).toBe('token signature invalid')
  })

  it('expired', async () => {
    const token = await signToken(key, { sub: 'x' }, { expiresIn: -10 })
    expect(await refusal(token)).toBe('token expired')
  })

  it('without exp', async () => {
    const token = await new SignJWT({ sub: 'x' }).setProtectedHeader({ alg: 'HS256' }).sign(key)
    expect(await refusal(token)).toMatch(/exp/)
  })

  it('not yet valid (nbf)', async () => {
    const token = await new SignJWT({ sub: 'x' })
      .setProtectedHeader({ alg: 'HS256' })
      .setNotBefore(now() + 60)
      .setExpirationTime(now() + 120)
      .sign(key)
    expect(await refusal(token)).toMatch(/nbf/)
  })

  it('with alg none, however spelled', async () => {
    const unsecured = new UnsecuredJWT({ sub: 'x', roles: ['admin'] }).setExpirationTime('1h').encode()
    expect(await refusal(unsecured)).toBe('token algorithm not allowed')
    const payload = unsecured.split('.')[1]
    for (const alg of ['none', 'None', 'NONE']) {
      const header = Buffer.from(JSON.stringify({ alg, typ: 'JWT' })).toString('base64url')
      await refusal(`${header}.${payload}.`)
      await refusal(`${header}.${payload}`)
    }
  })

  it('signed with RS256 (a key pair of the signer’s own)', async () => {
    const { privateKey } = await generateKeyPair('RS256')
    const token = await new SignJWT({ sub: 'x', roles: ['admin'] })
      .setProtectedHeader({ alg: 'RS256' })
      .setExpirationTime('1h')
      .sign(privateKey)
    expect(await refusal(token)).toBe('token algorithm not allowed')
  })

  it('signed with HS512, even with our own secret', async () => {
    for (const k of [key, foreignKey]) {
      const token = await new SignJWT({ sub: 'x' })
        .setProtectedHeader({ alg: 'HS512' })
        .setExpirationTime('1h')
        .sign(k)
      expect(await refusal(token)).toBe('token algorithm not allowed')
    }
  })

  it('for another issuer or audience, when they are configured', async () => {
    const strict = new TokenVerifier(key, { issuer: 'https://id.example', audience: 'giftledger' })
    const sign = (options: { issuer?: string; audience?: string }) =>
      signToken(key, { sub: 'x' }, { expiresIn: 60, ...options })
    expect(
      (await strict.verify(await sign({ issuer: 'https://id.example', audience: 'giftledger' }))).subject,
    ).toBe('x')
    expect(
      await refusal(await sign({ issuer: 'https://evil.example', audience: 'giftledger' }), strict),
    ).toMatch(/iss/)
    expect(await refusal(await sign({ issuer: 'https://id.example', audience: 'other' }), strict)).toMatch(
      /aud/,
    )
    expect(await refusal(await sign({ audience: 'giftledger' }), strict)).toMatch(/iss/)
    expect(await refusal(await sign({ issuer: 'https://id.example' }), strict)).toMatch(/aud/)
    // Not configured: not checked.
    expect((await verifier.verify(await sign({ issuer: 'anyone', audience: 'anything' }))).subject).toBe('x')
  })

  it('with a bad sub', async () => {
    const withSub = (sub: unknown) =>
      new SignJWT({ sub } as Record<string, unknown>)
        .setProtectedHeader({ alg: 'HS256' })
        .setExpirationTime('1h')
        .sign(key)
    for (const sub of [undefined, '', 42, 'x'.repeat(256), 'a\u0000b', 'a\nb']) {
      expect(await refusal(await withSub(sub)), String(sub)).toMatch(/sub/)
    }
  })

  it('with roles that are not an array', async () => {
    const token = await new SignJWT({ sub: 'x', roles: 'admin' })
      .setProtectedHeader({ alg: 'HS256' })
      .setExpirationTime('1h')
      .sign(key)
    expect(await refusal(token)).toMatch(/roles/)
  })

  it('that are not JWTs, or too long', async () => {
    expect(await refusal('not-a-token')).toBe('token malformed')
    expect(await refusal('a.b.c')).toBe('token malformed')
    expect(await refusal(`${'a'.repeat(9000)}.b.c`)).toBe('token too long')
  })
})

describe('Authorization values', () => {
  const users = { signIn: async () => 'user-id' } as unknown as UserService
  const auth = new Authenticator(verifier, users)

  it('none is anonymous', async () => {
    expect(await auth.viewerFor(undefined)).toBeNull()
    expect(await auth.viewerFor(null)).toBeNull()
  })

  it('a Bearer token is its user, with the token’s roles', async () => {
    const token = await signToken(key, { sub: 'x', roles: ['creator'] }, { expiresIn: 60 })
    expect(await auth.viewerFor(`Bearer ${token}`)).toEqual({ userId: 'user-id', roles: ['creator'] })
    expect(await auth.viewerFor(`bearer ${token}`)).toEqual({ userId: 'user-id', roles: ['creator'] })
  })

  it('anything else is refused, not anonymous', async () => {
    const token = await signToken(key, { sub: 'x' }, { expiresIn: 60 })
    for (const value of ['', 'Bearer', 'Bearer ', token, `Basic ${token}`, `Bearer ${token} extra`, 42, {}]) {
      await expect(auth.viewerFor(value), JSON.stringify(value)).rejects.toBeInstanceOf(AuthenticationError)
    }
  })
})

describe('the signing key', () => {
  const settings = (devKeyFile: string, secret?: string) => ({
    ...loadConfig({}).jwt,
    secret,
    devKeyFile,
  })

  it('is JWT_SECRET when set', () => {
    const { key: k, source } = loadJwtKey(settings('/nonexistent/key', secret), 'production')
    expect(source).toBe('JWT_SECRET')
    expect(Buffer.from(k).toString()).toBe(secret)
  })

  it('is otherwise a development key, made once (mode 0600) and reused', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'gl-key-')), 'data', 'jwt-secret')
    const first = loadJwtKey(settings(file), 'development')
    expect(first.source).toBe('dev-key-file')
    expect(statSync(file).mode & 0o777).toBe(0o600)
    expect(readFileSync(file, 'utf8')).toMatch(/^[0-9a-f]{64}$/)
    expect(Buffer.from(loadJwtKey(settings(file), 'test').key)).toEqual(Buffer.from(first.key))
  })

  it('is never a development key in production', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'gl-key-')), 'jwt-secret')
    expect(() => loadJwtKey(settings(file), 'production')).toThrow(/JWT_SECRET/)
  })

  it('refuses a development key file that is too short', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'gl-key-')), 'jwt-secret')
    writeFileSync(file, 'short')
    expect(() => loadJwtKey(settings(file), 'development')).toThrow(/shorter than 32/)
  })
})
