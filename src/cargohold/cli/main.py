"""`cargohold` commands: a thin layer over the library."""

from __future__ import annotations

from pathlib import Path

import click

from .. import __version__
from ..config import ConfigError, load_config


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cargohold")
def cli() -> None:
    """cargohold: a container registry and release pipeline in one program."""


@cli.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="YAML settings file.")
@click.option("--listen", help="Address to listen on, HOST:PORT (default 127.0.0.1:5000).")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), help="Data directory (default ./data).")
@click.option("--workers", type=int, help="Worker processes (default 1).")
def serve(config_file: Path | None, listen: str | None, data: Path | None, workers: int | None) -> None:
    """Run the registry with SQLite metadata and filesystem blobs under the data directory."""
    from ..server import serve as run_server

    try:
        config = load_config(config_file, listen=listen, data=data, workers=workers)
    except ConfigError as err:
        raise click.ClickException(str(err)) from None
    click.echo(
        f"cargohold {__version__}: registry on http://{config.listen}/v2/, data in {config.data.resolve()}", err=True
    )
    run_server(config)


def main() -> None:
    cli()
