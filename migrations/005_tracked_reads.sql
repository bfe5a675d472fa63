-- The tracked set forgets: a key read (not linked) is tracked while it is read, so
-- each key records when it was last read or linked. The unused failure columns go.
ALTER TABLE tracked
    DROP COLUMN failures,
    DROP COLUMN error,
    ADD COLUMN read_at timestamptz NOT NULL DEFAULT now();

-- The settings the stored due times were computed with: when a restart brings a
-- different TTL or poll interval, the due times are recomputed from fetched_at.
CREATE TABLE schedule_basis (
    one            boolean PRIMARY KEY DEFAULT true CHECK (one),
    cache_ttl      double precision NOT NULL,
    poll_interval  double precision NOT NULL
);
