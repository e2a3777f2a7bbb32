-- The guard triggers' statements look up rows of large tables by key
-- (ledger_transactions by id, ledger_accounts by id, ledger_holds by
-- account). PL/pgSQL keeps the plan of a statement without parameters for
-- the life of the session, made the first time it runs: a session that
-- started on a small ledger (a fresh database, a server without autovacuum,
-- statistics never gathered) kept a hash join over a sequential scan of the
-- whole ledger_transactions for the entries' existence check, and every
-- batch then read every transaction ever posted (measured in bench:ledger:
-- 0.9 ms of a 2.7 ms batch at 20,000 transactions, and growing with the
-- ledger). With sequential scans off inside these functions, the planner
-- takes the indexes whatever it believes of the tables' sizes: the work per
-- batch depends on the batch, never on the size of the ledger.
ALTER FUNCTION ledger_entries_check_insert() SET enable_seqscan = off;--> statement-breakpoint
ALTER FUNCTION ledger_transactions_check_balanced() SET enable_seqscan = off;--> statement-breakpoint
ALTER FUNCTION ledger_accounts_check_update() SET enable_seqscan = off;
