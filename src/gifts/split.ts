// How the coins of a gift are shared. Pure, so that the rule is stated once
// and tested on its own.

export const BPS_WHOLE = 10_000

export interface GiftSplit {
  coins: bigint
  creatorCoins: bigint
  platformCoins: bigint
}

/**
 * The creator gets their share rounded down to a whole coin; the platform
 * gets the rest, rounding remainder included. So a 1-coin Rose at 50% goes
 * wholly to the platform, and creator + platform always equals the coins sent.
 */
export function splitGift(coinCost: bigint, quantity: number, creatorShareBps: number): GiftSplit {
  if (!Number.isInteger(quantity) || quantity <= 0)
    throw new RangeError('quantity must be a positive integer')
  if (!Number.isInteger(creatorShareBps) || creatorShareBps < 0 || creatorShareBps > BPS_WHOLE) {
    throw new RangeError('creatorShareBps must be an integer between 0 and 10000')
  }
  const coins = coinCost * BigInt(quantity)
  const creatorCoins = (coins * BigInt(creatorShareBps)) / BigInt(BPS_WHOLE)
  return { coins, creatorCoins, platformCoins: coins - creatorCoins }
}
