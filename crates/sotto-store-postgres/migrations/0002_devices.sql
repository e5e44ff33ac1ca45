-- End-to-end devices and the contact-list reads, as the SQLite store's
-- 0005 migration (see crates/sotto-store-sqlite/migrations/sqlite and
-- sotto-core's ports/devices.rs and ports/directory.rs).
--
-- A device's key is unique per user (a browser that logs in again finds
-- its device by key); the constraint's index also serves "the devices of a
-- user". The name is chosen freely, so it is BYTEA holding UTF-8, like
-- every such text here; the key too (the edge only lets base64url in).
CREATE TABLE devices (
    id         TEXT COLLATE "C" NOT NULL,
    user_id    TEXT COLLATE "C" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    public_key BYTEA NOT NULL,                 -- UTF-8
    name       BYTEA NOT NULL,                 -- UTF-8
    created_at BIGINT NOT NULL,
    -- Named: a unique violation on the primary key is a colliding id.
    CONSTRAINT devices_pkey PRIMARY KEY (id),
    CONSTRAINT devices_user_key UNIQUE (user_id, public_key)
);

-- The device a session is bound to. Deleting a device deletes its sessions
-- explicitly (their sockets must be closed); SET NULL is only the backstop.
ALTER TABLE sessions ADD COLUMN device_id TEXT COLLATE "C" REFERENCES devices(id) ON DELETE SET NULL;
CREATE INDEX sessions_by_device ON sessions(device_id) WHERE device_id IS NOT NULL;

-- Each user's conversation partners, both directions, filled when a
-- conversation gets its first message: an AFTER INSERT trigger on
-- `conversations` fires for the row the upsert inserts, not for the head
-- updates of later messages, so the message write path pays nothing.
-- Only the two users' own rows are touched, so it adds no lock that two
-- batches could take in opposite orders.
CREATE TABLE peers (
    user_id      TEXT COLLATE "C" NOT NULL,
    peer         TEXT COLLATE "C" NOT NULL,
    conversation TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (user_id, peer)
);

CREATE FUNCTION conversations_name_their_peers() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO peers (user_id, peer, conversation) VALUES
        (split_part(NEW.key, ':', 1), split_part(NEW.key, ':', 2), NEW.key),
        (split_part(NEW.key, ':', 2), split_part(NEW.key, ':', 1), NEW.key)
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END;
$$;
CREATE TRIGGER conversations_name_their_peers AFTER INSERT ON conversations
    FOR EACH ROW EXECUTE FUNCTION conversations_name_their_peers();

INSERT INTO peers (user_id, peer, conversation)
SELECT split_part(key, ':', 1), split_part(key, ':', 2), key FROM conversations
UNION
SELECT split_part(key, ':', 2), split_part(key, ':', 1), key FROM conversations
ON CONFLICT DO NOTHING;
