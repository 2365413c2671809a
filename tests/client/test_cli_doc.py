"""docs/cli.md is generated from the command's parser: every command and option, and the variables the client
reads."""

from __future__ import annotations

from tests.support import REPO


def test_cli_doc_is_generated_from_the_parser():
    from openrft.cli_doc import cli_markdown

    committed = (REPO / "docs" / "cli.md").read_text()
    assert committed == cli_markdown(), (
        "docs/cli.md drifted from the parser: run `make openapi` and commit it"
    )
    for command in (
        "serve",
        "jobs create",
        "jobs follow",
        "files content",
        "graders run",
        "models get",
        "chat",
    ):
        assert f"## `openrft {command}" in committed, command
    for variable in ("OPENRFT_API_KEY", "OPENRFT_BASE_URL", "OPENRFT_HOME"):
        assert f"| `{variable}` |" in committed
    assert "| `--grader GRADER`, `-g GRADER` |" in committed
    assert "--api-key API_KEY" not in committed  # the connection options are described once, not per command
