import type { Db } from '../db/client.js'
import type { GiftService } from '../gifts/service.js'
import type { Ledger } from '../ledger/index.js'
import { InProcessBus, type LiveBus } from './bus.js'
import { GIFT_FEED_LIMITS, GiftFeed, type GiftFeedLimits } from './gift-feed.js'
import { StreakTracker } from './streaks.js'
import { WalletFeed } from './wallet-feed.js'

export { InProcessBus, type LiveBus } from './bus.js'
export { GiftFeed, SlowConsumerError } from './gift-feed.js'
export { RedisBus } from './redis-bus.js'
export { WalletFeed, type WalletUpdate } from './wallet-feed.js'

/** The live features: gift feeds per stream and wallet updates per user, over one bus. */
export interface Live {
  bus: LiveBus
  gifts: GiftFeed
  wallets: WalletFeed
  streaks: StreakTracker
  /** After endLiveStream commits: streaks end, feeds catch up and complete. */
  streamEnded(streamId: string): void
  stop(): Promise<void>
}

/** Wires the feeds to what commits: gift batches and ledger postings, told only after commit. */
export function createLive(
  db: Db,
  ledger: Ledger,
  gifts: GiftService,
  options: {
    bus?: LiveBus
    limits?: Partial<GiftFeedLimits>
    comboWindowMs: number
    onError?: (error: unknown) => void
  },
): Live {
  const bus = options.bus ?? new InProcessBus(options.onError)
  const giftFeed = new GiftFeed(db, bus, { ...GIFT_FEED_LIMITS, ...options.limits })
  const wallets = new WalletFeed(bus)
  const streaks = new StreakTracker(
    db,
    bus,
    {
      windowMs: options.comboWindowMs,
      pendingMax: 100_000,
      checkEveryMs: Math.max(50, Math.min(500, Math.floor(options.comboWindowMs / 4))),
    },
    options.onError,
  )
  // A feed's failure must never fail a gift batch or a posting that has committed.
  gifts.onCommitted((events) => {
    try {
      giftFeed.publishCommitted(events)
      streaks.track(events)
    } catch (error) {
      options.onError?.(error)
    }
  })
  ledger.onCommitted((transactions) => {
    try {
      wallets.publishCommitted(transactions)
    } catch (error) {
      options.onError?.(error)
    }
  })
  return {
    bus,
    gifts: giftFeed,
    wallets,
    streaks,
    streamEnded: (streamId) => {
      streaks.streamEnded(streamId)
      giftFeed.publishEnded(streamId)
    },
    stop: async () => {
      streaks.stop()
      await bus.close()
    },
  }
}
