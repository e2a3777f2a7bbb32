import { eq, getColumns, sql } from 'drizzle-orm'
import type { Db, Tx } from '../db/client.js'
import { rowsOf } from '../db/rows.js'
import { giftEvents, gifts, ledgerTransactions, users } from '../db/schema.js'
import { DomainError } from '../graphql/errors.js'
import {
  type Ledger,
  type PostedTransaction,
  type PostingResult,
  type PreparedPosting,
  type Settled,
  userCoinDebt,
} from '../ledger/index.js'
import { inTransaction } from '../ledger/tx.js'
import { StaleFactsError } from './facts.js'
import type { GiftSplit } from './split.js'
import type { GiftEvent, GiftEventView, GiftLimits, GiftRow, PublicProfile, SendGiftInput } from './types.js'

// A batch of gifts: everything that depends on the database's present state
// is decided here, for the whole batch at once, so that a gift costs no
// statement of its own.
//
// Before the database transaction (no locks needed, one round trip each,
// concurrently): the gifts already sent under the batch's keys (retries),
// the gifts' prices and the creators' shares (the facts each gift was priced
// with, checked), and the rows the answers show.
//
// Inside it, lock order, the same for every batch: live streams (by id), then
// the senders' user rows that carry a daily limit (by id), then ledger
// accounts (by id, in the ledger engine). Under those locks: the stream is
// live, the sender owes nothing and stays within their limit; then the
// ledger posts, and the gift events, the streams' totals and rankings are
// written.

/** A gift checked and priced outside the database transaction, waiting for its batch. */
export interface PendingGift {
  input: SendGiftInput & { quantity: number }
  giftCoinCost: bigint
  streamId: string | null
  creatorId: string
  /** The creator's share the gift was priced with. */
  creatorShareBps: number
  split: GiftSplit
  posting: PreparedPosting
}

export interface BatchOutcome {
  event: GiftEventView
  /** The sender's balance right after the gift; null for a retry (read afterwards). */
  walletCoins: bigint | null
  replayed: boolean
}

export interface BatchResult {
  outcomes: Settled<BatchOutcome>[]
  /** The new gift events, by stream and sequence: for the live feed, after commit. */
  committed: GiftEvent[]
  /** The ledger transactions posted: for the ledger's listeners, after commit. */
  transactions: PostedTransaction[]
}

export async function writeGiftBatch(
  db: Db,
  ledger: Ledger,
  limits: GiftLimits,
  batch: PendingGift[],
): Promise<BatchResult> {
  const outcomes: (Settled<BatchOutcome> | undefined)[] = new Array(batch.length)
  const known = await readKnown(db, batch)
  const fresh: number[] = []
  for (const [i, gift] of batch.entries()) {
    const earlier = known.earlier.get(gift.posting.request.idempotencyKey)
    if (earlier) outcomes[i] = { ok: true, value: { event: earlier, walletCoins: null, replayed: true } }
    else if (isStale(gift, known)) outcomes[i] = { ok: false, error: new StaleFactsError(gift.input.giftId) }
    else fresh.push(i)
  }
  if (fresh.length === 0)
    return { outcomes: outcomes as Settled<BatchOutcome>[], committed: [], transactions: [] }

  const written = await inTransaction(db, (tx) =>
    giftBatch(
      tx,
      fresh.map((i) => batch[i] as PendingGift),
      ledger,
      limits,
    ),
  )
  for (const [k, outcome] of written.outcomes.entries()) {
    const index = fresh[k] as number
    if (!outcome.ok || outcome.value.replayed) {
      outcomes[index] = outcome
      continue
    }
    const { event } = outcome.value
    outcomes[index] = {
      ok: true,
      value: {
        ...outcome.value,
        event: {
          ...event,
          gift: known.gifts.get(event.giftId),
          creator: known.creators.get(event.creatorId),
          sender: written.senders.get(event.senderId),
        },
      },
    }
  }
  return {
    outcomes: outcomes as Settled<BatchOutcome>[],
    committed: written.committed,
    transactions: written.transactions,
  }
}

interface Known {
  /** The gift already sent under an idempotency key of the batch. */
  earlier: Map<string, GiftEvent>
  gifts: Map<string, GiftRow>
  creators: Map<string, PublicProfile & { shareBps: number }>
}

/** What the batch's gifts are checked against, read concurrently: three statements for the whole batch. */
async function readKnown(db: Db, batch: PendingGift[]): Promise<Known> {
  const keys = unique(batch.map((g) => g.posting.request.idempotencyKey))
  const giftIds = unique(batch.map((g) => g.input.giftId))
  const creatorIds = unique(batch.map((g) => g.creatorId))
  const [earlierRows, giftRows, creatorRows] = await Promise.all([
    db
      .select({ key: ledgerTransactions.idempotencyKey, event: getColumns(giftEvents) })
      .from(ledgerTransactions)
      .innerJoin(giftEvents, eq(giftEvents.transactionId, ledgerTransactions.id))
      .where(sql`${ledgerTransactions.idempotencyKey} = any(${sql.param(keys)}::text[])`),
    db
      .select()
      .from(gifts)
      .where(sql`${gifts.id} = any(${sql.param(giftIds)}::uuid[])`),
    db
      .select({
        id: users.id,
        handle: users.handle,
        displayName: users.displayName,
        roles: users.roles,
        shareBps: users.creatorShareBps,
      })
      .from(users)
      .where(sql`${users.id} = any(${sql.param(creatorIds)}::uuid[])`),
  ])
  return {
    earlier: new Map(earlierRows.map((r) => [r.key, r.event])),
    gifts: new Map(giftRows.map((g) => [g.id, g])),
    creators: new Map(creatorRows.map((c) => [c.id, c])),
  }
}

/** Priced from facts that have changed since (a new price, a retired gift, another share): price it again. */
function isStale(gift: PendingGift, known: Known): boolean {
  const row = known.gifts.get(gift.input.giftId)
  if (!row?.active || row.coinCost !== gift.giftCoinCost) return true
  const creator = known.creators.get(gift.creatorId)
  if (!creator || creator.shareBps !== gift.creatorShareBps) return true
  // Outside a stream the creator is named by the sender: they must still be one.
  return gift.streamId === null && !creator.roles.includes('creator')
}

interface WrittenBatch {
  outcomes: Settled<BatchOutcome>[]
  committed: GiftEvent[]
  transactions: PostedTransaction[]
  senders: Map<string, PublicProfile>
}

async function giftBatch(
  tx: Tx,
  batch: PendingGift[],
  ledger: Ledger,
  limits: GiftLimits,
): Promise<WrittenBatch> {
  const outcomes: (Settled<BatchOutcome> | undefined)[] = new Array(batch.length)
  const streams = await lockStreams(tx, batch)
  const senders = await lockSenders(tx, batch)

  // Refusals that depend on state only visible under the locks.
  const candidates: number[] = []
  for (const [i, gift] of batch.entries()) {
    const stream = gift.streamId === null ? undefined : streams.get(gift.streamId)
    if (gift.streamId !== null && stream?.status !== 'live') {
      outcomes[i] = refuse('STREAM_NOT_LIVE', 'this live stream has ended', 'input.liveStreamId')
      continue
    }
    const sender = senders.get(gift.input.senderId)
    if (!sender) {
      outcomes[i] = refuse('USER_NOT_FOUND', 'unknown sender', null)
      continue
    }
    // A clawback that found the coins spent left a debt: no gifts until a recharge repays it.
    if (sender.debt > 0n) {
      outcomes[i] = refuse(
        'WALLET_IN_DEBT',
        `you owe ${sender.debt} coins from a refund; recharge to repay them first`,
        null,
      )
      continue
    }
    if (sender.limit !== null && sender.spent + gift.split.coins > sender.limit) {
      outcomes[i] = refuse(
        'SPEND_LIMIT_EXCEEDED',
        `this gift would take today's spending past your daily limit of ${sender.limit} coins`,
        'input.quantity',
      )
      continue
    }
    sender.spent += gift.split.coins
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
    if (!result.ok) outcomes[index] = { ok: false, error: result.error }
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
    senders: new Map([...senders].map(([id, s]) => [id, s.profile])),
  }
}

interface StreamState {
  status: 'live' | 'ended'
  lastSequence: bigint
  coins: bigint
}

async function lockStreams(tx: Tx, batch: PendingGift[]) {
  const ids = unique(batch.flatMap((g) => (g.streamId === null ? [] : [g.streamId]))).sort()
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

interface SenderState {
  profile: PublicProfile
  /** The sender's own daily limit; null: none. */
  limit: bigint | null
  /** Coins spent today (UTC), this batch's gifts included as they are accepted; 0 without a limit. */
  spent: bigint
  /** Coins owed after a clawback. */
  debt: bigint
}

/**
 * The batch's senders, in one statement: their public profile, their coin
 * debt, and for those who limit their daily spend, the limit and today's
 * spend (UTC) under a lock on their user row (read as it is once locked: a
 * limit set or lifted meanwhile counts).
 */
async function lockSenders(tx: Tx, batch: PendingGift[]): Promise<Map<string, SenderState>> {
  const ids = unique(batch.map((g) => g.input.senderId)).sort()
  const rows = rowsOf<{
    id: string
    handle: string
    display_name: string
    roles: string
    limit: string | null
    spent: string | null
    debt: string | null
  }>(
    await tx.execute(sql`
      with limited as materialized (
        select id, daily_spend_limit_coins from users
         where id = any(${sql.param(ids)}::uuid[]) and daily_spend_limit_coins is not null
         order by id for no key update
      )
      select u.id::text, u.handle, u.display_name, array_to_string(u.roles, ',') as roles,
             l.daily_spend_limit_coins::text as limit,
             case when l.id is not null then
               coalesce((select sum(e.coins) from gift_events e
                          where e.sender_id = l.id
                            and e.sent_at >= date_trunc('day', now() at time zone 'utc') at time zone 'utc'), 0)::text
             end as spent,
             d.balance::text as debt
        from unnest(${sql.param(ids)}::uuid[], ${sql.param(ids.map((id) => userCoinDebt(id).code))}::text[])
               as s(id, debt_code)
        join users u on u.id = s.id
        left join limited l on l.id = s.id
        left join ledger_accounts d on d.code = s.debt_code`),
  )
  const senders = new Map<string, SenderState>()
  for (const r of rows) {
    senders.set(r.id, {
      profile: {
        id: r.id,
        handle: r.handle,
        displayName: r.display_name,
        roles: r.roles.split(',').filter(Boolean),
      },
      limit: r.limit === null ? null : BigInt(r.limit),
      spent: r.spent === null ? 0n : BigInt(r.spent),
      debt: r.debt === null ? 0n : BigInt(r.debt),
    })
  }
  return senders
}

const comboKey = (streamId: string, senderId: string, giftId: string) => `${streamId}|${senderId}|${giftId}`

/** The latest event of each (stream, sender, gift) of the batch: streaks continue from it. */
async function lastCombos(tx: Tx, batch: PendingGift[]) {
  const keys = unique(
    batch.flatMap((g) =>
      g.streamId === null ? [] : [comboKey(g.streamId, g.input.senderId, g.input.giftId)],
    ),
  )
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

/** PostgreSQL's text timestamps ("2026-11-25 22:30:01.123456+00") as something Date.parse reads. */
function normalizeTime(text: string): string {
  return text.includes('T') ? text : text.replace(' ', 'T').replace(/([+-]\d\d)$/, '$1:00')
}

const unique = <T>(values: T[]): T[] => [...new Set(values)]

const refuse = (
  code: ConstructorParameters<typeof DomainError>[0],
  message: string,
  field: string | null,
) => ({
  ok: false as const,
  error: new DomainError(code, message, field),
})
