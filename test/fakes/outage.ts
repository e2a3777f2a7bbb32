import type { ServerResponse } from 'node:http'

// The fakes' 'late' outage: a provider that carries a request out but answers
// after the client has given up (its timeout), as a slow provider does. The
// client's retry with the same idempotency key must find what the first try
// created, not make a second one.

/** How late the answers of a 'late' outage come: longer than any client timeout in the tests. */
export const LATE_ANSWER_MS = 5_000

/** Holds back everything written to `res` for `ms`: the work is done, the answer comes late. */
export function answerLate(res: ServerResponse, ms: number): void {
  const end = res.end.bind(res) as (...args: unknown[]) => ServerResponse
  res.end = ((...args: unknown[]) => {
    setTimeout(() => {
      if (!res.destroyed) end(...args)
    }, ms).unref()
    return res
  }) as typeof res.end
}
