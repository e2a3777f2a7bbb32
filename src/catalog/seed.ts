import type { Db } from '../db/client.js'
import { coinPackagePrices, coinPackages, gifts } from '../db/schema.js'

// The default catalog a new installation starts with. Seeding only ever adds
// what is missing (by sku): a package or gift an admin changed, priced
// differently or switched off keeps its edits across restarts.

interface PackageSeed {
  sku: string
  coins: bigint
  bonusCoins: bigint
  /** Minor units per currency. */
  prices: Record<string, bigint>
}

interface GiftSeed {
  sku: string
  name: string
  coinCost: bigint
}

export const DEFAULT_COIN_PACKAGES: readonly PackageSeed[] = [
  { sku: 'coins_70', coins: 70n, bonusCoins: 0n, prices: { USD: 99n, EUR: 99n } },
  { sku: 'coins_350', coins: 350n, bonusCoins: 0n, prices: { USD: 499n, EUR: 499n } },
  { sku: 'coins_700', coins: 700n, bonusCoins: 0n, prices: { USD: 999n, EUR: 999n } },
  { sku: 'coins_1400', coins: 1_400n, bonusCoins: 0n, prices: { USD: 1_999n, EUR: 1_999n } },
  // Bigger packages carry a bonus: 5%, 10%, 15%.
  { sku: 'coins_3500', coins: 3_500n, bonusCoins: 175n, prices: { USD: 4_999n, EUR: 4_999n } },
  { sku: 'coins_7000', coins: 7_000n, bonusCoins: 700n, prices: { USD: 9_999n, EUR: 9_999n } },
  { sku: 'coins_17500', coins: 17_500n, bonusCoins: 2_625n, prices: { USD: 24_999n, EUR: 24_999n } },
]

export const DEFAULT_GIFTS: readonly GiftSeed[] = [
  { sku: 'rose', name: 'Rose', coinCost: 1n },
  { sku: 'finger_heart', name: 'Finger Heart', coinCost: 5n },
  { sku: 'doughnut', name: 'Doughnut', coinCost: 30n },
  { sku: 'hand_hearts', name: 'Hand Hearts', coinCost: 100n },
  { sku: 'corgi', name: 'Corgi', coinCost: 299n },
  { sku: 'disco_ball', name: 'Disco Ball', coinCost: 1_000n },
  { sku: 'sports_car', name: 'Sports Car', coinCost: 7_000n },
  { sku: 'lion', name: 'Lion', coinCost: 29_999n },
  { sku: 'universe', name: 'Universe', coinCost: 34_999n },
]

export interface SeedResult {
  packagesAdded: number
  giftsAdded: number
}

/** Adds the default packages (with their prices) and gifts that are not there yet. Idempotent. */
export async function seedCatalog(db: Db): Promise<SeedResult> {
  return db.transaction(async (tx) => {
    const added = await tx
      .insert(coinPackages)
      .values(
        DEFAULT_COIN_PACKAGES.map((p, i) => ({
          sku: p.sku,
          coins: p.coins,
          bonusCoins: p.bonusCoins,
          sortOrder: (i + 1) * 10,
        })),
      )
      .onConflictDoNothing({ target: coinPackages.sku })
      .returning({ id: coinPackages.id, sku: coinPackages.sku })

    // Prices only for packages created just now: an existing package's prices are the admin's.
    const idBySku = new Map(added.map((row) => [row.sku, row.id]))
    const prices = DEFAULT_COIN_PACKAGES.flatMap((p) => {
      const packageId = idBySku.get(p.sku)
      if (packageId === undefined) return []
      return Object.entries(p.prices).map(([currency, amountMinor]) => ({ packageId, currency, amountMinor }))
    })
    if (prices.length > 0) await tx.insert(coinPackagePrices).values(prices)

    const giftsAdded = await tx
      .insert(gifts)
      .values(
        DEFAULT_GIFTS.map((g, i) => ({
          sku: g.sku,
          name: g.name,
          coinCost: g.coinCost,
          imageUrl: `/static/gifts/${g.sku.replaceAll('_', '-')}.png`,
          sortOrder: (i + 1) * 10,
        })),
      )
      .onConflictDoNothing({ target: gifts.sku })
      .returning({ id: gifts.id })

    return { packagesAdded: added.length, giftsAdded: giftsAdded.length }
  })
}
