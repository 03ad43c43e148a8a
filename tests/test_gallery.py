"""The gallery (issue #7, part 1): a real SQLite file in WAL mode shared by processes, the
generate → gallery path, search and filters, delete, export, and crash consistency.

The store tests take ``gallery_url`` and run twice: on the home's SQLite file and on a real
PostgreSQL server (issue #38; tests/pgserver.py)."""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from lanskap.gallery import Gallery
from lanskap.gallery.export import image_bytes, zip_bytes
from lanskap.generation.output import read_infotext


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (seed % 256, 40, 90)).save(buf, "PNG")
    return buf.getvalue()


def record(seed: int, prompt: str = "a castle", **kw) -> dict:  # type: ignore[no-untyped-def]
    return {"prompt": prompt, "seed": seed, "width": 8, "height": 8, "infotext": f"{prompt}\nSeed: {seed}", **kw}


def _cli(*args: str) -> tuple[int, str, str]:
    import contextlib

    from lanskap.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(args))
    return rc, out.getvalue(), err.getvalue()


def test_generate_records_every_image_and_no_gallery_opts_out(
    tiny_sd: Path, tiny_lora: Path, isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lanskap.cli.main import main

    common = ["--model", str(tiny_sd), "-W", "64", "-H", "64", "--steps", "2", "-q"]
    assert main(["generate", "a castle in the mist", "-N", "2", "--seed", "5", *common, "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert len(made["gallery_ids"]) == 2
    assert main(["generate", "a misty lake", "--lora", f"{tiny_lora}:0.7", *common]) == 0
    assert main(["generate", "not recorded", "--no-gallery", *common]) == 0
    capsys.readouterr()

    # Every generation job leaves one JSON line: parameters, duration, peak memory.
    logs = [json.loads(x) for x in (isolated_home / "logs" / "generations.jsonl").read_text().splitlines()]
    assert len(logs) == 3 and logs[0]["seeds"] == [5, 6] and logs[0]["params"]["prompt"] == "a castle in the mist"
    assert logs[1]["loras"][0]["scale"] == 0.7 and all(x["seconds"] > 0 and x["peak_rss_mb"] > 100 for x in logs)

    db = isolated_home / "gallery.sqlite3"
    with sqlite3.connect(db) as con:  # a real SQLite file, in WAL mode
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 3

    gallery = Gallery(isolated_home)
    entries, total = gallery.query()
    assert total == 3 and entries[0].prompt == "a misty lake"  # newest first
    castle = gallery.get(made["gallery_ids"][0])
    assert castle.seed == 5 and castle.steps == 2 and castle.width == 64 and castle.model_hash
    assert castle.path == Path(made["images"][0]).resolve() and castle.path.is_file()
    assert castle.params["seed"] == 5 and castle.params["num_images"] == 1
    assert castle.seconds is not None and castle.seconds > 0 and castle.device == "cpu"
    assert read_infotext(castle.path) == castle.infotext and "Seed: 5" in castle.infotext
    lake = entries[0]
    assert lake.loras[0]["name"] == Path(tiny_lora).stem and lake.loras[0]["scale"] == 0.7 and lake.loras[0]["hash"]
    assert gallery.loras() == [Path(tiny_lora).stem]

    # The command line: list, search, filter, show, export, delete.
    rc, out, _ = _cli("gallery", "list", "--search", "castle", "--json")
    assert rc == 0 and [i["id"] for i in json.loads(out)["images"]] == sorted(made["gallery_ids"], reverse=True)
    rc, out, _ = _cli("gallery", "list", "--lora", Path(tiny_lora).stem, "--json")
    assert [i["prompt"] for i in json.loads(out)["images"]] == ["a misty lake"]
    rc, out, _ = _cli("gallery", "show", str(castle.id))
    assert rc == 0 and "Seed: 5" in out and str(castle.path) in out
    rc, out, _ = _cli("gallery", "export", str(castle.id), str(lake.id), "--zip", "sel.zip", "--format", "jpg")
    assert rc == 0
    with zipfile.ZipFile("sel.zip") as zf:
        names = zf.namelist()
        assert len(names) == 3 and "gallery.json" in names
        rows = json.loads(zf.read("gallery.json"))
        assert {r["id"] for r in rows} == {castle.id, lake.id}
        jpg = Image.open(io.BytesIO(zf.read(rows[0]["file"])))
        assert jpg.format == "JPEG" and jpg.size == (64, 64)
    # A grid of a batch, A1111's layout (2 images: 2 columns, 1 row), with the first image's parameters.
    rc, out, _ = _cli("gallery", "grid", str(castle.id), str(lake.id), "--out", "grid.png")
    assert rc == 0 and Path(out.strip()).name == "grid.png"
    with Image.open("grid.png") as grid:
        assert grid.size == (128, 64) and grid.info["parameters"] == castle.infotext
        with Image.open(lake.path) as second:
            assert grid.crop((64, 0, 128, 64)).tobytes() == second.convert("RGB").tobytes()
    rc, _, err = _cli("gallery", "grid", "999", "--out", "g.png")
    assert rc != 0 and "no image 999" in err and not Path("g.png").exists()
    rc, out, _ = _cli("gallery", "delete", str(castle.id), "--yes")
    assert rc == 0 and not castle.path.exists()
    assert gallery.query()[1] == 2
    rc, _, err = _cli("gallery", "show", str(castle.id))
    assert rc != 0 and f"no image {castle.id}" in err and "Traceback" not in err


def test_search_filters_and_pages(tmp_path: Path, gallery_url: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    if gallery_url:
        monkeypatch.setenv("LANSKAP_GALLERY_URL", gallery_url)  # the CLI below reads the same gallery
    g = Gallery(tmp_path / "home", url=gallery_url)
    folder = tmp_path / "out"
    for i in range(7):
        g.add(png(i), folder, "png", record(i, "a castle at dusk" if i % 2 else "a quiet lake, 100% calm"))
    g.add(png(99), folder, "png", record(99, "a castle", width=16, height=8, loras=[{"name": "mist", "scale": 1}]))
    assert g.query("castle")[1] == 4 and g.query("CASTLE")[1] == 4  # case-blind on both backends
    assert g.query("castle dusk")[1] == 3  # every word must appear
    assert g.query("100%")[1] == 4 and g.query("_")[1] == 0  # LIKE wildcards are literal
    assert g.query(width=16)[1] == 1 and g.query(lora="mist")[0][0].seed == 99 and g.loras() == ["mist"]
    assert g.sizes() == [(16, 8), (8, 8)] and g.prompts(2)[0] == ("a castle", "")
    page1, total = g.query(limit=3)
    page3, _ = g.query(limit=3, offset=6)
    assert total == 8 and [e.seed for e in page1] == [99, 6, 5] and [e.seed for e in page3] == [1, 0]
    assert g.query(since="2999-01-01")[1] == 0
    g.add(png(0), folder, "png", record(0, "a tower", mode="inpaint", model="other-model"))
    assert [e.prompt for e in g.query(seed=0)[0]] == ["a tower", "a quiet lake, 100% calm"]  # seed 0 is a seed
    assert g.query(mode="inpaint")[1] == 1 and g.query(model="other-model")[0][0].prompt == "a tower"
    assert g.query(seed=0, mode="txt2img")[1] == 1 and g.models() == ["other-model"]
    rc, out, _ = _cli("gallery", "list", "--seed", "0", "--mode", "inpaint")
    assert rc == 0 and "a tower" in out and "quiet lake" not in out
    rc, _, err = _cli("gallery", "list", "--mode", "zoom")
    assert rc != 0 and "mode must be one of txt2img, img2img, inpaint" in err
    # Names are A1111's NNNNN-SEED and never collide with files already there.
    (folder / "00009-0.png").write_bytes(b"not ours")
    e = g.add(png(1), folder, "png", record(1))
    assert e.path.name == "00010-1.png"


def test_download_delete_and_export_keep_the_parameters(tmp_path: Path, gallery_url: str | None) -> None:
    g = Gallery(tmp_path / "home", url=gallery_url)
    from lanskap.generation.output import encode_image

    data = encode_image(Image.new("RGB", (32, 24), (10, 120, 200)), "png", "a castle\nSteps: 2, Seed: 3")
    e = g.add(data, tmp_path / "out", "png", record(3, infotext="a castle\nSteps: 2, Seed: 3"))
    same, name = image_bytes(e, "png")
    assert same == e.path.read_bytes() and name.endswith(".png")
    jpg, name = image_bytes(e, "jpg")
    assert name.endswith(".jpg") and Image.open(io.BytesIO(jpg)).format == "JPEG"
    (tmp_path / "x.jpg").write_bytes(jpg)
    assert read_infotext(tmp_path / "x.jpg") == "a castle\nSteps: 2, Seed: 3"
    with zipfile.ZipFile(io.BytesIO(zip_bytes([e]))) as zf:
        assert len(zf.namelist()) == 2
    other = g.add(png(4), tmp_path / "out", "png", record(4))
    assert g.delete([e.id, 12345]) == 1 and not e.path.exists() and other.path.is_file()
    assert [x.id for x in g.query()[0]] == [other.id] and g.check() == {"missing_files": [], "unfinished": []}


def _writer(home: str, folder: str, start: int, n: int, url: str | None) -> None:
    g = Gallery(Path(home), url=url)
    for i in range(n):
        g.add(png(start + i), Path(folder), "png", record(start + i, f"process {start}"))


def test_several_processes_write_at_once(tmp_path: Path, gallery_url: str | None) -> None:
    home, folder = tmp_path / "home", tmp_path / "shared"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(home), str(folder), k * 100, 8, gallery_url)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    g = Gallery(home, url=gallery_url)
    entries, total = g.query(limit=100)
    assert total == 32 and len({e.path for e in entries}) == 32
    assert sorted(p.name for p in folder.iterdir()) == sorted(e.path.name for e in entries)
    assert g.check() == {"missing_files": [], "unfinished": []}


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_repair_finishes_what_a_dead_process_left(tmp_path: Path, gallery_url: str | None) -> None:
    g = Gallery(tmp_path / "home", url=gallery_url)
    folder = tmp_path / "out"
    kept = g.add(png(1), folder, "png", record(1))
    doomed = g.add(png(2), folder, "png", record(2))
    dead = _dead_pid()
    with g.store.connect() as con:
        # crashed after the file appeared, before the row was marked ok: keep it
        # (owner NULL: rows from before writer leases, judged by their PID; none in PostgreSQL)
        con.execute("UPDATE images SET state='pending', owner_pid=?, owner=NULL WHERE id=?", (dead, kept.id))
        # crashed half-way through a delete: finish it
        con.execute("UPDATE images SET state='deleting', owner_pid=?, owner=NULL WHERE id=?", (dead, doomed.id))
        # crashed before the file was written: drop the row
        con.execute(
            "INSERT INTO images (path, state, owner_pid, created, prompt, seed, width, height) "
            "VALUES (?, 'pending', ?, '2026-01-01', 'x', 3, 8, 8)",
            (str(folder / "00009-3.png"), dead),
        )
        # a live process's pending row is left alone
        con.execute(
            "INSERT INTO images (path, state, owner_pid, owner, created, prompt, seed, width, height) "
            "VALUES (?, 'pending', ?, ?, '2026-01-01', 'x', 4, 8, 8)",
            (str(folder / "00010-4.png"), os.getpid(), g.store.lease()),
        )
        # another machine's row, in a folder this one doesn't mount: never judged here
        con.execute(
            "INSERT INTO images (path, state, owner_pid, created, prompt, seed, width, height) "
            "VALUES (?, 'pending', ?, '2026-01-01', 'x', 5, 8, 8)",
            ("/nowhere-shared/out/00001-5.png", dead),
        )
    assert g.repair() == {"kept": 1, "dropped": 1, "deleted": 1}
    assert g.get(kept.id).path.is_file()
    assert not doomed.path.exists()
    report = g.check()
    assert len(report["unfinished"]) == 2 and len(report["unseen"]) == 1  # the live writer's and the unseen one
    assert [e.id for e in g.query()[0]] == [kept.id]


KILL_LOOP = """
import io, sys, random
from pathlib import Path
from PIL import Image
from lanskap.gallery import Gallery
g = Gallery(Path(sys.argv[1]), url=sys.argv[3] or None)
print("ready", flush=True)
i = 0
while True:
    buf = io.BytesIO(); Image.new("RGB", (64, 64), (i % 256, 0, 0)).save(buf, "PNG")
    e = g.add(buf.getvalue(), Path(sys.argv[2]), "png", {"prompt": "p", "seed": i, "width": 64, "height": 64})
    if random.random() < 0.4:
        g.delete([e.id])
    i += 1
"""


def test_sigkill_never_leaves_a_row_without_a_file_or_a_file_without_a_row(
    tmp_path: Path, gallery_url: str | None
) -> None:
    home, folder = tmp_path / "home", tmp_path / "out"
    for delay in (0.3, 0.45, 0.6, 0.75):
        proc = subprocess.Popen(
            [sys.executable, "-c", KILL_LOOP, str(home), str(folder), gallery_url or ""],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        g = Gallery(home, url=gallery_url)  # opening repairs what the dead process left
        entries, total = g.query(limit=100000)
        assert g.check() == {"missing_files": [], "unfinished": []}
        files = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        assert files == sorted(e.path.name for e in entries)
    assert total > 0


def test_empty_gallery_says_so_and_a_filter_miss_says_no_match(isolated_home: Path) -> None:
    rc, out, _ = _cli("gallery", "list")
    assert rc == 0 and "no images yet" in out and "lanskap generate" in out
    Gallery(isolated_home).add(png(1), isolated_home / "out", "png", record(1))
    rc, out, _ = _cli("gallery", "list", "--lora", "nope")
    assert rc == 0 and "no images match" in out
    rc, out, _ = _cli("gallery", "list")
    header, row = out.splitlines()[:2]
    assert header.split() == ["id", "made", "size", "seed", "prompt"] and row.split()[0] == "1"


def _saved(g: Gallery, folder: Path, seed: int, prompt: str) -> None:
    """An image saved as lanskap saves it: the PNG carries its A1111 infotext."""
    from PIL import PngImagePlugin

    text = f"{prompt}\nNegative prompt: blur\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: {seed}, Size: 8x8"
    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", text)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (seed % 256, 40, 90)).save(buf, "PNG", pnginfo=meta)
    g.add(buf.getvalue(), folder, "png", record(seed, prompt, infotext=text))


def test_a_lost_or_damaged_database_loses_no_images(isolated_home: Path) -> None:
    """0 bytes or a damaged page is an error that names the file and the repair, never an empty gallery;
    repair keeps the rows it can read, indexes the rest from the files, and keeps the old database."""
    g = Gallery(isolated_home)
    outputs = isolated_home / "outputs" / "2026-11-30"
    for seed in range(40):  # enough rows for several database pages
        _saved(g, outputs, seed, f"castle number {seed} " + "with a long winding road " * 8)
    db = g.db
    with sqlite3.connect(db) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # A damaged page in the middle: one line that says what to do, and `check` fails.
    data = bytearray(db.read_bytes())
    page = 4096
    data[2 * page :] = b"\xff" * (len(data) - 2 * page)  # every page past the schema
    db.write_bytes(bytes(data))
    rc, out, err = _cli("gallery", "list")
    assert rc != 0 and "Traceback" not in err and "lanskap gallery repair" in err and str(db) in err, err
    rc, out, _ = _cli("gallery", "check")
    assert rc == 1 and "database damage" in out

    rc, out, err = _cli("gallery", "repair")
    assert rc == 0, err
    assert "40 indexed from files" in out or "kept from the old database" in out
    entries, total = Gallery(isolated_home).query(limit=100)
    assert total == 40 and {e.seed for e in entries} == set(range(40))
    assert all(e.prompt.startswith("castle number") and e.steps == 20 for e in entries)
    assert list(isolated_home.glob("gallery.sqlite3.old-*")), "the damaged database is kept aside"
    assert _cli("gallery", "check")[0] == 0

    # A 0-byte database: the same, never "no images yet".
    for side in db.parent.glob("gallery.sqlite3-*"):
        side.unlink()
    db.write_bytes(b"")
    rc, out, err = _cli("gallery", "list")
    assert rc != 0 and "is empty (0 bytes)" in err and "lanskap gallery repair" in err and "no images" not in out
    assert _cli("gallery", "repair")[0] == 0
    assert Gallery(isolated_home).query(limit=100)[1] == 40


LEASE_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("holding", flush=True)
time.sleep(60)
"""


def test_repair_knows_dead_writers_across_pid_namespaces(tmp_path: Path) -> None:
    """A writer is judged by its lease (an flock), not its PID: a container's PID 1 exists here too."""
    g = Gallery(tmp_path / "home")
    folder = tmp_path / "out"
    leases = tmp_path / "home" / ".gallery-writers"
    leases.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", LEASE_HOLDER, str(leases / "alive.lock")], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"holding"
        (leases / "gone.lock").write_text("")  # a lease nobody holds: its writer died
        with sqlite3.connect(g.db) as con:
            for seed, owner in ((5, "gone"), (6, "alive")):
                path = folder / f"0000{seed}-{seed}.png"
                folder.mkdir(exist_ok=True)
                (folder / f".{path.name}.x.tmp").write_bytes(b"half")  # the writer's partial file
                con.execute(
                    "INSERT INTO images (path, state, owner_pid, owner, created, prompt, seed, width, height) "
                    "VALUES (?, 'pending', 1, ?, '2026-01-01', 'x', ?, 8, 8)",  # PID 1 exists in this namespace
                    (str(path), owner, seed),
                )
        assert g.repair() == {"kept": 0, "dropped": 1, "deleted": 0}
        assert not (folder / ".00005-5.png.x.tmp").exists() and not (leases / "gone.lock").exists()
        assert g.check()["unfinished"] != [], "the live writer's row waits"
    finally:
        holder.kill()
        holder.wait()
    assert g.repair()["dropped"] == 1, "once its writer is gone, that row goes too"
    assert g.check()["unfinished"] == []


def test_grid_layout_follows_a1111() -> None:
    from lanskap.gallery.export import grid_layout

    # A1111's image_grid: rows = round(sqrt(n)), columns = ceil(n / rows)
    assert [grid_layout(n) for n in (1, 2, 3, 4, 5, 6, 8, 9, 16)] == [
        (1, 1), (2, 1), (2, 2), (2, 2), (3, 2), (3, 2), (3, 3), (3, 3), (4, 4),
    ]  # fmt: skip


def test_migrate_copies_every_row_to_postgresql(
    isolated_home: Path,
    postgres_url: str,
    postgres_server,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    """Every row with its id, path and columns, all or nothing; again is harmless; a conflict copies nothing."""
    g = Gallery(isolated_home)
    out = isolated_home / "outputs"
    mist = [{"name": "mist", "scale": 0.5}]
    made = [g.add(png(i), out, "png", record(i, f"castle {i}", loras=mist)) for i in range(5)]
    g.delete([made[1].id])  # a gap in the ids must stay a gap
    rc, text, err = _cli("gallery", "migrate", "--to", postgres_url)
    assert rc == 0 and "copied 4 image(s)" in text, err
    target = Gallery(isolated_home, url=postgres_url)
    assert target.rows() == g.rows()  # ids, paths, every column
    rc, text, _ = _cli("gallery", "migrate", "--to", postgres_url)
    assert rc == 0 and "copied 0" in text and "4 were there already" in text
    assert target.add(png(9), out, "png", record(9)).id == made[-1].id + 1  # ids go on after the copied ones
    monkeypatch.setenv("LANSKAP_GALLERY_URL", postgres_url)
    rc, text, _ = _cli("gallery", "list", "--lora", "mist", "--json")
    assert rc == 0 and [i["id"] for i in json.loads(text)["images"]] == [e.id for e in reversed(made) if e != made[1]]
    monkeypatch.delenv("LANSKAP_GALLERY_URL")

    # A target that holds another file under one of the ids: a one-line error, and nothing copied.
    other = postgres_server.database()
    Gallery(isolated_home, url=other).add(png(7), isolated_home / "elsewhere", "png", record(7))
    rc, _, err = _cli("gallery", "migrate", "--to", other)
    assert rc != 0 and "conflicts with" in err and "nothing was copied" in err and "Traceback" not in err
    assert Gallery(isolated_home, url=other).query()[1] == 1


def test_an_unreachable_or_wrong_gallery_url_is_one_line(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    monkeypatch.setenv("LANSKAP_GALLERY_URL", f"postgresql://me:s3cret@127.0.0.1:{port}/gallery")
    rc, _, err = _cli("gallery", "list")
    assert rc != 0 and "can't be reached" in err and "s3cret" not in err and "***" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    monkeypatch.setenv("LANSKAP_GALLERY_URL", "mysql://x/y")
    rc, _, err = _cli("gallery", "list")
    assert rc != 0 and "must start with postgresql://" in err


def test_a_lost_postgresql_connection_takes_a_new_lease(tmp_path: Path, postgres_url: str) -> None:
    """A server restart (here: every other connection ended) drops the writer's lease; the next write takes a
    new one instead of signing rows with a lease nobody holds."""
    g = Gallery(tmp_path / "home", url=postgres_url)
    first = g.add(png(1), tmp_path / "out", "png", record(1))
    lease = g.store.lease()
    with g.store.connect() as con:
        ended = con.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND datname = current_database()"
        ).fetchone()[0]
    assert ended >= 1
    second = g.add(png(2), tmp_path / "out", "png", record(2))
    assert g.store.lease() != lease and second.id > first.id and g.check()["unfinished"] == []
