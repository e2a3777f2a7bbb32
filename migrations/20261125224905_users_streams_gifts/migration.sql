CREATE TYPE "live_stream_status" AS ENUM('live', 'ended');--> statement-breakpoint
CREATE TABLE "gift_events" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	"stream_id" uuid,
	"sequence" bigint,
	"sender_id" uuid NOT NULL,
	"creator_id" uuid NOT NULL,
	"gift_id" uuid NOT NULL,
	"quantity" integer NOT NULL,
	"coin_cost" bigint NOT NULL,
	"coins" bigint NOT NULL,
	"creator_coins" bigint NOT NULL,
	"platform_coins" bigint NOT NULL,
	"combo" integer NOT NULL,
	"transaction_id" bigint NOT NULL,
	"sent_at" timestamp with time zone NOT NULL,
	CONSTRAINT "gift_events_quantity_positive" CHECK ("quantity" > 0),
	CONSTRAINT "gift_events_split" CHECK ("coins" = "creator_coins" + "platform_coins"),
	CONSTRAINT "gift_events_coins" CHECK ("coins" = "coin_cost" * "quantity"),
	CONSTRAINT "gift_events_sequence_with_stream" CHECK (("stream_id" IS NULL) = ("sequence" IS NULL))
);
--> statement-breakpoint
CREATE TABLE "live_streams" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	"creator_id" uuid NOT NULL,
	"title" text NOT NULL,
	"status" "live_stream_status" DEFAULT 'live'::"live_stream_status" NOT NULL,
	"started_at" timestamp with time zone DEFAULT now() NOT NULL,
	"ended_at" timestamp with time zone,
	"gift_coins" bigint DEFAULT 0 NOT NULL,
	"last_sequence" bigint DEFAULT 0 NOT NULL,
	CONSTRAINT "live_streams_title_length" CHECK (length("title") BETWEEN 1 AND 200)
);
--> statement-breakpoint
CREATE TABLE "stream_gifters" (
	"stream_id" uuid,
	"sender_id" uuid,
	"coins" bigint NOT NULL,
	"last_gift_at" timestamp with time zone NOT NULL,
	CONSTRAINT "stream_gifters_pkey" PRIMARY KEY("stream_id","sender_id")
);
--> statement-breakpoint
CREATE TABLE "users" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	"subject" text NOT NULL,
	"handle" text NOT NULL,
	"display_name" text NOT NULL,
	"roles" text[] DEFAULT '{}'::text[] NOT NULL,
	"creator_share_bps" integer DEFAULT 5000 NOT NULL,
	"daily_spend_limit_coins" bigint,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "users_creator_share_range" CHECK ("creator_share_bps" BETWEEN 0 AND 10000),
	CONSTRAINT "users_daily_spend_limit_positive" CHECK ("daily_spend_limit_coins" > 0),
	CONSTRAINT "users_subject_length" CHECK (length("subject") BETWEEN 1 AND 255)
);
--> statement-breakpoint
CREATE UNIQUE INDEX "gift_events_transaction_key" ON "gift_events" ("transaction_id");--> statement-breakpoint
CREATE UNIQUE INDEX "gift_events_stream_sequence_key" ON "gift_events" ("stream_id","sequence");--> statement-breakpoint
CREATE INDEX "gift_events_combo_idx" ON "gift_events" ("stream_id","sender_id","gift_id","sent_at");--> statement-breakpoint
CREATE INDEX "gift_events_creator_idx" ON "gift_events" ("creator_id","sent_at");--> statement-breakpoint
CREATE INDEX "gift_events_sender_idx" ON "gift_events" ("sender_id","sent_at");--> statement-breakpoint
CREATE UNIQUE INDEX "live_streams_one_live_per_creator" ON "live_streams" ("creator_id") WHERE "status" = 'live';--> statement-breakpoint
CREATE INDEX "live_streams_listing_idx" ON "live_streams" ("status","started_at","id");--> statement-breakpoint
CREATE INDEX "live_streams_creator_idx" ON "live_streams" ("creator_id","started_at");--> statement-breakpoint
CREATE INDEX "stream_gifters_ranking_idx" ON "stream_gifters" ("stream_id","coins" DESC NULLS LAST,"last_gift_at","sender_id");--> statement-breakpoint
CREATE UNIQUE INDEX "users_subject_key" ON "users" ("subject");--> statement-breakpoint
CREATE INDEX "users_handle_idx" ON "users" ("handle");--> statement-breakpoint
ALTER TABLE "gift_events" ADD CONSTRAINT "gift_events_stream_id_live_streams_id_fkey" FOREIGN KEY ("stream_id") REFERENCES "live_streams"("id");--> statement-breakpoint
ALTER TABLE "gift_events" ADD CONSTRAINT "gift_events_sender_id_users_id_fkey" FOREIGN KEY ("sender_id") REFERENCES "users"("id");--> statement-breakpoint
ALTER TABLE "gift_events" ADD CONSTRAINT "gift_events_creator_id_users_id_fkey" FOREIGN KEY ("creator_id") REFERENCES "users"("id");--> statement-breakpoint
ALTER TABLE "gift_events" ADD CONSTRAINT "gift_events_gift_id_gifts_id_fkey" FOREIGN KEY ("gift_id") REFERENCES "gifts"("id");--> statement-breakpoint
ALTER TABLE "gift_events" ADD CONSTRAINT "gift_events_transaction_id_ledger_transactions_id_fkey" FOREIGN KEY ("transaction_id") REFERENCES "ledger_transactions"("id");--> statement-breakpoint
ALTER TABLE "live_streams" ADD CONSTRAINT "live_streams_creator_id_users_id_fkey" FOREIGN KEY ("creator_id") REFERENCES "users"("id");--> statement-breakpoint
ALTER TABLE "stream_gifters" ADD CONSTRAINT "stream_gifters_stream_id_live_streams_id_fkey" FOREIGN KEY ("stream_id") REFERENCES "live_streams"("id");--> statement-breakpoint
ALTER TABLE "stream_gifters" ADD CONSTRAINT "stream_gifters_sender_id_users_id_fkey" FOREIGN KEY ("sender_id") REFERENCES "users"("id");