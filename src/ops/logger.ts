import pino, { type DestinationStream, type LevelWithSilent, type Logger } from 'pino'

// The process's one logger: pino, JSON lines on stdout. No secret may reach
// it, in two layers:
//
// 1. What is logged is chosen field by field (the request log names its
//    fields; no code logs a whole request, its headers or its body), and
//    pino's `redact` blanks the places a secret could sit if an object that
//    carries one were logged anyway (headers, connection params, tokens).
// 2. The finished line is scrubbed: any JWT-shaped string (three base64url
//    parts, the first starting `eyJ` — `{"` encoded), any `Bearer …` or
//    `Basic …` credential, and every configured secret (JWT key, Stripe and PayPal
//    secrets, the metrics token) is replaced. This catches a secret inside
//    an error message or a stack, where no path can name it.

/** Object paths whose values are replaced by "[Redacted]" (pino's redact, fast-redact paths). */
export const REDACTED_PATHS = [
  'authorization',
  'cookie',
  'password',
  'secret',
  'token',
  'connectionParams',
  '*.authorization',
  '*.cookie',
  '*.password',
  '*.secret',
  '*.token',
  '*.connectionParams',
  '*.headers.authorization',
  '*.headers.cookie',
  '*.headers["set-cookie"]',
  '*.headers["stripe-signature"]',
  '*.headers["paypal-transmission-sig"]',
  '*.headers["paypal-auth-algo"]',
  '*.payload.authorization',
  '*.*.headers.authorization',
  '*.*.headers.cookie',
]

const JWT = /eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/g
const BEARER = /\b(Bearer)\s+[A-Za-z0-9._~+/=-]+/gi
/** HTTP Basic credentials (PayPal's client id and secret travel base64-encoded so). */
const BASIC = /\b(Basic)\s+[A-Za-z0-9+/=]{16,}/g
const REPLACEMENT = '[Redacted]'
/** Secrets shorter than this are not scrubbed by value (they would blank ordinary words). */
const SECRET_LENGTH_MIN = 8

export interface LoggerSettings {
  level: LevelWithSilent
  /** Values that must never appear in a log line (keys, client secrets); unset ones are skipped. */
  secrets?: readonly (string | undefined)[]
}

/** The secrets in the configuration, for LoggerSettings.secrets. */
export function configuredSecrets(config: {
  jwt: { secret?: string }
  stripe: { secretKey?: string; webhookSecret?: string }
  paypal: { clientSecret?: string }
  metrics?: { token?: string }
}): (string | undefined)[] {
  return [
    config.jwt.secret,
    config.stripe.secretKey,
    config.stripe.webhookSecret,
    config.paypal.clientSecret,
    config.metrics?.token,
  ]
}

/** A log line with every token-shaped string and every known secret replaced. */
export function scrubber(secrets: readonly (string | undefined)[] = []): (line: string) => string {
  // Each secret as it appears inside a JSON string (escaped), longest first.
  const literals = [
    ...new Set(
      secrets
        .filter((s): s is string => s !== undefined && s.length >= SECRET_LENGTH_MIN)
        .map((s) => JSON.stringify(s).slice(1, -1)),
    ),
  ].sort((a, b) => b.length - a.length)
  return (line) => {
    let out = line
    // Cheap tests first: most lines carry no candidate at all.
    if (out.includes('eyJ')) out = out.replace(JWT, REPLACEMENT)
    if (/bearer/i.test(out)) out = out.replace(BEARER, `$1 ${REPLACEMENT}`)
    if (out.includes('Basic')) out = out.replace(BASIC, `$1 ${REPLACEMENT}`)
    for (const literal of literals) if (out.includes(literal)) out = out.replaceAll(literal, REPLACEMENT)
    return out
  }
}

/** The application's logger; `destination` defaults to stdout (tests pass a stream to read). */
export function createLogger(settings: LoggerSettings, destination?: DestinationStream): Logger {
  const scrub = scrubber(settings.secrets)
  const options = {
    level: settings.level,
    redact: { paths: REDACTED_PATHS, censor: REPLACEMENT },
    hooks: { streamWrite: scrub },
  }
  return destination ? pino(options, destination) : pino(options)
}
