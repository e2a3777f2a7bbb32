// The publish/subscribe seam of the live features. Everything in src/live
// talks to a LiveBus, never to a transport: the in-process bus below serves
// one server; a Redis (or PostgreSQL LISTEN/NOTIFY) bus can take its place
// for several without touching the feeds or the resolvers. Payloads are
// JSON-safe (no bigint, no Date) so that any transport can carry them.

export type Json = string | number | boolean | null | Json[] | { [key: string]: Json }

export interface LiveBus {
  /** Delivers `payload` to the topic's current subscribers; never throws for a subscriber's failure. */
  publish(topic: string, payload: Json): void
  /**
   * Calls `handler` with each payload published on `topic` from now on; returns the unsubscribe.
   * `onResync`: a transport that may have missed messages (a Redis subscription that just became
   * active, or came back after a disconnection) calls it; the subscriber reads what it missed
   * from the database. The in-process bus never misses anything and never calls it.
   */
  subscribe(topic: string, handler: (payload: Json) => void, onResync?: () => void): () => void
  close(): Promise<void>
}

/** One process's bus: synchronous delivery, in publish order, to each subscriber. */
export class InProcessBus implements LiveBus {
  private readonly topics = new Map<string, Set<(payload: Json) => void>>()

  constructor(private readonly onHandlerError: (error: unknown) => void = () => {}) {}

  publish(topic: string, payload: Json): void {
    const handlers = this.topics.get(topic)
    if (!handlers) return
    for (const handler of [...handlers]) {
      try {
        handler(payload)
      } catch (error) {
        this.onHandlerError(error)
      }
    }
  }

  subscribe(topic: string, handler: (payload: Json) => void): () => void {
    let handlers = this.topics.get(topic)
    if (!handlers) {
      handlers = new Set()
      this.topics.set(topic, handlers)
    }
    handlers.add(handler)
    return () => {
      const current = this.topics.get(topic)
      if (!current) return
      current.delete(handler)
      if (current.size === 0) this.topics.delete(topic)
    }
  }

  /** Subscribers of a topic (tests, metrics). */
  subscriberCount(topic: string): number {
    return this.topics.get(topic)?.size ?? 0
  }

  async close(): Promise<void> {
    this.topics.clear()
  }
}
