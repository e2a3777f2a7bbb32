CREATE TYPE "account_type" AS ENUM('asset', 'liability', 'equity', 'income', 'expense');--> statement-breakpoint
CREATE TYPE "entry_direction" AS ENUM('debit', 'credit');--> statement-breakpoint
CREATE TYPE "hold_status" AS ENUM('pending', 'posted', 'voided', 'expired');--> statement-breakpoint
CREATE TABLE "coin_package_prices" (
	"package_id" uuid,
	"currency" text,
	"amount_minor" bigint NOT NULL,
	CONSTRAINT "coin_package_prices_pkey" PRIMARY KEY("package_id","currency"),
	CONSTRAINT "coin_package_prices_currency_format" CHECK ("currency" ~ '^[A-Z]{3}$'),
	CONSTRAINT "coin_package_prices_amount_positive" CHECK ("amount_minor" > 0)
);
--> statement-breakpoint
CREATE TABLE "coin_packages" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	"sku" text NOT NULL,
	"coins" bigint NOT NULL,
	"bonus_coins" bigint DEFAULT 0 NOT NULL,
	"active" boolean DEFAULT true NOT NULL,
	"sort_order" integer DEFAULT 0 NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "coin_packages_coins_positive" CHECK ("coins" > 0 AND "bonus_coins" >= 0)
);
--> statement-breakpoint
CREATE TABLE "gifts" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	"sku" text NOT NULL,
	"name" text NOT NULL,
	"coin_cost" bigint NOT NULL,
	"image_url" text NOT NULL,
	"active" boolean DEFAULT true NOT NULL,
	"sort_order" integer DEFAULT 0 NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "gifts_coin_cost_positive" CHECK ("coin_cost" > 0)
);
--> statement-breakpoint
CREATE TABLE "ledger_accounts" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "ledger_accounts_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"code" text NOT NULL,
	"name" text NOT NULL,
	"type" "account_type" NOT NULL,
	"unit" text NOT NULL,
	"owner_id" uuid,
	"allow_negative" boolean DEFAULT false NOT NULL,
	"balance" bigint DEFAULT 0 NOT NULL,
	"debits_total" bigint DEFAULT 0 NOT NULL,
	"credits_total" bigint DEFAULT 0 NOT NULL,
	"held_amount" bigint DEFAULT 0 NOT NULL,
	"last_seq" bigint DEFAULT 0 NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "ledger_accounts_code_format" CHECK ("code" ~ '^[a-z0-9_]+(:[A-Za-z0-9_-]+)+$'),
	CONSTRAINT "ledger_accounts_unit_format" CHECK ("unit" = 'COIN' OR "unit" ~ '^[A-Z]{3}$'),
	CONSTRAINT "ledger_accounts_totals_nonnegative" CHECK ("debits_total" >= 0 AND "credits_total" >= 0),
	CONSTRAINT "ledger_accounts_held_nonnegative" CHECK ("held_amount" >= 0),
	CONSTRAINT "ledger_accounts_no_overdraft" CHECK ("allow_negative" OR "balance" >= "held_amount")
);
--> statement-breakpoint
CREATE TABLE "ledger_entries" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "ledger_entries_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"transaction_id" bigint NOT NULL,
	"account_id" bigint NOT NULL,
	"direction" "entry_direction" NOT NULL,
	"amount" bigint NOT NULL,
	"unit" text NOT NULL,
	"account_seq" bigint NOT NULL,
	"balance_after" bigint NOT NULL,
	"posted_at" timestamp with time zone NOT NULL,
	CONSTRAINT "ledger_entries_amount_positive" CHECK ("amount" > 0),
	CONSTRAINT "ledger_entries_seq_positive" CHECK ("account_seq" > 0)
);
--> statement-breakpoint
CREATE TABLE "ledger_holds" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "ledger_holds_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"idempotency_key" text NOT NULL,
	"request_hash" text NOT NULL,
	"kind" text NOT NULL,
	"description" text DEFAULT '' NOT NULL,
	"metadata" jsonb DEFAULT '{}' NOT NULL,
	"account_id" bigint NOT NULL,
	"counter_account_id" bigint NOT NULL,
	"unit" text NOT NULL,
	"amount" bigint NOT NULL,
	"status" "hold_status" DEFAULT 'pending'::"hold_status" NOT NULL,
	"expires_at" timestamp with time zone NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"resolved_at" timestamp with time zone,
	"transaction_id" bigint,
	CONSTRAINT "ledger_holds_amount_positive" CHECK ("amount" > 0),
	CONSTRAINT "ledger_holds_distinct_accounts" CHECK ("account_id" <> "counter_account_id")
);
--> statement-breakpoint
CREATE TABLE "ledger_transactions" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "ledger_transactions_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"idempotency_key" text NOT NULL,
	"request_hash" text NOT NULL,
	"kind" text NOT NULL,
	"description" text DEFAULT '' NOT NULL,
	"metadata" jsonb DEFAULT '{}' NOT NULL,
	"reverses_id" bigint,
	"posted_at" timestamp with time zone NOT NULL,
	"xact_id" bigint DEFAULT txid_current() NOT NULL,
	CONSTRAINT "ledger_transactions_kind_format" CHECK ("kind" ~ '^[a-z][a-z_]{1,39}$'),
	CONSTRAINT "ledger_transactions_key_length" CHECK (length("idempotency_key") BETWEEN 1 AND 200)
);
--> statement-breakpoint
CREATE UNIQUE INDEX "coin_packages_sku_key" ON "coin_packages" ("sku");--> statement-breakpoint
CREATE UNIQUE INDEX "gifts_sku_key" ON "gifts" ("sku");--> statement-breakpoint
CREATE UNIQUE INDEX "ledger_accounts_code_key" ON "ledger_accounts" ("code");--> statement-breakpoint
CREATE INDEX "ledger_accounts_owner_idx" ON "ledger_accounts" ("owner_id");--> statement-breakpoint
CREATE UNIQUE INDEX "ledger_entries_account_seq_key" ON "ledger_entries" ("account_id","account_seq");--> statement-breakpoint
CREATE INDEX "ledger_entries_transaction_idx" ON "ledger_entries" ("transaction_id");--> statement-breakpoint
CREATE INDEX "ledger_entries_account_posted_idx" ON "ledger_entries" ("account_id","posted_at");--> statement-breakpoint
CREATE UNIQUE INDEX "ledger_holds_idempotency_key" ON "ledger_holds" ("idempotency_key");--> statement-breakpoint
CREATE INDEX "ledger_holds_pending_expiry_idx" ON "ledger_holds" ("expires_at") WHERE "status" = 'pending';--> statement-breakpoint
CREATE INDEX "ledger_holds_account_idx" ON "ledger_holds" ("account_id");--> statement-breakpoint
CREATE UNIQUE INDEX "ledger_transactions_idempotency_key" ON "ledger_transactions" ("idempotency_key");--> statement-breakpoint
CREATE UNIQUE INDEX "ledger_transactions_reverses_once" ON "ledger_transactions" ("reverses_id");--> statement-breakpoint
CREATE INDEX "ledger_transactions_posted_at_idx" ON "ledger_transactions" ("posted_at");--> statement-breakpoint
CREATE INDEX "ledger_transactions_kind_idx" ON "ledger_transactions" ("kind","id");--> statement-breakpoint
ALTER TABLE "coin_package_prices" ADD CONSTRAINT "coin_package_prices_package_id_coin_packages_id_fkey" FOREIGN KEY ("package_id") REFERENCES "coin_packages"("id");--> statement-breakpoint
ALTER TABLE "ledger_entries" ADD CONSTRAINT "ledger_entries_transaction_id_ledger_transactions_id_fkey" FOREIGN KEY ("transaction_id") REFERENCES "ledger_transactions"("id");--> statement-breakpoint
ALTER TABLE "ledger_entries" ADD CONSTRAINT "ledger_entries_account_id_ledger_accounts_id_fkey" FOREIGN KEY ("account_id") REFERENCES "ledger_accounts"("id");--> statement-breakpoint
ALTER TABLE "ledger_holds" ADD CONSTRAINT "ledger_holds_account_id_ledger_accounts_id_fkey" FOREIGN KEY ("account_id") REFERENCES "ledger_accounts"("id");--> statement-breakpoint
ALTER TABLE "ledger_holds" ADD CONSTRAINT "ledger_holds_counter_account_id_ledger_accounts_id_fkey" FOREIGN KEY ("counter_account_id") REFERENCES "ledger_accounts"("id");--> statement-breakpoint
ALTER TABLE "ledger_holds" ADD CONSTRAINT "ledger_holds_transaction_id_ledger_transactions_id_fkey" FOREIGN KEY ("transaction_id") REFERENCES "ledger_transactions"("id");--> statement-breakpoint
ALTER TABLE "ledger_transactions" ADD CONSTRAINT "ledger_transactions_reverses_fk" FOREIGN KEY ("reverses_id") REFERENCES "ledger_transactions"("id");