-- The PostgreSQL target of the YTV2 merge (PostgreSQL 14 or later; tested on 15).
--
-- Applying this file twice is harmless: tables and indexes use IF NOT EXISTS, functions
-- and plain triggers CREATE OR REPLACE, and the constraint trigger (which has no OR
-- REPLACE) is created only when missing.
--
-- content: one row per YouTube video, keyed by its natural key video_id; id is the
--   SQLite copies' primary key, kept unique so rows can be traced back. updated_at is
--   stamped by a trigger when an UPDATE changes the row (a no-op UPDATE, as an idempotent
--   re-load writes, leaves it alone).
-- content_summaries: revisions 1..n of each (video_id, variant); exactly one is_latest
--   per (video_id, variant) that has revisions:
--   * at most one: the partial unique index content_summaries_one_latest;
--   * at least one: the deferred constraint trigger content_summaries_has_latest, checked
--     at COMMIT, so a transaction may clear the old latest before marking the new one
--     (the unique index is checked per row, so clear first, then mark);
--   * that the latest is the highest revision is the loader's rule, verified with
--     handrail.recipes.merge.rules.CHECK_LATEST_SQL.

CREATE TABLE IF NOT EXISTS content (
    video_id           TEXT PRIMARY KEY CHECK (btrim(video_id) <> ''),
    id                 TEXT NOT NULL UNIQUE,
    title              TEXT,
    canonical_url      TEXT,
    thumbnail_url      TEXT,
    published_at       TIMESTAMPTZ,
    indexed_at         TIMESTAMPTZ,
    duration_seconds   INTEGER CHECK (duration_seconds >= 0),
    has_audio          BOOLEAN,
    channel_name       TEXT,
    category           TEXT,
    subcategory        TEXT,
    subcategories_json JSONB,
    topics_json        JSONB,
    summary            TEXT,
    analysis_json      JSONB,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);

COMMENT ON COLUMN content.subcategories_json IS
    'curated on the dashboard; text that was not JSON is kept as {"raw_text": ...}';
COMMENT ON COLUMN content.topics_json IS 'SQLite key_topics';
COMMENT ON COLUMN content.analysis_json IS
    'SQLite analysis; plain text is kept as {"raw_text": ...}';

CREATE INDEX IF NOT EXISTS content_indexed_at ON content (indexed_at);

CREATE OR REPLACE FUNCTION content_stamp_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER content_updated_at
    BEFORE UPDATE ON content
    FOR EACH ROW
    WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION content_stamp_updated_at();

CREATE TABLE IF NOT EXISTS content_summaries (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    video_id   TEXT NOT NULL
               REFERENCES content (video_id) ON DELETE CASCADE ON UPDATE CASCADE,
    variant    TEXT NOT NULL DEFAULT 'comprehensive',
    text       TEXT NOT NULL,
    revision   INTEGER NOT NULL CHECK (revision >= 1),
    is_latest  BOOLEAN NOT NULL DEFAULT false,
    created_at TIMESTAMPTZ,
    UNIQUE (video_id, variant, revision)
);

-- At most one latest revision per (video_id, variant); also serves "the latest summary of
-- each video" lookups (a LATERAL join on video_id with is_latest).
CREATE UNIQUE INDEX IF NOT EXISTS content_summaries_one_latest
    ON content_summaries (video_id, variant) WHERE is_latest;

-- At least one latest revision per (video_id, variant) that has revisions, checked when
-- the transaction commits (both the old and the new key of an UPDATE are checked).
CREATE OR REPLACE FUNCTION content_summaries_assert_latest(p_video TEXT, p_variant TEXT)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
           SELECT 1 FROM content_summaries s
           WHERE s.video_id = p_video AND s.variant = p_variant)
       AND NOT EXISTS (
           SELECT 1 FROM content_summaries s
           WHERE s.video_id = p_video AND s.variant = p_variant AND s.is_latest)
    THEN
        RAISE EXCEPTION 'content_summaries: (%, %) has revisions but none is_latest',
            p_video, p_variant
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION content_summaries_check_latest() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'DELETE' THEN
        PERFORM content_summaries_assert_latest(NEW.video_id, NEW.variant);
    END IF;
    IF TG_OP <> 'INSERT' THEN
        PERFORM content_summaries_assert_latest(OLD.video_id, OLD.variant);
    END IF;
    RETURN NULL;
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_trigger
        WHERE tgname = 'content_summaries_has_latest'
          AND tgrelid = 'content_summaries'::regclass
    ) THEN
        CREATE CONSTRAINT TRIGGER content_summaries_has_latest
            AFTER INSERT OR UPDATE OR DELETE ON content_summaries
            DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW
            EXECUTE FUNCTION content_summaries_check_latest();
    END IF;
END
$$;
