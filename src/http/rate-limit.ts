import { getOperationAST } from 'graphql'
import { createGraphQLError, type Plugin } from 'graphql-yoga'
import type { Context } from '../graphql/context.js'

/** Buckets kept at most; past that, the least recently used is dropped. */
export const BUCKETS_MAX = 100_000

interface Bucket {
  tokens: number
  updatedAtMs: number
}

/**
 * Token buckets, one per key, in process: `ratePerSecond` tokens flow in,
 * up to `burst`. Memory is bounded: a bucket idle long enough to be full
 * again is the same as no bucket and is dropped, and there are never more
 * than `bucketsMax` of them (the least recently used goes first).
 */
export class TokenBuckets {
  /** key → bucket, least recently used first. */
  private readonly buckets = new Map<string, Bucket>()
  /** How long an empty bucket takes to fill: past that, idle buckets are dropped. */
  private readonly refillMs: number

  constructor(
    private readonly ratePerSecond: number,
    private readonly burst: number,
    private readonly now: () => number = Date.now,
    private readonly bucketsMax = BUCKETS_MAX,
  ) {
    this.refillMs = (burst / ratePerSecond) * 1000
  }

  /** Takes a token for `key`; false when its bucket is empty. */
  take(key: string): boolean {
    const nowMs = this.now()
    this.dropIdle(nowMs)
    const bucket = this.buckets.get(key) ?? { tokens: this.burst, updatedAtMs: nowMs }
    const elapsedMs = Math.max(0, nowMs - bucket.updatedAtMs)
    bucket.tokens = Math.min(this.burst, bucket.tokens + (elapsedMs / 1000) * this.ratePerSecond)
    bucket.updatedAtMs = nowMs
    const taken = bucket.tokens >= 1
    if (taken) bucket.tokens -= 1
    // Re-inserted, so that the Map stays in least-recently-used order.
    this.buckets.delete(key)
    this.buckets.set(key, bucket)
    if (this.buckets.size > this.bucketsMax) {
      const oldest = this.buckets.keys().next().value
      if (oldest !== undefined) this.buckets.delete(oldest)
    }
    return taken
  }

  get size(): number {
    return this.buckets.size
  }

  /** Drops the full buckets at the old end: amortized O(1) per take. */
  private dropIdle(nowMs: number): void {
    for (const [key, bucket] of this.buckets) {
      if (nowMs - bucket.updatedAtMs < this.refillMs) return
      this.buckets.delete(key)
    }
  }
}

/** How a request's caller is known to the rate limit when nobody is signed in. */
export interface ClientAddress {
  clientAddress?: string
}

/**
 * Refuses mutations past the caller's rate with a GraphQL error
 * (extensions.code RATE_LIMITED, HTTP 429). Signed-in callers are counted
 * per user, anonymous ones per IP address (the socket's: behind a proxy,
 * all anonymous callers share the proxy's). Queries are not counted.
 */
export function useMutationRateLimit(buckets: TokenBuckets): Plugin<Context & ClientAddress> {
  return {
    onExecute({ args, setResultAndStopExecution }) {
      const operation = getOperationAST(args.document, args.operationName)
      if (operation?.operation !== 'mutation') return
      const context = args.contextValue as Context & ClientAddress
      const key = context.viewer
        ? `user:${context.viewer.userId}`
        : `ip:${context.clientAddress ?? 'unknown'}`
      if (buckets.take(key)) return
      setResultAndStopExecution({
        errors: [
          createGraphQLError('Too many mutations: slow down and try again shortly.', {
            extensions: { code: 'RATE_LIMITED', http: { status: 429, headers: { 'retry-after': '1' } } },
          }),
        ],
      })
    },
  }
}
