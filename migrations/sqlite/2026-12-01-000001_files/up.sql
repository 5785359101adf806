-- Print files in the watched directories (the `files` service); times are Unix milliseconds.
CREATE TABLE files (
    -- absolute path of the file
    path TEXT PRIMARY KEY NOT NULL,
    -- the configured directory it was found under
    directory TEXT NOT NULL,
    size BIGINT NOT NULL,
    -- the file's modification time
    modified_at BIGINT NOT NULL,
    -- SHA-256 of the content, lowercase hex
    sha256 TEXT NOT NULL,
    -- when this row was last written
    indexed_at BIGINT NOT NULL
);
CREATE INDEX files_directory ON files (directory);
