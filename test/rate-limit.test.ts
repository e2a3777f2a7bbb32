import { parse } from 'graphql'
import { describe, expect, it } from 'vitest'
import { rootFieldCount, TokenBuckets } from '../src/http/rate-limit.js'

// The token buckets behind the mutation rate limit, on a clock of our own.

function clock() {
  let nowMs = 1_000_000
  return { now: () => nowMs, advance: (ms: number) => (nowMs += ms) }
}

const takes = (buckets: TokenBuckets, key: string, count: number) =>
  Array.from({ length: count }, () => buckets.take(key)).filter(Boolean).length

describe('token buckets', () => {
  it('give a burst, then the rate', () => {
    const time = clock()
    const buckets = new TokenBuckets(20, 40, time.now)
    expect(takes(buckets, 'a', 50)).toBe(40)
    time.advance(500) // 10 tokens flow in
    expect(takes(buckets, 'a', 50)).toBe(10)
    time.advance(49)
    expect(buckets.take('a')).toBe(false)
    time.advance(1)
    expect(buckets.take('a')).toBe(true)
  })

  it('never hold more than the burst, however long the wait', () => {
    const time = clock()
    const buckets = new TokenBuckets(20, 40, time.now)
    buckets.take('a')
    time.advance(3_600_000)
    expect(takes(buckets, 'a', 100)).toBe(40)
  })

  it('keep keys apart', () => {
    const time = clock()
    const buckets = new TokenBuckets(1, 2, time.now)
    expect(takes(buckets, 'a', 5)).toBe(2)
    expect(takes(buckets, 'b', 5)).toBe(2)
  })

  it('drop buckets idle long enough to be full again', () => {
    const time = clock()
    const buckets = new TokenBuckets(10, 20, time.now)
    for (let i = 0; i < 1000; i++) buckets.take(`user-${i}`)
    expect(buckets.size).toBe(1000)
    time.advance(1999) // 2 s refill the whole burst
    buckets.take('late')
    expect(buckets.size).toBe(1001)
    time.advance(1)
    buckets.take('later')
    // Only 'late' (1 ms old) and 'later' remain.
    expect(buckets.size).toBe(2)
  })

  it('keep at most bucketsMax buckets, dropping the least recently used', () => {
    const time = clock()
    const buckets = new TokenBuckets(1, 3, time.now, 100)
    for (let i = 0; i < 1000; i++) buckets.take(`user-${i}`)
    expect(buckets.size).toBe(100)
    // 'user-999' is recent and kept: its bucket has 2 tokens left.
    expect(takes(buckets, 'user-999', 5)).toBe(2)
  })

  it('take a cost all at once, or nothing', () => {
    const time = clock()
    const buckets = new TokenBuckets(1, 20, time.now)
    expect(buckets.take('a', 15)).toBe(true)
    expect(buckets.take('a', 15)).toBe(false)
    // Refused costs take nothing: the 5 left are still there.
    expect(takes(buckets, 'a', 10)).toBe(5)
  })
})

describe('the cost of a mutation', () => {
  const cost = (source: string) => {
    const document = parse(source)
    const operation = document.definitions.find((d) => d.kind === 'OperationDefinition')
    if (operation?.kind !== 'OperationDefinition') throw new Error('no operation')
    return rootFieldCount(operation.selectionSet, document)
  }

  it('is its root fields, through aliases, fragments and inline fragments; __typename is free', () => {
    expect(cost('mutation { a }')).toBe(1)
    expect(cost('mutation { x: a y: a z: b }')).toBe(3)
    expect(cost('mutation { ...F ... on Mutation { c d } } fragment F on Mutation { a b: a }')).toBe(4)
    expect(cost('mutation { __typename }')).toBe(1)
    expect(cost('mutation { __typename a }')).toBe(1)
  })
})
