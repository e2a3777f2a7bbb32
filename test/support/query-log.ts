import type { Logger as DrizzleLogger } from 'drizzle-orm/logger'

/** Every SQL statement sent through drizzle, so tests can count queries (N+1 checks). */
export class QueryLog implements DrizzleLogger {
  readonly statements: string[] = []

  logQuery(query: string): void {
    this.statements.push(query)
  }

  get count(): number {
    return this.statements.length
  }

  reset(): void {
    this.statements.length = 0
  }
}
