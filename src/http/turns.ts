// GraphQL requests start their work in turns of the event loop, a few at a
// time, after the turn's I/O callbacks.
//
// Without this, a request's work (Yoga's parse, validation, execution up to
// its first database wait) runs inside the callback of the socket it arrived
// on, one request after the other. Two things go wrong under load:
// - A database answer that arrives meanwhile waits behind all of them. A gift
//   batch's transaction holds its stream's lock across two round trips, so
//   every request of the next batch waits too.
// - Each request runs its whole path alone, between the kernel's work for its
//   socket: the same code is fetched again and again, cold.
// Released together, the requests of a turn interleave at each await (the
// microtask queue runs their steps in order), so each step of the path runs
// for all of them in a row; and setImmediate runs after the turn's I/O
// callbacks, so the database's answers never wait behind more than one turn.
// BENCHMARKS.md (the API section) has the measurements.
//
// The queue holds requests whose bodies have been read (at most 1 MiB each,
// with the server's header and request timeouts), one callback each: no more
// than the requests that would otherwise be running at once.

/** Requests released per turn: enough to run each step warm, few enough to keep a turn short. */
export const REQUESTS_PER_TURN = 16

export class Turns {
  private readonly waiting: (() => void)[] = []

  constructor(private readonly perTurn: number = REQUESTS_PER_TURN) {
    if (!Number.isInteger(perTurn) || perTurn < 1) throw new RangeError('perTurn must be a positive integer')
  }

  /** Resolves in a later turn of the event loop (its check phase), in arrival order. */
  wait(): Promise<void> {
    return new Promise((resolve) => {
      this.waiting.push(resolve)
      if (this.waiting.length === 1) setImmediate(this.release)
    })
  }

  /** Requests waiting for their turn. */
  get pending(): number {
    return this.waiting.length
  }

  private readonly release = (): void => {
    for (const resolve of this.waiting.splice(0, this.perTurn)) resolve()
    // The rest go in the next turn, after its I/O callbacks.
    if (this.waiting.length > 0) setImmediate(this.release)
  }
}
