"""Write the app's OpenAPI document as YAML: ``python -m app.openapi_export openapi.yaml``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml


def openapi_yaml() -> str:
    from app.main import create_app

    spec: dict[str, Any] = create_app().openapi()
    return yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=120)


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path("openapi.yaml")
    out.write_text(openapi_yaml())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
