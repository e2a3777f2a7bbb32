import { createHash, randomBytes, webcrypto } from 'node:crypto'
import { linkSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'
import { errors, jwtVerify, SignJWT } from 'jose'
import type { Config } from '../config.js'
import { ROLES, type Role } from '../graphql/context.js'

// Bearer tokens from the identity provider: HS256 JWTs (RUNTIME.md, Identity).

/** What a verified token says about its bearer, cleaned up. */
export interface TokenClaims {
  /** `sub`: the identity provider's stable id for the user. */
  subject: string
  /** `preferred_username`, or a stable one made from `sub`. */
  handle: string
  /** `name`, or the handle. */
  displayName: string
  /** The known roles in `roles`, each once, in ROLES order; unknown ones are ignored. */
  roles: Role[]
}

/** A token that cannot be trusted: forged, expired, malformed, or for someone else. */
export class AuthenticationError extends Error {
  override readonly name = 'AuthenticationError'
}

// Only the algorithm we sign with. `none`, RS256 (e.g. with our secret
// passed off as a public key), HS384/HS512 and the rest are refused outright.
const ALGORITHMS = ['HS256']
const CLOCK_TOLERANCE_S = 5
const SUBJECT_LENGTH_MAX = 255
const HANDLE_LENGTH_MAX = 64
const DISPLAY_NAME_LENGTH_MAX = 128
/** Far more than any real token; refused before any parsing. */
export const TOKEN_LENGTH_MAX = 8 * 1024
const SECRET_LENGTH_MIN = 32

export type JwtSettings = Config['jwt']

/** The HMAC key: JWT_SECRET, or (never in production) the development key file. */
export interface JwtKey {
  key: Uint8Array
  source: 'JWT_SECRET' | 'dev-key-file'
}

export function loadJwtKey(jwt: JwtSettings, env: Config['env']): JwtKey {
  if (jwt.secret !== undefined) return { key: new TextEncoder().encode(jwt.secret), source: 'JWT_SECRET' }
  if (env === 'production') throw new Error('JWT_SECRET is required when NODE_ENV=production')
  return { key: new TextEncoder().encode(readOrCreateDevKey(jwt.devKeyFile)), source: 'dev-key-file' }
}

/**
 * The development key in `file`: made once with crypto.randomBytes, readable
 * by its owner only, and reused afterwards, so that tokens printed by
 * `npm run token` keep working across restarts. Several processes may start
 * at once: the key is written to a temporary file and linked into place, so
 * that nobody reads a half-written key.
 */
function readOrCreateDevKey(file: string): string {
  const existing = readKeyFile(file)
  if (existing !== undefined) return existing
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 })
  const temporary = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`
  writeFileSync(temporary, randomBytes(32).toString('hex'), { mode: 0o600, flag: 'wx' })
  try {
    linkSync(temporary, file)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
  } finally {
    unlinkSync(temporary)
  }
  const key = readKeyFile(file)
  if (key === undefined) throw new Error(`could not create the development JWT key ${file}`)
  return key
}

function readKeyFile(file: string): string | undefined {
  let text: string
  try {
    text = readFileSync(file, 'utf8').trim()
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
  if (text.length < SECRET_LENGTH_MIN) {
    throw new Error(`the development JWT key ${file} is shorter than ${SECRET_LENGTH_MIN} characters`)
  }
  return text
}

/** Tokens remembered as verified per process; past that, the oldest are forgotten. */
export const VERIFIED_TOKENS_MAX = 10_000
/** Longer tokens are verified every time rather than remembered (they are not worth the memory). */
const REMEMBERED_TOKEN_LENGTH_MAX = 2048
/** A remembered token is verified again at least this often, whatever its expiry. */
const REMEMBERED_TTL_MAX_MS = 5 * 60_000

export interface TokenVerifierOptions {
  issuer?: string
  audience?: string
  /** The clock, in ms since the epoch (tests move it). */
  now?: () => number
}

/**
 * Checks bearer tokens: signature, algorithm, expiry, issuer and audience
 * (when configured), claims.
 *
 * A client sends the same token with every request for as long as it lives,
 * and checking the signature costs more than anything else a no-op request
 * does (jose's HMAC goes through WebCrypto, a job on the thread pool). So a
 * token that passed every check is remembered, byte for byte, with its
 * claims: the same token again is accepted without a new signature check,
 * as long as it has not expired (checked on every use, with the same clock
 * tolerance) and was verified less than REMEMBERED_TTL_MAX_MS ago. Only
 * tokens that verified are remembered, so a forged one can never hit.
 */
export class TokenVerifier {
  /** Imported once: jose would import raw key bytes (or a KeyObject) again on every verification. */
  private readonly secret: Promise<webcrypto.CryptoKey>
  private readonly expected: { issuer?: string; audience?: string }
  private readonly now: () => number
  /** token → its claims; a Map in verification order, oldest first. */
  private readonly verified = new Map<
    string,
    { claims: TokenClaims; expiresAtMs: number; checkedAtMs: number }
  >()

  constructor(
    key: Uint8Array,
    options: TokenVerifierOptions = {},
    private readonly rememberedMax = VERIFIED_TOKENS_MAX,
  ) {
    this.secret = webcrypto.subtle.importKey('raw', key, { name: 'HMAC', hash: 'SHA-256' }, false, ['verify'])
    this.expected = { issuer: options.issuer, audience: options.audience }
    this.now = options.now ?? Date.now
  }

  /** The token's claims; throws an AuthenticationError saying why it is refused. */
  async verify(token: string): Promise<TokenClaims> {
    if (token.length > TOKEN_LENGTH_MAX) throw new AuthenticationError('token too long')
    const nowMs = this.now()
    const remembered = this.verified.get(token)
    if (remembered) {
      if (nowMs < remembered.expiresAtMs && nowMs - remembered.checkedAtMs < REMEMBERED_TTL_MAX_MS)
        return remembered.claims
      this.verified.delete(token)
    }
    let payload: Record<string, unknown>
    try {
      ;({ payload } = await jwtVerify(token, await this.secret, {
        algorithms: ALGORITHMS,
        requiredClaims: ['exp', 'sub'],
        clockTolerance: CLOCK_TOLERANCE_S,
        issuer: this.expected.issuer,
        audience: this.expected.audience,
        currentDate: new Date(nowMs),
      }))
    } catch (err) {
      throw new AuthenticationError(describeJoseError(err), { cause: err })
    }
    const claims = claimsFrom(payload)
    this.remember(token, claims, Number(payload.exp), nowMs)
    return claims
  }

  private remember(token: string, claims: TokenClaims, expSeconds: number, nowMs: number): void {
    if (token.length > REMEMBERED_TOKEN_LENGTH_MAX || !Number.isFinite(expSeconds)) return
    Object.freeze(claims.roles)
    Object.freeze(claims)
    // As jose decides: expired once exp is more than the clock tolerance in the past.
    const expiresAtMs = (expSeconds + CLOCK_TOLERANCE_S) * 1000
    this.verified.set(token, { claims, expiresAtMs, checkedAtMs: nowMs })
    if (this.verified.size > this.rememberedMax) {
      const oldest = this.verified.keys().next().value
      if (oldest !== undefined) this.verified.delete(oldest)
    }
  }
}

function describeJoseError(err: unknown): string {
  if (err instanceof errors.JWTExpired) return 'token expired'
  if (err instanceof errors.JWTClaimValidationFailed) return `token claim ${err.claim} refused: ${err.reason}`
  if (err instanceof errors.JOSEAlgNotAllowed) return 'token algorithm not allowed'
  if (err instanceof errors.JWSSignatureVerificationFailed) return 'token signature invalid'
  return 'token malformed'
}

/** Validates and cleans the claims of a token whose signature checked out. */
export function claimsFrom(payload: Record<string, unknown>): TokenClaims {
  const { sub, preferred_username: username, name, roles } = payload
  if (
    typeof sub !== 'string' ||
    sub.length === 0 ||
    codePoints(sub) > SUBJECT_LENGTH_MAX ||
    new RegExp(CONTROL_CHARACTERS.source).test(sub)
  ) {
    throw new AuthenticationError(
      `token claim sub must be 1 to ${SUBJECT_LENGTH_MAX} characters, none of them control characters`,
    )
  }
  if (roles !== undefined && !Array.isArray(roles)) {
    throw new AuthenticationError('token claim roles must be an array')
  }
  const handle = cleanText(username, HANDLE_LENGTH_MAX) ?? fallbackHandle(sub)
  return {
    subject: sub,
    handle,
    displayName: cleanText(name, DISPLAY_NAME_LENGTH_MAX) ?? handle,
    roles: ROLES.filter((role) => (roles ?? []).includes(role)),
  }
}

/** A handle for a token without `preferred_username`: stable for the subject, reveals nothing of it. */
function fallbackHandle(subject: string): string {
  return `user_${createHash('sha256').update(subject).digest('hex').slice(0, 12)}`
}

// Handles and names are shown to other users: no control characters, no
// surrounding blanks, a bounded length. Anything unusable falls back.
// biome-ignore lint/suspicious/noControlCharactersInRegex: removing them is the point
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g

function cleanText(value: unknown, lengthMax: number): string | undefined {
  if (typeof value !== 'string') return undefined
  const cleaned = [...value.normalize('NFC').replace(CONTROL_CHARACTERS, '').trim()]
    .slice(0, lengthMax)
    .join('')
    .trim()
  return cleaned.length > 0 ? cleaned : undefined
}

const codePoints = (s: string): number => [...s].length

export interface SignOptions {
  /** A jose time span ("1h", "15m", "7d") or seconds. */
  expiresIn: string | number
  issuer?: string
  audience?: string
}

/** The claims a token carries, as the identity provider spells them. */
export interface TokenInput {
  sub: string
  preferred_username?: string
  name?: string
  roles?: string[]
}

/** Signs an HS256 token, for `npm run token` and the tests; production tokens come from the identity provider. */
export async function signToken(key: Uint8Array, claims: TokenInput, options: SignOptions): Promise<string> {
  const jwt = new SignJWT({ ...claims })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuedAt()
    .setExpirationTime(
      typeof options.expiresIn === 'number'
        ? Math.floor(Date.now() / 1000) + options.expiresIn
        : options.expiresIn,
    )
  if (options.issuer !== undefined) jwt.setIssuer(options.issuer)
  if (options.audience !== undefined) jwt.setAudience(options.audience)
  return jwt.sign(key)
}
