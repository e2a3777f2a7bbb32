import { and, asc, eq, gt, lt } from 'drizzle-orm'
import { GraphQLError } from 'graphql'
import type { Db } from '../db/client.js'
import { giftEvents, liveStreams } from '../db/schema.js'
import { isUuid } from '../db/uuid.js'
import type { GiftEvent } from '../gifts/service.js'
import { DomainError } from '../graphql/errors.js'
import type { Json, LiveBus } from './bus.js'
import { BoundedQueue, cancellable } from './queue.js'

// A live stream's gift feed: every gift event of the stream, in sequence
// order, each exactly once, from any point (afterSequence) on.
//
// The seam between stored and live events: the subscriber listens on the bus
// BEFORE it reads the stored events, so nothing committed meanwhile is missed;
// live events at or below the last sequence emitted are dropped (already
// read from the database), and a live event past a gap (sequence > last + 1:
// a message lost or reordered by a transport) first has the missing events
// read from the database. Events are published only after their batch
// commits (GiftService.onCommitted), so a rolled-back gift is never shown.

export interface GiftFeedLimits {
  /** Live events one subscriber may have waiting; past it, it is disconnected (it resumes with afterSequence). */
  bufferedEventsMax: number
  /** Stored events read per query while replaying. */
  replayPageSize: number
}

export const GIFT_FEED_LIMITS: GiftFeedLimits = { bufferedEventsMax: 256, replayPageSize: 100 }

/** What a subscriber's queue carries: a live gift, the stream's end, or "read what you may have missed". */
export type FeedItem = { kind: 'gift'; event: GiftEvent } | { kind: 'ended' } | { kind: 'resync' }

/**
 * Where one subscriber stands: the last sequence it has been given. The
 * feed's loop (`follow`) reads and advances it; so does a transport that
 * writes live events to a caught-up subscriber itself (src/live/fanout.ts).
 */
export interface FeedCursor {
  last: number
}

/** A subscriber fell more than bufferedEventsMax events behind. */
export class SlowConsumerError extends GraphQLError {
  constructor() {
    super(
      'You fell too far behind the live feed; resubscribe with afterSequence set to the last sequence you saw.',
      {
        extensions: { code: 'SLOW_CONSUMER' },
      },
    )
  }
}

export interface FeedSubscriber {
  /** Told at once when this subscriber overflows: the transport closes its connection. */
  onOverflow?: () => void
}

const topic = (streamId: string) => `stream:${streamId}`

export class GiftFeed {
  constructor(
    private readonly db: Db,
    private readonly bus: LiveBus,
    readonly limits: GiftFeedLimits = GIFT_FEED_LIMITS,
  ) {}

  /** GiftService.onCommitted: one message per stream, in sequence order. */
  publishCommitted(events: GiftEvent[]): void {
    const byStream = new Map<string, Json[]>()
    for (const event of events) {
      if (event.streamId === null) continue
      let list = byStream.get(event.streamId)
      if (!list) {
        list = []
        byStream.set(event.streamId, list)
      }
      list.push(toWire(event))
    }
    for (const [streamId, list] of byStream)
      this.bus.publish(topic(streamId), { kind: 'gifts', events: list })
  }

  /** After endLiveStream commits: subscribers catch up with the database and complete. */
  publishEnded(streamId: string): void {
    this.bus.publish(topic(streamId), { kind: 'ended' })
  }

  /**
   * Checks the arguments and the stream (a refusal throws a DomainError);
   * the returned source starts (listens, then reads) on its first next().
   */
  async subscribe(
    streamId: string,
    afterSequence: number | null | undefined,
    subscriber: FeedSubscriber = {},
  ): Promise<GiftFeedSource> {
    const after = afterSequence ?? null
    if (after !== null && (!Number.isSafeInteger(after) || after < 0)) {
      throw new DomainError(
        'INVALID_INPUT',
        'afterSequence must be a whole number, 0 or more',
        'afterSequence',
      )
    }
    if (!isUuid(streamId) || !(await this.streamStatus(streamId))) {
      throw new DomainError('STREAM_NOT_FOUND', 'no such live stream', 'streamId')
    }
    return new GiftFeedSource(this, streamId, after, subscriber)
  }

  /**
   * Calls `onItems` with the items of each bus message of the stream (decoded
   * once per message, shared by every listener: read-only), and `onResync`
   * when the transport may have missed messages. Returns the unsubscribe.
   */
  listen(streamId: string, onItems: (items: readonly FeedItem[]) => void, onResync: () => void): () => void {
    return this.bus.subscribe(topic(streamId), (payload) => onItems(decodedOnce(payload)), onResync)
  }

  /** A subscriber's queue of live items: bounded; `onWait` as in BoundedQueue. */
  queue(onWait?: () => void): BoundedQueue<FeedItem> {
    return new BoundedQueue<FeedItem>(this.limits.bufferedEventsMax, onWait)
  }

  /**
   * One subscriber's feed: the stored events after `after` (null: none, the
   * feed starts now), then the live items of `queue`, which the caller fills
   * from `listen` started BEFORE this runs (the seam). Yields each sequence
   * once, in order; `cursor.last` is the last one given (advanced when the
   * consumer asks for the next), and whatever advanced it meanwhile is
   * respected: live events at or below it are dropped, one past a gap first
   * has the missing events read from the database.
   */
  async *follow(
    streamId: string,
    after: number | null,
    queue: BoundedQueue<FeedItem>,
    cursor: FeedCursor,
  ): AsyncGenerator<GiftEvent> {
    // Without afterSequence, the feed starts now: after the last committed event.
    const status = await this.streamStatus(streamId)
    cursor.last = after === null ? Number(status?.lastSequence ?? 0) : after
    if (after !== null) yield* this.catchUp(streamId, cursor, null)
    // An ended stream takes no more gifts: what is stored is all there is.
    if (status?.status === 'ended') {
      yield* this.catchUp(streamId, cursor, null)
      return
    }
    for (;;) {
      const item = await queue.take()
      if (item === undefined) return
      if (item.kind === 'ended') {
        yield* this.catchUp(streamId, cursor, null)
        return
      }
      if (item.kind === 'resync') {
        yield* this.catchUp(streamId, cursor, null)
        continue
      }
      const sequence = Number(item.event.sequence)
      if (sequence <= cursor.last) continue
      if (sequence > cursor.last + 1) yield* this.catchUp(streamId, cursor, sequence)
      yield item.event
      cursor.last = sequence
    }
  }

  /** The stored events after cursor.last (and before `before`), advancing the cursor. */
  private async *catchUp(
    streamId: string,
    cursor: FeedCursor,
    before: number | null,
  ): AsyncGenerator<GiftEvent> {
    for await (const event of this.stored(streamId, cursor.last, before)) {
      yield event
      cursor.last = Number(event.sequence)
    }
  }

  /** Stored events with after < sequence < before (before: null for no bound), in pages. */
  private async *stored(streamId: string, after: number, before: number | null): AsyncGenerator<GiftEvent> {
    let from = after
    for (;;) {
      const page = await this.db
        .select()
        .from(giftEvents)
        .where(
          and(
            eq(giftEvents.streamId, streamId),
            gt(giftEvents.sequence, BigInt(from)),
            before === null ? undefined : lt(giftEvents.sequence, BigInt(before)),
          ),
        )
        .orderBy(asc(giftEvents.sequence))
        .limit(this.limits.replayPageSize)
      for (const event of page) {
        yield event
        from = Number(event.sequence)
      }
      if (page.length < this.limits.replayPageSize) return
    }
  }

  private async streamStatus(streamId: string) {
    const [row] = await this.db
      .select({ status: liveStreams.status, lastSequence: liveStreams.lastSequence })
      .from(liveStreams)
      .where(eq(liveStreams.id, streamId))
    return row
  }
}

/**
 * One subscriber's feed as an async generator (SSE, and WebSocket operations
 * that are not fanned out). Nothing happens until the first next(): then it
 * listens on the bus into its own bounded queue and runs `follow`. A
 * transport may instead take the subscription over (the WebSocket fan-out
 * reads `streamId` and `afterSequence` and never iterates it).
 */
export class GiftFeedSource implements AsyncGenerator<GiftEvent> {
  private running: AsyncGenerator<GiftEvent> | null = null
  private finished = false

  constructor(
    private readonly feed: GiftFeed,
    readonly streamId: string,
    readonly afterSequence: number | null,
    private readonly subscriber: FeedSubscriber,
  ) {}

  next(): Promise<IteratorResult<GiftEvent>> {
    if (this.finished) return Promise.resolve({ done: true, value: undefined })
    this.running ??= this.start()
    return this.running.next()
  }

  return(value?: unknown): Promise<IteratorResult<GiftEvent>> {
    this.finished = true
    if (!this.running) return Promise.resolve({ done: true, value: undefined })
    return this.running.return(value)
  }

  throw(error?: unknown): Promise<IteratorResult<GiftEvent>> {
    this.finished = true
    if (!this.running) return Promise.reject(error)
    return this.running.throw(error)
  }

  [Symbol.asyncIterator](): this {
    return this
  }

  private start(): AsyncGenerator<GiftEvent> {
    const queue = this.feed.queue()
    const push = (item: FeedItem) => {
      if (queue.push(item)) return true
      unsubscribe()
      queue.fail(new SlowConsumerError())
      this.subscriber.onOverflow?.()
      return false
    }
    // Listening starts before anything is read: the seam.
    const unsubscribe = this.feed.listen(
      this.streamId,
      (items) => {
        for (const item of items) if (!push(item)) return
      },
      // The transport may have missed messages (Redis reconnected): read them from the database.
      () => push({ kind: 'resync' }),
    )
    const release = () => {
      unsubscribe()
      queue.close()
    }
    return cancellable(this.feed.follow(this.streamId, this.afterSequence, queue, { last: 0 }), release)
  }
}

// ---- the wire form: JSON-safe, so that any bus can carry it ----------------

const BIGINTS = ['sequence', 'coinCost', 'coins', 'creatorCoins', 'platformCoins', 'transactionId'] as const

function toWire(event: GiftEvent): Json {
  const wire: Record<string, Json> = {}
  for (const [key, value] of Object.entries(event)) {
    wire[key] = typeof value === 'bigint' ? value.toString() : (value as Json)
  }
  return wire
}

function fromWire(wire: Record<string, Json>): GiftEvent {
  const event: Record<string, unknown> = { ...wire }
  for (const key of BIGINTS) {
    const value = wire[key]
    event[key] = value === null || value === undefined ? null : BigInt(value as string)
  }
  return event as GiftEvent
}

function fromWireMessage(payload: Json): FeedItem[] {
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) return []
  if (payload.kind === 'ended') return [{ kind: 'ended' }]
  if (payload.kind !== 'gifts' || !Array.isArray(payload.events)) return []
  return payload.events.map((e) => ({ kind: 'gift', event: fromWire(e as Record<string, Json>) }))
}

/**
 * One bus message is decoded once, however many subscribers it reaches (the
 * in-process bus hands each the same object): the events are read-only.
 */
const decoded = new WeakMap<object, FeedItem[]>()

function decodedOnce(payload: Json): FeedItem[] {
  if (typeof payload !== 'object' || payload === null) return fromWireMessage(payload)
  let items = decoded.get(payload)
  if (!items) {
    items = fromWireMessage(payload)
    decoded.set(payload, items)
  }
  return items
}
