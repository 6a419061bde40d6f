"""The import contract (pyproject.toml's [tool.importlinter]): ``index`` imports neither ``training``, ``service``
nor torch; ``service`` imports neither ``training`` nor torch. ``make lint`` checks it too; here a broken
contract also fails ``make test``. Direct and indirect imports count, lazy ones inside functions too.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib

from locations import REPO

LINT_IMPORTS = "from importlinter.cli import lint_imports_command; lint_imports_command(['--no-logo', '--no-cache'])"


def contracts() -> dict[str, dict]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert config["include_external_packages"] is True, "torch is an external package: without this it cannot be forbidden"
    return {contract["id"]: contract for contract in config["contracts"]}


def test_the_contract_holds_the_three_rules():
    found = contracts()
    assert found["index"]["type"] == found["service"]["type"] == "forbidden"
    assert found["index"]["source_modules"] == ["index"] and {"training", "service", "torch"} <= set(
        found["index"]["forbidden_modules"]
    )
    assert found["service"]["source_modules"] == ["service"] and {"training", "torch"} <= set(
        found["service"]["forbidden_modules"]
    )


def test_the_code_keeps_the_contract():
    # in its own process: import-linter reads pyproject.toml from the working directory
    result = subprocess.run(
        [sys.executable, "-c", LINT_IMPORTS], check=False, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(contracts())} kept, 0 broken." in result.stdout
