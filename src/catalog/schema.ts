import { z } from 'zod'
import { builder } from '../graphql/builder.js'
import { Money } from '../graphql/money.js'
import {
  activeGiftsQuery,
  type CoinPackageOffer,
  CURRENCY_DEFAULT,
  CURRENCY_FORMAT,
  listCoinPackageOffers,
} from './service.js'

// A package's price depends on the currency the client asked for, so a
// CoinPackage here is an offer (package + one price), built by one join in
// the service, not a row type.
export const CoinPackage = builder.objectRef<CoinPackageOffer>('CoinPackage').implement({
  description: 'A package of coins for sale, priced in the currency that was asked for.',
  fields: (t) => ({
    id: t.exposeID('id'),
    coins: t.field({ type: 'Amount', description: 'Coins bought.', resolve: (p) => p.coins }),
    bonusCoins: t.field({
      type: 'Amount',
      description: 'Coins added on top for free.',
      resolve: (p) => p.bonusCoins,
    }),
    price: t.field({ type: Money, resolve: (p) => p.price }),
  }),
})

// A row type (drizzle object) so that later capabilities can reach a Gift
// through drizzle relations.
export const Gift = builder.drizzleObject('gifts', {
  name: 'Gift',
  description: 'Something a viewer can send to a creator, for coins.',
  fields: (t) => ({
    id: t.exposeID('id'),
    name: t.exposeString('name'),
    coinCost: t.field({ type: 'Amount', description: 'Coins per gift.', resolve: (g) => g.coinCost }),
    imageUrl: t.exposeString('imageUrl'),
    active: t.exposeBoolean('active'),
  }),
})

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
    resolve: (query, _root, _args, ctx) => ctx.db.query.gifts.findMany(query(activeGiftsQuery)),
  }),
}))
