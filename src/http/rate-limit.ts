import { type DocumentNode, getOperationAST, Kind, type SelectionSetNode } from 'graphql'
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

  /** Takes `cost` tokens for `key`, all or none; false when its bucket has fewer. */
  take(key: string, cost = 1): boolean {
    const nowMs = this.now()
    this.dropIdle(nowMs)
    const bucket = this.buckets.get(key) ?? { tokens: this.burst, updatedAtMs: nowMs }
    const elapsedMs = Math.max(0, nowMs - bucket.updatedAtMs)
    bucket.tokens = Math.min(this.burst, bucket.tokens + (elapsedMs / 1000) * this.ratePerSecond)
    bucket.updatedAtMs = nowMs
    const taken = bucket.tokens >= cost
    if (taken) bucket.tokens -= cost
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
 *
 * A token per mutation field, not per request: `mutation { a: sendGift(…)
 * b: sendGift(…) … }` runs each aliased field, and one token for the request
 * let a user send 16 gifts (15 aliases and the field) per token.
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
      if (buckets.take(key, rootFieldCount(operation.selectionSet, args.document))) return
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

/** The fields an operation runs at its root, through fragments (at least 1; __typename is free). */
export function rootFieldCount(selectionSet: SelectionSetNode, document: DocumentNode): number {
  const fragments = new Map<string, SelectionSetNode>()
  for (const definition of document.definitions) {
    if (definition.kind === Kind.FRAGMENT_DEFINITION)
      fragments.set(definition.name.value, definition.selectionSet)
  }
  const seen = new Set<string>()
  const count = (set: SelectionSetNode): number => {
    let fields = 0
    for (const selection of set.selections) {
      if (selection.kind === Kind.FIELD) {
        if (selection.name.value !== '__typename') fields++
      } else if (selection.kind === Kind.INLINE_FRAGMENT) {
        fields += count(selection.selectionSet)
      } else {
        // Validation refuses fragment cycles before execution; `seen` guards anyway.
        const name = selection.name.value
        const fragment = fragments.get(name)
        if (fragment && !seen.has(name)) {
          seen.add(name)
          fields += count(fragment)
        }
      }
    }
    return fields
  }
  return Math.max(1, count(selectionSet))
}
