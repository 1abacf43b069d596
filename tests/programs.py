"""Which external programs does the project run or look up, and is each one provided on a fresh machine?

Python (src/, benchmarks/, tests/): Python's `ast` finds every `shutil.which(...)`, every
`subprocess.run/Popen/call/check_call/check_output`, `asyncio.create_subprocess_exec` and `os.exec*/spawn*`
call, and resolves the program (argv[0]) back to a string: through local and module variables, `or` and
`x if c else y`, `shutil.which("x")`, `Path(sys.executable).with_name("x")`, the return value of a
project function (`path, _ = docker_cli()`), and the arguments callers pass to a wrapper's parameter
(`def sh(*args): subprocess.run(args)` called as `sh("git", ...)`). `["git", "flow", ...]` also needs
`git-flow`. What cannot be resolved is reported, never skipped; a shell string (`shell=True`,
`os.system`) is reported too.

Shell (scripts/*.sh, benchmarks/*.sh): a small quote-aware tokenizer (comments, heredoc bodies,
redirections and `$(...)` substitutions handled) takes the first word of every simple command, skips
keywords, builtins and the script's own functions, resolves `"$var"` through the script's assignments,
follows functions that run their arguments (`"$@"`), and reads `command -v NAME` as a look-up.

`python -m tests.programs` prints the inventory.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY_DIRS = ("src", "benchmarks", "tests")
SH_GLOBS = ("scripts/*.sh", "benchmarks/*.sh")
SETUP = ROOT / "scripts" / "setup-system.sh"

# Part of every Debian: programs of packages with Priority "required" (installed by the most minimal
# install, debootstrap --variant=minbase, and by Debian's container images). On a Debian machine
# test_programs.py checks with dpkg that each one belongs to the package named and that its priority is
# "required", so this list cannot quietly grow with something a fresh machine lacks.
BASE = {
    "sh": "dash", "bash": "bash", "awk": "mawk", "sed": "sed", "grep": "grep",
    "cat": "coreutils", "date": "coreutils", "head": "coreutils", "tail": "coreutils", "id": "coreutils",
    "mktemp": "coreutils", "realpath": "coreutils", "rm": "coreutils", "seq": "coreutils",
    "sleep": "coreutils", "env": "coreutils", "mkdir": "coreutils",
    "setsid": "util-linux", "unshare": "util-linux", "nsenter": "util-linux", "true": "coreutils", "mount": "mount", "umount": "mount", "apt-get": "apt", "dpkg-query": "dpkg",
}
# What a fresh machine must have before anything runs (the README's fresh-machine section says so).
PREREQUISITES = {"python3": "the one thing the README asks a fresh machine to have"}
# The project's own: `make venv` creates them in .venv/bin.
OWN = {
    "stackpatch": "the project's entry point, installed in .venv/bin by `make venv`",
    "python": ".venv/bin/python, the venv's interpreter (`make venv`)",
}
# git subcommands that are programs of their own
GIT_EXTERNAL = {"flow": "git-flow", "lfs": "git-lfs"}

RUNNERS = {f"subprocess.{n}" for n in ("run", "Popen", "call", "check_call", "check_output")} | {
    "asyncio.create_subprocess_exec",
    *(f"os.{n}" for n in ("execv", "execve", "execvp", "execvpe", "execl", "execle", "execlp", "execlpe",
                          "spawnv", "spawnve", "spawnvp", "spawnvpe", "posix_spawn", "posix_spawnp")),
}
SHELL_RUNNERS = {"os.system", "os.popen", "asyncio.create_subprocess_shell", "subprocess.getoutput",
                 "subprocess.getstatusoutput"}
LOOKUPS = {"shutil.which"}


@dataclass(frozen=True)
class Use:
    program: str
    where: str   # path:line
    how: str     # "runs" or "looks up"


@dataclass
class Inventory:
    uses: list[Use] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)  # "path:line: why"

    def programs(self) -> dict[str, list[Use]]:
        out: dict[str, list[Use]] = {}
        for u in self.uses:
            out.setdefault(u.program, []).append(u)
        return dict(sorted(out.items()))

    def extend(self, other: "Inventory") -> None:
        self.uses += other.uses
        self.unresolved += other.unresolved


def setup_programs(text: str | None = None) -> dict[str, str]:
    """{program: Debian package} from the PROGRAMS table of scripts/setup-system.sh."""
    text = SETUP.read_text() if text is None else text
    m = re.search(r'^PROGRAMS="\n(.*?)^"$', text, re.S | re.M)
    if not m:
        raise ValueError(f"{SETUP} has no PROGRAMS=\"...\" table")
    rows = [ln.split() for ln in m.group(1).splitlines() if ln.strip()]
    bad = [r for r in rows if len(r) != 2]
    if bad:
        raise ValueError(f"PROGRAMS rows must be 'program package': {bad}")
    return {prog: pkg for prog, pkg in rows}


def unprovided(inv: Inventory, setup: dict[str, str] | None = None) -> dict[str, list[Use]]:
    """Programs used that neither setup installs nor a minimal Debian (+ python3, + the venv) has."""
    setup = setup_programs() if setup is None else setup
    known = set(setup) | set(BASE) | set(PREREQUISITES) | set(OWN)
    return {p: uses for p, uses in inv.programs().items() if p not in known}


# ====================================================================== Python

class Unresolved(Exception):
    pass


@dataclass
class Module:
    name: str
    rel: str
    tree: ast.Module
    parents: dict[ast.AST, ast.AST]
    imports: dict[str, str]  # local name -> qualified name ("subprocess", "stackpatch.build.engine.docker_cli")
    functions: dict[str, list[ast.FunctionDef | ast.AsyncFunctionDef]]


def _module_name(rel: str) -> str:
    parts = list(Path(rel).with_suffix("").parts)
    if parts[0] == "src":
        parts = parts[1:]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _load(rel: str, source: str) -> Module:
    tree = ast.parse(source, filename=rel)
    parents: dict[ast.AST, ast.AST] = {}
    imports: dict[str, str] = {}
    functions: dict[str, list] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
        if isinstance(node, ast.Import):
            for a in node.names:
                imports[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                imports[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions.setdefault(node.name, []).append(node)
    return Module(_module_name(rel), rel, tree, parents, imports, functions)


class PyScanner:
    def __init__(self, modules: Iterable[Module]) -> None:
        self.modules = list(modules)
        self.by_name = {m.name: m for m in self.modules}
        self.calls = {m.rel: [n for n in ast.walk(m.tree) if isinstance(n, ast.Call)] for m in self.modules}
        for m in self.modules:  # tests/ and benchmarks/ are on sys.path: `import gitflow_fixtures`
            short = m.name.split(".", 1)[1] if m.name.startswith(("tests.", "benchmarks.")) else None
            if short:
                self.by_name.setdefault(short, m)

    # ---------------------------------------------------------------- names

    def qualname(self, m: Module, func: ast.expr) -> str | None:
        if isinstance(func, ast.Name):
            return m.imports.get(func.id, func.id)
        if isinstance(func, ast.Attribute):
            base = self.qualname(m, func.value)
            return f"{base}.{func.attr}" if base else None
        return None

    def enclosing(self, m: Module, node: ast.AST) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        n = m.parents.get(node)
        while n is not None and not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = m.parents.get(n)
        return n

    def find_function(self, m: Module, func: ast.expr) -> list[tuple[Module, ast.FunctionDef]]:
        """The project function a call's func names (same module, or imported from a scanned module)."""
        if isinstance(func, ast.Name):
            if func.id in m.functions:
                return [(m, f) for f in m.functions[func.id]]
            q = m.imports.get(func.id)
        else:
            q = self.qualname(m, func)
        if not q or "." not in q:
            return []
        mod, _, name = q.rpartition(".")
        target = self.by_name.get(mod)
        if target and name in target.functions:
            return [(target, f) for f in target.functions[name]]
        return []

    # ---------------------------------------------------------------- assignments and parameters

    def _scope_body(self, m: Module, fn) -> Iterator[ast.AST]:
        """Nodes of fn's body (or the module's top level) without descending into nested functions."""
        stack = list(fn.body if fn is not None else m.tree.body)
        while stack:
            n = stack.pop()
            yield n
            for c in ast.iter_child_nodes(n):
                if not isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
                    stack.append(c)

    def assignments(self, m: Module, fn, name: str) -> list[tuple[ast.expr, int | None, bool]]:
        """(value, index in a tuple target or None, augmented) of every assignment to `name` in the scope."""
        out = []
        for n in self._scope_body(m, fn):
            targets: list[ast.expr] = []
            value = None
            aug = isinstance(n, ast.AugAssign)
            if isinstance(n, ast.Assign):
                targets, value = n.targets, n.value
            elif isinstance(n, (ast.AnnAssign, ast.AugAssign)) and n.value is not None:
                targets, value = [n.target], n.value
            elif isinstance(n, ast.NamedExpr):
                targets, value = [n.target], n.value
            elif isinstance(n, (ast.For, ast.AsyncFor, ast.With, ast.AsyncWith)):
                tgts = [n.target] if isinstance(n, (ast.For, ast.AsyncFor)) else [i.optional_vars for i in n.items]
                for t in tgts:
                    if t is not None and any(isinstance(x, ast.Name) and x.id == name for x in ast.walk(t)):
                        raise Unresolved(f"{name!r} is bound by a for/with statement")
                continue
            for t in targets:
                if isinstance(t, ast.Name) and t.id == name:
                    out.append((value, None, aug))
                elif isinstance(t, (ast.Tuple, ast.List)):
                    for i, e in enumerate(t.elts):
                        if isinstance(e, ast.Name) and e.id == name:
                            out.append((value, i, aug))
        return out

    def param(self, fn, name: str) -> tuple[str, int] | None:
        """('pos', index) for a positional parameter, ('var', index of the first vararg) for *name."""
        if fn is None:
            return None
        a = fn.args
        pos = [*a.posonlyargs, *a.args]
        for i, p in enumerate(pos):
            if p.arg == name:
                return ("pos", i)
        if a.vararg and a.vararg.arg == name:
            return ("var", len(pos))
        if any(p.arg == name for p in a.kwonlyargs):
            return ("kw", -1)
        return None

    def call_sites(self, fm: Module, fn) -> Iterator[tuple[Module, ast.Call]]:
        """Calls of fn (defined in module fm): by its name in fm, through `from fm import name`, as
        `fm_alias.name(...)`, or (for a method) as `anything.name(...)`."""
        is_method = isinstance(fm.parents.get(fn), ast.ClassDef)
        for m in self.modules:
            for node in self.calls[m.rel]:
                f = node.func
                if isinstance(f, ast.Name) and f.id == fn.name:
                    if m is fm or self.by_name.get(m.imports.get(f.id, "").rpartition(".")[0]) is fm:
                        yield m, node
                elif isinstance(f, ast.Attribute) and f.attr == fn.name:
                    base = self.qualname(m, f.value)
                    if is_method or (base is not None and self.by_name.get(base) is fm):
                        yield m, node

    def arguments(self, m: Module, fn, name: str) -> list[tuple[Module, ast.expr]]:
        """What callers pass for parameter `name` of fn (its default where a caller passes nothing;
        for *name, the first item of the tuple)."""
        kind, idx = self.param(fn, name)
        a = fn.args
        pos = [*a.posonlyargs, *a.args]
        defaults = dict(zip([p.arg for p in pos][len(pos) - len(a.defaults):], a.defaults))
        defaults.update({p.arg: d for p, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None})
        is_method = bool(pos) and pos[0].arg in ("self", "cls")
        out = []
        for cm, call in self.call_sites(m, fn):
            args = list(call.args)
            idx_eff = idx - 1 if is_method and isinstance(call.func, ast.Attribute) else idx
            kw = next((k.value for k in call.keywords if k.arg == name), None)
            if kw is not None:
                out.append((cm, kw))
                continue
            starred = [i for i, x in enumerate(args) if isinstance(x, ast.Starred)]
            if starred and starred[0] <= idx_eff:
                raise Unresolved(f"{cm.rel}:{call.lineno}: *args passed to {fn.name}() cannot be followed")
            if kind != "kw" and idx_eff < len(args):
                out.append((cm, args[idx_eff]))
            elif name in defaults:
                out.append((m, defaults[name]))
            else:
                raise Unresolved(f"{cm.rel}:{call.lineno}: no argument for {name!r} of {fn.name}()")
        return out

    # ---------------------------------------------------------------- resolving

    def program(self, m: Module, node: ast.AST, expr: ast.expr, index: int | None = None,
                depth: int = 0) -> set[str]:
        """Program names an expression can evaluate to (a path's basename)."""
        if depth > 12:
            raise Unresolved("resolution too deep")
        fn = self.enclosing(m, node)
        d = depth + 1
        if index is not None:
            if isinstance(expr, (ast.Tuple, ast.List)) and index < len(expr.elts):
                return self.program(m, node, expr.elts[index], None, d)
            if isinstance(expr, ast.Call):
                return self._returns(m, expr, index, d)
            raise Unresolved(f"cannot take item {index} of {ast.unparse(expr)}")
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            name = expr.value.rstrip("/").rsplit("/", 1)[-1]
            if not name or " " in name:
                raise Unresolved(f"{expr.value!r} is not a program name (a shell string?)")
            return {name}
        if isinstance(expr, ast.BoolOp):
            out: set[str] = set()
            for v in expr.values:
                if not (isinstance(v, ast.Constant) and v.value is None):
                    out |= self.program(m, node, v, None, d)
            return out
        if isinstance(expr, ast.IfExp):
            return self.program(m, node, expr.body, None, d) | self.program(m, node, expr.orelse, None, d)
        if isinstance(expr, ast.Attribute) and self.qualname(m, expr) == "sys.executable":
            return {"python3"}
        if isinstance(expr, ast.Call):
            q = self.qualname(m, expr.func)
            if q in LOOKUPS and expr.args:
                return self.program(m, node, expr.args[0], None, d)
            if q in ("str", "os.fspath", "pathlib.Path", "Path") and len(expr.args) == 1:
                return self.program(m, node, expr.args[0], None, d)
            if isinstance(expr.func, ast.Attribute) and expr.func.attr == "with_name" and expr.args:
                return self.program(m, node, expr.args[0], None, d)
            return self._returns(m, expr, None, d)
        if isinstance(expr, ast.Name):
            return self._name(m, node, fn, expr.id, d, argv=False)
        raise Unresolved(f"cannot resolve {ast.unparse(expr)}")

    def _returns(self, m: Module, call: ast.Call, index: int | None, depth: int) -> set[str]:
        targets = self.find_function(m, call.func)
        if not targets:
            raise Unresolved(f"cannot resolve the program {ast.unparse(call)} returns")
        out: set[str] = set()
        for tm, f in targets:
            rets = [n for n in self._scope_body(tm, f) if isinstance(n, ast.Return) and n.value is not None]
            if not rets:
                raise Unresolved(f"{f.name}() returns nothing")
            for r in rets:
                out |= self.program(tm, r, r.value, index, depth)
        return out

    def _name(self, m: Module, node: ast.AST, fn, name: str, depth: int, argv: bool) -> set[str]:
        """Resolve a variable: every assignment in its function (not the one being resolved), plus what
        callers pass when it is a parameter; else a module global, else what it is imported as."""
        out: set[str] = set()
        found = False
        for scope in ([fn, None] if fn is not None else [None]):
            for value, idx, aug in self.assignments(m, scope, name):
                if value is node or any(x is node for x in ast.walk(value)):
                    continue  # `cli = cli or docker_cli()`: the other values of cli count
                found = True
                if aug:
                    if argv:
                        continue  # argv += [...] keeps argv[0]
                    raise Unresolved(f"{name!r} is built with +=")
                if argv and idx is None:
                    out |= self.argv0(m, value, value, depth)
                else:
                    out |= self.program(m, value, value, idx, depth)
            param = self.param(scope, name) if scope is not None else None
            if param:
                found = True
                for cm, arg in self.arguments(m, scope, name):
                    if isinstance(arg, ast.Constant) and arg.value is None:
                        continue
                    if argv and param[0] != "var":
                        out |= self.argv0(cm, arg, arg, depth)
                    else:  # a value, or the first item of *args
                        out |= self.program(cm, arg, arg, None, depth)
            if found:
                return out
        q = m.imports.get(name)
        if q and "." in q:
            mod, _, attr = q.rpartition(".")
            target = self.by_name.get(mod)
            if target is not None:
                anchor = target.tree.body[0] if target.tree.body else target.tree
                return self._name(target, anchor, None, attr, depth, argv)
        raise Unresolved(f"cannot find where {name!r} is set")

    def argv0(self, m: Module, node: ast.AST, expr: ast.expr, depth: int = 0) -> set[str]:
        """Programs of an argv expression (a list whose first item is the program)."""
        if depth > 12:
            raise Unresolved("resolution too deep")
        d = depth + 1
        if isinstance(expr, (ast.List, ast.Tuple)):
            if not expr.elts:
                raise Unresolved("empty argv")
            first = expr.elts[0]
            if isinstance(first, ast.Starred):
                return self.argv0(m, node, first.value, d)
            progs = self.program(m, node, first, None, d)
            if "git" in progs and len(expr.elts) > 1:
                second = expr.elts[1]
                if isinstance(second, ast.Constant) and second.value in GIT_EXTERNAL:
                    progs = progs | {GIT_EXTERNAL[second.value]}
            return progs
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
            return self.argv0(m, node, expr.left, d)
        if isinstance(expr, ast.Call) and self.find_function(m, expr.func):
            out: set[str] = set()
            for tm, f in self.find_function(m, expr.func):
                for r in self._scope_body(tm, f):
                    if isinstance(r, ast.Return) and r.value is not None:
                        out |= self.argv0(tm, r.value, r.value, d)
            return out
        if isinstance(expr, ast.Name):
            return self._name(m, node, self.enclosing(m, node), expr.id, d, argv=True)
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            raise Unresolved(f"a command string {expr.value[:40]!r}: pass an argv list")
        raise Unresolved(f"cannot resolve the argv {ast.unparse(expr)[:60]}")

    # ---------------------------------------------------------------- the scan

    def scan(self) -> Inventory:
        inv = Inventory()
        for m in self.modules:
            for node in self.calls[m.rel]:
                q = self.qualname(m, node.func)
                where = f"{m.rel}:{node.lineno}"
                if q in SHELL_RUNNERS or (q in RUNNERS and any(
                        k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                        for k in node.keywords)):
                    inv.unresolved.append(f"{where}: {q} runs a shell string: pass an argv list")
                    continue
                if q in LOOKUPS:
                    how, arg = "looks up", (node.args[0] if node.args else None)
                elif q in RUNNERS:
                    how = "runs"
                    arg = node.args[0] if node.args else next(
                        (k.value for k in node.keywords if k.arg in ("args", "file", "path", "program")), None)
                else:
                    continue
                if arg is None:
                    inv.unresolved.append(f"{where}: {q} without a program")
                    continue
                if isinstance(arg, ast.Starred):  # create_subprocess_exec(*argv)
                    how_argv = True
                    arg = arg.value
                else:
                    how_argv = False
                try:
                    if how_argv:
                        progs = self.argv0(m, node, arg)
                    elif how == "looks up" or q.startswith(("os.exec", "os.spawn", "os.posix_spawn",
                                                          "asyncio.create_subprocess_exec")):
                        progs = self.program(m, node, arg)
                        if q == "asyncio.create_subprocess_exec" and "git" in progs and len(node.args) > 1:
                            second = node.args[1]
                            if isinstance(second, ast.Constant) and second.value in GIT_EXTERNAL:
                                progs |= {GIT_EXTERNAL[second.value]}
                    else:
                        progs = self.argv0(m, node, arg)
                        progs |= self._wrapped_git(m, node, arg)
                except Unresolved as e:
                    inv.unresolved.append(f"{where}: {e}")
                    continue
                inv.uses += [Use(p, where, how) for p in sorted(progs)]
        return inv

    def _wrapped_git(self, m: Module, node: ast.Call, arg: ast.expr) -> set[str]:
        """subprocess.run(args) inside `def sh(*args)`: callers' `sh("git", "flow", ...)` need git-flow."""
        fn = self.enclosing(m, node)
        if not (isinstance(arg, ast.Name) and fn is not None and fn.args.vararg and fn.args.vararg.arg == arg.id):
            return set()
        k = len([*fn.args.posonlyargs, *fn.args.args])
        out: set[str] = set()
        for cm, call in self.call_sites(m, fn):
            a = call.args
            if len(a) > k + 1 and isinstance(a[k], ast.Constant) and a[k].value == "git" \
                    and isinstance(a[k + 1], ast.Constant) and a[k + 1].value in GIT_EXTERNAL:
                out.add(GIT_EXTERNAL[a[k + 1].value])
        return out


def scan_python(sources: dict[str, str]) -> Inventory:
    """{relative path: source} -> what those modules run and look up."""
    return PyScanner(_load(rel, src) for rel, src in sources.items()).scan()


# ====================================================================== shell

KEYWORDS = {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}", "time",
            "function", "in", "esac", "[[", "]]"}
BUILTINS = {"echo", "printf", "read", "export", "local", "declare", "typeset", "readonly", "shift", "exit",
            "return", "set", "unset", "trap", "cd", "pwd", "source", ".", "eval", "true", "false", "test",
            "[", ":", "wait", "kill", "break", "continue", "let", "getopts", "hash", "type", "ulimit",
            "umask", "alias", "builtin", "mapfile", "readarray", "pushd", "popd", "shopt", "jobs", "disown"}
_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\[[^]]*\])?\+?=")
_OPS = ("&&", "||", ";;", "|&", ";", "|", "&", "(", ")", "\n")


def _balanced(text: str, i: int, open_: str, close: str) -> int:
    """Index just past the `close` matching the `open_` before text[i] (quotes respected)."""
    depth = 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "'":
            i = text.index("'", i + 1) + 1
            continue
        if c == '"':
            i = _dquote_end(text, i + 1)
            continue
        if c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError(f"unbalanced {open_}{close}")


def _dquote_end(text: str, i: int) -> int:
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            return i + 1
        if text.startswith("$(", i) and not text.startswith("$((", i):
            i = _balanced(text, i + 2, "(", ")")
            continue
        i += 1
    raise ValueError("unterminated double quote")


def _substitutions(seg: str) -> list[str]:
    """The $(...) command substitutions anywhere in seg (quoted or not), outermost first."""
    out = []
    i = 0
    while (m := re.compile(r"\$\((?!\()").search(seg, i)) is not None:
        end = _balanced(seg, m.end(), "(", ")")
        out.append(seg[m.end():end - 1])
        i = end
    return out


def tokenize(text: str) -> tuple[list[str], list[str]]:
    """(tokens, command substitutions). Tokens are words (raw, quotes kept) and the operators of _OPS;
    redirections, comments and heredoc bodies are dropped."""
    tokens: list[str] = []
    subs: list[str] = []
    heredocs: list[tuple[str, bool]] = []
    word = ""
    i, n = 0, len(text)

    def flush() -> None:
        nonlocal word
        if word:
            tokens.append(word)
            word = ""

    def read_word(j: int) -> tuple[str, int]:
        """A whole word starting at j (used for redirection targets and heredoc delimiters)."""
        while j < n and text[j] in " \t":
            j += 1
        w = ""
        while j < n and text[j] not in " \t\n;&|()<>":
            if text[j] in "'\"":
                end = text.index("'", j + 1) + 1 if text[j] == "'" else _dquote_end(text, j + 1)
                w += text[j:end]
                j = end
            else:
                w += text[j]
                j += 1
        return w, j

    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n:
            if text[i + 1] == "\n":
                i += 2  # a line continuation
                continue
            word += text[i:i + 2]
            i += 2
            continue
        if c == "#" and not word:
            while i < n and text[i] != "\n":
                i += 1
            continue
        if c == "'":
            end = text.index("'", i + 1) + 1
            word += text[i:end]
            i = end
            continue
        if c == '"':
            end = _dquote_end(text, i + 1)
            seg = text[i:end]
            subs += _substitutions(seg)  # substitutions inside double quotes run too
            word += seg
            i = end
            continue
        if text.startswith("$((", i):
            end = _balanced(text, i + 3, "(", ")")
            word += text[i:end + 1]
            i = end + 1
            continue
        if text.startswith("$(", i):
            end = _balanced(text, i + 2, "(", ")")
            subs.append(text[i + 2:end - 1])
            word += text[i:end]
            i = end
            continue
        if text.startswith("${", i):
            end = _balanced(text, i + 2, "{", "}")
            word += text[i:end]
            i = end
            continue
        if c == "`":
            end = text.index("`", i + 1)
            subs.append(text[i + 1:end])
            word += text[i:end + 1]
            i = end + 1
            continue
        if c in "<>" or (c == "&" and text.startswith("&>", i)):
            if word.isdigit():
                word = ""  # a file descriptor: 2>&1
            flush()
            op = next(o for o in ("<<<", "<<-", "<<", "&>>", "&>", ">>", ">&", "<&", ">|", "<>", ">", "<")
                      if text.startswith(o, i))
            i += len(op)
            target, i = read_word(i)
            if op in ("<<", "<<-"):
                heredocs.append((target.strip("'\""), op == "<<-"))
            continue
        if c in " \t":
            flush()
            i += 1
            continue
        if c == "\n":
            flush()
            tokens.append("\n")
            i += 1
            for delim, strip in heredocs:  # skip the bodies of the heredocs opened on this line
                while i < n:
                    j = text.find("\n", i)
                    line = text[i:j if j >= 0 else n]
                    i = (j + 1) if j >= 0 else n
                    if (line.lstrip("\t") if strip else line) == delim:
                        break
            heredocs = []
            continue
        op = next((o for o in _OPS if text.startswith(o, i)), None)
        if op is not None and not (op == "(" and word.endswith("=")):
            flush()
            tokens.append(op)
            i += len(op)
            continue
        if c == "(" and word.endswith("="):  # an array: a=(x "$(cmd)")
            end = _balanced(text, i + 1, "(", ")")
            subs += _substitutions(text[i:end])
            word += text[i:end]
            i = end
            continue
        word += c
        i += 1
    flush()
    return tokens, subs


def _commands(tokens: list[str]) -> Iterator[list[str]]:
    cur: list[str] = []
    for t in tokens:
        if t in _OPS:
            if cur:
                yield cur
            cur = []
            if t in ("(", ")", ";;"):
                yield [t]
        else:
            cur.append(t)
    if cur:
        yield cur


def _unquote(word: str) -> str:
    return re.sub(r"""['"]""", "", word)


@dataclass
class ShellScript:
    rel: str
    text: str
    inv: Inventory = field(default_factory=Inventory)

    def scan(self) -> Inventory:
        tokens, subs = tokenize(self.text)
        nested = []  # the commands of every $(...), however deep
        while subs:
            t, more = tokenize(subs.pop())
            nested.append(list(_commands(t)))
            subs += more
        top = list(_commands(tokens))
        self.assigns = self._assignments(top + [c for cmds in nested for c in cmds])
        self.functions, runners = self._functions(top)
        self._walk(top, runners)
        for cmds in nested:
            self._walk(cmds, runners)
        return self.inv

    def _assignments(self, cmds: list[list[str]]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for words in cmds:
            while words and words[0] in KEYWORDS:
                words = words[1:]
            start = 1 if words and words[0] in ("local", "declare", "export", "readonly", "typeset") else 0
            for w in words[start:]:
                if not _ASSIGN.match(w):
                    break
                name, _, value = w.partition("=")
                out.setdefault(name.rstrip("+"), []).append(value)
            if words and words[0] == "read":  # read -r a b: set from input, not resolvable
                for w in words[1:]:
                    if not w.startswith("-"):
                        out.setdefault(w, []).append("<read>")
            if len(words) >= 2 and words[0] == "for":
                out.setdefault(words[1], []).append("<for>")
        return out

    def _functions(self, cmds: list[list[str]]) -> tuple[set[str], dict[str, int]]:
        """Functions the script defines, and those that run their own arguments ("$@") after N shifts."""
        names: set[str] = set()
        runners: dict[str, int] = {}
        current: str | None = None
        depth = 0
        shifts = 0
        prev: list[list[str]] = []
        for words in cmds:
            prev.append(words)
            if words == [")"] and len(prev) >= 3 and prev[-2] == ["("] and prev[-3] and \
                    re.match(r"^[A-Za-z_][\w-]*$", prev[-3][-1]):
                fname = prev[-3][-1]
                names.add(fname)
                if current is None:
                    current, depth, shifts = fname, 0, 0
                continue
            if current is not None:
                depth += words.count("{") - words.count("}")
                if words and words[0] == "shift":
                    shifts += int(words[1]) if len(words) > 1 and words[1].isdigit() else 1
                if words and _unquote(words[0]) in ("$@", "${@}"):
                    runners[current] = shifts
                if depth <= 0 and "}" in words:
                    current = None
        return names, runners

    def _resolve(self, word: str, seen: frozenset[str] = frozenset()) -> set[str]:
        w = _unquote(word)
        m = re.fullmatch(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", w)
        if m:
            name = m.group(1)
            if name in seen or name not in self.assigns:
                raise Unresolved(f"cannot find where ${name} is set")
            out: set[str] = set()
            for v in self.assigns[name]:
                if v.startswith("<"):
                    raise Unresolved(f"${name} is set by {v[1:-1]}")
                out |= self._resolve(v, seen | {name})
            return out
        m = re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-(.*)\}", w)  # ${X:-default}: X is the user's override
        if m:
            return self._resolve(m.group(1), seen)
        if "$(" in w or "`" in w:
            raise Unresolved(f"the command {w[:40]!r} is computed")
        last = w.rstrip("/").rsplit("/", 1)[-1]
        if "$" in last or not last:
            raise Unresolved(f"cannot resolve {w[:40]!r}")
        return {last}

    def _walk(self, cmds: list[list[str]], runners: dict[str, int]) -> None:
        in_case = False
        pattern = False  # in a case, between `in` or `;;` and the `)` that ends a pattern
        for words in cmds:
            if words == [";;"]:
                pattern = in_case
                continue
            if words == [")"]:
                pattern = False
                continue
            if words == ["("]:
                continue
            if in_case and words[:1] == ["esac"]:
                in_case = pattern = False
                continue
            if in_case and pattern:
                continue  # a case pattern: `--repo` of `--repo)`
            i = 0
            while i < len(words) and (words[i] in KEYWORDS or _ASSIGN.match(words[i])):
                i += 1
            if i >= len(words):
                continue
            w = words[i]
            if w == "case":
                in_case, pattern = True, True
                continue
            if w == "for":
                continue  # for x in ...: the words are not commands
            self._command(words[i:], runners)

    def _command(self, words: list[str], runners: dict[str, int]) -> None:
        where = f"{self.rel}"
        w = _unquote(words[0])
        if w in ("command", "exec", "builtin"):
            args = [a for a in words[1:] if not a.startswith("-")]
            if w == "command" and len(words) > 1 and words[1] in ("-v", "-V"):
                self._use(args[0] if args else "", where, "looks up")
                return
            if args:
                self._command(args, runners)
            return
        if w in ("time", "nohup", "setsid", "env", "timeout", "nice"):
            self._use(words[0], where, "runs")
            rest = [a for a in words[1:] if not a.startswith("-") and "=" not in a]
            if w == "timeout" and rest:
                rest = rest[1:]
            if rest:
                self._command(rest, runners)
            return
        if w in BUILTINS:
            return
        if w in self.functions:
            if w in runners:
                k = runners[w] + 1
                if len(words) > k:
                    self._command(words[k:], runners)
            return
        if w in ("$@", "${@}"):
            return  # the runner function's callers are followed instead
        self._use(words[0], where, "runs")

    def _use(self, word: str, where: str, how: str) -> None:
        try:
            progs = self._resolve(word)
        except Unresolved as e:
            self.inv.unresolved.append(f"{where}: {e}")
            return
        for p in sorted(progs):
            if p in self.functions or p in BUILTINS:
                continue
            self.inv.uses.append(Use(p, where, how))


def scan_shell(sources: dict[str, str]) -> Inventory:
    inv = Inventory()
    for rel, text in sources.items():
        inv.extend(ShellScript(rel, text).scan())
    return inv


# ====================================================================== the project

def project_sources() -> tuple[dict[str, str], dict[str, str]]:
    py = {}
    for d in PY_DIRS:
        for p in sorted((ROOT / d).rglob("*.py")):
            if "template" in p.relative_to(ROOT).parts:
                continue  # the example app runs inside its image, not on this machine
            py[str(p.relative_to(ROOT))] = p.read_text()
    sh = {str(p.relative_to(ROOT)): p.read_text() for g in SH_GLOBS for p in sorted(ROOT.glob(g))}
    return py, sh


def project_inventory() -> Inventory:
    py, sh = project_sources()
    inv = scan_python(py)
    inv.extend(scan_shell(sh))
    return inv


if __name__ == "__main__":
    inv = project_inventory()
    setup = setup_programs()
    for prog, uses in inv.programs().items():
        src = ("setup-system.sh: " + setup[prog] if prog in setup else "base: " + BASE[prog] if prog in BASE
               else "prerequisite" if prog in PREREQUISITES else "own" if prog in OWN else "NOT PROVIDED")
        places = sorted({u.where.split(":")[0] for u in uses})
        print(f"{prog:16} {src:32} {', '.join(places)}")
    for u in inv.unresolved:
        print(f"UNRESOLVED {u}")
    sys.exit(1 if unprovided(inv, setup) else 0)  # unresolved calls: see EXPLAINED in tests/test_programs.py
