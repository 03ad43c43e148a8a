"""``lanskap gallery migrate --to postgresql://…``: an SQLite gallery's rows copied whole into PostgreSQL.

Every finished row goes over with its id (an upscale links to its source by id), its path and
every column, in one transaction: the target has all of them or none. Rows the target already
holds under the same id and path are skipped, so a migration that was stopped can run again;
an id that names another file there is a conflict, and nothing is copied. The image files stay
where they are: the target's machines must see the same paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lanskap.errors import LanskapError
from lanskap.gallery.store import COLUMNS, Gallery


@dataclass
class MigrateReport:
    """What a migration did."""

    copied: int = 0
    already: int = 0  # rows the target held already (a repeated migration)
    unfinished: list[int] = field(default_factory=list)  # source rows a live writer is still adding or deleting


def migrate(source: Gallery, target: Gallery) -> MigrateReport:
    """Copy every finished row of ``source`` into ``target`` (ids, paths, columns), all or nothing."""
    if source.location == target.location:
        raise LanskapError("the gallery to migrate to is the gallery itself")
    rows = source.rows()
    report = MigrateReport(unfinished=source.check()["unfinished"])
    names = ", ".join(COLUMNS)
    marks = ", ".join("?" * len(COLUMNS))
    with target.store.transaction() as con:
        for row in rows:
            cur = con.execute(
                f"INSERT INTO images (state, owner_pid, {names}) VALUES ('ok', 0, {marks}) "
                "ON CONFLICT DO NOTHING RETURNING id",
                [row[c] for c in COLUMNS],
            )
            if cur.fetchone() is not None:
                report.copied += 1
                continue
            there = con.execute("SELECT path FROM images WHERE id=?", [row["id"]]).fetchone()
            if there is None or there[0] != row["path"]:
                held = f"image {there[0]}" if there is not None else "another row with that file"
                raise LanskapError(
                    f"image {row['id']} ({row['path']}) conflicts with {held} in the target gallery; nothing was copied"
                )
            report.already += 1
        target.store.after_explicit_ids(con)
    return report
