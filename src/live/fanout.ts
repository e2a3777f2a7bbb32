import { initContextCache } from '@pothos/core'
import {
  type DocumentNode,
  type ExecutionArgs,
  type ExecutionResult,
  execute,
  type GraphQLError,
  getOperationAST,
  Kind,
  visit,
} from 'graphql'
import type { GiftEvent } from '../gifts/service.js'
import {
  type FeedCursor,
  type FeedItem,
  type GiftFeed,
  type GiftFeedSource,
  SlowConsumerError,
} from './gift-feed.js'
import type { BoundedQueue } from './queue.js'

// Fan-out of a stream's gift events to many WebSocket subscribers of the
// same liveGifts operation: each event is executed once and serialized once
// per distinct operation, and the same bytes go to every subscriber that is
// caught up, written by the stream's channel in one synchronous loop — no
// per-subscriber GraphQL execution, JSON, promise or async iteration on the
// hot path. See docs/LIVE.md, "Fan-out".
//
// Correctness rests on GiftFeed.follow, which every subscriber still runs:
// it owns the replay, the seam, gaps, resyncs and the stream's end. The
// channel only short-cuts the common case. A subscriber is "direct" while its
// follow loop waits on an empty queue (it has been given everything so far);
// then the channel writes an event to it itself iff its sequence is exactly
// cursor.last + 1, and advances the cursor. Anything else (a gap, a resync,
// the end, a failed execution) goes into the subscriber's queue instead,
// which wakes its follow loop, and the subscriber stays "queued" (written by
// its own pump) until the loop waits again. Every write, by either path,
// checks and advances the same cursor, in one thread: each sequence once,
// in order.
//
// Sharing results across viewers is sound because everything reachable from
// GiftEvent is public (no field-level authScopes, no resolver reads the
// viewer); a viewer-dependent field there must add the viewer to the key.

/** Root fields whose operations are shared, and the argument that only selects the source. */
const SHAREABLE_FIELDS: Record<string, string> = { liveGifts: 'afterSequence' }

export const FANOUT_LIMITS = {
  /**
   * Events per round: one write per subscriber carries at most this many
   * messages, so a large gift batch (up to 500 events) is written in steps.
   */
  roundEventsMax: 64,
  /**
   * Events a stream's channel holds that no subscriber has been given yet
   * (shared by all of them). Past it the server is hopelessly behind and
   * every subscriber of the stream is disconnected as a slow consumer.
   */
  backlogEventsMax: 4096,
} as const

/** Test and benchmark hook: how much work the shared path did. */
export const fanoutStats = {
  /** GraphQL executions of an event for an operation. */
  executions: 0,
  /** JSON serializations of an execution's result. */
  serializations: 0,
  /** Messages written by a channel to caught-up subscribers (the fast path). */
  directDeliveries: 0,
  /** Messages written by a subscriber's own pump (replay, seam, gaps). */
  queuedDeliveries: 0,
  /** Subscribers that have caught up and are written to by their channel, now. */
  directSubscribers: 0,
}

/**
 * The transport's side of one subscription. `payloads` are results'
 * JSON bytes; the transport wraps each in its own `next` message.
 */
export interface FanoutSink {
  /** Writes one `next` message per payload, in order; `flushed` once the OS has taken them (or the connection is gone). */
  write(payloads: readonly Buffer[], flushed?: () => void): void
  /** Bytes written and not yet taken by the OS. */
  bufferedBytes(): number
  /** Disconnects a subscriber that fell too far behind (WebSocket: 4421). */
  disconnectSlowConsumer(): void
}

/** A shared operation as one subscriber gave it. */
export interface SharedOperation {
  /** The sharing key (SharedResults.operationKey of operationFingerprint). */
  key: string
  /** Execution arguments without rootValue (the event). */
  args: ExecutionArgs
  mask: (error: GraphQLError) => GraphQLError
}

/** Results by (event id, operation), executed at most once while cached. */
export class SharedResults {
  private readonly results = new Map<string, Promise<Buffer>>()
  /** Fingerprint → a short key, so that a lookup does not hash the query text. */
  private readonly operations = new Map<string, string>()
  private operationCount = 0

  constructor(private readonly entriesMax = 4096) {}

  /** The short key of an operation's fingerprint (once per subscription). */
  operationKey(fingerprint: string): string {
    let key = this.operations.get(fingerprint)
    if (key === undefined) {
      // Operations are few (one per distinct query and variables); forget them all past a bound.
      if (this.operations.size >= this.entriesMax) this.operations.clear()
      key = `op${this.operationCount++}`
      this.operations.set(fingerprint, key)
    }
    return key
  }

  /** The JSON bytes of `event` executed for `operation`, with `contextValue` when it has to run. */
  payload(event: GiftEvent, operation: SharedOperation, contextValue: unknown): Promise<Buffer> {
    const key = `${event.id}:${operation.key}`
    const cached = this.results.get(key)
    if (cached) return cached
    const result = run(event, operation, contextValue)
    this.results.set(key, result)
    // Oldest first: a Map iterates in insertion order.
    if (this.results.size > this.entriesMax) {
      const oldest = this.results.keys().next().value
      if (oldest !== undefined) this.results.delete(oldest)
    }
    // A failed execution is not kept: the next subscriber tries again.
    result.catch(() => this.results.delete(key))
    return result
  }
}

async function run(event: GiftEvent, operation: SharedOperation, contextValue: unknown): Promise<Buffer> {
  fanoutStats.executions++
  const result = (await execute({ ...operation.args, contextValue, rootValue: event })) as ExecutionResult
  const payload: { data?: unknown; errors?: unknown[] } = {}
  if (result.data !== undefined) payload.data = result.data
  if (result.errors) payload.errors = result.errors.map((e) => operation.mask(e).toJSON())
  fanoutStats.serializations++
  return Buffer.from(JSON.stringify(payload))
}

/**
 * A fresh context for executions: a copy of a subscriber's. What resolvers
 * cache per request is keyed by the context object (the gift events' loaders
 * of senders and gifts, Pothos's own cache, given a new key here), so they
 * load afresh for each round of events instead of caching for the life of a
 * subscription (a renamed sender shows up; nothing grows).
 */
function freshContext(contextValue: unknown): unknown {
  return { ...(contextValue as object), ...initContextCache() }
}

/** The WebSocket fan-out of liveGifts: one channel per stream with shared subscribers. */
export class LiveGiftsFanout {
  readonly shared = new SharedResults()
  private readonly channels = new Map<string, StreamChannel>()

  constructor(readonly feed: GiftFeed) {}

  /**
   * Takes over a subscriber's feed (never iterated) and returns what the
   * transport awaits: done when the feed completes (the stream ended),
   * rejected when it fails; its return() unsubscribes.
   */
  subscribe(source: GiftFeedSource, operation: SharedOperation, sink: FanoutSink): AsyncGenerator<never> {
    const subscriber = new Subscriber(this, source, operation, sink)
    let started = false
    const iterator: AsyncGenerator<never> = {
      next: () => {
        // Started on the first next(): the transport has registered the subscription by then.
        if (!started) {
          started = true
          subscriber.start()
        }
        return subscriber.done
      },
      return: async () => {
        subscriber.close()
        return { done: true, value: undefined }
      },
      throw: async () => {
        subscriber.close()
        return { done: true, value: undefined }
      },
      [Symbol.asyncIterator]: () => iterator,
    } as AsyncGenerator<never>
    return iterator
  }

  /** The stream's channel, listening from now on. */
  channelOf(streamId: string): StreamChannel {
    let channel = this.channels.get(streamId)
    if (!channel) {
      channel = new StreamChannel(this, streamId)
      this.channels.set(streamId, channel)
    }
    return channel
  }

  /** Called by a channel that has no subscribers left, or that has ended. */
  retire(channel: StreamChannel): void {
    if (this.channels.get(channel.streamId) === channel) this.channels.delete(channel.streamId)
  }

  /** Channels open (tests, metrics). */
  get channelCount(): number {
    return this.channels.size
  }
}

/**
 * One stream's bus messages for all its fanned-out subscribers: one bus
 * subscription; items handled in rounds, in order. A round is what arrived
 * since the last one (usually one event; more when the server is behind or a
 * batch brings several, at most roundEventsMax): each event is executed once
 * per operation group, then each subscriber gets the round's messages in one
 * write.
 */
class StreamChannel {
  private readonly groups = new Map<string, Subscriber[]>()
  private readonly inbox: FeedItem[] = []
  private draining = false
  private closed = false
  private readonly unlisten: () => void

  constructor(
    private readonly fanout: LiveGiftsFanout,
    readonly streamId: string,
  ) {
    this.unlisten = fanout.feed.listen(
      streamId,
      (items) => this.receive(items),
      () => this.receive([{ kind: 'resync' }]),
    )
  }

  add(subscriber: Subscriber): void {
    const key = subscriber.operation.key
    const group = this.groups.get(key)
    if (group) group.push(subscriber)
    else this.groups.set(key, [subscriber])
  }

  remove(subscriber: Subscriber): void {
    const key = subscriber.operation.key
    const group = this.groups.get(key)
    if (!group) return
    const at = group.indexOf(subscriber)
    if (at < 0) return
    // Order within a group does not matter: swap with the last, O(1).
    group[at] = group[group.length - 1] as Subscriber
    group.pop()
    if (group.length === 0) this.groups.delete(key)
    if (this.groups.size === 0) this.close()
  }

  private close(): void {
    if (this.closed) return
    this.closed = true
    this.unlisten()
    this.inbox.length = 0
    this.fanout.retire(this)
  }

  private receive(items: readonly FeedItem[]): void {
    if (this.closed) return
    for (const item of items) this.inbox.push(item)
    // Rounds that cannot keep up (executions stuck) must not let the backlog grow without bound.
    if (this.inbox.length > FANOUT_LIMITS.backlogEventsMax) {
      for (const group of [...this.groups.values()]) for (const s of [...group]) s.overflow()
      return
    }
    if (!this.draining) void this.drain()
  }

  private async drain(): Promise<void> {
    this.draining = true
    try {
      while (this.inbox.length > 0) {
        const round = this.inbox.splice(0, Math.min(this.inbox.length, FANOUT_LIMITS.roundEventsMax))
        if (round.some((item) => item.kind === 'ended')) {
          // No gift can follow the end: new subscribers get a new channel (and read the end from the database).
          this.close()
        }
        const sequences = round.map((item) => (item.kind === 'gift' ? Number(item.event.sequence) : 0))
        const groups = [...this.groups.values()]
        const payloads = await Promise.all(groups.map((group) => this.execute(round, group)))
        for (let g = 0; g < groups.length; g++) {
          // A copy: a subscriber may leave (overflow) while the round is written.
          for (const subscriber of [...(groups[g] as Subscriber[])])
            subscriber.deliver(round, sequences, payloads[g] as (Buffer | null)[])
        }
      }
    } finally {
      this.draining = false
    }
  }

  /** Each gift of the round executed once for the group's operation; null where it failed (or is no gift). */
  private async execute(
    round: readonly FeedItem[],
    group: readonly Subscriber[],
  ): Promise<(Buffer | null)[]> {
    const first = group[0]
    if (!first) return []
    // One context for the round: the loaders batch the round's relations.
    const contextValue = freshContext(first.operation.args.contextValue)
    return Promise.all(
      round.map((item) =>
        item.kind === 'gift'
          ? this.fanout.shared.payload(item.event, first.operation, contextValue).catch(() => null)
          : null,
      ),
    )
  }
}

/** One WebSocket subscription of a shared operation. */
class Subscriber {
  readonly done: Promise<IteratorResult<never>>
  private settle!: { resolve: (result: IteratorResult<never>) => void; reject: (error: unknown) => void }
  private readonly cursor: FeedCursor = { last: 0 }
  private readonly queue: BoundedQueue<FeedItem>
  private channel: StreamChannel | null = null
  /** Caught up: the follow loop waits on an empty queue, the channel writes to it directly. */
  private direct = false
  /** Set when the subscriber catches up: its pump's next catch-up starts with a fresh context. */
  private renewContext = false
  private closed = false

  constructor(
    private readonly fanout: LiveGiftsFanout,
    private readonly source: GiftFeedSource,
    readonly operation: SharedOperation,
    private readonly sink: FanoutSink,
  ) {
    this.done = new Promise((resolve, reject) => {
      this.settle = { resolve, reject }
    })
    // Nothing unhandled if the transport has stopped listening.
    this.done.catch(() => {})
    this.queue = fanout.feed.queue(() => {
      if (this.closed) return
      this.setDirect(true)
      this.renewContext = true
    })
  }

  start(): void {
    if (this.closed) return
    // Registered with the (listening) channel before follow reads anything: the seam.
    this.channel = this.fanout.channelOf(this.source.streamId)
    this.channel.add(this)
    void this.pump(
      this.fanout.feed.follow(this.source.streamId, this.source.afterSequence, this.queue, this.cursor),
    )
  }

  /**
   * A round from the channel; sequences and payloads by item (payload null: no gift, or its execution failed).
   * While direct: the next sequence is written with the others of the round in one write.
   */
  deliver(
    round: readonly FeedItem[],
    sequences: readonly number[],
    payloads: readonly (Buffer | null)[],
  ): void {
    if (this.closed) return
    try {
      this.deliverRound(round, sequences, payloads)
    } catch (error) {
      this.fail(error)
    }
  }

  private deliverRound(
    round: readonly FeedItem[],
    sequences: readonly number[],
    payloads: readonly (Buffer | null)[],
  ): void {
    let out: Buffer[] | null = null
    for (let i = 0; i < round.length; i++) {
      const item = round[i] as FeedItem
      if (this.direct) {
        const payload = payloads[i]
        if (item.kind === 'gift' && payload) {
          const sequence = sequences[i] as number
          if (sequence <= this.cursor.last) continue
          if (sequence === this.cursor.last + 1) {
            if (out) out.push(payload)
            else out = [payload]
            this.cursor.last = sequence
            continue
          }
        }
        // A gap, a resync, the end, a failed execution: from here on, the follow loop's job.
        if (!this.flush(out)) return
        out = null
        this.setDirect(false)
      }
      if (!this.queue.push(item)) {
        this.overflow()
        return
      }
    }
    this.flush(out)
  }

  /** Writes direct messages; false when the subscriber was cut for being too far behind. */
  private flush(out: Buffer[] | null): boolean {
    if (!out) return true
    const largest = out.reduce((n, payload) => Math.max(n, payload.length), 0)
    // The socket's buffer already holds as many bytes as bufferedEventsMax such events: it stopped reading.
    if (this.sink.bufferedBytes() >= this.fanout.feed.limits.bufferedEventsMax * largest) {
      this.overflow()
      return false
    }
    this.sink.write(out)
    fanoutStats.directDeliveries += out.length
    return true
  }

  /**
   * Writes what the follow loop yields (replay, seam, gaps, the end), one
   * message at a time, waiting for each to be flushed: a client that stops
   * reading fills its queue (bufferedEventsMax) and is cut.
   */
  private async pump(feed: AsyncGenerator<GiftEvent>): Promise<void> {
    let contextValue: unknown = null
    try {
      for (;;) {
        const step = await feed.next()
        if (this.closed) return
        if (step.done) {
          this.finish()
          this.settle.resolve({ done: true, value: undefined })
          return
        }
        // One context per catch-up: its loaders cache within it only.
        if (contextValue === null || this.renewContext) {
          contextValue = freshContext(this.operation.args.contextValue)
          this.renewContext = false
        }
        const payload = await this.fanout.shared.payload(step.value, this.operation, contextValue)
        if (this.closed) return
        await new Promise<void>((resolve) => this.sink.write([payload], resolve))
        fanoutStats.queuedDeliveries++
      }
    } catch (error) {
      this.fail(error)
    } finally {
      await feed.return(undefined)
    }
  }

  overflow(): void {
    if (this.closed) return
    this.fail(new SlowConsumerError())
    this.sink.disconnectSlowConsumer()
  }

  private fail(error: unknown): void {
    if (this.closed) return
    this.finish()
    this.settle.reject(error)
  }

  /** The transport unsubscribed (complete from the client, or the connection closed). */
  close(): void {
    if (this.closed) return
    this.finish()
    this.settle.resolve({ done: true, value: undefined })
  }

  private setDirect(direct: boolean): void {
    if (direct !== this.direct) fanoutStats.directSubscribers += direct ? 1 : -1
    this.direct = direct
  }

  private finish(): void {
    this.closed = true
    this.setDirect(false)
    // Ends the follow loop if it waits on its queue.
    this.queue.close()
    this.channel?.remove(this)
    this.channel = null
  }
}

/**
 * The sharing key of an operation, or null when it is not shared: a
 * subscription with one root field, a shareable one. The variable given to
 * the source-only argument (afterSequence) is left out when used nowhere else.
 */
export function operationFingerprint(
  query: string,
  document: DocumentNode,
  operationName: string | null | undefined,
  variables: Record<string, unknown> | null | undefined,
): string | null {
  const operation = getOperationAST(document, operationName)
  if (operation?.operation !== 'subscription') return null
  const selections = operation.selectionSet.selections
  const [root] = selections
  if (selections.length !== 1 || root?.kind !== Kind.FIELD) return null
  const sourceArgument = SHAREABLE_FIELDS[root.name.value]
  if (!sourceArgument) return null
  const omitted = new Set<string>()
  const argument = root.arguments?.find((a) => a.name.value === sourceArgument)
  if (argument?.value.kind === Kind.VARIABLE) {
    const name = argument.value.name.value
    let uses = 0
    visit(document, {
      Variable: (node) => {
        if (node.name.value === name) uses++
      },
    })
    // Its definition and this argument: used nowhere else.
    if (uses === 2) omitted.add(name)
  }
  const kept = Object.entries(variables ?? {})
    .filter(([name]) => !omitted.has(name))
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  return JSON.stringify([query, operationName ?? null, kept])
}
