CREATE TABLE pipeline_builds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project TEXT NOT NULL,
    git_commit TEXT NOT NULL,
    passed BIGINT NOT NULL,
    report TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL
);
CREATE INDEX pipeline_builds_project ON pipeline_builds (project, id);
CREATE TABLE pipeline_flaky (
    project TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated_ms BIGINT NOT NULL
);
