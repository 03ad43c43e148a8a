"""``lanskap users ...``: the logins that ``lanskap serve`` and ``lanskap ui`` accept (hashed, in $LANSKAP_HOME)."""

from __future__ import annotations

import sys

import typer

from lanskap.errors import LanskapError

app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Users and API keys for the API and the web app (stored as salted hashes).",
)


def _store():  # type: ignore[no-untyped-def]
    from lanskap.auth import store_at
    from lanskap.config import load_settings

    return store_at(load_settings().home)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise LanskapError("no password on standard input")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise LanskapError("no terminal to ask for the password on; pipe it in with --password-stdin")
    return typer.prompt("password", hide_input=True, confirmation_prompt=True)


@app.command("add")
def add_cmd(
    name: str = typer.Argument(..., help="User name (letters, digits, '.', '_', '-')."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from standard input."),
    replace: bool = typer.Option(False, "--replace", help="Set a new password for an existing user."),
) -> None:
    """Add a user (asks for a password of 16 or more characters)."""
    store = _store()
    store.add_user(name, _read_password(password_stdin), replace=replace)
    typer.echo(f"{'updated' if replace else 'added'} user {name} in {store.path}")


@app.command("key")
def key_cmd(name: str = typer.Argument(..., help="A name for the key, e.g. the client that uses it.")) -> None:
    """Make a new API key; it is printed once, and only its hash is kept."""
    store = _store()
    key = store.add_key(name)
    typer.echo(key)
    typer.echo(f"key {name} saved in {store.path}; send it as 'Authorization: Bearer KEY' or 'X-API-Key'", err=True)


@app.command("list")
def list_cmd() -> None:
    """The users and keys (names and dates, never secrets)."""
    logins = _store().logins()
    if not logins:
        typer.echo("no users or keys yet: add one with 'lanskap users add NAME'")
        return
    typer.echo(f"{'kind':<5}  {'name':<24}  {'created':<25}  key starts")
    for login in logins:
        typer.echo(f"{login.kind:<5}  {login.name:<24}  {login.created:<25}  {login.hint}")


@app.command("remove")
def remove_cmd(name: str = typer.Argument(..., help="The user or key to remove.")) -> None:
    """Remove a user or key; running servers stop accepting it at their next request."""
    kind = _store().remove(name)
    typer.echo(f"removed {kind} {name}")
