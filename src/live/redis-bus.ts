import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import type { Json, LiveBus } from './bus.js'

// A LiveBus over Redis pub/sub, for several server instances: a gift sent
// through one instance reaches the subscribers of every instance.
//
// Plain pub/sub is enough: the gift feed already orders events by sequence,
// drops duplicates and reads missing sequences from the database (see
// gift-feed.ts), so a message Redis loses or reorders costs a query, never a
// gap. What Redis cannot tell a subscriber is that it missed something and
// nothing has come since; two things cover that:
//
// - subscriber side: whenever a topic's Redis subscription becomes active
//   (the first SUBSCRIBE reply, and again after every reconnection) the
//   topic's handlers get `onResync`, and the gift feed reads what it missed
//   from the database;
// - publisher side: publishing never waits and never fails. While the
//   publisher connection is down, a message is dropped (counted), and the last
//   dropped message of each topic is kept (at most `droppedTopicsMax` topics)
//   and published once the connection is back: a later gift batch makes the
//   feed read the gap, a later balance replaces an older one.
//
// Messages are delivered to this instance's own subscribers at once, without
// the round trip through Redis (and so also while Redis is down); each
// message carries the publishing instance's id, and an instance ignores its
// own messages coming back from Redis.

export interface RedisBusOptions {
  /** Prefix of every channel name. */
  channelPrefix?: string
  /** Topics whose last dropped message is kept for republishing; past it, new ones are dropped for good. */
  droppedTopicsMax?: number
  /** A handler threw, or Redis went away (reported once per outage), or a message was dropped for good. */
  onError?: (error: unknown) => void
  /** Connection state changes (logging). */
  onState?: (state: 'ready' | 'down', connection: 'publisher' | 'subscriber') => void
}

interface Subscription {
  handler: (payload: Json) => void
  onResync?: () => void
}

interface Envelope {
  o: string
  p: Json
}

const RECONNECT_MAX_MS = 2_000

/** Reconnect backoff: 100 ms doubling up to 2 s, with jitter; never gives up. */
export function reconnectDelay(attempt: number): number {
  const base = Math.min(RECONNECT_MAX_MS, 100 * 2 ** Math.min(attempt - 1, 10))
  return Math.round(base / 2 + Math.random() * (base / 2))
}

export class RedisBus implements LiveBus {
  private readonly instance = randomUUID()
  private readonly prefix: string
  private readonly droppedTopicsMax: number
  private readonly publisher: Redis
  private readonly subscriber: Redis
  private readonly topics = new Map<string, Set<Subscription>>()
  /** The last message of each topic that could not be published, to publish once Redis is back. */
  private readonly dropped = new Map<string, Json>()
  private closed = false
  private publisherDown = false
  private subscriberDown = false
  /** Counters (tests, metrics). */
  readonly stats = { published: 0, dropped: 0, droppedForGood: 0, republished: 0, resyncs: 0 }

  constructor(
    url: string,
    private readonly options: RedisBusOptions = {},
  ) {
    this.prefix = options.channelPrefix ?? 'giftledger:live:'
    this.droppedTopicsMax = options.droppedTopicsMax ?? 10_000
    const common = {
      // Never queue commands while disconnected: publishing must not wait or grow memory.
      enableOfflineQueue: false,
      // A command in flight when the connection breaks fails at once.
      maxRetriesPerRequest: 0,
      connectTimeout: 2_000,
      retryStrategy: reconnectDelay,
    }
    this.publisher = new Redis(url, { ...common, connectionName: 'giftledger-live-pub' })
    // Subscriptions are restored (and followed by a resync) by this class, not by ioredis.
    this.subscriber = new Redis(url, {
      ...common,
      autoResubscribe: false,
      connectionName: 'giftledger-live-sub',
    })

    this.publisher.on('ready', () => {
      this.publisherDown = false
      options.onState?.('ready', 'publisher')
      this.republishDropped()
    })
    this.publisher.on('error', (error) => this.down('publisher', error))
    this.publisher.on('close', () => this.down('publisher'))

    this.subscriber.on('ready', () => {
      this.subscriberDown = false
      options.onState?.('ready', 'subscriber')
      this.resubscribeAll()
    })
    this.subscriber.on('error', (error) => this.down('subscriber', error))
    this.subscriber.on('close', () => this.down('subscriber'))
    this.subscriber.on('message', (channel: string, message: string) => this.receive(channel, message))
  }

  publish(topic: string, payload: Json): void {
    this.deliver(topic, payload)
    if (this.closed) return
    if (this.publisher.status !== 'ready') {
      this.drop(topic, payload)
      return
    }
    this.send(topic, payload)
  }

  subscribe(topic: string, handler: (payload: Json) => void, onResync?: () => void): () => void {
    let subscriptions = this.topics.get(topic)
    if (!subscriptions) {
      subscriptions = new Set()
      this.topics.set(topic, subscriptions)
    }
    const subscription: Subscription = { handler, onResync }
    subscriptions.add(subscription)
    // Redis delivers only after its SUBSCRIBE reply: what was published before
    // is read from the database on the resync that follows the reply.
    // (SUBSCRIBE on a channel already subscribed is harmless.)
    if (this.subscriber.status === 'ready') {
      this.subscriber.subscribe(this.prefix + topic).then(
        () => {
          if (subscriptions.has(subscription)) this.resync(subscription)
        },
        // The connection broke: 'ready' resubscribes every topic and resyncs.
        () => {},
      )
    }
    return () => {
      const current = this.topics.get(topic)
      if (!current?.delete(subscription) || current.size > 0) return
      this.topics.delete(topic)
      if (this.subscriber.status === 'ready') this.subscriber.unsubscribe(this.prefix + topic).catch(() => {})
    }
  }

  /** Subscribers of a topic on this instance (tests, metrics). */
  subscriberCount(topic: string): number {
    return this.topics.get(topic)?.size ?? 0
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.topics.clear()
    this.dropped.clear()
    await Promise.all([quit(this.publisher), quit(this.subscriber)])
  }

  // ---- internals ------------------------------------------------------------

  private send(topic: string, payload: Json): void {
    const envelope: Envelope = { o: this.instance, p: payload }
    this.publisher.publish(this.prefix + topic, JSON.stringify(envelope)).then(
      () => {
        this.stats.published++
      },
      (error: unknown) => {
        this.drop(topic, payload)
        this.down('publisher', error)
      },
    )
  }

  private drop(topic: string, payload: Json): void {
    this.stats.dropped++
    if (this.closed) return
    // Only the newest message of a topic matters to its subscribers (they
    // read the gap from the database, or take the newest balance).
    if (this.dropped.has(topic) || this.dropped.size < this.droppedTopicsMax) {
      this.dropped.delete(topic)
      this.dropped.set(topic, payload)
      return
    }
    this.stats.droppedForGood++
    if (this.stats.droppedForGood === 1 || this.stats.droppedForGood % 1000 === 0) {
      this.options.onError?.(
        new Error(
          `live bus: Redis unreachable and ${this.droppedTopicsMax} topics waiting; ${this.stats.droppedForGood} messages dropped for good`,
        ),
      )
    }
  }

  private republishDropped(): void {
    const pending = [...this.dropped]
    this.dropped.clear()
    for (const [topic, payload] of pending) {
      this.stats.republished++
      this.send(topic, payload)
    }
  }

  private resubscribeAll(): void {
    const topics = [...this.topics.keys()]
    if (topics.length === 0) return
    const chunks: string[][] = []
    for (let i = 0; i < topics.length; i += 1000) chunks.push(topics.slice(i, i + 1000))
    for (const chunk of chunks) {
      this.subscriber.subscribe(...chunk.map((t) => this.prefix + t)).then(
        () => {
          for (const topic of chunk) {
            for (const subscription of this.topics.get(topic) ?? []) this.resync(subscription)
          }
        },
        () => {},
      )
    }
  }

  private resync(subscription: Subscription): void {
    if (!subscription.onResync) return
    this.stats.resyncs++
    try {
      subscription.onResync()
    } catch (error) {
      this.options.onError?.(error)
    }
  }

  private receive(channel: string, message: string): void {
    if (!channel.startsWith(this.prefix)) return
    let envelope: Envelope
    try {
      envelope = JSON.parse(message) as Envelope
    } catch (error) {
      this.options.onError?.(error)
      return
    }
    // Already delivered here when it was published.
    if (envelope.o === this.instance) return
    this.deliver(channel.slice(this.prefix.length), envelope.p)
  }

  private deliver(topic: string, payload: Json): void {
    const subscriptions = this.topics.get(topic)
    if (!subscriptions) return
    for (const subscription of [...subscriptions]) {
      try {
        subscription.handler(payload)
      } catch (error) {
        this.options.onError?.(error)
      }
    }
  }

  private down(connection: 'publisher' | 'subscriber', error?: unknown): void {
    if (this.closed) return
    const wasDown = connection === 'publisher' ? this.publisherDown : this.subscriberDown
    if (connection === 'publisher') this.publisherDown = true
    else this.subscriberDown = true
    if (wasDown) return
    this.options.onState?.('down', connection)
    this.options.onError?.(
      new Error(`live bus: Redis ${connection} connection lost; reconnecting`, { cause: error }),
    )
  }
}

async function quit(redis: Redis): Promise<void> {
  if (redis.status === 'ready') {
    try {
      await redis.quit()
      return
    } catch {
      // fall through
    }
  }
  redis.disconnect()
}
