"""Turn hyperas-style ``{{...}}`` templates in a function's source into a hyperopt search space.

A user writes ``model(x_train, y_train, x_test, y_test)`` as a plain function whose source contains
templates such as ``Dense({{choice([64, 128])}})`` or ``batch_size={{choice([32, 64])}}``. This module

1. reads the source (``inspect.getsource``: scripts, modules and IPython/Jupyter cells, whose
   sources IPython keeps in ``linecache``),
2. finds every ``{{...}}`` at the text level (string literals and comments are skipped), checks that
   it is a known distribution call and reports a syntax error with the template text and line,
3. names each one from where it stands (``Dense_units``, ``Dropout_rate``, ``batch_size``; repeated
   names get ``_1``, ``_2``, ...),
4. rewrites it as ``_elephas_space['Dense_units']`` and compiles the functions inside a factory
   ``_elephas_build(_elephas_space) -> model`` whose code points at a synthetic file holding the
   original sources, so tracebacks show the user's lines.

``from hyperas... import ...`` statements inside the functions are dropped (hyperas 0.4.1 does not
import under Keras 3, and the templates no longer need it).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import itertools
import logging
import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from elephas.hyperparam import distributions as dists
from elephas.hyperparam.trial import register_source

logger = logging.getLogger(__name__)

SPACE_VAR = "_elephas_space"
FACTORY_NAME = "_elephas_build"
_PLACEHOLDER = "_elephas_tpl_{}_"
_PLACEHOLDER_RE = re.compile(r"^_elephas_tpl_(\d+)_$")
_QUOTES = ("'", '"')
_counter = itertools.count()


class TemplateError(ValueError):
    """A ``{{...}}`` template that cannot be turned into a search-space entry."""


@dataclass(frozen=True)
class Template:
    """One ``{{...}}`` template found in the source.

    Attributes:
        name: Its search-space name (``'Dense_units'``).
        distribution: The distribution it stands for.
        text: The template as written (``'{{choice([64, 128])}}'``).
        function: Name of the function it is in.
        filename: Source file (or IPython cell name).
        lineno: Line in that file.
    """

    name: str
    distribution: dists.Distribution
    text: str
    function: str
    filename: str
    lineno: int


@dataclass
class TemplatedModel:
    """The model function with its templates turned into a search space.

    Attributes:
        space: ``{name: hyperopt expression}``, one entry per template.
        templates: The templates, in source order.
        factory: ``factory(values) -> model function`` with every template replaced by its value.
        model_name: Name of the user's model function.
        n_args: Positional parameters of the model function (the number of arrays ``data()`` must
            return), as ``(required, maximum)``; ``maximum`` is ``None`` with ``*args``.
        filename: Synthetic file name the compiled code refers to.
        source: The original sources (model first, then the helpers), the synthetic file's text.
    """

    space: dict[str, Any]
    templates: list[Template]
    factory: Callable[[dict[str, Any]], Callable[..., Any]]
    model_name: str
    n_args: tuple[int, int | None]
    filename: str
    source: str
    arg_names: list[str] = field(default_factory=list)

    def register_source(self) -> None:
        """Make tracebacks through the compiled code show the original lines (``linecache``)."""
        register_source(self.filename, self.source)


@dataclass
class _FunctionSource:
    fn: Callable[..., Any]
    text: str  # dedented
    filename: str
    first_line: int  # line of the source's first line in ``filename``


def read_source(fn: Callable[..., Any], role: str = "model") -> _FunctionSource:
    """The dedented source of ``fn`` with where it comes from.

    Args:
        fn: A function defined with ``def`` in a file, module or notebook cell.
        role: What the function is for, used in error messages (``'model'``, ``'data'``, ...).

    Returns:
        The source and its location.

    Raises:
        TypeError: ``fn`` is not a plain Python function.
        ValueError: Its source cannot be read.
    """
    if not inspect.isfunction(fn):
        raise TypeError(
            f"Expected the {role} function as a plain Python function defined with def. "
            f"Received: {role}={fn!r} ({type(fn).__name__})."
        )
    try:
        lines, first_line = inspect.getsourcelines(fn)
    except (OSError, TypeError) as exc:
        raise ValueError(
            f"Could not read the source of {role} function {fn.__name__}(): {exc}. Templates are read "
            "from the source, so define the function in a .py file, a module or a notebook cell "
            "(not with exec/eval), or pass a plain hyperopt search space with space=."
        ) from exc
    filename = inspect.getsourcefile(fn) or fn.__code__.co_filename
    return _FunctionSource(fn, textwrap.dedent("".join(lines)), filename, max(first_line, 1))


# --------------------------------------------------------------------------------------------
# text level: find the templates


def _skip_string(text: str, i: int) -> int:
    """Index just past the string literal starting with the quote at ``i``."""
    quote = text[i]
    triple = text.startswith(quote * 3, i)
    delim = quote * 3 if triple else quote
    j = i + len(delim)
    n = len(text)
    while j < n:
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if text.startswith(delim, j):
            return j + len(delim)
        if c == "\n" and not triple:
            return j
        j += 1
    return n


def _skip_comment(text: str, i: int) -> int:
    end = text.find("\n", i)
    return len(text) if end < 0 else end


def _template_end(text: str, start: int, where: Callable[[int], str]) -> int:
    """Index just past the ``}}`` closing the template that opens at ``start``."""
    stack: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    j = start + 2
    n = len(text)
    while j < n:
        c = text[j]
        if c in _QUOTES:
            j = _skip_string(text, j)
            continue
        if c == "#":
            j = _skip_comment(text, j)
            continue
        if c in "([{":
            stack.append(c)
        elif c in pairs:
            if not stack and text.startswith("}}", j):
                return j + 2
            if not stack or stack[-1] != pairs[c]:
                snippet = text[start : j + 1]
                raise TemplateError(
                    f"Invalid hyper-parameter template {snippet!r} at {where(start)}: unbalanced "
                    f"'{c}'. Expected a template like {{{{choice([32, 64])}}}}."
                )
            stack.pop()
        j += 1
    snippet = text[start : start + 60]
    raise TemplateError(
        f"Unterminated hyper-parameter template at {where(start)}: {snippet!r}. "
        "Expected '}}' after the distribution, as in {{uniform(0, 1)}}."
    )


def find_templates(text: str, where: Callable[[int], str] | None = None) -> list[tuple[int, int]]:
    """``(start, end)`` character spans of the ``{{...}}`` templates in ``text``.

    String literals (f-strings included) and comments are skipped, so ``"{{x}}"`` is not a template.

    Args:
        text: Python source.
        where: Turns an offset into a location for error messages.

    Returns:
        The spans in source order.
    """
    where = where or (lambda pos: f"line {text.count(chr(10), 0, pos) + 1}")
    spans = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in _QUOTES:
            i = _skip_string(text, i)
        elif c == "#":
            i = _skip_comment(text, i)
        elif text.startswith("{{", i):
            end = _template_end(text, i, where)
            spans.append((i, end))
            i = end
        else:
            i += 1
    return spans


def _parse_distribution(inner: str, text: str, namespace: dict[str, Any], where: str) -> dists.Distribution:
    """Parse and evaluate the inside of one template into a :class:`Distribution`."""
    try:
        expr = ast.parse("(" + inner + "\n)", mode="eval").body
    except SyntaxError as exc:
        raise TemplateError(
            f"Invalid hyper-parameter template {text} at {where}: {exc.msg}. "
            "Expected a distribution call such as {{choice([32, 64])}} or {{uniform(0, 1)}}."
        ) from None
    func = expr.func if isinstance(expr, ast.Call) else None
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    if name not in dists.DISTRIBUTIONS:
        raise TemplateError(
            f"Unknown hyper-parameter template {text} at {where}. Expected a call of one of "
            f"{list(dists.DISTRIBUTIONS)}, e.g. {{{{choice([32, 64])}}}}."
        )
    scope = dict(namespace)

    def value(node: ast.expr) -> Any:
        code = compile(ast.fix_missing_locations(ast.Expression(node)), "<template>", "eval")
        return eval(code, scope)  # noqa: S307 - the user's own template arguments

    try:
        args = [value(a) for a in expr.args]
        kwargs = {k.arg: value(k.value) for k in expr.keywords if k.arg is not None}
    except Exception as exc:
        raise TemplateError(
            f"Could not evaluate the arguments of template {text} at {where}: "
            f"{type(exc).__name__}: {exc}. Template arguments are evaluated when the search space "
            "is built: use constants and module-level names, not the function's local variables."
        ) from None
    try:
        result = getattr(dists, name)(*args, **kwargs)
    except TypeError as exc:
        raise TemplateError(f"Invalid hyper-parameter template {text} at {where}: {exc}") from None
    if not isinstance(result, dists.Distribution):
        raise TemplateError(
            f"Invalid hyper-parameter template {text} at {where}: templates take no label "
            f"(elephas names them). Received a label {args[0]!r}; write {{{{{name}(...)}}}} without it."
        )
    return result


# --------------------------------------------------------------------------------------------
# AST level: names, rewriting, compiling


def _callee_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _target_name(target: ast.expr) -> str | None:
    if isinstance(target, ast.Name):
        return target.id
    if isinstance(target, ast.Attribute):
        return target.attr
    if isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Constant):
        if isinstance(target.slice.value, str):
            return target.slice.value
    return None


class _Resolver:
    """Finds the positional parameter names of callables, for ``Dense({{...}})`` -> ``units``."""

    _FALLBACK_MODULES = ("keras.layers", "keras.optimizers", "keras.callbacks", "keras.regularizers")

    def __init__(self, namespace: dict[str, Any], trees: Sequence[ast.AST]):
        self.namespace = namespace
        self.imports: dict[str, tuple[str, str]] = {}
        for tree in trees:
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and not _is_hyperas(node.module):
                    for alias in node.names:
                        self.imports[alias.asname or alias.name] = (node.module, alias.name)

    def _lookup(self, func: ast.expr, name: str) -> Any:
        if isinstance(func, (ast.Name, ast.Attribute)) and "(" not in ast.unparse(func):
            try:
                return eval(ast.unparse(func), dict(self.namespace))  # noqa: S307
            except Exception:  # a local name (model.add, ...): try the imports below
                pass
        if name in self.imports:
            module, attr = self.imports[name]
            try:
                return getattr(importlib.import_module(module), attr)
            except Exception:
                pass
        for module in self._FALLBACK_MODULES:
            try:
                obj = getattr(importlib.import_module(module), name, None)
            except Exception:
                obj = None
            if obj is not None:
                return obj
        return None

    def param(self, func: ast.expr, name: str, index: int) -> str | None:
        obj = self._lookup(func, name)
        if obj is None:
            return None
        try:
            params = list(inspect.signature(obj).parameters.values())
        except (TypeError, ValueError):
            return None
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if positional and positional[0].name in ("self", "cls"):
            positional = positional[1:]
        return positional[index].name if index < len(positional) else None


def _base_name(node: ast.AST, parents: dict[ast.AST, ast.AST], resolver: _Resolver, dist: str) -> str:
    """The readable name of the template at ``node`` from its surroundings."""
    cur = node
    fallback = None
    while True:
        parent = parents.get(cur)
        if parent is None or isinstance(parent, (ast.FunctionDef, ast.Lambda, ast.ClassDef)):
            break
        if isinstance(parent, ast.keyword):
            call = parents[parent]
            if parent.arg is None:
                cur = call
                continue
            callee = _callee_name(call.func)  # type: ignore[attr-defined]
            if callee and callee[0].isupper():
                return f"{callee}_{parent.arg}"
            return parent.arg
        if isinstance(parent, ast.Call) and any(a is cur for a in parent.args):
            index = next(i for i, a in enumerate(parent.args) if a is cur)
            callee = _callee_name(parent.func)
            if callee:
                pname = resolver.param(parent.func, callee, index)
                if pname or callee[0].isupper():  # Dense_units, make_layer_width
                    return f"{callee}_{pname or f'arg{index}'}"
                fallback = fallback or f"{callee}_arg{index}"  # int(...), max(...): look further
            cur = parent
            continue
        if isinstance(parent, ast.Assign):
            name = _target_name(parent.targets[0]) if len(parent.targets) == 1 else None
            return name or fallback or dist
        if isinstance(parent, (ast.AnnAssign, ast.AugAssign, ast.NamedExpr)):
            return _target_name(parent.target) or fallback or dist
        if isinstance(parent, ast.Dict) and any(v is cur for v in parent.values):
            key = parent.keys[[i for i, v in enumerate(parent.values) if v is cur][0]]
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                return key.value
        if isinstance(parent, ast.stmt):
            break
        cur = parent
    return fallback or dist


def _is_hyperas(module: str) -> bool:
    return module == "hyperas" or module.startswith("hyperas.")


class _Rewriter(ast.NodeTransformer):
    """Placeholders -> ``_elephas_space['name']``; ``hyperas`` imports dropped."""

    def __init__(self, names: dict[int, str]):
        self.names = names

    def visit_Name(self, node: ast.Name) -> ast.AST:
        match = _PLACEHOLDER_RE.match(node.id)
        if not match:
            return node
        new = ast.Subscript(
            value=ast.Name(id=SPACE_VAR, ctx=ast.Load()),
            slice=ast.Constant(self.names[int(match.group(1))]),
            ctx=ast.Load(),
        )
        return ast.copy_location(new, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST | None:
        if node.module and _is_hyperas(node.module) and node.level == 0:
            return None
        return node

    def visit_Import(self, node: ast.Import) -> ast.AST | None:
        node.names = [a for a in node.names if not _is_hyperas(a.name)]
        return node if node.names else None

    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        body = getattr(node, "body", None)
        if isinstance(body, list) and not body:  # a body that held only a hyperas import
            body.append(ast.copy_location(ast.Pass(), node))
        return node


def _function_node(tree: ast.Module, src: _FunctionSource, role: str) -> ast.FunctionDef:
    node = tree.body[0] if tree.body else None
    if not isinstance(node, ast.FunctionDef):
        raise TypeError(
            f"Expected the {role} function to be defined with def (not a lambda or async def). "
            f"Received: {src.fn.__name__} from {src.filename}."
        )
    node.decorator_list = []
    return node


def _check_returns(node: ast.FunctionDef, src: _FunctionSource) -> None:
    """Static check that the model function returns ``{'loss': ..., 'status': ...}``."""
    returns = []
    stack: list[ast.AST] = list(node.body)
    while stack:
        cur = stack.pop()
        if isinstance(cur, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(cur, ast.Return):
            returns.append(cur)
        stack.extend(ast.iter_child_nodes(cur))
    expected = "{'loss': ..., 'status': STATUS_OK, 'model': model}"
    if not returns:
        raise ValueError(
            f"The model function {node.name}() must return {expected}. Received: a function "
            f"without a return statement ({src.filename}:{src.first_line})."
        )
    for ret in returns:
        if isinstance(ret.value, ast.Dict):
            keys = {k.value for k in ret.value.keys if isinstance(k, ast.Constant)}
            if None in ret.value.keys:  # {**other}: cannot tell statically
                continue
            missing = [k for k in ("loss", "status") if k not in keys]
            if missing:
                raise ValueError(
                    f"The model function {node.name}() must return {expected}. Received: a dict "
                    f"without {missing} at {src.filename}:{src.first_line + ret.lineno - 1} "
                    f"(keys {sorted(map(str, keys))})."
                )
        elif ret.value is None or (isinstance(ret.value, ast.Constant) and ret.value.value is None):
            raise ValueError(
                f"The model function {node.name}() must return {expected}. Received: a bare "
                f"return at {src.filename}:{src.first_line + ret.lineno - 1}."
            )


def _positional_arity(node: ast.FunctionDef) -> tuple[int, int | None, list[str]]:
    args = node.args
    positional = args.posonlyargs + args.args
    required = len(positional) - len(args.defaults)
    maximum = None if args.vararg else len(positional)
    return required, maximum, [a.arg for a in positional]


def parse_model(
    model: Callable[..., Any],
    functions: Sequence[Callable[..., Any]] = (),
    check_returns: bool = True,
) -> TemplatedModel:
    """Read ``model`` (and helper ``functions``), turn its templates into a search space and compile it.

    Args:
        model: The hyperas-style model function.
        functions: Helper functions the model calls; their sources are compiled with it, so they may
            hold templates too.
        check_returns: Check statically that the model returns a dict with ``loss`` and ``status``.

    Returns:
        The search space and the compiled factory.

    Raises:
        TemplateError: A template is malformed or unknown.
        ValueError: A source cannot be read or the model does not return ``loss``/``status``.
        SyntaxError: The rewritten function does not parse.

    Example:
        >>> tm = parse_model(model)  # doctest: +SKIP
        >>> sorted(tm.space)  # doctest: +SKIP
        ['Dense_units', 'Dropout_rate', 'Dropout_rate_1', 'batch_size']
    """
    sources = [read_source(model, "model")] + [read_source(f, "helper") for f in functions]
    namespace: dict[str, Any] = {}
    for src in reversed(sources):  # the model's globals win over the helpers'
        namespace.update(src.fn.__globals__)

    filename = f"<elephas-hyperparam-{next(_counter)}:{model.__name__}>"
    synthetic: list[str] = []
    offset = 0
    trees: list[ast.FunctionDef] = []
    found: list[tuple[int, dists.Distribution, str, _FunctionSource, int]] = []
    for src in sources:
        text = src.text

        def where(pos: int, src: _FunctionSource = src, text: str = text) -> str:
            return f"{src.filename}:{src.first_line + text.count(chr(10), 0, pos)}"

        spans = find_templates(text, where)
        pieces, last = [], 0
        for start, end in spans:
            k = len(found)
            ttext = text[start:end]
            dist = _parse_distribution(text[start + 2 : end - 2], ttext, namespace, where(start))
            found.append((k, dist, ttext, src, src.first_line + text.count("\n", 0, start)))
            placeholder = _PLACEHOLDER.format(k)
            newlines = ttext.count("\n")
            pieces.append(text[last:start])
            pieces.append(f"({placeholder}{chr(10) * newlines})" if newlines else placeholder)
            last = end
        pieces.append(text[last:])
        rewritten = "".join(pieces)
        try:
            tree = ast.parse(rewritten, filename=src.filename)
        except SyntaxError as exc:
            line = src.first_line + (exc.lineno or 1) - 1
            bad = text.splitlines()[(exc.lineno or 1) - 1] if text else ""
            raise SyntaxError(f"{exc.msg} in {src.fn.__name__}() at {src.filename}:{line}: {bad.strip()!r}") from None
        node = _function_node(tree, src, "model" if src is sources[0] else "helper")
        ast.increment_lineno(node, offset)
        trees.append(node)
        synthetic.append(text if text.endswith("\n") else text + "\n")
        offset += synthetic[-1].count("\n")

    model_node = trees[0]
    if check_returns:
        _check_returns(model_node, sources[0])

    # names, in source order; repeated names get _1, _2, ...
    resolver = _Resolver(namespace, trees)
    parents: dict[ast.AST, ast.AST] = {}
    placeholders: dict[int, ast.Name] = {}
    for tree in trees:
        for parent in ast.walk(tree):
            for child in ast.iter_child_nodes(parent):
                parents[child] = parent
                if isinstance(child, ast.Name):
                    match = _PLACEHOLDER_RE.match(child.id)
                    if match:
                        placeholders[int(match.group(1))] = child
    names: dict[int, str] = {}
    used: set[str] = set()
    seen: dict[str, int] = {}
    templates: list[Template] = []
    for k, dist, ttext, src, lineno in found:
        if k not in placeholders:
            raise TemplateError(f"Template {ttext} at {src.filename}:{lineno} is not an expression.")
        base = _base_name(placeholders[k], parents, resolver, dist.name)
        count = seen.get(base, 0)
        name = base if count == 0 else f"{base}_{count}"
        while name in used:
            count += 1
            name = f"{base}_{count}"
        seen[base] = count + 1
        used.add(name)
        names[k] = name
        templates.append(Template(name, dist, ttext, src.fn.__name__, src.filename, lineno))

    rewriter = _Rewriter(names)
    body = [rewriter.visit(node) for node in trees[1:]] + [rewriter.visit(model_node)]
    factory_tree = ast.parse(f"def {FACTORY_NAME}({SPACE_VAR}):\n    pass\n")
    factory_def = factory_tree.body[0]
    assert isinstance(factory_def, ast.FunctionDef)
    factory_def.body = body + [ast.Return(value=ast.Name(id=model_node.name, ctx=ast.Load()))]
    ast.fix_missing_locations(factory_tree)

    source = "".join(synthetic)
    register_source(filename, source)
    code = compile(factory_tree, filename, "exec")
    scope = dict(namespace)
    exec(code, scope)  # noqa: S102 - the user's own functions, rewritten
    factory = scope[FACTORY_NAME]
    required, maximum, arg_names = _positional_arity(model_node)
    space = {t.name: t.distribution.to_hyperopt(t.name) for t in templates}
    logger.debug("templates of %s(): %s", model.__name__, [(t.name, t.text) for t in templates])
    return TemplatedModel(space, templates, factory, model.__name__, (required, maximum), filename, source, arg_names)


def has_templates(fn: Callable[..., Any]) -> bool:
    """Whether the source of ``fn`` holds any ``{{...}}`` template (``False`` if it has no source)."""
    try:
        src = read_source(fn)
    except (TypeError, ValueError):
        return False
    return bool(find_templates(src.text))
