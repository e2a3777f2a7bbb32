import type { Settled } from './posting.js'

// Group commit: requests that arrive while a batch is being written wait
// and go together in the next one. At low load a request is written alone
// and at once; under load batches grow (up to batchSizeMax), so a hot
// account is locked once per batch instead of once per request.

export interface CoalescerOptions {
  batchSizeMax: number
  /** Batches written at the same time (overlaps one batch's commit with the next one's start). */
  concurrency: number
  /** Requests waiting beyond this are refused at once rather than queued without bound. */
  queueLengthMax: number
}

export class OverloadedError extends Error {
  override readonly name = 'OverloadedError'
  readonly code = 'OVERLOADED'
}

interface Waiting<I, O> {
  item: I
  resolve: (value: O) => void
  reject: (error: Error) => void
}

export class Coalescer<I, O> {
  private readonly queue: Waiting<I, O>[] = []
  private inFlight = 0

  constructor(
    private readonly runBatch: (items: I[]) => Promise<Settled<O>[]>,
    private readonly options: CoalescerOptions,
  ) {}

  get pending(): number {
    return this.queue.length
  }

  submit(item: I): Promise<O> {
    if (this.queue.length >= this.options.queueLengthMax) {
      return Promise.reject(
        new OverloadedError(`more than ${this.options.queueLengthMax} postings are waiting`),
      )
    }
    return new Promise<O>((resolve, reject) => {
      this.queue.push({ item, resolve, reject })
      this.pump()
    })
  }

  private pump(): void {
    while (this.inFlight < this.options.concurrency && this.queue.length > 0) {
      const batch = this.queue.splice(0, this.options.batchSizeMax)
      this.inFlight++
      this.write(batch).finally(() => {
        this.inFlight--
        this.pump()
      })
    }
  }

  private async write(batch: Waiting<I, O>[]): Promise<void> {
    try {
      const results = await this.runBatch(batch.map((w) => w.item))
      batch.forEach((w, i) => {
        settle(w, results[i])
      })
    } catch (error) {
      if (batch.length === 1) {
        ;(batch[0] as Waiting<I, O>).reject(error as Error)
        return
      }
      // Something failed the whole batch (a refusal the in-memory checks did
      // not foresee): write each request alone, so only the culprit fails.
      for (const waiting of batch) await this.write([waiting])
    }
  }
}

function settle<I, O>(waiting: Waiting<I, O>, result: Settled<O> | undefined): void {
  if (!result) waiting.reject(new Error('coalescer: the batch returned no result for a request'))
  else if (result.ok) waiting.resolve(result.value)
  else waiting.reject(result.error)
}
