"""
The house drawn from imports: the library (every module of the ``deepfashion2`` package outside
``apps``) imports nothing from the applications, the tests or the benchmarks; the applications
and tools sit on top.
"""

import ast
import os

PACKAGE = os.path.join(os.path.dirname(__file__), "..", "projects", "deepfashion2")


def _imports(path: str, module: str) -> set[str]:
    """Absolute names of the modules ``path`` (module ``module``) imports."""
    tree = ast.parse(open(path).read(), path)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = module.split(".")[: -node.level]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.add(name)
            out |= {f"{name}.{a.name}" for a in node.names}
    return out


def _library_modules():
    for root, _, files in os.walk(PACKAGE):
        rel = os.path.relpath(root, PACKAGE)
        if rel.split(os.sep)[0] == "apps":
            continue
        for f in files:
            if f.endswith(".py"):
                parts = [] if rel == "." else rel.split(os.sep)
                stem = [] if f == "__init__.py" else [f[:-3]]
                yield os.path.join(root, f), ".".join(["deepfashion2", *parts, *stem])


def test_the_library_imports_no_application_test_or_benchmark():
    modules = list(_library_modules())
    assert len(modules) > 30
    for path, module in modules:
        # a package's relative imports resolve against the package itself
        name = module + ".__init__" if path.endswith("__init__.py") else module
        for imported in _imports(path, name):
            assert not imported.startswith("deepfashion2.apps"), (module, imported)
            top = imported.split(".")[0]
            assert top not in ("tests", "bench", "conftest", "simulate", "reference"), (
                module,
                imported,
            )


def test_the_demo_finds_its_config_through_the_model_zoo():
    demo = os.path.join(PACKAGE, "apps", "demo")
    for f in os.listdir(demo):
        if f.endswith(".py"):
            text = open(os.path.join(demo, f)).read()
            assert "os.path.dirname(__file__)" not in text and '"..", ".."' not in text, f
