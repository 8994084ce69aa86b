-- message_svc SQLite schema. Times are Unix seconds (REAL); a claim or message is live while
-- its expiry is after now. seq is AUTOINCREMENT so that a seq is never reused, even after the
-- newest message of a queue is deleted: a marker (a seq) never skips a later message.
CREATE TABLE IF NOT EXISTS messages (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    project       TEXT    NOT NULL,
    queue         TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    body          BLOB    NOT NULL,
    ttl           INTEGER NOT NULL,
    created       REAL    NOT NULL,
    expires       REAL    NOT NULL,
    visible_at    REAL    NOT NULL,
    client_id     TEXT    NOT NULL,
    claim_id      TEXT,
    claim_expires REAL    NOT NULL DEFAULT 0,
    claim_count   INTEGER NOT NULL DEFAULT 0,
    group_id      TEXT
);

CREATE INDEX IF NOT EXISTS messages_by_queue ON messages (project, queue, seq);
CREATE INDEX IF NOT EXISTS messages_by_id ON messages (id);
CREATE INDEX IF NOT EXISTS messages_by_claim ON messages (claim_id) WHERE claim_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_by_expiry ON messages (expires);
-- messages_by_group (project, queue, group_id, seq) WHERE group_id IS NOT NULL, the group
-- index of fair claims, is created by the store's open() (store.py, _add_group_index), after
-- the column is added to databases made before message groups.

CREATE TABLE IF NOT EXISTS claims (
    id      TEXT    PRIMARY KEY,
    project TEXT    NOT NULL,
    queue   TEXT    NOT NULL,
    ttl     INTEGER NOT NULL,
    grace   INTEGER NOT NULL,
    created REAL    NOT NULL,
    expires REAL    NOT NULL
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS claims_by_queue ON claims (project, queue);
CREATE INDEX IF NOT EXISTS claims_by_expiry ON claims (expires);

-- A queue's version (see "Queue versions" in storage/base.py); no row = version 0. Deleting a
-- queue's messages and collecting garbage leave it alone: a version never goes back.
CREATE TABLE IF NOT EXISTS queue_versions (
    project TEXT    NOT NULL,
    queue   TEXT    NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (project, queue)
) WITHOUT ROWID;

-- Deduplication ids of FIFO queues (_fifo): the first message accepted with each, until
-- expires (the post's time plus the queue's _dedup_window). Older databases get the table
-- here and messages.group_id from the store's open().
CREATE TABLE IF NOT EXISTS dedup (
    project    TEXT NOT NULL,
    queue      TEXT NOT NULL,
    dedup_id   TEXT NOT NULL,
    message_id TEXT NOT NULL,
    expires    REAL NOT NULL,
    PRIMARY KEY (project, queue, dedup_id)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS dedup_by_expiry ON dedup (expires);

-- Keys of idempotent posts (post_once: a queue subscriber's deliveries), each with the id of
-- the message it was posted with, remembered until expires whatever becomes of the message.
CREATE TABLE IF NOT EXISTS post_keys (
    project TEXT NOT NULL,
    queue   TEXT NOT NULL,
    key     TEXT NOT NULL,
    id      TEXT NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (project, queue, key)
);

CREATE INDEX IF NOT EXISTS post_keys_by_expiry ON post_keys (expires);

-- Fair queues (docs/architecture.md, "Fair queues"): per queue and group, the messages held
-- by fair claims (group_id '' = the queue's total); per fair claim and group, how many it
-- holds and until when, so that a claim's counts go when it is released or expires (settled
-- by the next fair claim of the queue or the garbage collection).
CREATE TABLE IF NOT EXISTS fair_in_flight (
    project  TEXT    NOT NULL,
    queue    TEXT    NOT NULL,
    group_id TEXT    NOT NULL,
    n        INTEGER NOT NULL,
    PRIMARY KEY (project, queue, group_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS fair_holds (
    claim_id TEXT    NOT NULL,
    group_id TEXT    NOT NULL,
    project  TEXT    NOT NULL,
    queue    TEXT    NOT NULL,
    n        INTEGER NOT NULL,
    expires  REAL    NOT NULL,
    PRIMARY KEY (claim_id, group_id)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS fair_holds_by_queue ON fair_holds (project, queue, expires);
CREATE INDEX IF NOT EXISTS fair_holds_by_expiry ON fair_holds (expires);
