import { eq } from 'drizzle-orm'
import type { Db, Pipelined } from '../db/client.js'
import { giftEvents } from '../db/schema.js'
import { isUuid } from '../db/uuid.js'
import { DomainError } from '../graphql/errors.js'
import { Coalescer, OverloadedError } from '../ledger/coalescer.js'
import {
  creatorEarnings,
  type Ledger,
  LedgerError,
  platform,
  type Settled,
  userWallet,
} from '../ledger/index.js'
import { type BatchOutcome, type PendingGift, writeGiftBatch } from './batch.js'
import {
  FACTS_CACHE_DEFAULTS,
  FactsCache,
  type FactsCacheOptions,
  type GiftFacts,
  loadFacts,
  StaleFactsError,
} from './facts.js'
import { splitGift } from './split.js'
import {
  type GiftEvent,
  type GiftEventView,
  type GiftLimits,
  isSameGift,
  type SendGiftInput,
} from './types.js'

export type { GiftEvent, GiftEventView, GiftLimits, SendGiftInput } from './types.js'

// Sending a gift: the sender's wallet is debited and the creator's earnings
// and the platform's commission credited in one ledger transaction, written
// together with the gift event (its per-stream sequence and combo), the
// stream's totals and its top-gifters ranking. Gifts are group-committed like
// ledger postings: a popular stream's row and a popular creator's account are
// locked once per batch, not once per gift (batch.ts).
//
// A gift is priced before its batch from facts remembered for a short while
// (facts.ts): in the steady state it sends no statement of its own, and its
// batch checks everything against the database.

export interface SentGift {
  event: GiftEventView
  /** The sender's wallet balance right after this gift (now, for a replay). */
  walletCoins: bigint
  replayed: boolean
}

export const IDEMPOTENCY_KEY_LENGTH_MAX = 200

/** Times a gift is priced: once more after its batch found the facts outdated, and once more after a race. */
const PRICING_ATTEMPTS_MAX = 3

export class GiftService {
  private readonly batcher: Coalescer<PendingGift, BatchOutcome>
  private readonly listeners: ((events: GiftEvent[]) => void)[] = []
  private readonly facts: FactsCache
  private readonly pipelined: Pipelined | undefined
  /** Gift batches committed, by way: pipelined (two round trips) or the usual way (PGlite, or expectations found stale). */
  readonly batches = { pipelined: 0, usual: 0 }

  constructor(
    private readonly db: Db,
    private readonly ledger: Ledger,
    private readonly limits: GiftLimits,
    options: {
      batchSizeMax?: number
      queueLengthMax?: number
      factsCache?: FactsCacheOptions
      /** Batches as pipelined transactions, two round trips each (PostgreSQL: Database.pipelined). */
      pipelined?: Pipelined
    } = {},
  ) {
    this.pipelined = options.pipelined
    this.batcher = new Coalescer((batch) => this.writeBatch(batch), {
      batchSizeMax: options.batchSizeMax ?? 500,
      concurrency: 1,
      queueLengthMax: options.queueLengthMax ?? 20_000,
    })
    this.facts = new FactsCache(options.factsCache ?? FACTS_CACHE_DEFAULTS)
  }

  /** Called with the gift events of each committed batch, in sequence order (the live feed). */
  onCommitted(listener: (events: GiftEvent[]) => void): void {
    this.listeners.push(listener)
  }

  /** An admin changed the gift (price, availability): price the next gifts from the database. */
  forgetGift(giftId: string): void {
    this.facts.forgetGift(giftId)
  }

  /** An admin changed the creator's share. */
  forgetCreator(creatorId: string): void {
    this.facts.forgetCreator(creatorId)
  }

  async send(raw: SendGiftInput): Promise<SentGift> {
    const input = this.validate(raw)
    const ledgerKey = giftLedgerKey(input.senderId, input.idempotencyKey)
    for (let attempt = 1; ; attempt++) {
      const pending = await this.pending(input, ledgerKey, attempt > 1)
      if (!('posting' in pending)) return pending
      let outcome: BatchOutcome
      try {
        outcome = await this.batcher.submit(pending)
      } catch (error) {
        if (error instanceof StaleFactsError && attempt < PRICING_ATTEMPTS_MAX) continue
        if (error instanceof DomainError && error.code === 'STREAM_NOT_LIVE' && pending.streamId !== null)
          this.facts.forgetStream(pending.streamId)
        throw toDomainError(error)
      }
      if (outcome.replayed) return this.replay(outcome.event, input)
      return { event: outcome.event, walletCoins: outcome.walletCoins ?? 0n, replayed: false }
    }
  }

  // ---- before the batch: validation, prices -------------------------------

  private validate(raw: SendGiftInput): SendGiftInput & { quantity: number } {
    const key = raw.idempotencyKey
    if (typeof key !== 'string' || key.trim().length === 0) {
      throw new DomainError('INVALID_INPUT', 'idempotencyKey must not be empty', 'input.idempotencyKey')
    }
    if (key.length > IDEMPOTENCY_KEY_LENGTH_MAX) {
      throw new DomainError(
        'INVALID_INPUT',
        `idempotencyKey must be at most ${IDEMPOTENCY_KEY_LENGTH_MAX} characters`,
        'input.idempotencyKey',
      )
    }
    const quantity = raw.quantity ?? 1
    if (!Number.isInteger(quantity) || quantity < 1 || quantity > this.limits.quantityMax) {
      throw new DomainError(
        'QUANTITY_OUT_OF_RANGE',
        `quantity must be between 1 and ${this.limits.quantityMax}`,
        'input.quantity',
      )
    }
    if (!isUuid(raw.giftId)) throw new DomainError('GIFT_NOT_FOUND', 'no such gift', 'input.giftId')
    const hasStream = raw.liveStreamId !== undefined && raw.liveStreamId !== null
    const hasCreator = raw.creatorId !== undefined && raw.creatorId !== null
    if (!hasStream && !hasCreator) {
      throw new DomainError(
        'INVALID_INPUT',
        'give a liveStreamId, or a creatorId for a gift outside a live stream',
        'input',
      )
    }
    if (hasStream && !isUuid(raw.liveStreamId as string)) {
      throw new DomainError('STREAM_NOT_FOUND', 'no such live stream', 'input.liveStreamId')
    }
    if (hasCreator && !isUuid(raw.creatorId as string)) {
      throw new DomainError('CREATOR_NOT_FOUND', 'no such creator', 'input.creatorId')
    }
    return { ...raw, quantity }
  }

  /**
   * The gift priced for its batch, or the answer already given to its key.
   * From remembered facts when all are known and the gift passes; otherwise
   * (and always after `fresh`) from facts read now, with the key's earlier
   * gift: a retry is answered as the original even if it would be refused now.
   */
  private async pending(
    input: SendGiftInput & { quantity: number },
    ledgerKey: string,
    fresh: boolean,
  ): Promise<PendingGift | SentGift> {
    const remembered = fresh ? undefined : this.facts.lookup(input)
    if (remembered) {
      try {
        return await this.price(input, ledgerKey, remembered)
      } catch (error) {
        if (!(error instanceof DomainError)) throw error
        // A refusal is decided from the database, never from remembered facts alone.
      }
    }
    const facts = await loadFacts(this.db, input, ledgerKey)
    this.facts.remember(input, facts)
    if (facts.earlierEventId !== null) return this.replay(await this.eventById(facts.earlierEventId), input)
    return this.price(input, ledgerKey, facts)
  }

  private async eventById(id: string): Promise<GiftEvent> {
    const [event] = await this.db.select().from(giftEvents).where(eq(giftEvents.id, id))
    if (!event) throw new Error(`gifts: no event ${id}`)
    return event
  }

  /** The original answer to a retried key, if the retry asks for the same gift. */
  private async replay(event: GiftEventView, input: SendGiftInput & { quantity: number }): Promise<SentGift> {
    if (!isSameGift(event, input)) {
      throw new DomainError(
        'IDEMPOTENCY_KEY_REUSED',
        'this idempotency key was already used for a different gift',
        'input.idempotencyKey',
      )
    }
    const { balance } = await this.ledger.balance(userWallet(input.senderId))
    return { event, walletCoins: balance, replayed: true }
  }

  private async price(
    input: SendGiftInput & { quantity: number },
    ledgerKey: string,
    facts: GiftFacts,
  ): Promise<PendingGift> {
    const { gift } = facts
    if (!gift) throw new DomainError('GIFT_NOT_FOUND', 'no such gift', 'input.giftId')
    if (!gift.active)
      throw new DomainError('GIFT_UNAVAILABLE', 'this gift is no longer available', 'input.giftId')
    const { streamId, creatorId } = target(input, facts)
    if (creatorId === input.senderId) {
      throw new DomainError('CANNOT_GIFT_SELF', 'you cannot send a gift to yourself', 'input')
    }
    const creator = facts.creator
    if (!creator) throw new DomainError('CREATOR_NOT_FOUND', 'no such creator', 'input.creatorId')
    const split = splitGift(gift.coinCost, input.quantity, creator.shareBps)
    if (split.coins > this.limits.coinsMax) {
      throw new DomainError(
        'SPEND_LIMIT_EXCEEDED',
        `one gift may cost at most ${this.limits.coinsMax} coins; this one costs ${split.coins}`,
        'input.quantity',
      )
    }
    const posting = await this.ledger.prepare({
      idempotencyKey: ledgerKey,
      kind: 'gift',
      description: `Gift ×${input.quantity}`,
      metadata: {
        giftId: input.giftId,
        quantity: input.quantity,
        streamId,
        creatorId,
        senderId: input.senderId,
      },
      entries: [
        { account: userWallet(input.senderId), direction: 'debit', amount: split.coins },
        ...(split.creatorCoins > 0n
          ? [
              {
                account: creatorEarnings(creatorId),
                direction: 'credit' as const,
                amount: split.creatorCoins,
              },
            ]
          : []),
        ...(split.platformCoins > 0n
          ? [{ account: platform.commission, direction: 'credit' as const, amount: split.platformCoins }]
          : []),
      ],
    })
    return {
      input,
      giftCoinCost: gift.coinCost,
      streamId,
      creatorId,
      creatorShareBps: creator.shareBps,
      split,
      posting,
    }
  }

  // ---- the batch ------------------------------------------------------------

  private async writeBatch(batch: PendingGift[]): Promise<Settled<BatchOutcome>[]> {
    const { outcomes, committed, transactions, way } = await writeGiftBatch(
      { db: this.db, pipelined: this.pipelined },
      this.ledger,
      this.limits,
      batch,
    )
    this.batches[way]++
    this.ledger.notifyCommitted(transactions)
    if (committed.length > 0) for (const listener of this.listeners) listener(committed)
    return outcomes
  }
}

/** Where the gift goes: the stream's creator, or a creator named for a gift outside a stream. */
function target(input: SendGiftInput, facts: GiftFacts): { streamId: string | null; creatorId: string } {
  if (!input.liveStreamId) {
    if (!facts.creator?.roles.includes('creator')) {
      throw new DomainError('CREATOR_NOT_FOUND', 'no such creator', 'input.creatorId')
    }
    return { streamId: null, creatorId: facts.creator.id }
  }
  const stream = facts.stream
  if (!stream) throw new DomainError('STREAM_NOT_FOUND', 'no such live stream', 'input.liveStreamId')
  if (stream.status !== 'live') {
    throw new DomainError('STREAM_NOT_LIVE', 'this live stream has ended', 'input.liveStreamId')
  }
  if (input.creatorId && input.creatorId !== stream.creatorId) {
    throw new DomainError(
      'INVALID_INPUT',
      'creatorId is not the creator of this live stream',
      'input.creatorId',
    )
  }
  return { streamId: input.liveStreamId, creatorId: stream.creatorId }
}

export function giftLedgerKey(senderId: string, idempotencyKey: string): string {
  return `gift:${senderId}:${idempotencyKey}`
}

function toDomainError(error: unknown): Error {
  if (error instanceof DomainError) return error
  if (error instanceof LedgerError) {
    if (error.code === 'INSUFFICIENT_FUNDS')
      return new DomainError('INSUFFICIENT_COINS', 'not enough coins for this gift')
    if (error.code === 'IDEMPOTENCY_KEY_REUSED') {
      return new DomainError(
        'IDEMPOTENCY_KEY_REUSED',
        'this idempotency key was already used',
        'input.idempotencyKey',
      )
    }
  }
  if (error instanceof OverloadedError)
    return new DomainError('OVERLOADED', 'too many gifts at once; try again')
  if (error instanceof StaleFactsError)
    return new DomainError('OVERLOADED', 'the gift’s price or the creator’s share just changed; try again')
  return error as Error
}
