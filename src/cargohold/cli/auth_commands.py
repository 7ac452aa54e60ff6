"""`cargohold user|robot|token|policy|keys|audit`: access control, run on the registry's host.

They work on the data directory directly, as its owner, like the other maintenance commands;
remote administration goes through the management API. Every change lands in the audit trail.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from ..auth.scopes import Grant, ScopeError
from ..auth.service import Authority
from ..auth.store import AuthStoreError, Credential, Principal
from ..config import expires_at, parse_duration
from ..storage.events import Actor
from .main import _config, config_option, data_option


@contextlib.contextmanager
def _authority(config_file: Path | None, data: Path | None) -> Iterator[tuple[Authority, Actor]]:
    config = _config(config_file, data=data)
    config.data.mkdir(parents=True, exist_ok=True)  # users may be set up before the first start
    authority = Authority.open(config)
    try:
        yield authority, Actor(f"cli:{getpass.getuser()}", "local")
    except (AuthStoreError, ScopeError) as err:
        raise click.ClickException(str(err)) from None
    finally:
        authority.close()


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


def _expiry(text: str | None) -> float | None:
    try:
        return expires_at(text)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


def _grants(scopes: tuple[str, ...]) -> tuple[Grant, ...]:
    try:
        return tuple(Grant.parse(scope) for scope in scopes)
    except ScopeError as err:
        raise click.BadParameter(str(err)) from None


def _when(stamp: float | None) -> str:
    return "never" if stamp is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))


def _echo_principals(principals: list[Principal], authority: Authority, as_json: bool) -> None:
    rows: list[dict[str, Any]] = []
    for p in principals:
        scopes = [str(policy.grant) for policy in authority.store.policies(p.subject)]
        rows.append(p.as_json(scopes))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        flags = " admin" if row["admin"] else ""
        groups = f" groups={','.join(row['groups'])}" if row["groups"] else ""
        granted = f" scopes={' '.join(row['scopes'])}" if row["scopes"] else ""
        click.echo(f"{row['name']:<24} {row['kind']:<6} expires {_when(row['expires'])}{flags}{groups}{granted}")


def _echo_credentials(credentials: list[Credential], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([c.as_json() for c in credentials], indent=2))
        return
    for c in credentials:
        state = f"revoked {_when(c.revoked)}" if c.revoked else f"expires {_when(c.expires)}"
        click.echo(f"{c.id:>5} {c.principal:<20} {c.kind:<6} {c.name:<20} {state}, last used {_when(c.last_used)}")


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
stdin_option = click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")


@click.group()
def user() -> None:
    """People who log in with a password."""


@user.command("add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="May do everything, including the management API.")
@click.option("--group", "groups", multiple=True, help="Add to this group (repeatable).")
@stdin_option
@config_option
@data_option
def user_add(name: str, admin: bool, groups: tuple[str, ...], password_stdin: bool, config_file, data) -> None:
    """Create user NAME (asks for the password)."""
    with _authority(config_file, data) as (authority, ctx):
        authority.add_user(ctx, name, _password(password_stdin), admin=admin, groups=groups)
    click.echo(f"created user {name}" + (" (admin)" if admin else ""))


@user.command("passwd")
@click.argument("name")
@stdin_option
@config_option
@data_option
def user_passwd(name: str, password_stdin: bool, config_file, data) -> None:
    """Set NAME's password; their refresh tokens (docker logins) stop working."""
    with _authority(config_file, data) as (authority, ctx):
        authority.set_password(ctx, name, _password(password_stdin))
    click.echo(f"changed the password of {name}")


@user.command("rm")
@click.argument("name")
@config_option
@data_option
def user_rm(name: str, config_file, data) -> None:
    """Delete user NAME with their policies and tokens."""
    with _authority(config_file, data) as (authority, ctx):
        authority.remove_principal(ctx, name, "user")
    click.echo(f"deleted user {name}")


@user.command("ls")
@json_option
@config_option
@data_option
def user_ls(as_json: bool, config_file, data) -> None:
    """List users."""
    with _authority(config_file, data) as (authority, _):
        _echo_principals(authority.store.principals("user"), authority, as_json)


@click.group()
def robot() -> None:
    """Accounts for CI: a secret, fixed scopes and an expiry."""


@robot.command("create")
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    help="repository:PATTERN:ACTIONS, e.g. 'repository:team/*:pull,push'",
)
@click.option("--expires", default="90d", show_default=True, help="Lifetime such as 30d, or 'never'.")
@click.option("--description", default="", help="What the robot is for.")
@config_option
@data_option
def robot_create(name: str, scopes: tuple[str, ...], expires: str, description: str, config_file, data) -> None:
    """Create robot NAME and print its secret (shown once)."""
    grants = _grants(scopes)
    with _authority(config_file, data) as (authority, ctx):
        _, secret = authority.create_robot(ctx, name, grants, _expiry(expires), description)
    click.echo(f"created robot {name}; log in as user {name!r} with this secret (it is not shown again):", err=True)
    click.echo(secret)


@robot.command("ls")
@json_option
@config_option
@data_option
def robot_ls(as_json: bool, config_file, data) -> None:
    """List robots with their scopes."""
    with _authority(config_file, data) as (authority, _):
        _echo_principals(authority.store.principals("robot"), authority, as_json)


@robot.command("rm")
@click.argument("name")
@config_option
@data_option
def robot_rm(name: str, config_file, data) -> None:
    """Delete robot NAME; its secret stops working at once (tokens it holds expire within minutes)."""
    with _authority(config_file, data) as (authority, ctx):
        authority.remove_principal(ctx, name, "robot")
    click.echo(f"deleted robot {name}")


@click.group()
def token() -> None:
    """Personal access tokens: passwords for scripts, revocable one by one."""


@token.command("create")
@click.argument("user_name", metavar="USER")
@click.argument("name")
@click.option("--expires", default="90d", show_default=True, help="Lifetime such as 30d, or 'never'.")
@click.option("--scope", "scopes", multiple=True, help="Narrow it to repository:PATTERN:ACTIONS (repeatable).")
@config_option
@data_option
def token_create(user_name: str, name: str, expires: str, scopes: tuple[str, ...], config_file, data) -> None:
    """Create token NAME for USER and print it (shown once); use it as USER's password."""
    grants = _grants(scopes) if scopes else None
    with _authority(config_file, data) as (authority, ctx):
        secret = authority.create_token(ctx, user_name, name, _expiry(expires), grants)
    click.echo(f"created token {name} for {user_name} (it is not shown again):", err=True)
    click.echo(secret)


@token.command("ls")
@click.option("--user", "user_name", help="Only this user's or robot's.")
@json_option
@config_option
@data_option
def token_ls(user_name: str | None, as_json: bool, config_file, data) -> None:
    """List tokens and robot secrets (never the secrets themselves)."""
    with _authority(config_file, data) as (authority, _):
        _echo_credentials(authority.store.credentials(user_name), as_json)


@token.command("revoke")
@click.argument("credential_id", type=int, metavar="ID")
@config_option
@data_option
def token_revoke(credential_id: int, config_file, data) -> None:
    """Revoke token or robot secret ID (see `token ls`)."""
    with _authority(config_file, data) as (authority, ctx):
        authority.revoke(ctx, credential_id)
    click.echo(f"revoked {credential_id}")


@click.group()
def policy() -> None:
    """Which users, groups and robots may do what on which repositories (default: nothing)."""


@policy.command("add")
@click.argument("subject")
@click.argument("scope")
@config_option
@data_option
def policy_add(subject: str, scope: str, config_file, data) -> None:
    """Allow SUBJECT (user:NAME, group:NAME, robot:NAME, authenticated, anonymous) SCOPE ('team/*:pull,push')."""
    grant = _grants((scope,))[0]
    with _authority(config_file, data) as (authority, ctx):
        authority.add_policy(ctx, subject, grant)
    click.echo(f"{subject} may {','.join(sorted(grant.actions))} {grant.pattern}")


@policy.command("ls")
@json_option
@config_option
@data_option
def policy_ls(as_json: bool, config_file, data) -> None:
    """List policies."""
    with _authority(config_file, data) as (authority, _):
        policies = authority.store.policies()
    if as_json:
        click.echo(json.dumps([p.as_json() for p in policies], indent=2))
        return
    for p in policies:
        click.echo(f"{p.id:>5} {p.subject:<30} {p.grant}")


@policy.command("rm")
@click.argument("policy_id", type=int, metavar="ID")
@config_option
@data_option
def policy_rm(policy_id: int, config_file, data) -> None:
    """Delete policy ID (see `policy ls`)."""
    with _authority(config_file, data) as (authority, ctx):
        authority.remove_policy(ctx, policy_id)
    click.echo(f"deleted policy {policy_id}")


@click.group()
def keys() -> None:
    """Token signing keys."""


@keys.command("rotate")
@config_option
@data_option
def keys_rotate(config_file, data) -> None:
    """Sign new tokens with a new key; tokens signed by the old one stay valid until they expire."""
    with _authority(config_file, data) as (authority, ctx):
        kid = authority.rotate_keys(ctx)
    click.echo(f"new signing key {kid}")


@keys.command("prune")
@click.option("--older-than", default="1h", show_default=True, help="Remove inactive keys older than this.")
@config_option
@data_option
def keys_prune(older_than: str, config_file, data) -> None:
    """Remove old inactive keys: tokens they signed stop working."""
    with _authority(config_file, data) as (authority, ctx):
        removed = authority.keys.prune(parse_duration(older_than))
        for kid in removed:
            authority.audit(ctx, "key.remove", kid)
    click.echo(f"removed {len(removed)} key(s)")


@keys.command("ls")
@config_option
@data_option
def keys_ls(config_file, data) -> None:
    """List signing keys."""
    with _authority(config_file, data) as (authority, _):
        for kid, created, active in authority.keys.kids():
            click.echo(f"{kid}  created {_when(created)}{'  active' if active else ''}")


@click.command()
@click.option("--since", help="Only events newer than this, e.g. 24h.")
@click.option("--actor", help="Only this user or robot.")
@click.option("--action", help="Only actions starting with this, e.g. 'access.' or 'manifest.push'.")
@click.option("--target", help="Only targets starting with this, e.g. a repository name.")
@click.option("--limit", default=100, show_default=True)
@json_option
@config_option
@data_option
def audit(since, actor, action, target, limit: int, as_json: bool, config_file, data) -> None:
    """Show the audit trail, newest first: denials, pushes, deletes, tag moves, credential changes."""
    with _authority(config_file, data) as (authority, _):
        try:
            start = time.time() - parse_duration(since) if since else None
        except ValueError as err:
            raise click.BadParameter(str(err)) from None
        events = authority.store.events(since=start, actor=actor, action=action, target=target, limit=limit)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(e) for e in events], indent=2))
        return
    for e in events:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.at))
        detail = f" ({e.detail})" if e.detail else ""
        click.echo(
            f"{stamp} {e.actor:<16} {e.action:<16} {e.outcome:<6} {e.target}{detail} [{e.address} {e.request_id}]"
        )


def register(group: click.Group) -> None:
    for command in (user, robot, token, policy, keys, audit):
        group.add_command(command)
