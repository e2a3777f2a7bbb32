import { and, asc, eq, sql } from 'drizzle-orm'
import type { DbOrTx } from '../db/client.js'
import { coinPackagePrices, coinPackages } from '../db/schema.js'
import type { MoneyShape } from '../graphql/money.js'

export const CURRENCY_DEFAULT = 'USD'
export const CURRENCY_FORMAT = /^[A-Z]{3}$/

/** A coin package as sold in one currency, with all its other prices. */
export interface CoinPackageOffer {
  id: string
  sku: string
  coins: bigint
  bonusCoins: bigint
  active: boolean
  sortOrder: number
  /** The price in the currency that was asked for. */
  price: MoneyShape
  /** Every price it has, by currency code. */
  prices: MoneyShape[]
}

/**
 * The active packages that have a price in `currency`, in display order.
 * One query whatever the number of packages: the price comes from a join,
 * the list of all prices from a subquery aggregate (amounts as text, so that
 * no bigint passes through a JSON number).
 */
export async function listCoinPackageOffers(db: DbOrTx, currency: string): Promise<CoinPackageOffer[]> {
  const rows = await db
    .select({
      id: coinPackages.id,
      sku: coinPackages.sku,
      coins: coinPackages.coins,
      bonusCoins: coinPackages.bonusCoins,
      active: coinPackages.active,
      sortOrder: coinPackages.sortOrder,
      amountMinor: coinPackagePrices.amountMinor,
      currency: coinPackagePrices.currency,
      pricesJson: sql<string>`(
        select coalesce(json_agg(json_build_object('currency', p.currency, 'amountMinor', p.amount_minor::text)
          order by p.currency), '[]')::text
        from coin_package_prices p where p.package_id = ${coinPackages.id})`,
    })
    .from(coinPackages)
    .innerJoin(
      coinPackagePrices,
      and(eq(coinPackagePrices.packageId, coinPackages.id), eq(coinPackagePrices.currency, currency)),
    )
    .where(eq(coinPackages.active, true))
    .orderBy(asc(coinPackages.sortOrder), asc(coinPackages.coins), asc(coinPackages.id))
  return rows.map(({ amountMinor, currency: priceCurrency, pricesJson, ...pkg }) => ({
    ...pkg,
    price: { amountMinor, currency: priceCurrency },
    prices: (JSON.parse(pricesJson) as { currency: string; amountMinor: string }[]).map((p) => ({
      currency: p.currency,
      amountMinor: BigInt(p.amountMinor),
    })),
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

/** Every gift, retired ones too, in the same order (for admins). */
export const allGiftsQuery = {
  orderBy: activeGiftsQuery.orderBy,
} as const
