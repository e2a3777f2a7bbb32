import { writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { printSchemaSdl } from '../graphql/schema.js'

// `npm run schema`: writes schema.graphql at the project root.
const target = fileURLToPath(new URL('../../schema.graphql', import.meta.url))
writeFileSync(target, printSchemaSdl())
console.log(`wrote ${target}`)
