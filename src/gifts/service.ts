import { eq, sql } from 'drizzle-orm'
import type { Db, Tx } from '../db/client.js'
import { rowsOf } from '../db/rows.js'
import { giftEvents, gifts, ledgerAccounts, ledgerTransactions, liveStreams, users } from '../db/schema.js'
import { isUuid } from '../db/uuid.js'
import { DomainError } from '../graphql/errors.js'
import { Coalescer, OverloadedError } from '../ledger/coalescer.js'
import {
  creatorEarnings,
  type Ledger,
  LedgerError,
  type PostedTransaction,
  type PostingResult,
  type PreparedPosting,
  platform,
  type Settled,
  userCoinDebt,
  userWallet,
} from '../ledger/index.js'
import { inTransaction } from '../ledger/tx.js'
import { type GiftSplit, splitGift } from './split.js'

// Sending a gift: the sender's wallet is debited and the creator's earnings
// and the platform's commission credited in one ledger transaction, written
// together with the gift event (its per-stream sequence and combo), the
// stream's totals and its top-gifters ranking. Gifts are group-committed like
// ledger postings: a popular stream's row and a popular creator's account are
// locked once per batch, not once per gift.
//
// Lock order inside a batch, the same for every batch: live streams (by id),
// then limited senders' user rows (by id), then ledger accounts (by id).

export type GiftEvent = typeof giftEvents.$inferSelect

export interface SendGiftInput {
  senderId: string
  giftId: string
  liveStreamId?: string | null
  creatorId?: string | null
  quantity?: number | null
  idempotencyKey: string
}

export interface SentGift {
  event: GiftEvent
  /** The sender's wallet balance right after this gift (now, for a replay). */
  walletCoins: bigint
  replayed: boolean
}

export interface GiftLimits {
  quantityMax: number
  coinsMax: bigint
  comboWindowMs: number
}

export const IDEMPOTENCY_KEY_LENGTH_MAX = 200

/** A gift checked and priced outside the database transaction, waiting for its batch. */
interface PendingGift {
  input: SendGiftInput & { quantity: number }
  giftCoinCost: bigint
  streamId: string | null
  creatorId: string
  split: GiftSplit
  /** The sender limits their own daily spend. */
  limited: boolean
  posting: PreparedPosting
}

interface BatchOutcome {
  event: GiftEvent
  walletCoins: bigint | null
  replayed: boolean
}

export class GiftService {
  private readonly batcher: Coalescer<PendingGift, BatchOutcome>
  private readonly listeners: ((events: GiftEvent[]) => void)[] = []

  constructor(
    private readonly db: Db,
    private readonly ledger: Ledger,
    private readonly limits: GiftLimits,
    options: { batchSizeMax?: number; queueLengthMax?: number } = {},
  ) {
    this.batcher = new Coalescer((batch) => this.writeBatch(batch), {
      batchSizeMax: options.batchSizeMax ?? 500,
      concurrency: 1,
      queueLengthMax: options.queueLengthMax ?? 20_000,
    })
  }

  /** Called with the gift events of each committed batch, in sequence order (the live feed). */
  onCommitted(listener: (events: GiftEvent[]) => void): void {
    this.listeners.push(listener)
  }

  async send(raw: SendGiftInput): Promise<SentGift> {
    const input = this.validate(raw)
    const ledgerKey = giftLedgerKey(input.senderId, input.idempotencyKey)
    const facts = await this.facts(input, ledgerKey)
    if (facts.earlierEventId !== null) return this.replay(await this.eventById(facts.earlierEventId), input)

    const pending = await this.price(input, ledgerKey, facts)
    let outcome: BatchOutcome
    try {
      outcome = await this.batcher.submit(pending)
    } catch (error) {
      throw toDomainError(error)
    }
    if (outcome.replayed) return this.replay(outcome.event, input)
    return { event: outcome.event, walletCoins: outcome.walletCoins ?? 0n, replayed: false }
  }

  // ---- before the batch: validation, replays, prices ----------------------

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
   * Everything a gift is checked against before its batch, in one round
   * trip: an earlier gift with this key, the gift, the stream or creator, the
   * sender's limit and debt. (Rechecked under the batch's locks where it matters.)
   */
  private async facts(input: SendGiftInput, ledgerKey: string): Promise<GiftFacts> {
    const stream = input.liveStreamId ?? null
    const creator = input.creatorId ?? null
    const [row] = rowsOf<Record<string, string | boolean | number | null>>(
      await this.db.execute(sql`
        with s as (select creator_id, status from live_streams where id = ${stream}::uuid),
             c as (select id, roles, creator_share_bps from users
                    where id = coalesce((select creator_id from s), ${creator}::uuid))
        select
          (select ge.id::text from ledger_transactions t join gift_events ge on ge.transaction_id = t.id
            where t.idempotency_key = ${ledgerKey}) as earlier_id,
          (select coin_cost::text from gifts where id = ${input.giftId}::uuid) as gift_cost,
          (select active from gifts where id = ${input.giftId}::uuid) as gift_active,
          (select creator_id::text from s) as stream_creator,
          (select status::text from s) as stream_status,
          (select id::text from c) as creator_id,
          (select array_to_string(roles, ',') from c) as creator_roles,
          (select creator_share_bps from c) as creator_share,
          exists (select 1 from users where id = ${input.senderId}::uuid) as sender_exists,
          (select daily_spend_limit_coins::text from users where id = ${input.senderId}::uuid) as sender_limit,
          (select balance::text from ledger_accounts where code = ${userCoinDebt(input.senderId).code}) as debt`),
    )
    if (!row) throw new Error('gifts: the facts query returned no row')
    const text = (v: unknown) => (v === null || v === undefined ? null : String(v))
    return {
      earlierEventId: text(row.earlier_id),
      gift:
        row.gift_cost === null
          ? null
          : { coinCost: BigInt(String(row.gift_cost)), active: row.gift_active === true },
      stream:
        row.stream_creator === null
          ? null
          : { creatorId: String(row.stream_creator), status: String(row.stream_status) as 'live' | 'ended' },
      creator:
        row.creator_id === null
          ? null
          : {
              id: String(row.creator_id),
              roles: String(row.creator_roles ?? '')
                .split(',')
                .filter(Boolean),
              shareBps: Number(row.creator_share),
            },
      senderExists: row.sender_exists === true,
      senderLimit: text(row.sender_limit) === null ? null : BigInt(String(row.sender_limit)),
      debt: row.debt === null ? 0n : BigInt(String(row.debt)),
    }
  }

  private async eventById(id: string): Promise<GiftEvent> {
    const [event] = await this.db.select().from(giftEvents).where(eq(giftEvents.id, id))
    if (!event) throw new Error(`gifts: no event ${id}`)
    return event
  }

  /** The original answer to a retried key, if the retry asks for the same gift. */
  private async replay(event: GiftEvent, input: SendGiftInput & { quantity: number }): Promise<SentGift> {
    const same =
      event.giftId === input.giftId &&
      event.quantity === input.quantity &&
      (input.liveStreamId ? event.streamId === input.liveStreamId : event.creatorId === input.creatorId)
    if (!same) {
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
    if (!facts.senderExists) throw new DomainError('USER_NOT_FOUND', 'unknown sender')
    const sender = { limit: facts.senderLimit }
    // A clawback that found the coins spent left a debt: no gifts until a recharge repays it.
    if (facts.debt > 0n) {
      throw new DomainError(
        'WALLET_IN_DEBT',
        `you owe ${facts.debt} coins from a refund; recharge to repay them first`,
      )
    }
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
      split,
      limited: sender.limit !== null,
      posting,
    }
  }

  // ---- the batch: one database transaction --------------------------------

  private async writeBatch(batch: PendingGift[]): Promise<Settled<BatchOutcome>[]> {
    const { outcomes, committed, transactions } = await inTransaction(this.db, (tx) =>
      giftBatch(tx, batch, this.ledger, this.limits),
    )
    this.ledger.notifyCommitted(transactions)
    if (committed.length > 0) for (const listener of this.listeners) listener(committed)
    return outcomes
  }
}

interface GiftFacts {
  earlierEventId: string | null
  gift: { coinCost: bigint; active: boolean } | null
  stream: { creatorId: string; status: 'live' | 'ended' } | null
  /** The stream's creator, or the creator named in the input. */
  creator: { id: string; roles: string[]; shareBps: number } | null
  senderExists: boolean
  senderLimit: bigint | null
  debt: bigint
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

async function giftBatch(
  tx: Tx,
  batch: PendingGift[],
  ledger: Ledger,
  limits: GiftLimits,
): Promise<{ outcomes: Settled<BatchOutcome>[]; committed: GiftEvent[]; transactions: PostedTransaction[] }> {
  const outcomes: (Settled<BatchOutcome> | undefined)[] = new Array(batch.length)
  const streams = await lockStreams(tx, batch)
  const spent = await lockSpend(tx, batch)

  // Refusals that depend on state only visible under the locks.
  const candidates: number[] = []
  for (const [i, gift] of batch.entries()) {
    const stream = gift.streamId === null ? undefined : streams.get(gift.streamId)
    if (gift.streamId !== null && stream?.status !== 'live') {
      outcomes[i] = refuse('STREAM_NOT_LIVE', 'this live stream has ended', 'input.liveStreamId')
      continue
    }
    const spend = spent.get(gift.input.senderId)
    if (spend && spend.limit !== null && spend.coins + gift.split.coins > spend.limit) {
      outcomes[i] = refuse(
        'SPEND_LIMIT_EXCEEDED',
        `this gift would take today's spending past your daily limit of ${spend.limit} coins`,
        'input.quantity',
      )
      continue
    }
    if (spend) spend.coins += gift.split.coins
    candidates.push(i)
  }

  const posted = await ledger.postInTx(
    tx,
    candidates.map((i) => (batch[i] as PendingGift).posting),
  )
  const combos = await lastCombos(tx, batch)
  const fresh: { index: number; result: PostingResult }[] = []
  const replayedIds: { index: number; transactionId: bigint }[] = []
  for (const [k, result] of posted.entries()) {
    const index = candidates[k] as number
    if (!result.ok) outcomes[index] = { ok: false, error: toDomainError(result.error) }
    else if (result.value.replayed) replayedIds.push({ index, transactionId: result.value.transaction.id })
    else fresh.push({ index, result: result.value })
  }

  const rows = fresh.map(({ index, result }) => {
    const gift = batch[index] as PendingGift
    const sentAt = result.transaction.postedAt
    let sequence: bigint | null = null
    let combo = gift.input.quantity
    if (gift.streamId !== null) {
      const stream = streams.get(gift.streamId) as StreamState
      stream.lastSequence += 1n
      stream.coins += gift.split.coins
      sequence = stream.lastSequence
      const key = comboKey(gift.streamId, gift.input.senderId, gift.input.giftId)
      const last = combos.get(key)
      if (last && Date.parse(normalizeTime(sentAt)) - last.at <= limits.comboWindowMs) combo += last.combo
      combos.set(key, { combo, at: Date.parse(normalizeTime(sentAt)) })
    }
    const wallet = result.transaction.entries.find((e) => e.direction === 'debit')
    return {
      index,
      walletCoins: wallet?.balanceAfter ?? null,
      row: {
        streamId: gift.streamId,
        sequence,
        senderId: gift.input.senderId,
        creatorId: gift.creatorId,
        giftId: gift.input.giftId,
        quantity: gift.input.quantity,
        coinCost: gift.giftCoinCost,
        coins: gift.split.coins,
        creatorCoins: gift.split.creatorCoins,
        platformCoins: gift.split.platformCoins,
        combo,
        transactionId: result.transaction.id,
        sentAt,
      },
    }
  })

  const inserted =
    rows.length === 0
      ? []
      : await tx
          .insert(giftEvents)
          .values(rows.map((r) => r.row))
          .returning()
  const byTransaction = new Map(inserted.map((e) => [e.transactionId, e]))
  for (const r of rows) {
    outcomes[r.index] = {
      ok: true,
      value: {
        event: byTransaction.get(r.row.transactionId) as GiftEvent,
        walletCoins: r.walletCoins,
        replayed: false,
      },
    }
  }
  await updateStreams(tx, streams, inserted)

  // A key posted by a concurrent request meanwhile: its event is the answer.
  for (const { index, transactionId } of replayedIds) {
    const [event] = await tx.select().from(giftEvents).where(eq(giftEvents.transactionId, transactionId))
    outcomes[index] = event
      ? { ok: true, value: { event, walletCoins: null, replayed: true } }
      : refuse('IDEMPOTENCY_KEY_REUSED', 'this idempotency key was already used', 'input.idempotencyKey')
  }
  const committed = [...inserted].sort(
    (a, b) =>
      (a.streamId ?? '').localeCompare(b.streamId ?? '') || Number((a.sequence ?? 0n) - (b.sequence ?? 0n)),
  )
  return {
    outcomes: outcomes as Settled<BatchOutcome>[],
    committed,
    transactions: fresh.map((f) => f.result.transaction),
  }
}

interface StreamState {
  status: 'live' | 'ended'
  lastSequence: bigint
  coins: bigint
}

async function lockStreams(tx: Tx, batch: PendingGift[]) {
  const ids = [...new Set(batch.flatMap((g) => (g.streamId === null ? [] : [g.streamId])))].sort()
  const streams = new Map<string, StreamState>()
  if (ids.length === 0) return streams
  const rows = rowsOf<{ id: string; status: 'live' | 'ended'; last_sequence: string }>(
    await tx.execute(sql`
      select id::text, status, last_sequence::text from live_streams
       where id = any(${sql.param(ids)}::uuid[]) order by id for no key update`),
  )
  for (const r of rows)
    streams.set(r.id, { status: r.status, lastSequence: BigInt(r.last_sequence), coins: 0n })
  return streams
}

/** Today's spend (UTC) of the batch's senders who limit themselves, under a lock on their user row. */
async function lockSpend(tx: Tx, batch: PendingGift[]) {
  const ids = [...new Set(batch.filter((g) => g.limited).map((g) => g.input.senderId))].sort()
  const spent = new Map<string, { limit: bigint | null; coins: bigint }>()
  if (ids.length === 0) return spent
  const rows = rowsOf<{ id: string; limit: string | null; coins: string }>(
    await tx.execute(sql`
      with locked as (
        select id, daily_spend_limit_coins from users
         where id = any(${sql.param(ids)}::uuid[]) order by id for no key update
      )
      select l.id::text, l.daily_spend_limit_coins::text as limit,
             coalesce((select sum(e.coins) from gift_events e
                        where e.sender_id = l.id
                          and e.sent_at >= date_trunc('day', now() at time zone 'utc') at time zone 'utc'), 0)::text as coins
        from locked l`),
  )
  for (const r of rows) {
    spent.set(r.id, { limit: r.limit === null ? null : BigInt(r.limit), coins: BigInt(r.coins) })
  }
  return spent
}

const comboKey = (streamId: string, senderId: string, giftId: string) => `${streamId}|${senderId}|${giftId}`

/** The latest event of each (stream, sender, gift) of the batch: streaks continue from it. */
async function lastCombos(tx: Tx, batch: PendingGift[]) {
  const keys = [
    ...new Set(
      batch.flatMap((g) =>
        g.streamId === null ? [] : [comboKey(g.streamId, g.input.senderId, g.input.giftId)],
      ),
    ),
  ]
  const combos = new Map<string, { combo: number; at: number }>()
  if (keys.length === 0) return combos
  const parts = keys.map((k) => k.split('|'))
  const rows = rowsOf<{
    stream_id: string
    sender_id: string
    gift_id: string
    combo: number
    sent_at: string
  }>(
    await tx.execute(sql`
      select k.s::text as stream_id, k.u::text as sender_id, k.g::text as gift_id, e.combo, e.sent_at::text
        from unnest(${sql.param(parts.map((p) => p[0]))}::uuid[], ${sql.param(parts.map((p) => p[1]))}::uuid[],
                    ${sql.param(parts.map((p) => p[2]))}::uuid[]) as k(s, u, g)
        cross join lateral (
          select combo, sent_at from gift_events
           where stream_id = k.s and sender_id = k.u and gift_id = k.g
           order by sent_at desc, sequence desc limit 1
        ) e`),
  )
  for (const r of rows) {
    combos.set(comboKey(r.stream_id, r.sender_id, r.gift_id), {
      combo: r.combo,
      at: Date.parse(normalizeTime(r.sent_at)),
    })
  }
  return combos
}

async function updateStreams(
  tx: Tx,
  streams: Map<string, StreamState>,
  inserted: GiftEvent[],
): Promise<void> {
  const changed = [...streams].filter(([, s]) => s.coins > 0n)
  if (changed.length === 0) return
  await tx.execute(sql`
    update live_streams s set gift_coins = s.gift_coins + v.coins::bigint, last_sequence = v.last_sequence::bigint
      from unnest(${sql.param(changed.map(([id]) => id))}::uuid[], ${sql.param(changed.map(([, s]) => s.coins.toString()))}::text[],
                  ${sql.param(changed.map(([, s]) => s.lastSequence.toString()))}::text[]) as v(id, coins, last_sequence)
     where s.id = v.id`)
  // The ranking: coins per (stream, sender), summed over the batch first.
  const totals = new Map<string, { streamId: string; senderId: string; coins: bigint; at: string }>()
  for (const e of inserted) {
    if (e.streamId === null) continue
    const key = `${e.streamId}|${e.senderId}`
    const t = totals.get(key) ?? { streamId: e.streamId, senderId: e.senderId, coins: 0n, at: e.sentAt }
    t.coins += e.coins
    t.at = e.sentAt
    totals.set(key, t)
  }
  const list = [...totals.values()]
  await tx.execute(sql`
    insert into stream_gifters (stream_id, sender_id, coins, last_gift_at)
    select s, u, c::bigint, a::timestamptz
      from unnest(${sql.param(list.map((t) => t.streamId))}::uuid[], ${sql.param(list.map((t) => t.senderId))}::uuid[],
                  ${sql.param(list.map((t) => t.coins.toString()))}::text[], ${sql.param(list.map((t) => t.at))}::text[])
        as v(s, u, c, a)
    on conflict (stream_id, sender_id)
    do update set coins = stream_gifters.coins + excluded.coins, last_gift_at = excluded.last_gift_at`)
}

export function giftLedgerKey(senderId: string, idempotencyKey: string): string {
  return `gift:${senderId}:${idempotencyKey}`
}

/** PostgreSQL's text timestamps ("2026-11-25 22:30:01.123456+00") as something Date.parse reads. */
function normalizeTime(text: string): string {
  return text.includes('T') ? text : text.replace(' ', 'T').replace(/([+-]\d\d)$/, '$1:00')
}

const refuse = (code: ConstructorParameters<typeof DomainError>[0], message: string, field: string) => ({
  ok: false as const,
  error: new DomainError(code, message, field),
})

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
  return error as Error
}
