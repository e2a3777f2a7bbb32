import { z } from 'zod'
import { LANES_MAX } from './ledger/lanes.js'

// The runtime interface of ../shared/contract/RUNTIME.md, validated once at
// start-up. A bad value stops start-up with a message naming the variable.

const optionalString = z
  .string()
  .optional()
  .transform((v) => (v === undefined || v.trim() === '' ? undefined : v))

/** Writers the ledger posts through on PostgreSQL (src/ledger/lanes.ts), unless LEDGER_LANES says. */
export const LEDGER_LANES_DEFAULT = 2

const intInRange = (min: number, max: number, fallback: number) =>
  z
    .string()
    .optional()
    .transform((v, ctx) => {
      if (v === undefined || v.trim() === '') return fallback
      if (!/^\d+$/.test(v.trim())) {
        ctx.addIssue({ code: 'custom', message: `must be a whole number between ${min} and ${max}` })
        return z.NEVER
      }
      const n = Number(v)
      if (n < min || n > max) {
        ctx.addIssue({ code: 'custom', message: `must be between ${min} and ${max}` })
        return z.NEVER
      }
      return n
    })

const booleanFlag = optionalString.pipe(
  z.enum(['true', 'false'], { message: 'must be "true" or "false"' }).optional(),
)

const urlWithProtocols = (protocols: string[]) =>
  optionalString.refine(
    (v) => {
      if (v === undefined) return true
      try {
        return protocols.includes(new URL(v).protocol)
      } catch {
        return false
      }
    },
    { message: `must be a URL starting with ${protocols.map((p) => `${p}//`).join(' or ')}` },
  )

/** The currencies whose payout accounts the chart of accounts has (migrations/*_chart_of_accounts, *_payouts_chart). */
export const PAYOUT_CURRENCIES = ['USD', 'EUR'] as const

// Minor units per coin as an exact fraction: "1/2" is half a cent per coin in USD, "3" three cents.
const payoutRate = optionalString.transform((v, ctx) => {
  const match = /^(\d{1,12})(?:\/(\d{1,12}))?$/.exec((v ?? '1/2').trim())
  const numerator = BigInt(match?.[1] ?? '0')
  const denominator = BigInt(match?.[2] ?? '1')
  if (!match || numerator === 0n || denominator === 0n) {
    ctx.addIssue({
      code: 'custom',
      message: 'must be minor units per coin as N or N/D with positive whole numbers, e.g. 1/2',
    })
    return z.NEVER
  }
  return { numerator, denominator }
})

// Hours as a decimal (tests use a few seconds: 0.001 is 3.6 s), at most a year.
const positiveHours = optionalString.transform((v, ctx) => {
  if (v === undefined) return 360
  const hours = Number(v)
  if (!/^\d+(\.\d+)?$/.test(v.trim()) || !(hours > 0) || hours > 8_760) {
    ctx.addIssue({ code: 'custom', message: 'must be a number of hours above 0 and at most 8760' })
    return z.NEVER
  }
  return hours
})

const envSchema = z
  .object({
    NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
    PORT: intInRange(0, 65535, 4000),
    HOST: z.string().min(1).default('0.0.0.0'),
    DATABASE_URL: urlWithProtocols(['postgres:', 'postgresql:']),
    DATABASE_POOL_MAX: intInRange(1, 200, 10),
    PGLITE_DIR: z.string().min(1).default('./.data/pglite'),
    REDIS_URL: urlWithProtocols(['redis:', 'rediss:']),
    JWT_SECRET: optionalString.refine((v) => v === undefined || v.length >= 32, {
      message: 'must be at least 32 characters',
    }),
    JWT_ISSUER: optionalString,
    JWT_AUDIENCE: optionalString,
    // GraphQL introspection (and GraphiQL): on, except in production unless asked for.
    GRAPHQL_INTROSPECTION: booleanFlag,
    // Mutations per user (per IP address for anonymous callers): a token bucket.
    RATE_LIMIT_MUTATIONS_PER_SECOND: intInRange(1, 100_000, 20),
    RATE_LIMIT_MUTATIONS_BURST: intInRange(1, 100_000, 40),
    STRIPE_SECRET_KEY: optionalString,
    STRIPE_WEBHOOK_SECRET: optionalString,
    STRIPE_API_BASE: urlWithProtocols(['http:', 'https:']),
    PAYPAL_CLIENT_ID: optionalString,
    PAYPAL_CLIENT_SECRET: optionalString,
    PAYPAL_WEBHOOK_ID: optionalString,
    PAYPAL_ENV: z.enum(['sandbox', 'live']).default('live'),
    PAYPAL_API_BASE: urlWithProtocols(['http:', 'https:']),
    // Per request to Stripe or PayPal: past it the provider counts as unavailable (Stripe retries twice).
    PAYMENT_PROVIDER_TIMEOUT_MS: intInRange(100, 120_000, 10_000),
    // The webhook inbox: how long a worker's claim on events lasts before another may take them over.
    WEBHOOK_LEASE_MS: intInRange(1_000, 3_600_000, 60_000),
    LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    // Ledger: how many postings one coalesced database transaction may carry.
    LEDGER_BATCH_MAX: intInRange(1, 5000, 500),
    // Ledger: writers on PostgreSQL, each on its own connection (src/ledger/lanes.ts); PGlite has one.
    LEDGER_LANES: intInRange(1, LANES_MAX, LEDGER_LANES_DEFAULT),
    // Gifts: the most gifts one sendGift may carry, the platform's cap on the
    // coins of one sendGift, and how long a streak (combo) waits for the next gift.
    GIFT_QUANTITY_MAX: intInRange(1, 100_000, 999),
    GIFT_COINS_MAX: intInRange(1, 1_000_000_000, 1_000_000),
    GIFT_COMBO_WINDOW_MS: intInRange(0, 600_000, 5_000),
    // Tamper evidence: how often closed journal ranges are sealed, and the most transactions per seal.
    LEDGER_SEAL_INTERVAL_MS: intInRange(100, 3_600_000, 5_000),
    LEDGER_SEAL_BATCH_MAX: intInRange(1, 100_000, 10_000),
    // Payouts: creators' earned coins to money, reviewed by an admin (see README, "Payouts").
    PAYOUT_CURRENCY: optionalString.pipe(
      z
        .enum(PAYOUT_CURRENCIES, {
          message: `must be a currency with payout accounts in the chart: ${PAYOUT_CURRENCIES.join(', ')}`,
        })
        .default('USD'),
    ),
    PAYOUT_RATE: payoutRate,
    PAYOUT_MIN_COINS: intInRange(1, 1_000_000_000_000, 2_000),
    PAYOUT_DAILY_CAP_COINS: intInRange(1, 1_000_000_000_000, 200_000),
    PAYOUT_HOLD_HOURS: positiveHours,
    // Operations: the longest a SIGTERM stop may take, and the bearer token GET /metrics asks for (docs/OPERATIONS.md).
    SHUTDOWN_TIMEOUT_MS: intInRange(1_000, 600_000, 10_000),
    METRICS_TOKEN: optionalString.refine((v) => v === undefined || /^[\x21-\x7e]{16,200}$/.test(v), {
      message: 'must be 16 to 200 printable characters without spaces',
    }),
  })
  .superRefine((env, ctx) => {
    if (env.NODE_ENV === 'production' && env.JWT_SECRET === undefined) {
      ctx.addIssue({ code: 'custom', path: ['JWT_SECRET'], message: 'is required when NODE_ENV=production' })
    }
    if (env.PAYOUT_DAILY_CAP_COINS < env.PAYOUT_MIN_COINS) {
      ctx.addIssue({
        code: 'custom',
        path: ['PAYOUT_DAILY_CAP_COINS'],
        message: 'must be at least PAYOUT_MIN_COINS',
      })
    }
    // The smallest payout must be worth something (one minor unit), the largest must fit a bigint column.
    const { numerator, denominator } = env.PAYOUT_RATE
    if ((BigInt(env.PAYOUT_DAILY_CAP_COINS) * numerator) / denominator > 1n << 62n) {
      ctx.addIssue({
        code: 'custom',
        path: ['PAYOUT_RATE'],
        message: 'makes a day’s payouts too large to count',
      })
    }
    if ((BigInt(env.PAYOUT_MIN_COINS) * numerator) / denominator < 1n) {
      ctx.addIssue({
        code: 'custom',
        path: ['PAYOUT_MIN_COINS'],
        message: 'must convert to at least one minor unit at PAYOUT_RATE',
      })
    }
  })

export type Config = ReturnType<typeof toConfig>

export class ConfigError extends Error {
  override readonly name = 'ConfigError'
}

function toConfig(env: z.infer<typeof envSchema>) {
  return {
    env: env.NODE_ENV,
    http: { port: env.PORT, host: env.HOST },
    database: env.DATABASE_URL
      ? ({ kind: 'postgres', url: env.DATABASE_URL, poolMax: env.DATABASE_POOL_MAX } as const)
      : ({ kind: 'pglite', dir: env.PGLITE_DIR } as const),
    redisUrl: env.REDIS_URL,
    jwt: {
      secret: env.JWT_SECRET,
      issuer: env.JWT_ISSUER,
      audience: env.JWT_AUDIENCE,
      // Without JWT_SECRET (never in production): a random key made once and kept here.
      devKeyFile: './.data/jwt-secret',
    },
    graphql: {
      introspection:
        env.GRAPHQL_INTROSPECTION === undefined
          ? env.NODE_ENV !== 'production'
          : env.GRAPHQL_INTROSPECTION === 'true',
    },
    rateLimit: {
      mutationsPerSecond: env.RATE_LIMIT_MUTATIONS_PER_SECOND,
      mutationsBurst: env.RATE_LIMIT_MUTATIONS_BURST,
    },
    stripe: {
      secretKey: env.STRIPE_SECRET_KEY,
      webhookSecret: env.STRIPE_WEBHOOK_SECRET,
      apiBase: env.STRIPE_API_BASE,
    },
    paypal: {
      clientId: env.PAYPAL_CLIENT_ID,
      clientSecret: env.PAYPAL_CLIENT_SECRET,
      webhookId: env.PAYPAL_WEBHOOK_ID,
      apiBase:
        env.PAYPAL_API_BASE ??
        (env.PAYPAL_ENV === 'sandbox' ? 'https://api-m.sandbox.paypal.com' : 'https://api-m.paypal.com'),
    },
    payments: { timeoutMs: env.PAYMENT_PROVIDER_TIMEOUT_MS },
    inbox: { leaseMs: env.WEBHOOK_LEASE_MS },
    logLevel: env.LOG_LEVEL,
    ledger: { batchSizeMax: env.LEDGER_BATCH_MAX, lanes: env.LEDGER_LANES },
    seals: { intervalMs: env.LEDGER_SEAL_INTERVAL_MS, batchSizeMax: env.LEDGER_SEAL_BATCH_MAX },
    gifts: {
      quantityMax: env.GIFT_QUANTITY_MAX,
      coinsMax: BigInt(env.GIFT_COINS_MAX),
      comboWindowMs: env.GIFT_COMBO_WINDOW_MS,
    },
    payouts: {
      currency: env.PAYOUT_CURRENCY,
      rate: env.PAYOUT_RATE,
      minCoins: BigInt(env.PAYOUT_MIN_COINS),
      dailyCapCoins: BigInt(env.PAYOUT_DAILY_CAP_COINS),
      holdMs: Math.round(env.PAYOUT_HOLD_HOURS * 3_600_000),
    },
    shutdown: { timeoutMs: env.SHUTDOWN_TIMEOUT_MS },
    metrics: { token: env.METRICS_TOKEN },
  }
}

/** Reads and validates the environment; throws a ConfigError naming every bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const parsed = envSchema.safeParse(env)
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) => `  ${issue.path.join('.')}: ${issue.message}`)
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`)
  }
  return toConfig(parsed.data)
}
