import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'

// `npm run demo` keeps working: it runs the whole tour (its own embedded
// database and provider stand-ins) and exits 0 only if the books balance.

const root = fileURLToPath(new URL('..', import.meta.url))

describe('npm run demo', () => {
  it('walks the whole product and ends with balanced books', { timeout: 120_000 }, async () => {
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--import', 'tsx', 'src/scripts/demo.ts'],
      { cwd: root, env: { ...process.env, DATABASE_URL: '', REDIS_URL: '' }, timeout: 110_000 },
    )
    expect(stdout).toMatch(/order SUCCEEDED; alice's wallet: \d+ coins \(credited once\)/)
    expect(stdout).toMatch(/order SUCCEEDED; bob's wallet: \d+ coins/)
    expect(stdout).toContain('feed: #5 bob')
    expect(stdout).toMatch(/order PARTIALLY_REFUNDED/)
    expect(stdout).toMatch(/trial balance COIN: debits (\d+) = credits \1 ✓/)
    expect(stdout).toMatch(/integrity check: ok ✓/)
  })
})
