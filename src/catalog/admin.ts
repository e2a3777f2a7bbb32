import { asc, eq, sql } from 'drizzle-orm'
import type { Db, Tx } from '../db/client.js'
import { coinPackagePrices, coinPackages, gifts } from '../db/schema.js'
import { isUuid } from '../db/uuid.js'
import { DomainError } from '../graphql/errors.js'
import type { MoneyShape } from '../graphql/money.js'
import type { CreateCoinPackage, CreateGift, UpdateCoinPackage, UpdateGift } from './input.js'
import { type CoinPackageOffer, CURRENCY_DEFAULT } from './service.js'

// An admin's writes to the catalog: create, update, retire. Inputs arrive
// valid (input.ts); what only the database can tell (a taken sku, an unknown
// id, a bonus above the coins already stored) is a DomainError here, thrown
// inside the transaction so that nothing is kept. Gifts and packages are
// never deleted: gift events and purchases refer to them.

export type GiftRow = typeof gifts.$inferSelect

// Gaps between sort orders, as the seed leaves them, so that an item can go between two.
const SORT_ORDER_STEP = 10

const skuTaken = (sku: string) =>
  new DomainError('INVALID_INPUT', `sku "${sku}" is already taken`, 'input.sku')
const giftNotFound = () => new DomainError('NOT_FOUND', 'No gift has this id.', 'input.giftId')
const packageNotFound = () => new DomainError('NOT_FOUND', 'No coin package has this id.', 'input.packageId')

/** A new gift, active, at the end of the list unless `sortOrder` says otherwise. */
export async function createGift(db: Db, input: CreateGift): Promise<GiftRow> {
  return db.transaction(async (tx) => {
    const [row] = await tx
      .insert(gifts)
      .values({
        sku: input.sku,
        name: input.name,
        coinCost: input.coinCost,
        imageUrl: input.imageUrl,
        sortOrder:
          input.sortOrder ??
          sql`(select coalesce(max(${gifts.sortOrder}), 0) + ${SORT_ORDER_STEP} from ${gifts})`,
      })
      .onConflictDoNothing({ target: gifts.sku })
      .returning()
    if (!row) throw skuTaken(input.sku)
    return row
  })
}

/** Changes the fields given; the others keep their values. Retired gifts may be edited too. */
export async function updateGift(db: Db, input: UpdateGift): Promise<GiftRow> {
  if (!isUuid(input.giftId)) throw giftNotFound()
  return db.transaction(async (tx) => {
    const [row] = await tx
      .update(gifts)
      .set({
        name: input.name,
        coinCost: input.coinCost,
        imageUrl: input.imageUrl,
        sortOrder: input.sortOrder,
        updatedAt: sql`now()`,
      })
      .where(eq(gifts.id, input.giftId))
      .returning()
    if (!row) throw giftNotFound()
    return row
  })
}

/** Takes a gift off sale. Retiring a retired gift changes nothing (not even updated_at). */
export async function retireGift(db: Db, giftId: string): Promise<GiftRow> {
  if (!isUuid(giftId)) throw giftNotFound()
  return db.transaction(async (tx) => {
    const [row] = await tx
      .update(gifts)
      .set({
        active: false,
        // SET sees the row as it was: only a change of state moves updated_at.
        updatedAt: sql`case when ${gifts.active} then now() else ${gifts.updatedAt} end`,
      })
      .where(eq(gifts.id, giftId))
      .returning()
    if (!row) throw giftNotFound()
    return row
  })
}

/** A new package with its prices, on sale, at the end of the list unless `sortOrder` says otherwise. */
export async function createCoinPackage(db: Db, input: CreateCoinPackage): Promise<CoinPackageOffer> {
  return db.transaction(async (tx) => {
    const [row] = await tx
      .insert(coinPackages)
      .values({
        sku: input.sku,
        coins: input.coins,
        bonusCoins: input.bonusCoins,
        sortOrder:
          input.sortOrder ??
          sql`(select coalesce(max(${coinPackages.sortOrder}), 0) + ${SORT_ORDER_STEP} from ${coinPackages})`,
      })
      .onConflictDoNothing({ target: coinPackages.sku })
      .returning({ id: coinPackages.id })
    if (!row) throw skuTaken(input.sku)
    await tx
      .insert(coinPackagePrices)
      .values(input.prices.map((p) => ({ packageId: row.id, currency: p.currency, amountMinor: p.amount })))
    return loadCoinPackage(tx, row.id)
  })
}

/**
 * Changes the fields given. `prices` replaces the price in each currency it
 * lists (adding the currencies that are new); the others stay.
 */
export async function updateCoinPackage(db: Db, input: UpdateCoinPackage): Promise<CoinPackageOffer> {
  if (!isUuid(input.packageId)) throw packageNotFound()
  return db.transaction(async (tx) => {
    // Locked, so that the bonus is checked against the coins that will be stored.
    const [current] = await tx
      .select({ coins: coinPackages.coins, bonusCoins: coinPackages.bonusCoins })
      .from(coinPackages)
      .where(eq(coinPackages.id, input.packageId))
      .for('update')
    if (!current) throw packageNotFound()
    const coins = input.coins ?? current.coins
    const bonusCoins = input.bonusCoins ?? current.bonusCoins
    if (bonusCoins > coins) {
      const field = input.bonusCoins !== undefined ? 'input.bonusCoins' : 'input.coins'
      throw new DomainError(
        'INVALID_INPUT',
        `bonusCoins (${bonusCoins}) must not be more than coins (${coins})`,
        field,
      )
    }
    await tx
      .update(coinPackages)
      .set({
        coins: input.coins,
        bonusCoins: input.bonusCoins,
        sortOrder: input.sortOrder,
        updatedAt: sql`now()`,
      })
      .where(eq(coinPackages.id, input.packageId))
    if (input.prices && input.prices.length > 0) {
      await tx
        .insert(coinPackagePrices)
        .values(
          input.prices.map((p) => ({
            packageId: input.packageId,
            currency: p.currency,
            amountMinor: p.amount,
          })),
        )
        .onConflictDoUpdate({
          target: [coinPackagePrices.packageId, coinPackagePrices.currency],
          set: { amountMinor: sql`excluded.amount_minor` },
        })
    }
    return loadCoinPackage(tx, input.packageId)
  })
}

/** Takes a package off sale. Retiring a retired package changes nothing (not even updated_at). */
export async function retireCoinPackage(db: Db, packageId: string): Promise<CoinPackageOffer> {
  if (!isUuid(packageId)) throw packageNotFound()
  return db.transaction(async (tx) => {
    const [row] = await tx
      .update(coinPackages)
      .set({
        active: false,
        updatedAt: sql`case when ${coinPackages.active} then now() else ${coinPackages.updatedAt} end`,
      })
      .where(eq(coinPackages.id, packageId))
      .returning({ id: coinPackages.id })
    if (!row) throw packageNotFound()
    return loadCoinPackage(tx, packageId)
  })
}

/**
 * A package with all its prices. Its `price` (the price "in the currency
 * asked for" of a listing) is, outside a listing, the default currency's,
 * or else the first by currency code.
 */
async function loadCoinPackage(tx: Tx, packageId: string): Promise<CoinPackageOffer> {
  const [pkg] = await tx
    .select({
      id: coinPackages.id,
      sku: coinPackages.sku,
      coins: coinPackages.coins,
      bonusCoins: coinPackages.bonusCoins,
      active: coinPackages.active,
      sortOrder: coinPackages.sortOrder,
    })
    .from(coinPackages)
    .where(eq(coinPackages.id, packageId))
  const prices: MoneyShape[] = await tx
    .select({ currency: coinPackagePrices.currency, amountMinor: coinPackagePrices.amountMinor })
    .from(coinPackagePrices)
    .where(eq(coinPackagePrices.packageId, packageId))
    .orderBy(asc(coinPackagePrices.currency))
  const price = prices.find((p) => p.currency === CURRENCY_DEFAULT) ?? prices[0]
  // Every write path gives a package at least one price and none removes one.
  if (!pkg || !price) throw new Error(`coin package ${packageId} vanished or has no price`)
  return { ...pkg, price, prices }
}
