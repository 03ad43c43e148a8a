"""The gallery's table, declared once for both databases: SQLite's column types, and where PostgreSQL's differ."""

from __future__ import annotations

COLUMNS_SQL = (
    ("id", "INTEGER PRIMARY KEY AUTOINCREMENT"),
    ("path", "TEXT NOT NULL UNIQUE"),
    ("state", "TEXT NOT NULL DEFAULT 'pending'"),
    ("owner_pid", "INTEGER NOT NULL"),
    ("created", "TEXT NOT NULL"),
    ("prompt", "TEXT NOT NULL"),
    ("negative_prompt", "TEXT NOT NULL DEFAULT ''"),
    ("seed", "INTEGER NOT NULL"),
    ("steps", "INTEGER"),
    ("guidance", "REAL"),
    ("sampler", "TEXT"),
    ("width", "INTEGER NOT NULL"),
    ("height", "INTEGER NOT NULL"),
    ("mode", "TEXT NOT NULL DEFAULT 'txt2img'"),
    ("model", "TEXT"),
    ("model_hash", "TEXT"),
    ("loras", "TEXT NOT NULL DEFAULT '[]'"),
    ("params", "TEXT NOT NULL DEFAULT '{}'"),
    ("infotext", "TEXT NOT NULL DEFAULT ''"),
    ("seconds", "REAL"),
    ("device", "TEXT"),
    ("dtype", "TEXT"),
    ("source", "TEXT NOT NULL DEFAULT 'cli'"),
    ("owner", "TEXT"),
)
#: PostgreSQL's integers are 32-bit (seeds reach 2**32) and its REAL is single precision.
POSTGRES_TYPES = {
    "id": "BIGSERIAL PRIMARY KEY",
    "seed": "BIGINT NOT NULL",
    "guidance": "DOUBLE PRECISION",
    "seconds": "DOUBLE PRECISION",
}
INDEXES = (
    "CREATE INDEX IF NOT EXISTS images_created ON images(created)",
    "CREATE INDEX IF NOT EXISTS images_state ON images(state)",
)


def statements(postgres: bool = False) -> list[str]:
    """The ``CREATE`` statements for one database, in order."""
    types = {**dict(COLUMNS_SQL), **(POSTGRES_TYPES if postgres else {})}
    table = ",\n    ".join(f"{name} {types[name]}" for name, _ in COLUMNS_SQL)
    return [f"CREATE TABLE IF NOT EXISTS images (\n    {table}\n)", *INDEXES]
