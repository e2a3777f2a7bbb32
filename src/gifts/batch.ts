import { randomUUID } from 'node:crypto'
import { eq, getColumns, type Query, sql } from 'drizzle-orm'
import type { Database, DbOrTx, Pipelined, Tx } from '../db/client.js'
import { rowsOf } from '../db/rows.js'
import { giftEvents, gifts, ledgerTransactions, users } from '../db/schema.js'
import { arrayLiteral, toSql } from '../db/statement.js'
import { DomainError } from '../graphql/errors.js'
import {
  type Ledger,
  type PostedTransaction,
  type PostingResult,
  type PreparedPosting,
  type Settled,
  userCoinDebt,
} from '../ledger/index.js'
import type { Ticket } from '../ledger/state-cache.js'
import { inTransaction } from '../ledger/tx.js'
import { StaleFactsError } from './facts.js'
import type { GiftSplit } from './split.js'
import type { GiftEvent, GiftEventView, GiftLimits, GiftRow, PublicProfile, SendGiftInput } from './types.js'

// A batch of gifts, in one database transaction: everything that depends on
// the database's present state is decided here, for the whole batch at once,
// so that a gift costs no statement of its own.
//
// Lock order, the same for every batch: live streams (by id), then the
// senders' user rows that carry a daily limit (by id), then ledger accounts
// (by id, in the ledger engine).
//
// Round trips count more than statements: the batch holds the stream's lock
// from its first statement to its commit, and every round trip waits for
// the event loop, which is busy answering requests. On PostgreSQL a batch is
// a pipelined transaction of two round trips (Database.pipelined):
//   1. BEGIN and the reads, sent together (run in order): lock the streams;
//      lock the senders who limit their daily spend, with their spend and
//      their debt; read the streaks the gifts may continue; read the gifts
//      already sent under the batch's keys (retries), the gifts' prices and
//      the creators' shares (the facts each gift was priced with, checked
//      here);
//   2. the ledger's statement, planned on the engine's expectations (it
//      writes the postings only if every expectation holds), the statement
//      writing the gift events, the streams' totals and the top-gifters
//      rankings (only if the postings were written, found by their keys),
//      and COMMIT.
// When the ledger cannot plan on its expectations, or they turn out wrong
// (nothing is written then), the batch runs again the usual way, in a
// transaction of its own (giftBatch): the reads, the ledger's statements,
// then the events, one step after the other.

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
  /** How the batch was written: pipelined (two round trips), or the usual way. */
  way: 'pipelined' | 'usual'
}

export async function writeGiftBatch(
  database: Pick<Database, 'db' | 'pipelined'>,
  ledger: Ledger,
  limits: GiftLimits,
  batch: PendingGift[],
): Promise<BatchResult> {
  return withTicket(ledger, batch, async (ticket) => {
    const { pipelined } = database
    if (pipelined && ticket.guessing) {
      const written = await pipelinedGiftBatch(pipelined, batch, ledger, limits, ticket).catch(() => {
        // Nothing was committed: the usual way tells what went wrong.
        ticket.taint()
        return null
      })
      if (written) return { ...written, way: 'pipelined' }
    }
    const written = await inTransaction(database.db, (tx) => giftBatch(tx, batch, ledger, limits, ticket))
    return { ...written, way: 'usual' }
  })
}

/** The batch's place among the ledger's batches in flight, from before its transaction to after its end. */
async function withTicket<T>(
  ledger: Ledger,
  batch: PendingGift[],
  work: (ticket: Ticket) => Promise<T>,
): Promise<T> {
  const ticket = await ledger.enter(batch.map((g) => g.posting))
  try {
    return await work(ticket)
  } catch (error) {
    ticket.taint()
    throw error
  } finally {
    ticket.end()
  }
}

/** What the batch's first round trip reads, and the gifts it decided to post. */
interface Decided {
  outcomes: (Settled<BatchOutcome> | undefined)[]
  known: Known
  streams: Map<string, StreamState>
  senders: Map<string, SenderState>
  combos: Map<string, LastCombo>
  /** Indexes of the gifts to post, in batch order. */
  candidates: number[]
}

/**
 * The reads, in one round trip: the statements go out together, before any
 * answer, and PostgreSQL runs them one after the other in the order they
 * arrive. The three execute calls take the same path to the connection, so
 * they arrive in this order: the senders are locked after the streams, and
 * the streaks are read once the streams are locked (they see every batch of
 * the stream committed before this one). readKnown's reads need no order.
 * Then each gift is checked against what they found.
 */
async function readAndDecide(db: DbOrTx, batch: PendingGift[]): Promise<Decided> {
  const [known, streamRows, senderRows, comboRows] = await Promise.all([
    readKnown(db, batch),
    db.execute(toSql(lockStreams(batch))),
    db.execute(toSql(lockSenders(batch))),
    db.execute(toSql(lastCombos(batch))),
  ])
  const streams = streamStates(streamRows)
  const senders = senderStates(senderRows)
  const outcomes: (Settled<BatchOutcome> | undefined)[] = new Array(batch.length)
  const candidates: number[] = []
  for (const [i, gift] of batch.entries()) {
    const refusal = check(gift, known, streams, senders)
    if (refusal) {
      outcomes[i] = refusal
      continue
    }
    const sender = senders.get(gift.input.senderId) as SenderState
    sender.spent += gift.split.coins
    candidates.push(i)
  }
  return { outcomes, known, streams, senders, combos: lastCombosOf(comboRows), candidates }
}

/** The pipelined batch (two round trips); null: run it the usual way (nothing was written). */
async function pipelinedGiftBatch(
  pipelined: Pipelined,
  batch: PendingGift[],
  ledger: Ledger,
  limits: GiftLimits,
  ticket: Ticket,
): Promise<Omit<BatchResult, 'way'> | null> {
  return pipelined(async (tx) => {
    const decided = await readAndDecide(tx.db, batch)
    const { outcomes, candidates } = decided
    const fast = await ledger.planFast(
      tx.db,
      candidates.map((i) => (batch[i] as PendingGift).posting),
      ticket,
    )
    if (!fast) return null
    // A key twice in one batch is answered from the first's event: the usual way does that,
    // planned under the locks (the plan made here was remembered, and will not be written).
    if (fast.hasTwins) {
      ticket.taint()
      return null
    }
    const posting = candidates.filter((_, k) => fast.accepted.has(k))
    const planned = planEvents(batch, posting, decided)
    const [ledgerRows = [], eventRows] = await tx.send(
      [fast.statement, ...(planned.length > 0 ? [writeEvents(planned, decided.streams, limits)] : [])],
      { commit: true },
    )
    const posted = fast.settle(ledgerRows)
    if (!posted) return null
    const written = eventsWritten(planned, eventRows)
    const events: GiftEvent[] = []
    const transactions: PostedTransaction[] = []
    for (const [k, result] of posted.entries()) {
      const index = candidates[k] as number
      if (!result.ok) {
        outcomes[index] = { ok: false, error: result.error }
        continue
      }
      const event = written.get(index) as GiftEvent
      events.push(event)
      transactions.push(result.value.transaction)
      outcomes[index] = answer(event, result.value, decided)
    }
    return done(outcomes, events, transactions)
  })
}

/** The batch the usual way, inside the caller's transaction. */
async function giftBatch(
  tx: Tx,
  batch: PendingGift[],
  ledger: Ledger,
  limits: GiftLimits,
  ticket: Ticket,
): Promise<Omit<BatchResult, 'way'>> {
  const decided = await readAndDecide(tx, batch)
  const { outcomes, candidates } = decided
  const posted = await ledger.postInTx(
    tx,
    candidates.map((i) => (batch[i] as PendingGift).posting),
    ticket,
  )
  const fresh: { index: number; result: PostingResult }[] = []
  const replayedIds: { index: number; transactionId: bigint }[] = []
  for (const [k, result] of posted.entries()) {
    const index = candidates[k] as number
    if (!result.ok) outcomes[index] = { ok: false, error: result.error }
    else if (result.value.replayed) replayedIds.push({ index, transactionId: result.value.transaction.id })
    else fresh.push({ index, result: result.value })
  }

  const planned = planEvents(
    batch,
    fresh.map((f) => f.index),
    decided,
  )
  const written =
    planned.length > 0
      ? eventsWritten(planned, await tx.execute(toSql(writeEvents(planned, decided.streams, limits))))
      : new Map()
  const events = fresh.map(({ index, result }) => {
    const event = written.get(index) as GiftEvent
    outcomes[index] = answer(event, result, decided)
    return event
  })

  // A key posted by a concurrent request meanwhile: its event is the answer.
  for (const { index, transactionId } of replayedIds) {
    const [event] = await tx.select().from(giftEvents).where(eq(giftEvents.transactionId, transactionId))
    outcomes[index] = event
      ? { ok: true, value: { event, walletCoins: null, replayed: true } }
      : refuse('IDEMPOTENCY_KEY_REUSED', 'this idempotency key was already used', 'input.idempotencyKey')
  }
  return done(
    outcomes,
    events,
    fresh.map((f) => f.result.transaction),
  )
}

/** A posted gift's answer: its event with the rows the batch read, and the sender's balance after it. */
function answer(event: GiftEvent, result: PostingResult, decided: Decided): Settled<BatchOutcome> {
  const wallet = result.transaction.entries.find((e) => e.direction === 'debit')
  return {
    ok: true,
    value: {
      event: {
        ...event,
        gift: decided.known.gifts.get(event.giftId),
        creator: decided.known.creators.get(event.creatorId),
        sender: decided.senders.get(event.senderId)?.profile,
      },
      walletCoins: wallet?.balanceAfter ?? null,
      replayed: false,
    },
  }
}

function done(
  outcomes: (Settled<BatchOutcome> | undefined)[],
  events: GiftEvent[],
  transactions: PostedTransaction[],
): Omit<BatchResult, 'way'> {
  const committed = [...events].sort(
    (a, b) =>
      (a.streamId ?? '').localeCompare(b.streamId ?? '') || Number((a.sequence ?? 0n) - (b.sequence ?? 0n)),
  )
  return { outcomes: outcomes as Settled<BatchOutcome>[], committed, transactions }
}

/** Why a gift of the batch is not posted (a retry's answer is one), or undefined: post it. */
function check(
  gift: PendingGift,
  known: Known,
  streams: Map<string, StreamState>,
  senders: Map<string, SenderState>,
): Settled<BatchOutcome> | undefined {
  const earlier = known.earlier.get(gift.posting.request.idempotencyKey)
  if (earlier) return { ok: true, value: { event: earlier, walletCoins: null, replayed: true } }
  if (isStale(gift, known)) return { ok: false, error: new StaleFactsError(gift.input.giftId) }
  if (gift.streamId !== null && streams.get(gift.streamId)?.status !== 'live')
    return refuse('STREAM_NOT_LIVE', 'this live stream has ended', 'input.liveStreamId')
  const sender = senders.get(gift.input.senderId)
  if (!sender) return refuse('USER_NOT_FOUND', 'unknown sender', null)
  // A clawback that found the coins spent left a debt: no gifts until a recharge repays it.
  if (sender.debt > 0n) {
    return refuse(
      'WALLET_IN_DEBT',
      `you owe ${sender.debt} coins from a refund; recharge to repay them first`,
      null,
    )
  }
  if (sender.limit !== null && sender.spent + gift.split.coins > sender.limit) {
    return refuse(
      'SPEND_LIMIT_EXCEEDED',
      `this gift would take today's spending past your daily limit of ${sender.limit} coins`,
      'input.quantity',
    )
  }
  return undefined
}

interface Known {
  /** The gift already sent under an idempotency key of the batch. */
  earlier: Map<string, GiftEvent>
  gifts: Map<string, GiftRow>
  creators: Map<string, PublicProfile & { shareBps: number }>
}

/** Retries, prices and shares: three statements for the whole batch. */
async function readKnown(tx: DbOrTx, batch: PendingGift[]): Promise<Known> {
  const queries = knownQueriesOf(tx)
  const [earlierRows, giftRows, creatorRows] = await Promise.all([
    queries.earlier.execute({
      keys: arrayLiteral(unique(batch.map((g) => g.posting.request.idempotencyKey))),
    }),
    queries.gifts.execute({ ids: arrayLiteral(unique(batch.map((g) => g.input.giftId))) }),
    queries.creators.execute({ ids: arrayLiteral(unique(batch.map((g) => g.creatorId))) }),
  ])
  return {
    earlier: new Map(earlierRows.map((r) => [r.key, r.event])),
    gifts: new Map(giftRows.map((g) => [g.id, g])),
    creators: new Map(creatorRows.map((c) => [c.id, c])),
  }
}

/**
 * readKnown's queries, built once per connection handle: drizzle's select
 * builder cost ~15 µs of CPU per gift when it built them for every batch
 * (a profile of the API benchmark's gift shape). A pipelined batch's
 * handle is its reserved connection's, kept while batches come; a
 * transaction of the usual way builds them for itself.
 */
const knownQueries = new WeakMap<DbOrTx, ReturnType<typeof prepareKnownQueries>>()

function knownQueriesOf(db: DbOrTx) {
  let queries = knownQueries.get(db)
  if (!queries) {
    queries = prepareKnownQueries(db)
    knownQueries.set(db, queries)
  }
  return queries
}

function prepareKnownQueries(db: DbOrTx) {
  return {
    earlier: db
      .select({ key: ledgerTransactions.idempotencyKey, event: getColumns(giftEvents) })
      .from(ledgerTransactions)
      .innerJoin(giftEvents, eq(giftEvents.transactionId, ledgerTransactions.id))
      .where(sql`${ledgerTransactions.idempotencyKey} = any(${sql.placeholder('keys')}::text[])`)
      .prepare('gift_batch_earlier'),
    gifts: db
      .select()
      .from(gifts)
      .where(sql`${gifts.id} = any(${sql.placeholder('ids')}::uuid[])`)
      .prepare('gift_batch_gifts'),
    creators: db
      .select({
        id: users.id,
        handle: users.handle,
        displayName: users.displayName,
        roles: users.roles,
        shareBps: users.creatorShareBps,
      })
      .from(users)
      .where(sql`${users.id} = any(${sql.placeholder('ids')}::uuid[])`)
      .prepare('gift_batch_creators'),
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

/** A gift event as planned before it is written: its transaction, time and streak come from the statement that writes it. */
interface PlannedEvent extends Omit<GiftEvent, 'transactionId' | 'sentAt' | 'combo'> {
  /** The gift's index in the batch. */
  index: number
  /** Its ledger transaction's idempotency key. */
  key: string
  /** The quantities of its streak's gifts in this batch so far, its own included. */
  chain: number
  /** The streak's last gift before this batch, continued if it is within the window at this batch's time. */
  before: LastCombo | undefined
}

/**
 * The events of the gifts to post, in batch order: each one's place in its
 * stream and its streak. A streak continues the last gift of the same
 * (stream, sender, gift) if it came within the combo window; a batch's gifts
 * share one time, so within a batch a streak always continues.
 */
function planEvents(batch: PendingGift[], indexes: number[], decided: Decided): PlannedEvent[] {
  const chains = new Map<string, number>()
  return indexes.map((index) => {
    const gift = batch[index] as PendingGift
    let sequence: bigint | null = null
    let chain = gift.input.quantity
    let before: LastCombo | undefined
    if (gift.streamId !== null) {
      const stream = decided.streams.get(gift.streamId) as StreamState
      stream.lastSequence += 1n
      stream.coins += gift.split.coins
      sequence = stream.lastSequence
      const key = comboKey(gift.streamId, gift.input.senderId, gift.input.giftId)
      chain += chains.get(key) ?? 0
      chains.set(key, chain)
      before = decided.combos.get(key)
    }
    return {
      index,
      key: gift.posting.request.idempotencyKey,
      id: randomUUID(),
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
      chain,
      before,
    }
  })
}

interface StreamState {
  status: 'live' | 'ended'
  lastSequence: bigint
  coins: bigint
}

/** Locks the batch's live streams, by id, and reads their state. */
function lockStreams(batch: PendingGift[]): Query {
  const ids = unique(batch.flatMap((g) => (g.streamId === null ? [] : [g.streamId]))).sort()
  return { sql: LOCK_STREAMS, params: [arrayLiteral(ids)] }
}

const LOCK_STREAMS = `
    select id::text, status, last_sequence::text from live_streams
     where id = any($1::uuid[]) order by id for no key update`

function streamStates(result: unknown): Map<string, StreamState> {
  const rows = rowsOf<{ id: string; status: 'live' | 'ended'; last_sequence: string }>(result)
  return new Map(
    rows.map((r) => [r.id, { status: r.status, lastSequence: BigInt(r.last_sequence), coins: 0n }]),
  )
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
function lockSenders(batch: PendingGift[]): Query {
  const ids = unique(batch.map((g) => g.input.senderId)).sort()
  return {
    sql: LOCK_SENDERS,
    params: [arrayLiteral(ids), arrayLiteral(ids.map((id) => userCoinDebt(id).code))],
  }
}

// $1 the senders' ids, sorted; $2 their coin debt accounts' codes.
const LOCK_SENDERS = `
    with limited as materialized (
      select id, daily_spend_limit_coins from users
       where id = any($1::uuid[]) and daily_spend_limit_coins is not null
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
      from unnest($1::uuid[], $2::text[]) as s(id, debt_code)
      join users u on u.id = s.id
      left join limited l on l.id = s.id
      left join ledger_accounts d on d.code = s.debt_code`

function senderStates(result: unknown): Map<string, SenderState> {
  const rows = rowsOf<{
    id: string
    handle: string
    display_name: string
    roles: string
    limit: string | null
    spent: string | null
    debt: string | null
  }>(result)
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

/**
 * The latest event of each (stream, sender, gift) of the batch: streaks
 * continue from it. The latest time first, along the combo index, then the
 * last of that instant (a batch's events share it): ordering by (sent_at,
 * sequence) at once read every earlier gift of the streak's key, each batch.
 */
function lastCombos(batch: PendingGift[]): Query {
  const keys = unique(
    batch.flatMap((g) =>
      g.streamId === null ? [] : [comboKey(g.streamId, g.input.senderId, g.input.giftId)],
    ),
  )
  const parts = keys.map((k) => k.split('|'))
  return {
    sql: LAST_COMBOS,
    params: [0, 1, 2].map((i) => arrayLiteral(parts.map((p) => p[i]))),
  }
}

// $1, $2, $3: the streaks' streams, senders and gifts.
const LAST_COMBOS = `
    select k.s::text as stream_id, k.u::text as sender_id, k.g::text as gift_id, e.combo, e.sent_at::text
      from unnest($1::uuid[], $2::uuid[], $3::uuid[]) as k(s, u, g)
      cross join lateral (
        select combo, sent_at from gift_events
         where stream_id = k.s and sender_id = k.u and gift_id = k.g
           and sent_at = (select max(sent_at) from gift_events
                           where stream_id = k.s and sender_id = k.u and gift_id = k.g)
         order by sequence desc limit 1
      ) e`

/** A streak's last gift: its combo and its time, as PostgreSQL's text. */
interface LastCombo {
  combo: number
  at: string
}

function lastCombosOf(result: unknown): Map<string, LastCombo> {
  const rows = rowsOf<{
    stream_id: string
    sender_id: string
    gift_id: string
    combo: number
    sent_at: string
  }>(result)
  return new Map(
    rows.map((r) => [
      comboKey(r.stream_id, r.sender_id, r.gift_id),
      { combo: Number(r.combo), at: r.sent_at },
    ]),
  )
}

/**
 * The batch's gift events, the streams' new totals and each sender's place
 * in the streams' rankings (their coins summed over the batch first), in one
 * statement, written only if every gift's ledger transaction was posted by
 * this database transaction (found by its idempotency key): sent behind the
 * ledger's statement without waiting for it, it writes nothing if that
 * statement wrote nothing. Each event takes its transaction's id and time,
 * and its streak continues the last one before the batch if that came
 * within the window at this time (to the millisecond). Returns whether it
 * wrote, and the events' transaction ids, streaks and times.
 */
function writeEvents(events: PlannedEvent[], streams: Map<string, StreamState>, limits: GiftLimits): Query {
  const changed = [...streams].filter(([, s]) => s.coins > 0n)
  const totals = new Map<string, { streamId: string; senderId: string; coins: bigint }>()
  for (const e of events) {
    if (e.streamId === null) continue
    const key = `${e.streamId}|${e.senderId}`
    const t = totals.get(key) ?? { streamId: e.streamId, senderId: e.senderId, coins: 0n }
    t.coins += e.coins
    totals.set(key, t)
  }
  const gifters = [...totals.values()]
  const column = <T>(rows: T[], value: (row: T) => string | number | bigint | null | undefined) =>
    arrayLiteral(rows.map(value))
  return {
    sql: WRITE_EVENTS,
    params: [
      column(events, (e) => e.id),
      column(events, (e) => e.streamId),
      column(events, (e) => e.sequence),
      column(events, (e) => e.senderId),
      column(events, (e) => e.creatorId),
      column(events, (e) => e.giftId),
      column(events, (e) => e.quantity),
      column(events, (e) => e.coinCost),
      column(events, (e) => e.coins),
      column(events, (e) => e.creatorCoins),
      column(events, (e) => e.platformCoins),
      column(events, (e) => e.key),
      column(events, (e) => e.chain),
      column(events, (e) => e.before?.combo),
      column(events, (e) => e.before?.at),
      limits.comboWindowMs,
      events.length,
      column(changed, ([id]) => id),
      column(changed, ([, t]) => t.coins),
      column(changed, ([, t]) => t.lastSequence),
      column(gifters, (t) => t.streamId),
      column(gifters, (t) => t.senderId),
      column(gifters, (t) => t.coins),
    ],
  }
}

// Parameters: $1–$15 the events' columns (v below); $16 the combo window in
// ms; $17 the events' count; $18–$20 the streams' ids, added coins and last
// sequences; $21–$23 the gifters' streams, senders and added coins.
// Timestamps travel as text (the before_at column), as every column does.
// A posting found without the others would be a bug that splits gifts from
// their events: the cast in `found` then fails the statement, and with it
// the transaction.
const WRITE_EVENTS = `
    with v as (
      select * from unnest(
          $1::uuid[], $2::uuid[], $3::bigint[], $4::uuid[], $5::uuid[], $6::uuid[], $7::integer[], $8::bigint[],
          $9::bigint[], $10::bigint[], $11::bigint[], $12::text[], $13::integer[], $14::integer[], $15::text[])
          as v(id, stream_id, sequence, sender_id, creator_id, gift_id, quantity, coin_cost,
               coins, creator_coins, platform_coins, key, chain, before_combo, before_at)
    ), posted as materialized (
      select v.*, t.id as transaction_id, t.posted_at,
             v.chain + case when v.before_at is not null
                              and extract(epoch from date_trunc('milliseconds', t.posted_at)
                                                     - date_trunc('milliseconds', v.before_at::timestamptz)) * 1000
                                  <= $16::bigint
                            then v.before_combo else 0 end as combo
        from v join ledger_transactions t on t.idempotency_key = v.key and t.xact_id = txid_current()
    ), found as materialized (
      select case when count(*) in (0, $17::bigint) then count(*) = $17::bigint
                  else ('gift batch: ' || count(*) || ' of ' || $17::bigint || ' postings found')::int = 0
             end as ok,
             max(posted_at) as at
        from posted
    ), events as (
      insert into gift_events (id, stream_id, sequence, sender_id, creator_id, gift_id, quantity, coin_cost,
                               coins, creator_coins, platform_coins, combo, transaction_id, sent_at)
      select id, stream_id, sequence, sender_id, creator_id, gift_id, quantity, coin_cost,
             coins, creator_coins, platform_coins, combo, transaction_id, posted_at
        from posted where (select ok from found)
    ), totals as (
      update live_streams s set gift_coins = s.gift_coins + v.coins, last_sequence = v.last_sequence
        from unnest($18::uuid[], $19::bigint[], $20::bigint[]) as v(id, coins, last_sequence)
       where s.id = v.id and (select ok from found)
    ), gifters as (
      insert into stream_gifters (stream_id, sender_id, coins, last_gift_at)
      select g.stream_id, g.sender_id, g.coins, (select at from found)
        from unnest($21::uuid[], $22::uuid[], $23::bigint[]) as g(stream_id, sender_id, coins)
       where (select ok from found)
      on conflict (stream_id, sender_id)
      do update set coins = stream_gifters.coins + excluded.coins, last_gift_at = excluded.last_gift_at
    )
    select (select ok from found) as written,
           (select coalesce(json_agg(json_build_array(p.id, p.transaction_id::text, p.combo, p.posted_at::text)), '[]')
              from posted p) as events`

/** The events writeEvents wrote, by the gift's index in the batch. */
function eventsWritten(planned: PlannedEvent[], result: unknown): Map<number, GiftEvent> {
  if (planned.length === 0) return new Map()
  const [row] = rowsOf<{ written: boolean; events: unknown }>(result)
  if (!row?.written) throw new Error('gift batch: the events were not written')
  const list = (typeof row.events === 'string' ? JSON.parse(row.events) : row.events) as [
    string,
    string,
    number,
    string,
  ][]
  const byId = new Map(
    list.map(([id, transactionId, combo, sentAt]) => [id, { transactionId, combo, sentAt }]),
  )
  const events = new Map<number, GiftEvent>()
  for (const { index, key: _key, chain: _chain, before: _before, ...event } of planned) {
    const written = byId.get(event.id)
    if (!written) throw new Error(`gift batch: no event ${event.id} written`)
    events.set(index, {
      ...event,
      transactionId: BigInt(written.transactionId),
      combo: Number(written.combo),
      sentAt: written.sentAt,
    })
  }
  return events
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
