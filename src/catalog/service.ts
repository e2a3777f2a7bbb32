import { and, asc, eq } from 'drizzle-orm'
import type { DbOrTx } from '../db/client.js'
import { coinPackagePrices, coinPackages } from '../db/schema.js'

export const CURRENCY_DEFAULT = 'USD'
export const CURRENCY_FORMAT = /^[A-Z]{3}$/

/** A coin package as sold in one currency. */
export interface CoinPackageOffer {
  id: string
  sku: string
  coins: bigint
  bonusCoins: bigint
  price: { amountMinor: bigint; currency: string }
}

/**
 * The active packages that have a price in `currency`, in display order.
 * One query whatever the number of packages: the price comes from a join.
 */
export async function listCoinPackageOffers(db: DbOrTx, currency: string): Promise<CoinPackageOffer[]> {
  const rows = await db
    .select({
      id: coinPackages.id,
      sku: coinPackages.sku,
      coins: coinPackages.coins,
      bonusCoins: coinPackages.bonusCoins,
      amountMinor: coinPackagePrices.amountMinor,
      currency: coinPackagePrices.currency,
    })
    .from(coinPackages)
    .innerJoin(
      coinPackagePrices,
      and(eq(coinPackagePrices.packageId, coinPackages.id), eq(coinPackagePrices.currency, currency)),
    )
    .where(eq(coinPackages.active, true))
    .orderBy(asc(coinPackages.sortOrder), asc(coinPackages.coins), asc(coinPackages.id))
  return rows.map(({ amountMinor, currency: priceCurrency, ...pkg }) => ({
    ...pkg,
    price: { amountMinor, currency: priceCurrency },
  }))
}

/**
 * The gifts a viewer can send now, in display order, as a relational query
 * (`db.query.gifts.findMany`): GraphQL merges it with the fields it needs.
 */
export const activeGiftsQuery = {
  where: { active: true },
  orderBy: { sortOrder: 'asc', coinCost: 'asc', id: 'asc' },
} as const
