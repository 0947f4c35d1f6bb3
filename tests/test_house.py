"""The house (HOUSE.md): every import of the package points down its floors, and nothing imports the CLI module."""
import ast, json, re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG, NBS = ROOT/"netdeviation", ROOT/"nbs"

# HOUSE.md's floors: a module imports only modules on lower floors (`checks`, floor 0, imports none of the package).
FLOORS = {"checks": 0, "data": 1, "models": 1, "graph": 1, "channels": 1.5, "paper": 1, "sweeps": 1, "training": 2, "pruning": 2, "deviation": 3,
          "bounds": 3, "forecast": 3, "measure": 4, "retraining": 4, "corpus": 5, "advisor": 5, "report": 6, "explorer": 6, "cli": 7}
# Sideways imports the project accepts today. A new entry needs a reason; one that is no longer used fails
# `test_sideways_imports_are_still_needed`.
SIDEWAYS = {("advisor", "corpus")}  # the advisor learns from the corpus's features: one idea (HOUSE.md's `advisor`) in two rooms


def _imports(tree:ast.AST, package:str|None="netdeviation")->set[str]:
    "The package modules a parsed file imports: `from .x`, `from netdeviation.x`, `import netdeviation.x`."
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom):
            mod = n.module or ""
            if n.level == 1 or mod.split(".")[0] == "netdeviation":
                parts = mod.split(".")[1:] if mod.startswith("netdeviation") else mod.split(".")
                if parts and parts[0]: out.add(parts[0])
                else: out |= {a.name for a in n.names}  # from netdeviation import cli / from . import cli
        elif isinstance(n, ast.Import):
            out |= {a.name.split(".")[1] for a in n.names if a.name.startswith("netdeviation.")}
    return out


def _modules()->dict[str, set[str]]:
    return {p.stem: _imports(ast.parse(p.read_text())) for p in sorted(PKG.glob("*.py")) if not p.stem.startswith("_")}


def _code(nb:Path)->str:
    "A notebook's code cells as Python (IPython magics and shell lines dropped)."
    cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
    return "\n".join(l for c in cells for l in "".join(c["source"]).splitlines() if not l.lstrip().startswith(("%", "!")))


def test_floors_cover_the_package():
    "Every module of the package has its floor: a new one is placed in HOUSE.md and here."
    assert set(_modules()) <= set(FLOORS), f"modules without a floor: {sorted(set(_modules()) - set(FLOORS))}"


@pytest.mark.parametrize("module", sorted(_modules()))
def test_imports_point_down(module):
    "A module imports only modules on lower floors."
    up = sorted(m for m in _modules()[module] - {module} if m in FLOORS and FLOORS[m] >= FLOORS[module]
                and (module, m) not in SIDEWAYS)
    assert not up, f"netdeviation.{module} (floor {FLOORS[module]}) imports {[(m, FLOORS[m]) for m in up]}: not below it"


def test_sideways_imports_are_still_needed():
    unused = sorted((a, b) for a, b in SIDEWAYS if a in _modules() and b not in _modules()[a])
    assert not unused, f"SIDEWAYS lists imports no module makes any more: {unused}; remove them"


def test_no_module_imports_the_cli():
    users = sorted(m for m, imp in _modules().items() if "cli" in imp and m != "cli")
    assert not users, f"modules that import netdeviation.cli: {users}"


def test_no_notebook_imports_the_cli():
    "Guides, module notebooks and sweep templates import from the library modules, never from the CLI (08_cli defines it)."
    users = []
    for nb in sorted(NBS.rglob("*.ipynb")):
        if any(s[0] in "_." for s in nb.relative_to(NBS).parts) or nb.stem.endswith("_cli"): continue
        code = _code(nb)
        try: imports = _imports(ast.parse(code))
        except SyntaxError: imports = set(re.findall(r"netdeviation\.(\w+)", code))  # a cell ast cannot parse
        if "cli" in imports: users.append(str(nb.relative_to(NBS)))
    assert not users, f"notebooks that import netdeviation.cli: {users}"


def test_the_check_sees_a_cli_import():
    "The checks above can fail: each way of importing the CLI is seen."
    for src in ("from netdeviation.cli import main", "from .cli import main", "import netdeviation.cli as c",
                "from netdeviation import cli", "from . import cli"):
        assert "cli" in _imports(ast.parse(src)), src
    assert _imports(ast.parse("from netdeviation.report import report\nimport numpy")) == {"report"}


def test_one_atomic_write():
    "Every file the package writes goes through `checks.atomic_write`: no other module renames a file into place (a whole folder swapped by `report` is another matter) or fsyncs."
    other = sorted(p.name for p in PKG.glob("*.py") if p.stem != "checks" and re.search(r"os\.(replace|fsync)\(", p.read_text()))
    assert not other, f"modules writing files by hand instead of with netdeviation.checks.atomic_write: {other}"


def test_one_place_per_shared_fact():
    "One definition of the shared helpers (`copy_model`, `one_thread`: graph) and of the paper's numbers (`paper`)."
    where = lambda pattern: sorted(p.stem for p in PKG.glob("*.py") if not p.stem.startswith("_") and re.search(pattern, p.read_text(), re.M))
    assert where(r"^def copy_model\b") == ["graph"]
    assert where(r"^(def|class) _?one_thread\b") == ["graph"]
    assert where(r"0\.1, 0\.2, 0\.3, 0\.4, 0\.5, 0\.6, 0\.7, 0\.8") == ["paper"]   # the paper's D grid
    assert where(r"^(PAPER_TABLES|TABLE_AMOUNTS|PAPER_D|HAN_ACC) = ") == ["paper"]
    assert _modules()["paper"] == set(), "paper imports nothing of the package (HOUSE.md, floor 1)"
