import type { Ledger } from './ledger.js'

/**
 * Releases expired holds in the background, a bounded batch per tick. Safe on
 * several instances at once: each hold is locked and moves out of pending once.
 */
export function startHoldExpiry(
  ledger: Ledger,
  options: { intervalMs: number; onError: (error: unknown) => void; onExpired?: (count: number) => void },
): () => Promise<void> {
  return every(options.intervalMs, () => ledger.expireHolds(), options.onError, options.onExpired)
}

/**
 * Sweeps the shards the ledger's lanes credited into their accounts in the
 * background (src/ledger/lanes.ts). Balances read the same before and after;
 * a sweep only gathers a sharded account's coins into the account itself.
 */
export function startShardSweeps(
  ledger: Ledger,
  options: { intervalMs: number; onError: (error: unknown) => void; onSwept?: (count: number) => void },
): () => Promise<void> {
  return every(options.intervalMs, () => ledger.sweepShards(), options.onError, options.onSwept)
}

/** Runs `work` every intervalMs, one run at a time; the returned function stops it and waits for the last run. */
function every(
  intervalMs: number,
  work: () => Promise<number>,
  onError: (error: unknown) => void,
  onDone?: (count: number) => void,
): () => Promise<void> {
  let running: Promise<void> = Promise.resolve()
  const timer = setInterval(() => {
    running = running
      .then(work)
      .then((count) => {
        if (count > 0) onDone?.(count)
      })
      .catch(onError)
  }, intervalMs)
  timer.unref()
  return async () => {
    clearInterval(timer)
    await running
  }
}
