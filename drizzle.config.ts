import { defineConfig } from 'drizzle-kit'

// `npm run db:generate` turns src/db/schema.ts into a new migration under
// migrations/. The server applies migrations itself at start-up (src/db/migrate.ts).
export default defineConfig({
  dialect: 'postgresql',
  schema: './src/db/schema.ts',
  out: './migrations',
})
