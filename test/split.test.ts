import { fc, test } from '@fast-check/vitest'
import { describe, expect, it } from 'vitest'
import { splitGift } from '../src/gifts/split.js'

describe('gift split', () => {
  it('rounds the creator’s share down and gives the remainder to the platform', () => {
    expect(splitGift(1n, 1, 5000)).toEqual({ coins: 1n, creatorCoins: 0n, platformCoins: 1n })
    expect(splitGift(5n, 1, 5000)).toEqual({ coins: 5n, creatorCoins: 2n, platformCoins: 3n })
    expect(splitGift(100n, 3, 7000)).toEqual({ coins: 300n, creatorCoins: 210n, platformCoins: 90n })
    expect(splitGift(34_999n, 2, 5000)).toEqual({
      coins: 69_998n,
      creatorCoins: 34_999n,
      platformCoins: 34_999n,
    })
    expect(splitGift(7n, 1, 0)).toEqual({ coins: 7n, creatorCoins: 0n, platformCoins: 7n })
    expect(splitGift(7n, 1, 10_000)).toEqual({ coins: 7n, creatorCoins: 7n, platformCoins: 0n })
  })

  it('refuses impossible inputs', () => {
    expect(() => splitGift(1n, 0, 5000)).toThrow(RangeError)
    expect(() => splitGift(1n, 1.5, 5000)).toThrow(RangeError)
    expect(() => splitGift(1n, 1, 10_001)).toThrow(RangeError)
  })

  test.prop([
    fc.bigInt({ min: 1n, max: 10n ** 9n }),
    fc.integer({ min: 1, max: 100_000 }),
    fc.integer({ min: 0, max: 10_000 }),
  ])(
    'always sums to the coins sent, the creator never getting more than their share',
    (coinCost, quantity, bps) => {
      const { coins, creatorCoins, platformCoins } = splitGift(coinCost, quantity, bps)
      expect(coins).toBe(coinCost * BigInt(quantity))
      expect(creatorCoins + platformCoins).toBe(coins)
      expect(creatorCoins).toBeGreaterThanOrEqual(0n)
      expect(platformCoins).toBeGreaterThanOrEqual(0n)
      // creator share ≤ exact share < creator share + 1
      expect(creatorCoins * 10_000n).toBeLessThanOrEqual(coins * BigInt(bps))
      expect((creatorCoins + 1n) * 10_000n).toBeGreaterThan(coins * BigInt(bps))
    },
  )
})
