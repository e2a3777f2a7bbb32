import { z } from 'zod'
import { builder } from '../graphql/builder.js'
import { type UserError, UserErrorRef, withUserErrors } from '../graphql/errors.js'
import { Money } from '../graphql/money.js'
import {
  createCoinPackage,
  createGift,
  type GiftRow,
  retireCoinPackage,
  retireGift,
  updateCoinPackage,
  updateGift,
} from './admin.js'
import {
  COINS_MAX,
  createCoinPackageInput,
  createGiftInput,
  NAME_LENGTH_MAX,
  PRICE_MINOR_MAX,
  parseInput,
  retireCoinPackageInput,
  retireGiftInput,
  updateCoinPackageInput,
  updateGiftInput,
} from './input.js'
import {
  activeGiftsQuery,
  allGiftsQuery,
  type CoinPackageOffer,
  CURRENCY_DEFAULT,
  CURRENCY_FORMAT,
  listCoinPackageOffers,
} from './service.js'

// ---- types ------------------------------------------------------------------

// A package's price depends on the currency the client asked for, so a
// CoinPackage here is an offer (package + one price), built by one join in
// the service, not a row type.
export const CoinPackage = builder.objectRef<CoinPackageOffer>('CoinPackage').implement({
  description: 'A package of coins for sale, priced in the currency that was asked for.',
  fields: (t) => ({
    id: t.exposeID('id'),
    sku: t.exposeString('sku', { description: 'Stable name of the package, e.g. "coins_70".' }),
    coins: t.field({ type: 'Amount', description: 'Coins bought.', resolve: (p) => p.coins }),
    bonusCoins: t.field({
      type: 'Amount',
      description: 'Coins added on top for free.',
      resolve: (p) => p.bonusCoins,
    }),
    price: t.field({
      type: Money,
      description:
        'The price in the currency that was asked for. In a mutation payload, in USD, ' +
        'or in the first currency of `prices` when it has no USD price.',
      resolve: (p) => p.price,
    }),
    prices: t.field({
      type: [Money],
      description: 'Every price it has, by currency code.',
      resolve: (p) => p.prices,
    }),
    active: t.exposeBoolean('active', { description: 'False once retired: no longer on sale.' }),
    sortOrder: t.exposeInt('sortOrder', { description: 'Display order, smallest first.' }),
  }),
})

// A row type (drizzle object) so that later capabilities can reach a Gift
// through drizzle relations.
export const Gift = builder.drizzleObject('gifts', {
  name: 'Gift',
  description: 'Something a viewer can send to a creator, for coins.',
  fields: (t) => ({
    // Resolvers rather than exposes: an exposed column makes the drizzle plugin
    // read a row again when it did not come from a planned query (a gift event's
    // gift, which its batch already read). The type's default selection (all
    // columns) serves planned queries.
    id: t.id({ resolve: (g) => g.id }),
    sku: t.string({ description: 'Stable name of the gift, e.g. "rose".', resolve: (g) => g.sku }),
    name: t.string({ resolve: (g) => g.name }),
    coinCost: t.field({ type: 'Amount', description: 'Coins per gift.', resolve: (g) => g.coinCost }),
    imageUrl: t.string({ resolve: (g) => g.imageUrl }),
    active: t.boolean({
      description: 'False once retired: it can no longer be sent.',
      resolve: (g) => g.active,
    }),
    sortOrder: t.int({ description: 'Display order, smallest first.', resolve: (g) => g.sortOrder }),
  }),
})

// ---- queries ----------------------------------------------------------------

const currencyArg = z
  .string()
  .regex(CURRENCY_FORMAT, { message: 'must be a three-letter ISO 4217 code in capitals, e.g. "USD"' })
  .nullish()

builder.queryFields((t) => ({
  coinPackages: t.field({
    type: [CoinPackage],
    description: 'The coin packages on sale that have a price in `currency`, in display order.',
    args: {
      currency: t.arg.string({
        required: false,
        defaultValue: CURRENCY_DEFAULT,
        description: 'ISO 4217 code, e.g. "USD" or "EUR".',
        validate: currencyArg,
      }),
    },
    resolve: (_root, args, ctx) => listCoinPackageOffers(ctx.db, args.currency ?? CURRENCY_DEFAULT),
  }),
  gifts: t.drizzleField({
    type: [Gift],
    description: 'The gifts that can be sent now, in display order.',
    args: {
      includeRetired: t.arg.boolean({
        required: false,
        defaultValue: false,
        description: 'Also list retired gifts. Admins only.',
      }),
    },
    // Anyone may list what is on sale; only an admin may look at what was taken off it.
    authScopes: (_root, args) => (args.includeRetired ? { admin: true } : true),
    resolve: (query, _root, args, ctx) =>
      ctx.db.query.gifts.findMany(query(args.includeRetired ? allGiftsQuery : activeGiftsQuery)),
  }),
}))

// ---- admin mutations --------------------------------------------------------
//
// Each takes one `input`, checked in input.ts: a bad input is refused with
// userErrors (INVALID_INPUT, `field` naming the input path) and changes
// nothing. Each write is one transaction (admin.ts).

// Explicit null in an optional input field means "leave as it is" (updates) or "the default" (creates).
const PriceInput = builder.inputType('CoinPackagePriceInput', {
  description: 'A price of a coin package in one currency.',
  fields: (t) => ({
    currency: t.string({ required: true, description: 'ISO 4217 code in capitals, e.g. "USD".' }),
    amount: t.field({
      type: 'Amount',
      required: true,
      description: `In the minor unit of the currency (cents for USD), 1 to ${PRICE_MINOR_MAX}.`,
    }),
  }),
})

const skuDescription = 'Stable name: 1 to 64 of a-z, 0-9, _ and -, starting with a letter or digit. Unique.'
const nameDescription = `1 to ${NAME_LENGTH_MAX} characters; spaces around it are dropped.`
const coinsDescription = `Whole coins, 1 to ${COINS_MAX}.`
const imageUrlDescription = 'An https URL, or a path under /static/.'
const sortOrderDescription = 'Display order, smallest first, 0 to 1000000. By default: after the last one.'

const CreateGiftInput = builder.inputType('CreateGiftInput', {
  fields: (t) => ({
    sku: t.string({ required: true, description: skuDescription }),
    name: t.string({ required: true, description: nameDescription }),
    coinCost: t.field({ type: 'Amount', required: true, description: coinsDescription }),
    imageUrl: t.string({ required: true, description: imageUrlDescription }),
    sortOrder: t.int({ required: false, description: sortOrderDescription }),
  }),
})

const UpdateGiftInput = builder.inputType('UpdateGiftInput', {
  description: 'The fields to change; those left out (or null) keep their values.',
  fields: (t) => ({
    giftId: t.id({ required: true }),
    name: t.string({ required: false, description: nameDescription }),
    coinCost: t.field({ type: 'Amount', required: false, description: coinsDescription }),
    imageUrl: t.string({ required: false, description: imageUrlDescription }),
    sortOrder: t.int({ required: false, description: 'Display order, smallest first, 0 to 1000000.' }),
  }),
})

const RetireGiftInput = builder.inputType('RetireGiftInput', {
  fields: (t) => ({ giftId: t.id({ required: true }) }),
})

const CreateCoinPackageInput = builder.inputType('CreateCoinPackageInput', {
  fields: (t) => ({
    sku: t.string({ required: true, description: skuDescription }),
    coins: t.field({ type: 'Amount', required: true, description: coinsDescription }),
    bonusCoins: t.field({
      type: 'Amount',
      required: false,
      description: 'Coins added on top for free, 0 (the default) to `coins`.',
    }),
    prices: t.field({
      type: [PriceInput],
      required: true,
      description: 'At least one; one per currency.',
    }),
    sortOrder: t.int({ required: false, description: sortOrderDescription }),
  }),
})

const UpdateCoinPackageInput = builder.inputType('UpdateCoinPackageInput', {
  description: 'The fields to change; those left out (or null) keep their values.',
  fields: (t) => ({
    packageId: t.id({ required: true }),
    coins: t.field({ type: 'Amount', required: false, description: coinsDescription }),
    bonusCoins: t.field({
      type: 'Amount',
      required: false,
      description: 'Coins added on top for free, 0 to `coins`.',
    }),
    prices: t.field({
      type: [PriceInput],
      required: false,
      description: 'Replaces the price in each currency listed (one per currency); the other prices stay.',
    }),
    sortOrder: t.int({ required: false, description: 'Display order, smallest first, 0 to 1000000.' }),
  }),
})

const RetireCoinPackageInput = builder.inputType('RetireCoinPackageInput', {
  fields: (t) => ({ packageId: t.id({ required: true }) }),
})

interface GiftPayloadShape {
  gift?: GiftRow
  userErrors: UserError[]
}

interface CoinPackagePayloadShape {
  coinPackage?: CoinPackageOffer
  userErrors: UserError[]
}

const giftPayload = (name: string) =>
  builder.objectRef<GiftPayloadShape>(name).implement({
    fields: (t) => ({
      gift: t.field({
        type: Gift,
        nullable: true,
        description: 'The gift as it is now; null when refused.',
        resolve: (p) => p.gift ?? null,
      }),
      userErrors: t.field({ type: [UserErrorRef], resolve: (p) => p.userErrors }),
    }),
  })

const coinPackagePayload = (name: string) =>
  builder.objectRef<CoinPackagePayloadShape>(name).implement({
    fields: (t) => ({
      coinPackage: t.field({
        type: CoinPackage,
        nullable: true,
        description: 'The package as it is now, with all its prices; null when refused.',
        resolve: (p) => p.coinPackage ?? null,
      }),
      userErrors: t.field({ type: [UserErrorRef], resolve: (p) => p.userErrors }),
    }),
  })

const CreateGiftPayload = giftPayload('CreateGiftPayload')
const UpdateGiftPayload = giftPayload('UpdateGiftPayload')
const RetireGiftPayload = giftPayload('RetireGiftPayload')
const CreateCoinPackagePayload = coinPackagePayload('CreateCoinPackagePayload')
const UpdateCoinPackagePayload = coinPackagePayload('UpdateCoinPackagePayload')
const RetireCoinPackagePayload = coinPackagePayload('RetireCoinPackagePayload')

/** Checks the input, then runs the write; either way a payload with its userErrors. */
async function mutate<S extends z.ZodType, T extends object>(
  schema: S,
  input: unknown,
  work: (valid: z.output<S>) => Promise<T>,
) {
  const parsed = parseInput(schema, input)
  if (!parsed.ok) return { userErrors: parsed.userErrors }
  return withUserErrors(() => work(parsed.value))
}

builder.mutationFields((t) => ({
  createGift: t.field({
    type: CreateGiftPayload,
    description: 'Adds a gift to the catalog, on sale at once. Admins only.',
    authScopes: { admin: true },
    args: { input: t.arg({ type: CreateGiftInput, required: true }) },
    resolve: (_root, { input }, ctx) =>
      mutate(createGiftInput, input, async (valid) => ({ gift: await createGift(ctx.db, valid) })),
  }),
  updateGift: t.field({
    type: UpdateGiftPayload,
    description: 'Changes a gift, retired or not. Admins only.',
    authScopes: { admin: true },
    args: { input: t.arg({ type: UpdateGiftInput, required: true }) },
    resolve: (_root, { input }, ctx) =>
      mutate(updateGiftInput, input, async (valid) => {
        const gift = await updateGift(ctx.db, valid)
        // Gifts priced from the old row would be sent back by their batch; spare them that.
        ctx.services.gifts.forgetGift(gift.id)
        return { gift }
      }),
  }),
  retireGift: t.field({
    type: RetireGiftPayload,
    description:
      'Takes a gift off sale: it leaves `gifts` but stays on record for the gifts already sent. ' +
      'Retiring it again changes nothing. Admins only.',
    authScopes: { admin: true },
    args: { input: t.arg({ type: RetireGiftInput, required: true }) },
    resolve: (_root, { input }, ctx) =>
      mutate(retireGiftInput, input, async (valid) => {
        const gift = await retireGift(ctx.db, valid.giftId)
        ctx.services.gifts.forgetGift(gift.id)
        return { gift }
      }),
  }),
  createCoinPackage: t.field({
    type: CreateCoinPackagePayload,
    description: 'Adds a coin package with its prices, on sale at once. Admins only.',
    authScopes: { admin: true },
    args: { input: t.arg({ type: CreateCoinPackageInput, required: true }) },
    resolve: (_root, { input }, ctx) =>
      mutate(createCoinPackageInput, input, async (valid) => ({
        coinPackage: await createCoinPackage(ctx.db, valid),
      })),
  }),
  updateCoinPackage: t.field({
    type: UpdateCoinPackagePayload,
    description: 'Changes a coin package, retired or not, and the prices listed. Admins only.',
    authScopes: { admin: true },
    args: { input: t.arg({ type: UpdateCoinPackageInput, required: true }) },
    resolve: (_root, { input }, ctx) =>
      mutate(updateCoinPackageInput, input, async (valid) => ({
        coinPackage: await updateCoinPackage(ctx.db, valid),
      })),
  }),
  retireCoinPackage: t.field({
    type: RetireCoinPackagePayload,
    description:
      'Takes a coin package off sale: it leaves `coinPackages` but stays on record for the purchases made. ' +
      'Retiring it again changes nothing. Admins only.',
    authScopes: { admin: true },
    args: { input: t.arg({ type: RetireCoinPackageInput, required: true }) },
    resolve: (_root, { input }, ctx) =>
      mutate(retireCoinPackageInput, input, async (valid) => ({
        coinPackage: await retireCoinPackage(ctx.db, valid.packageId),
      })),
  }),
}))
