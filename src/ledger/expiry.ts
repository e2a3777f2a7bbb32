import type { Ledger } from './ledger.js'

/**
 * Releases expired holds in the background, a bounded batch per tick. Safe on
 * several instances at once: each hold is locked and moves out of pending once.
 */
export function startHoldExpiry(
  ledger: Ledger,
  options: { intervalMs: number; onError: (error: unknown) => void; onExpired?: (count: number) => void },
): () => Promise<void> {
  let running: Promise<void> = Promise.resolve()
  const timer = setInterval(() => {
    running = running
      .then(() => ledger.expireHolds())
      .then((count) => {
        if (count > 0) options.onExpired?.(count)
      })
      .catch(options.onError)
  }, options.intervalMs)
  timer.unref()
  return async () => {
    clearInterval(timer)
    await running
  }
}
