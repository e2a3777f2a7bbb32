import { z } from 'zod'
import { type UserError, userError } from '../graphql/errors.js'
import { CURRENCY_FORMAT } from './service.js'

// What an admin may write into the catalog. Checked here, before any SQL, so
// that a refused input changes nothing and comes back as userErrors (code
// INVALID_INPUT, `field` naming the input path), never as a thrown error.

export const SKU_FORMAT = /^[a-z0-9][a-z0-9_-]{0,63}$/
export const NAME_LENGTH_MAX = 60
/** Coins in a package, coin cost of a gift: whole coins. */
export const COINS_MAX = 10_000_000n
/** A package's price, in minor units (10,000,000 = $100,000.00). */
export const PRICE_MINOR_MAX = 10_000_000n
/** Currencies one input may price a package in: more is a mistake, not a catalog. */
export const PRICES_PER_INPUT_MAX = 50
export const IMAGE_URL_LENGTH_MAX = 2_048
export const SORT_ORDER_MAX = 1_000_000

// Segments of letters, digits and . _ ~ % + - under /static/; '.' and '..' are refused below.
const STATIC_PATH = /^\/static\/[\w.~%+-]+(\/[\w.~%+-]+)*$/
// Control characters (tabs, newlines, NUL...) have no place in a display name.
const CONTROL_CHARACTER = /\p{Cc}/u

/** An https URL (no credentials in it), or a path of ours under /static/. */
export function isImageUrl(value: string): boolean {
  if (value.startsWith('/')) {
    return STATIC_PATH.test(value) && !value.split('/').some((segment) => segment === '.' || segment === '..')
  }
  // A host right after the scheme, as written: URL would make "https:///a.png" into "https://a.png/".
  if (!/^https:\/\/[^/\\\s]/i.test(value) || /\s/.test(value)) return false
  let url: URL
  try {
    url = new URL(value)
  } catch {
    return false
  }
  return url.protocol === 'https:' && url.hostname !== '' && url.username === '' && url.password === ''
}

const sku = z.string().regex(SKU_FORMAT, {
  message: 'must be 1 to 64 of a-z, 0-9, _ and -, starting with a letter or digit',
})

// Counted in characters (code points), not UTF-16 units: an emoji is one.
const name = z
  .string()
  .trim()
  .refine((value) => {
    const length = Array.from(value).length
    return length >= 1 && length <= NAME_LENGTH_MAX
  }, `must be 1 to ${NAME_LENGTH_MAX} characters, not counting spaces around it`)
  .refine((value) => !CONTROL_CHARACTER.test(value), 'must not contain control characters')

const coins = z
  .bigint()
  .min(1n, { message: 'must be at least 1' })
  .max(COINS_MAX, { message: `must be at most ${COINS_MAX}` })

const bonusCoins = z
  .bigint()
  .min(0n, { message: 'must not be negative' })
  .max(COINS_MAX, { message: `must be at most ${COINS_MAX}` })

const imageUrl = z
  .string()
  .max(IMAGE_URL_LENGTH_MAX, { message: `must be at most ${IMAGE_URL_LENGTH_MAX} characters` })
  .refine(isImageUrl, 'must be an https URL or a path under /static/')

const sortOrder = z
  .int()
  .min(0, { message: 'must not be negative' })
  .max(SORT_ORDER_MAX, { message: `must be at most ${SORT_ORDER_MAX}` })

const price = z.object({
  currency: z.string().regex(CURRENCY_FORMAT, {
    message: 'must be a three-letter ISO 4217 code in capitals, e.g. "USD"',
  }),
  amount: z
    .bigint()
    .min(1n, { message: 'must be at least 1' })
    .max(PRICE_MINOR_MAX, { message: `must be at most ${PRICE_MINOR_MAX}` }),
})

const prices = z
  .array(price)
  .max(PRICES_PER_INPUT_MAX, { message: `must list at most ${PRICES_PER_INPUT_MAX} currencies` })
  .superRefine((list, ctx) => {
    const seen = new Set<string>()
    list.forEach((p, i) => {
      if (seen.has(p.currency)) {
        ctx.addIssue({ code: 'custom', path: [i, 'currency'], message: `lists ${p.currency} twice` })
      }
      seen.add(p.currency)
    })
  })

// GraphQL lets a client send null for an optional field: in an update it
// means "leave as it is", like leaving the field out.
const optional = <T extends z.ZodType>(schema: T) => schema.nullish().transform((value) => value ?? undefined)

const bonusNotAboveCoins = (input: { coins: bigint; bonusCoins: bigint }) => input.bonusCoins <= input.coins

export const createGiftInput = z.object({
  sku,
  name,
  coinCost: coins,
  imageUrl,
  sortOrder: optional(sortOrder),
})
export type CreateGift = z.output<typeof createGiftInput>

export const updateGiftInput = z.object({
  giftId: z.string(),
  name: optional(name),
  coinCost: optional(coins),
  imageUrl: optional(imageUrl),
  sortOrder: optional(sortOrder),
})
export type UpdateGift = z.output<typeof updateGiftInput>

export const retireGiftInput = z.object({ giftId: z.string() })

export const createCoinPackageInput = z
  .object({
    sku,
    coins,
    bonusCoins: bonusCoins.nullish().transform((value) => value ?? 0n),
    prices: prices.min(1, { message: 'must list at least one price' }),
    sortOrder: optional(sortOrder),
  })
  .refine(bonusNotAboveCoins, {
    path: ['bonusCoins'],
    message: 'must not be more than coins',
    // Only between two valid amounts: a bad `coins` is reported once, as itself.
    when: (payload) => payload.issues.length === 0,
  })
export type CreateCoinPackage = z.output<typeof createCoinPackageInput>

export const updateCoinPackageInput = z.object({
  packageId: z.string(),
  coins: optional(coins),
  bonusCoins: optional(bonusCoins),
  prices: optional(prices),
  sortOrder: optional(sortOrder),
})
export type UpdateCoinPackage = z.output<typeof updateCoinPackageInput>

export const retireCoinPackageInput = z.object({ packageId: z.string() })

/** Zod's issues as userErrors: one per input field at fault (its first issue), in input order. */
export function inputErrors(error: z.ZodError): UserError[] {
  const byField = new Map<string, UserError>()
  for (const issue of error.issues) {
    const path = issue.path.map(String).join('.')
    const field = path ? `input.${path}` : 'input'
    if (!byField.has(field))
      byField.set(field, userError('INVALID_INPUT', `${path || 'input'} ${issue.message}`, field))
  }
  return [...byField.values()]
}

/** Parses a mutation's input: the valid value, or the userErrors that say why not. */
export function parseInput<S extends z.ZodType>(
  schema: S,
  input: unknown,
): { ok: true; value: z.output<S> } | { ok: false; userErrors: UserError[] } {
  const parsed = schema.safeParse(input)
  return parsed.success
    ? { ok: true, value: parsed.data }
    : { ok: false, userErrors: inputErrors(parsed.error) }
}
