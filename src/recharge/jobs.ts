import type { Services } from '../services.js'
import type { ReconciliationReport } from './service.js'

export const RECHARGE_JOBS = {
  /** The inbox is drained on every delivery; this catches retries whose backoff has run out. */
  inboxIntervalMs: 5_000,
  reconcileIntervalMs: 10 * 60 * 1000,
  /** Orders pending longer than this are re-checked against their provider. */
  reconcileAfterMs: 15 * 60 * 1000,
} as const

/**
 * The background side of recharge, safe on several instances at once: the
 * inbox claims events with leases, and settling is idempotent per order.
 */
export function startRechargeJobs(
  services: Pick<Services, 'inbox' | 'recharge'>,
  options: { onError: (error: unknown) => void; onReport?: (report: ReconciliationReport) => void },
): () => Promise<void> {
  const inboxTimer = setInterval(() => services.inbox.kick(), RECHARGE_JOBS.inboxIntervalMs)
  let reconciling: Promise<void> = Promise.resolve()
  const reconcileTimer = setInterval(() => {
    reconciling = reconciling
      .then(() => services.recharge.reconcile({ olderThanMs: RECHARGE_JOBS.reconcileAfterMs }))
      .then((report) => options.onReport?.(report))
      .catch(options.onError)
  }, RECHARGE_JOBS.reconcileIntervalMs)
  inboxTimer.unref()
  reconcileTimer.unref()
  services.inbox.kick()
  return async () => {
    clearInterval(inboxTimer)
    clearInterval(reconcileTimer)
    await reconciling
    await services.inbox.idle()
  }
}
