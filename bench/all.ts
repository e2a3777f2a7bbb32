import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

// Every benchmark, one after the other, each in its own process (a fresh
// heap and event loop per benchmark); arguments are passed to each.
//
//   npm run bench -- [--seconds 15] [--clients 64] ...

const benchmarks = ['ledger.ts', 'api.ts', 'webhooks.ts', 'live.ts', 'audit.ts']

let failed = 0
for (const file of benchmarks) {
  const path = fileURLToPath(new URL(file, import.meta.url))
  console.log(`\n== ${file}`)
  // process.execArgv carries tsx's loader, so the child runs TypeScript too.
  const child = spawnSync(process.execPath, [...process.execArgv, path, ...process.argv.slice(2)], {
    stdio: 'inherit',
  })
  if (child.status !== 0) failed++
}
process.exitCode = failed === 0 ? 0 : 1
