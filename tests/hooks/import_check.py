"""Which preloaded submodules a stage's own code reaches without importing them, for the warm runner.

A stage the runner forks inherits every module the runner imported: a script that does ``import
pyarrow`` and then reads ``pyarrow.parquet`` works warm (the preloaded datasets imported
pyarrow.parquet) and fails cold, where nothing imported it. The runner runs such a stage cold, so
it fails, or works, exactly as DVC's run of it would. A reach counts as imported when the file
imports that module in the same or an enclosing scope, or imports a package that brings it when a
fresh interpreter imports that package alone (``import torch`` brings torch.nn); anything else
sends the stage cold, which is never wrong, only slower.

The stage's own code is its script and every module of the project's src/ (which a stage puts first
on sys.path, see tunelab.stage) that it imports, followed through absolute imports, the only kind
tunelab's code uses.

Hand-written because no library answers it per run: linters do not track which submodules an
import brings, and a type checker's attribute check covers a whole tree, not one stage's run.
"""

import ast
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

Use = tuple[str, tuple[str, ...]]  # (a module a chain names, the imports in scope that may bring it)


class ImportScope(ast.NodeVisitor):
    """One file's imports (module names, every scope) and its attribute chains on imported modules."""

    def __init__(self):
        self.imported: set[str] = set()
        self.uses: set[Use] = set()
        self.scopes: list[tuple[dict[str, str], set[str]]] = []  # (name -> module, imported in this scope)

    def visit_scope(self, node: ast.AST) -> None:
        """A scope's imports hold for all of it, also above them (a function defined before the import)."""
        bound, imported = {}, set()
        for statement in scope_statements(node):
            if isinstance(statement, ast.Import):
                for alias in statement.names:
                    parts = alias.name.split(".")
                    imported.update(".".join(parts[:end]) for end in range(1, len(parts) + 1))
                    bound[alias.asname or parts[0]] = alias.name if alias.asname else parts[0]
            elif isinstance(statement, ast.ImportFrom) and statement.module and not statement.level:
                parts = statement.module.split(".")
                imported.update(".".join(parts[:end]) for end in range(1, len(parts) + 1))
                for alias in statement.names:  # a submodule (from torch import nn) or not: both recorded
                    imported.add(f"{statement.module}.{alias.name}")
                    bound[alias.asname or alias.name] = f"{statement.module}.{alias.name}"
        self.imported |= imported
        self.scopes.append((bound, imported))
        self.generic_visit(node)
        self.scopes.pop()

    visit_Module = visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = visit_scope

    def visit_Attribute(self, node: ast.Attribute) -> None:
        names, root = [], node
        while isinstance(root, ast.Attribute):
            names.append(root.attr)
            root = root.value
        if isinstance(root, ast.Name) and (module := self.lookup(root.id)):
            in_scope = set().union(*(imported for _bound, imported in self.scopes))
            for name in reversed(names):
                module = f"{module}.{name}"
                if module not in in_scope:
                    self.uses.add((module, tuple(sorted(i for i in in_scope if module.startswith(f"{i}.")))))
        self.generic_visit(node)

    def lookup(self, name: str) -> str | None:
        return next((bound[name] for bound, _imported in reversed(self.scopes) if name in bound), None)


class ReachChecker:
    """Kept by the runner across stage runs: what each source file uses, and what each import reaches."""

    def __init__(self):
        self.files: dict[str, tuple[set[str], set[Use]]] = {}  # a source's sha1 -> (imported, uses)
        self.reaches: dict[tuple[str, str], bool] = {}  # (an import, a module) -> its attributes reach it, cold

    def unimported(self, request: dict, preloaded: set[str]) -> list[str]:
        """'FILE reaches MODULE without importing it' for the stage's own code in ``request``; a file that
        cannot be read or parsed is a reason too (cold, Python reports it as it would anyway)."""
        try:
            return self.reached(request, preloaded)
        except (OSError, SyntaxError, ValueError) as error:
            return [f"its code cannot be checked: {error}"]

    def reached(self, request: dict, preloaded: set[str]) -> list[str]:
        cwd = Path(request["cwd"]).resolve()
        modules = project_modules(cwd / "src")
        todo, seen, unsure = [(cwd / request["argv"][0]).resolve()], set(), []
        while todo:
            if (file := todo.pop()) in seen:
                continue
            seen.add(file)
            imported, uses = self.facts(file)
            todo += [found for name in imported if name in modules for found in modules[name] if found.exists()]
            unsure += [(file, module, bringers) for module, bringers in sorted(uses) if module in preloaded]
        if unknown := {(bringer, module) for _file, module, bringers in unsure for bringer in bringers
                       if (bringer, module) not in self.reaches}:
            # and what the rest of the project asks of its imports: each import's process runs once
            project = {file for files in modules.values() for file in files} | set((cwd / "stages").glob("*.py"))
            for file in {file for file in project if file.exists()}:
                unknown |= {(bringer, module) for module, bringers in self.facts(file)[1] if module in preloaded
                            for bringer in bringers}
            self.learn(unknown, request)
        return [f"{os.path.relpath(file, cwd)} reaches {module} without importing it" for file, module, bringers in unsure
                if not any(self.reaches[bringer, module] for bringer in bringers)]

    def facts(self, file: Path) -> tuple[set[str], set[Use]]:
        source = file.read_bytes()
        key = hashlib.sha1(source).hexdigest()
        if key not in self.files:
            scope = ImportScope()
            scope.visit(ast.parse(source))
            self.files[key] = scope.imported, scope.uses
        return self.files[key]

    def learn(self, pairs: set[tuple[str, str]], request: dict) -> None:
        """Whether each (import, module) reaches the module by attributes in a fresh interpreter that
        imported only that (``import torch`` reaches torch.nn; ``import numpy`` reaches numpy.random
        through numpy's lazy __getattr__): one process per import, a fork per module it is asked about."""
        env = {name: value for name, value in request["env"].items() if name != "TUNELAB_WARM_RUNNER"}
        for bringer in sorted({bringer for bringer, module in pairs if (bringer, module) not in self.reaches}):
            modules = sorted(module for b, module in pairs if b == bringer and (b, module) not in self.reaches)
            started = time.monotonic()
            answer = subprocess.run([sys.executable, "-c", REACHES, bringer, *modules], cwd=request["cwd"], env=env,
                                    capture_output=True, text=True).stdout
            print(f"learned what a fresh 'import {bringer}' reaches of {len(modules)} modules in "
                  f"{time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)  # the runner's log
            reached = set(json.loads(answer)) if answer else set()
            self.reaches.update({(bringer, module): module in reached for module in modules})


REACHES = """
import importlib, json, os, sys
bringer, modules = sys.argv[1], sys.argv[2:]
try:
    importlib.import_module(bringer)
except ImportError:
    modules = []
reached = []
for module in modules:
    if (pid := os.fork()) == 0:  # a child per module: reaching one may import another
        found = sys.modules[bringer]
        try:
            for name in module[len(bringer) + 1:].split("."):
                found = getattr(found, name)
        except Exception:
            os._exit(1)
        os._exit(0)
    if os.waitpid(pid, 0)[1] == 0:
        reached.append(module)
print(json.dumps(reached))
"""


def scope_statements(node: ast.AST):
    """The nodes of ``node``'s own scope: not those of the functions defined in it."""
    for child in ast.iter_child_nodes(node):
        yield child
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from scope_statements(child)


def project_modules(src: Path) -> dict[str, list[Path]]:
    """Each module under ``src`` -> the files importing it runs (its packages' __init__.py, then its own)."""
    modules = {}
    for file in sorted(src.rglob("*.py")):
        parts = file.relative_to(src).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = [src.joinpath(*parts[:end], "__init__.py") for end in range(1, len(parts))] + [file]
    return modules
