import type { PostedTransaction } from '../ledger/index.js'
import type { Json, LiveBus } from './bus.js'
import { BoundedQueue, cancellable } from './queue.js'

// Each user's wallet balance after each committed change (gift sent,
// recharge, refund, grant), from the ledger's committed postings. Only the
// latest balance matters to a client, so a subscriber never falls behind:
// it keeps the newest update, and updates older than the one it already
// sent (by the account's entry sequence) are dropped.

export interface WalletUpdate {
  userId: string
  coins: bigint
  updatedAt: string
  /** The wallet account's entry sequence: orders updates from different batches. */
  accountSeq: bigint
}

const WALLET_ACCOUNT = /^user:([0-9a-f-]{36}):wallet$/i
const topic = (userId: string) => `wallet:${userId}`

export class WalletFeed {
  constructor(private readonly bus: LiveBus) {}

  /** Ledger.onCommitted: the last balance of each user's wallet in the batch. */
  publishCommitted(transactions: PostedTransaction[]): void {
    const latest = new Map<string, WalletUpdate>()
    for (const transaction of transactions) {
      for (const entry of transaction.entries) {
        const userId = WALLET_ACCOUNT.exec(entry.accountCode)?.[1]
        if (!userId) continue
        const seen = latest.get(userId)
        if (seen && seen.accountSeq >= entry.accountSeq) continue
        latest.set(userId, {
          userId,
          coins: entry.balanceAfter,
          updatedAt: transaction.postedAt,
          accountSeq: entry.accountSeq,
        })
      }
    }
    for (const update of latest.values()) {
      this.bus.publish(topic(update.userId), {
        coins: update.coins.toString(),
        updatedAt: update.updatedAt,
        accountSeq: update.accountSeq.toString(),
      })
    }
  }

  /** The user's own updates from now on. */
  subscribe(userId: string): AsyncGenerator<WalletUpdate> {
    // One slot: a newer balance replaces one not yet sent.
    let pending: WalletUpdate | null = null
    const wake = new BoundedQueue<true>(1)
    const unsubscribe = this.bus.subscribe(topic(userId), (payload) => {
      const update = fromWire(userId, payload)
      if (!update) return
      if (pending && pending.accountSeq >= update.accountSeq) return
      pending = update
      wake.push(true)
    })
    async function* run(): AsyncGenerator<WalletUpdate> {
      let lastSeq = -1n
      for (;;) {
        if (!pending && (await wake.take()) === undefined) return
        const update = pending as WalletUpdate | null
        pending = null
        if (update && update.accountSeq > lastSeq) {
          lastSeq = update.accountSeq
          yield update
        }
      }
    }
    return cancellable(run(), () => {
      unsubscribe()
      wake.close()
    })
  }
}

function fromWire(userId: string, payload: Json): WalletUpdate | null {
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) return null
  const { coins, updatedAt, accountSeq } = payload
  if (typeof coins !== 'string' || typeof updatedAt !== 'string' || typeof accountSeq !== 'string')
    return null
  return { userId, coins: BigInt(coins), updatedAt, accountSeq: BigInt(accountSeq) }
}
