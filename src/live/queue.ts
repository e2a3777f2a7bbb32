/**
 * A bounded queue between a publisher (the bus, synchronous) and one
 * subscriber (an async iterator). `push` never blocks and never grows the
 * queue past `lengthMax`: it returns false instead, and the caller decides
 * what a subscriber that fell behind gets (here: disconnected).
 */
export class BoundedQueue<T> {
  private readonly items: T[] = []
  private waiter: { resolve: (item: T | undefined) => void; reject: (error: unknown) => void } | null = null
  private closed = false
  private failure: { error: unknown } | null = null

  /**
   * `onWait`: told each time the consumer finds the queue empty and waits,
   * i.e. it has taken everything pushed so far (the WebSocket fan-out's cue
   * that a subscriber has caught up, src/live/fanout.ts).
   */
  constructor(
    readonly lengthMax: number,
    private readonly onWait?: () => void,
  ) {}

  get length(): number {
    return this.items.length
  }

  push(item: T): boolean {
    if (this.closed || this.failure) return true
    if (this.waiter) {
      const { resolve } = this.waiter
      this.waiter = null
      resolve(item)
      return true
    }
    if (this.items.length >= this.lengthMax) return false
    this.items.push(item)
    return true
  }

  /** The next item; undefined once closed and drained; rejects once failed. */
  take(): Promise<T | undefined> {
    if (this.failure) return Promise.reject(this.failure.error)
    if (this.items.length > 0) return Promise.resolve(this.items.shift())
    if (this.closed) return Promise.resolve(undefined)
    const next = new Promise<T | undefined>((resolve, reject) => {
      this.waiter = { resolve, reject }
    })
    this.onWait?.()
    return next
  }

  close(): void {
    this.closed = true
    this.items.length = 0
    this.waiter?.resolve(undefined)
    this.waiter = null
  }

  fail(error: unknown): void {
    this.failure = { error }
    this.items.length = 0
    this.waiter?.reject(error)
    this.waiter = null
  }
}

/**
 * An async generator whose return() does not wait for a pending await: an
 * unsubscribing client must release its bus subscription at once, not at
 * the next event (which may never come).
 */
export function cancellable<T>(generator: AsyncGenerator<T>, release: () => void): AsyncGenerator<T> {
  let released = false
  const releaseOnce = () => {
    if (released) return
    released = true
    release()
  }
  const wrapped: AsyncGenerator<T> = {
    next: async () => {
      try {
        const result = await generator.next()
        if (result.done) releaseOnce()
        return result
      } catch (error) {
        releaseOnce()
        throw error
      }
    },
    return: async (value) => {
      releaseOnce()
      return generator.return(value)
    },
    throw: async (error) => {
      releaseOnce()
      return generator.throw(error)
    },
    [Symbol.asyncIterator]: () => wrapped,
  } as AsyncGenerator<T>
  return wrapped
}
