-- The guard triggers probe the rows they check by key, whatever the planner
-- would guess about the tables.
--
-- Their statements have generic plans, made once per session and kept for
-- its life. Made on tables without statistics (autovacuum off or behind;
-- PGlite, which never analyzes), the planner guesses that each transaction
-- has thousands of entries, so past ~200,000 transactions the check at commit
-- chose to merge-join its few transactions with the whole entries index: on
-- the hot-creator benchmark, once the pool's sessions were renewed, each
-- commit read ~560,000 index entries, and the ledger ran at a tenth of its
-- throughput, slower with every posting it held. The entries' insert check
-- merge-joined the accounts' primary key the same way (a full scan of the
-- accounts per statement). test/ledger/plans.test.ts reproduces both.
--
-- 1. The check at commit reads each transaction's entries in a lateral
--    subquery: a probe of the transaction's entries is the only plan there is.
-- 2. The entries' insert check joins a statement's entries (a few hundred at
--    most) with their transactions and accounts: by nested loops over the
--    primary keys, never by scanning either table, with merge and hash joins
--    off for its statements.

CREATE OR REPLACE FUNCTION ledger_check_balanced_from(first_id bigint) RETURNS bigint LANGUAGE plpgsql
SET enable_seqscan = off SET plan_cache_mode = force_generic_plan AS $$
DECLARE
  checked record;
  bad record;
BEGIN
  -- An aggregate without GROUP BY has a row for a transaction without entries too (0 entries: refused).
  SELECT max(t.id) AS upto,
         min(t.id) FILTER (WHERE s.entry_count < 2 OR s.unbalanced) AS bad_id
    INTO checked
    FROM ledger_transactions t
    CROSS JOIN LATERAL (
      SELECT coalesce(sum(u.n), 0) AS entry_count, coalesce(bool_or(u.net <> 0), false) AS unbalanced
        FROM (SELECT count(*) AS n,
                     sum(CASE e.direction WHEN 'debit' THEN e.amount ELSE -e.amount END) AS net
                FROM ledger_entries e
               WHERE e.transaction_id = t.id
               GROUP BY e.unit) u
    ) s
   WHERE t.id >= first_id AND t.xact_id = txid_current();
  IF checked.bad_id IS NOT NULL THEN
    SELECT sum(s.n) AS entry_count,
           string_agg(format('%s: debits %s, credits %s', s.unit, s.debits, s.credits), '; ') AS sums
      INTO bad
      FROM (SELECT e.unit, count(*) AS n,
                   coalesce(sum(e.amount) FILTER (WHERE e.direction = 'debit'), 0) AS debits,
                   coalesce(sum(e.amount) FILTER (WHERE e.direction = 'credit'), 0) AS credits
              FROM ledger_entries e WHERE e.transaction_id = checked.bad_id GROUP BY e.unit) s;
    RAISE EXCEPTION 'ledger: transaction % does not balance (% entries; %)', checked.bad_id,
      coalesce(bad.entry_count, 0), coalesce(bad.sums, 'none') USING ERRCODE = 'LG002';
  END IF;
  RETURN checked.upto;
END
$$;
--> statement-breakpoint

ALTER FUNCTION ledger_entries_check_insert() SET enable_mergejoin = off;
--> statement-breakpoint
ALTER FUNCTION ledger_entries_check_insert() SET enable_hashjoin = off;
