import type { Logger } from 'pino'

// A clean stop on SIGTERM, bounded in time: the steps run one after the
// other (the order is the caller's: stop accepting and finish requests,
// then background jobs, then the pool), and the whole may take at most
// `timeoutMs`. A step that fails is logged and the next ones still run (the
// pool is closed even when a job would not stop); a step still running at
// the deadline is named in the log and the rest is abandoned.

/** Of the whole timeout, the share in-flight HTTP requests get before their connections are cut. */
export const REQUEST_GRACE_SHARE = 0.7

export interface StopStep {
  name: string
  stop: () => Promise<void>
}

/** How long in-flight requests may run on after SIGTERM: most of the timeout, the rest is for jobs and the pool. */
export function requestGraceMs(timeoutMs: number): number {
  return Math.floor(timeoutMs * REQUEST_GRACE_SHARE)
}

/** Runs `steps` in order within `timeoutMs`; true when every one finished cleanly in time. */
export async function stopInOrder(
  steps: readonly StopStep[],
  options: { timeoutMs: number; logger: Logger; now?: () => number },
): Promise<boolean> {
  const now = options.now ?? Date.now
  const deadline = now() + options.timeoutMs
  let clean = true
  for (const step of steps) {
    const leftMs = deadline - now()
    const startedMs = now()
    let timer: NodeJS.Timeout | undefined
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), Math.max(0, leftMs))
    })
    try {
      const outcome = await Promise.race([step.stop().then(() => 'done' as const), timedOut])
      if (outcome === 'timeout') {
        options.logger.error(
          { step: step.name, timeoutMs: options.timeoutMs },
          'shutdown timed out; abandoning the remaining steps',
        )
        return false
      }
      options.logger.debug({ step: step.name, durationMs: now() - startedMs }, 'stopped')
    } catch (err) {
      clean = false
      options.logger.error({ err, step: step.name }, 'a shutdown step failed; going on with the next')
    } finally {
      clearTimeout(timer)
    }
  }
  return clean
}
