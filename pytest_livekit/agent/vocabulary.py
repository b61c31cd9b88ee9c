"""The offline STT's vocabulary: one domain language model per run, from what the suite declares.

pocketsphinx with its generic language model gets about one word in five wrong even on clean
espeak-ng speech; restricted to a *domain* model of the phrases callers say, it recognises them
reliably (see :mod:`pytest_livekit.offline.stt`). Users should never have to build that model
by hand, so the plugin builds it once per run from three declared sources:

* the ``script`` lines of the call types (``[tool.pytest_livekit.call_types.<name>]``);
* the ``livekit_stt_phrases`` setting: phrases, and/or text files of phrases (one per line,
  ``#`` starts a comment);
* the string literals the collected test modules pass to ``say()``, ``barge_in()``,
  ``backchannel()`` and ``play(..., text=)`` (found with :mod:`ast`, never by running them).

The same scan checks, at collection, the caller input a call would refuse at run time (see
:func:`caller_input_problems`): an empty ``say("")``, text with characters the offline TTS cannot
say, and ``play("turn.wav")`` paths that are missing or not usable audio. Each is reported with
its ``file:line`` and the message the call itself would raise.

Every call of the run decodes with the *same* model. It is never built from the utterance about
to be spoken: a model of one sentence "recognises" that sentence from almost any audio, which
would make WER meaningless. What offline WER then measures is the audio path and the signal
conditions through a real recogniser with a known vocabulary, not the production STT's accuracy.

Tests that want an open vocabulary use the generic model instead (``model="generic"``, see
:data:`GENERIC_MODEL`): pocketsphinx's own US English model, many times less accurate.

Pure library: no pytest import; :mod:`pytest_livekit.offline.stt` (which loads livekit-agents)
is imported only when phrases are normalised or a model is built.

Example:
    >>> vocab = SuiteVocabulary.collect(
    ...     call_types=call_types, stt_phrases=["thank you goodbye"], test_paths=["tests"], root=root
    ... )
    >>> stt = SphinxSTT(language_model=vocab.language_model(cache_dir))   # domain, built once
    >>> stt = SphinxSTT(language_model=vocab.language_model(cache_dir, model="generic"))  # None
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from pytest_livekit.errors import ConfigError

if TYPE_CHECKING:
    from pytest_livekit.offline.stt import SphinxSTT

__all__ = [
    "CALLER_AUDIO_METHODS",
    "CALLER_TEXT_METHODS",
    "AudioLiteral",
    "CallerInputError",
    "DOMAIN_MODEL",
    "GENERIC_MODEL",
    "MODEL_CHOICES",
    "Phrase",
    "SayLiteral",
    "SayScan",
    "SkippedCall",
    "SuiteVocabulary",
    "VocabularyError",
    "caller_input_problems",
    "collect_say_literals",
    "load_stt_phrases",
    "parse_model_choice",
    "scan_test_files",
]

ModelChoice = Literal["domain", "generic"]

DOMAIN_MODEL: Final = "domain"
"""Decode with the run's domain language model (the default)."""

GENERIC_MODEL: Final = "generic"
"""Decode with pocketsphinx's generic, open-vocabulary US English model.

For tests whose caller says things the suite does not declare, or that want to see how a
recogniser without domain knowledge copes. It is far less accurate (about one word in five
wrong on clean espeak speech) and loads in about 0.3-0.5 s instead of 0.05 s.
"""

MODEL_CHOICES: Final = (DOMAIN_MODEL, GENERIC_MODEL)
"""The accepted values of a model choice."""

CALLER_TEXT_METHODS: Final[Mapping[str, tuple[int | None, str | None]]] = {
    "say": (0, None),
    "barge_in": (0, None),
    "backchannel": (0, "mm-hmm"),
    "play": (None, None),
}
"""Caller methods of :class:`~pytest_livekit.call.livekit_call.LivekitCall` whose text is spoken to the agent.

Name -> (position of the ``text`` argument, or ``None`` if it is keyword-only; the text used when
the call passes none). ``play(path, *, text=...)`` plays a recording whose transcript is ``text``;
``backchannel()`` says ``"mm-hmm"`` by default (kept equal to ``LivekitCall.backchannel``'s
default by a unit test). ``synthesize`` is left out on purpose: TTS objects have a method of
that name, and their text is agent speech.
"""

CALLER_AUDIO_METHODS: Final[Mapping[str, tuple[int, str]]] = {"play": (0, "path")}
"""Caller methods that play an audio file: name -> (position, keyword) of the path argument."""

# Text the call refuses before speaking it: checked at collection for these methods only
# (``play``'s text is the transcript of a recording, never synthesised).
_SPOKEN_TEXT_METHODS = frozenset({"say", "barge_in", "backchannel"})
# Context managers and decorators under which a test expects its caller input to fail.
_EXPECTS_ERROR_CALLS = frozenset({"raises", "assertRaises", "assertRaisesRegex"})

_SESSION_HINT = "session"  # AgentSession.say() speaks *agent* text; it is not caller vocabulary

_FORMAT_VERSION = 1
# Part of the digest: a change to how the model is built must not reuse old cached models.
_BUILDER_TAG = "pytest-livekit domain lm v1"

#: File names a directory given to :func:`scan_test_files` is searched for (pytest's defaults,
#: plus conftest.py, where shared fixtures may speak).
_TEST_FILE_PATTERNS = ("test_*.py", "*_test.py", "conftest.py")
_SKIPPED_DIRS = frozenset({"__pycache__", "node_modules", "site-packages", "venv", "build", "dist"})


class VocabularyError(ConfigError, ValueError):
    """The suite's STT vocabulary is unusable: a bad phrase file, or words the dictionary lacks.

    Also a :class:`ValueError`, like the errors of
    :func:`~pytest_livekit.offline.stt.build_domain_lm`.
    """


class CallerInputError(VocabularyError):
    """Tests pass the caller literal input the call would refuse at run time (an empty
    ``say("")``, text the offline TTS cannot say, an unusable ``play()`` file); raised at
    collection by :meth:`SuiteVocabulary.collect`, listing each with its ``file:line``.
    """


# -- finding the phrases tests say ----------------------------------------------------------------
@dataclass(frozen=True)
class SayLiteral:
    """A string literal a test passes to a caller method."""

    text: str
    """The literal, as written (not normalised)."""
    path: str
    """The file, as given or relative to the scan's root."""
    line: int
    """1-based line of the call."""
    method: str
    """``say``, ``barge_in``, ``backchannel`` or ``play``."""
    default: bool = False
    """True when the call passed no text and this is the method's default (``backchannel()``)."""
    expects_error: bool = False
    """True when the call is inside ``with pytest.raises(...)``, a ``try`` with ``except``, or an
    ``xfail`` test: the test may mean to pass text the call refuses."""

    @property
    def where(self) -> str:
        """Where it came from, e.g. ``"tests/test_refund.py:12 say()"``."""
        suffix = " default text" if self.default else ""
        return f"{self.path}:{self.line} {self.method}(){suffix}"


@dataclass(frozen=True)
class AudioLiteral:
    """An audio file path a test passes, as a literal, to a caller method (``play("turn.wav")``)."""

    audio: str
    """The path as written."""
    path: str
    """The test file, as given or relative to the scan's root."""
    line: int
    """1-based line of the call."""
    method: str
    """``play``."""
    folder: str
    """The test file's folder (absolute): the ``livekit_call`` fixtures resolve relative paths
    against it."""
    conftest: bool = False
    """True in a ``conftest.py``: a relative path there resolves against the folder of whichever
    test uses the fixture, so it cannot be checked for existence."""
    expects_error: bool = False
    """As :attr:`SayLiteral.expects_error`."""

    @property
    def where(self) -> str:
        """Where it came from, e.g. ``"tests/test_refund.py:12 play('turn.wav')"``."""
        return f"{self.path}:{self.line} {self.method}({self.audio!r})"


@dataclass(frozen=True)
class SkippedCall:
    """A caller-method call whose text is not a literal, so the scan could not read it."""

    path: str
    """The file, as given or relative to the scan's root."""
    line: int
    """1-based line of the call."""
    method: str
    """The method called."""
    reason: str
    """Why, e.g. ``"f-string"``, ``"variable 'line'"``, ``"expression"``."""

    def __str__(self) -> str:
        """E.g. ``"tests/test_x.py:14 say(): f-string"``."""
        return f"{self.path}:{self.line} {self.method}(): {self.reason}"


@dataclass(frozen=True)
class SayScan:
    """What :func:`scan_test_files` found."""

    literals: tuple[SayLiteral, ...] = ()
    """Texts found, in file order then line order (duplicates kept: each is one call site)."""
    skipped: tuple[SkippedCall, ...] = ()
    """Calls whose text could not be read statically (f-strings, variables, expressions)."""
    unparseable: tuple[tuple[str, str], ...] = ()
    """``(path, reason)`` of files that could not be read or parsed; they were skipped."""
    files: int = 0
    """Files parsed successfully."""
    audio: tuple[AudioLiteral, ...] = ()
    """Literal audio paths passed to :data:`CALLER_AUDIO_METHODS`, in file then line order."""

    @property
    def texts(self) -> list[str]:
        """The literal texts, first occurrence order, exact duplicates removed."""
        return list(dict.fromkeys(lit.text for lit in self.literals))


def collect_say_literals(paths: Iterable[str | os.PathLike[str]], *, root: str | os.PathLike[str] | None = None) -> list[str]:
    """The string literals test modules pass to ``say()``, ``barge_in()``, ``backchannel()``, ``play(text=)``.

    A convenience over :func:`scan_test_files`, which also reports where each literal is, the
    calls it had to skip (f-strings, variables it cannot resolve) and the files it could not
    parse; use that to warn about them.

    Args:
        paths: Test modules, or directories searched for ``test_*.py``, ``*_test.py`` and
            ``conftest.py``.
        root: Paths in reports are made relative to it (no effect on the result here).

    Returns:
        The texts as written (not normalised), in file then line order, duplicates removed.
    """
    return scan_test_files(paths, root=root).texts


def scan_test_files(
    paths: Iterable[str | os.PathLike[str]], *, root: str | os.PathLike[str] | None = None
) -> SayScan:
    """Find the texts test modules speak as the caller, statically, with :mod:`ast`.

    Recognised: calls of :data:`CALLER_TEXT_METHODS` on any receiver (``call.say(...)``,
    ``c.barge_in(...)``), except receivers whose name contains ``session`` (livekit's
    ``AgentSession.say()`` is *agent* speech). The text is the first positional argument or
    ``text=`` (``play`` only takes ``text=``). Besides string literals, the scan resolves, flow-
    insensitively, names bound only to string literals: module constants (``REFUND = "..."``),
    local assignments, ``for phrase in ["a", "b"]`` (or over a constant list) and
    ``@pytest.mark.parametrize`` values. ``for line in livekit_call_type.script`` is neither
    found nor skipped: call type scripts are collected from the call types. Anything else is
    reported in :attr:`SayScan.skipped`. Literal ``play()`` paths (and names bound only to
    literals) go to :attr:`SayScan.audio`; computed paths are left to run time, unreported.

    A file that cannot be read or parsed is reported in :attr:`SayScan.unparseable` and
    skipped; this function never raises for a bad file (collection must not crash on it).

    Args:
        paths: Test modules, or directories searched recursively for ``test_*.py``,
            ``*_test.py`` and ``conftest.py`` (hidden directories and virtualenvs skipped).
        root: Paths in the result are relative to it when inside it.

    Returns:
        The literals found, the calls skipped and the files that could not be parsed.
    """
    root_path = Path(root).resolve() if root is not None else None
    literals: list[SayLiteral] = []
    skipped: list[SkippedCall] = []
    audio: list[AudioLiteral] = []
    unparseable: list[tuple[str, str]] = []
    files = 0
    for path in _expand_paths(paths):
        shown = _display_path(path, root_path)
        try:
            source = path.read_bytes()
            # ast.parse honours a PEP 263 coding line in bytes; RecursionError: absurd nesting.
            tree = ast.parse(source, filename=str(path))
        except (OSError, SyntaxError, ValueError, UnicodeDecodeError, RecursionError) as exc:
            unparseable.append((shown, f"{type(exc).__name__}: {exc}"))
            continue
        files += 1
        finder = _CallFinder(shown, tree, path)
        found, missed = finder.run()
        literals.extend(found)
        skipped.extend(missed)
        audio.extend(finder.audio)
    return SayScan(tuple(literals), tuple(skipped), tuple(unparseable), files, tuple(audio))


def _expand_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files to scan: files as given, directories searched; each file once, in a stable order."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]  # one path, not an iterable of characters
    out: dict[Path, None] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found: set[Path] = set()
            for pattern in _TEST_FILE_PATTERNS:
                found.update(p for p in path.rglob(pattern) if not _in_skipped_dir(p, path))
            for p in sorted(found):
                out.setdefault(p, None)
        else:
            # A missing file is kept: the scan reports it as unreadable instead of ignoring it.
            out.setdefault(path, None)
    return list(out)


def _in_skipped_dir(path: Path, base: Path) -> bool:
    """Whether ``path`` lies in a hidden, cache or virtualenv directory below ``base``."""
    parts = path.relative_to(base).parts[:-1]
    return any(p.startswith(".") or p in _SKIPPED_DIRS for p in parts)


def _display_path(path: Path, root: Path | None) -> str:
    """``path`` relative to ``root`` when inside it, else as given."""
    if root is not None:
        try:
            return path.resolve().relative_to(root).as_posix()
        except ValueError:
            pass
    return path.as_posix()


# A name's possible values: strings it may hold ("str") or sequences of strings it may hold,
# flattened ("seq"); "script" for the items of a call type's script (``for line in
# livekit_call_type.script``), which the vocabulary takes from the call types themselves;
# None when some binding is not a literal (unknown).
@dataclass(frozen=True)
class _Value:
    kind: Literal["str", "seq", "script"]
    strings: tuple[str, ...]


_Scope = dict[str, "_Value | None"]
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
# Nodes that open a new scope: their insides are not bindings of the enclosing scope.
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.ListComp, ast.SetComp,
           ast.DictComp, ast.GeneratorExp)


class _CallFinder:
    """Walks one module: resolves names per scope, records caller-method calls."""

    def __init__(self, path: str, tree: ast.Module, source: Path | None = None) -> None:
        self._path = path
        self._tree = tree
        self._source = source
        self._found: list[SayLiteral] = []
        self._skipped: list[SkippedCall] = []
        self.audio: list[AudioLiteral] = []
        """Literal audio paths found (after :meth:`run`), in line order."""

    def run(self) -> tuple[list[SayLiteral], list[SkippedCall]]:
        """Scan the module; returns the literals found and the calls skipped, in line order."""
        module_scope = _bindings(self._tree.body, {}, ())
        self._walk(self._tree.body, [module_scope])
        self._found.sort(key=lambda lit: lit.line)
        self._skipped.sort(key=lambda s: s.line)
        self.audio.sort(key=lambda a: a.line)
        return self._found, self._skipped

    def _walk(self, nodes: Iterable[ast.AST], scopes: list[_Scope], expecting: bool = False) -> None:
        """Visit ``nodes`` and their children, entering function scopes as Python does.

        ``expecting``: the nodes run where the test expects an error (see
        :attr:`SayLiteral.expects_error`).
        """
        for node in nodes:
            if isinstance(node, _FUNCTIONS):
                params = _parametrized(node, scopes)
                args = node.args
                names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
                names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
                local = _bindings(node.body, {n: params.get(n) for n in names}, scopes)
                # Decorators and defaults run in the enclosing scope.
                self._walk([*node.decorator_list, *args.defaults, *(d for d in args.kw_defaults if d)], scopes, expecting)
                xfail = any(_mentions(deco, "xfail") for deco in node.decorator_list)
                self._walk(node.body, [*scopes, local], expecting or xfail)
                continue
            if isinstance(node, ast.ClassDef):
                # A class body is a scope its methods do not see: they resolve names in the
                # module, so methods are walked with the enclosing scopes only.
                class_scope = _bindings(node.body, {}, scopes)
                xfail = expecting or any(_mentions(deco, "xfail") for deco in node.decorator_list)
                for child in node.body:
                    self._walk([child], scopes if isinstance(child, _FUNCTIONS) else [*scopes, class_scope], xfail)
                continue
            if isinstance(node, (ast.With, ast.AsyncWith)):
                raises = any(
                    isinstance(item.context_expr, ast.Call)
                    and _receiver_name(item.context_expr.func) in _EXPECTS_ERROR_CALLS
                    for item in node.items
                )
                self._walk(node.items, scopes, expecting)
                self._walk(node.body, scopes, expecting or raises)
                continue
            if isinstance(node, _TRY_NODES):
                self._walk(node.body, scopes, expecting or bool(node.handlers))
                self._walk([*node.handlers, *node.orelse, *node.finalbody], scopes, expecting)
                continue
            if isinstance(node, ast.Call):
                self._check_call(node, scopes, expecting)
            self._walk(ast.iter_child_nodes(node), scopes, expecting)

    def _check_call(self, call: ast.Call, scopes: list[_Scope], expecting: bool = False) -> None:
        """Record ``call`` if it is a caller-method call with readable text or a literal audio path."""
        func = call.func
        if not isinstance(func, ast.Attribute) or func.attr not in CALLER_TEXT_METHODS:
            return
        if _SESSION_HINT in _receiver_name(func.value).lower():
            return
        method = func.attr
        if method in CALLER_AUDIO_METHODS:
            self._check_audio(call, method, scopes, expecting)
        position, default = CALLER_TEXT_METHODS[method]
        arg: ast.expr | None = None
        for kw in call.keywords:
            if kw.arg == "text":
                arg = kw.value
            elif kw.arg is None:  # **kwargs may carry the text
                self._skip(call, method, "**kwargs")
                return
        if arg is None and position is not None:
            positional = call.args[position] if len(call.args) > position else None
            if any(isinstance(a, ast.Starred) for a in call.args[: position + 1]):
                self._skip(call, method, "*args")
                return
            arg = positional
        if arg is None:
            if default is not None:
                self._found.append(SayLiteral(default, self._path, call.lineno, method, default=True))
            return  # play() without text: nothing known is said
        if isinstance(arg, ast.Constant) and arg.value is None:
            return  # play(text=None)
        for text in self._resolve(arg, call, method, scopes):
            self._found.append(SayLiteral(text, self._path, call.lineno, method, expects_error=expecting))

    def _check_audio(self, call: ast.Call, method: str, scopes: list[_Scope], expecting: bool) -> None:
        """Record the literal path(s) of ``play(path)``; anything else is left to run time, silently
        (a computed path is normal: ``tmp_path / "x.wav"``, ``Path(__file__).parent / ...``).
        """
        if self._source is None:
            return
        position, keyword = CALLER_AUDIO_METHODS[method]
        arg = next((kw.value for kw in call.keywords if kw.arg == keyword), None)
        if arg is None and len(call.args) > position and not any(
            isinstance(a, ast.Starred) for a in call.args[: position + 1]
        ):
            arg = call.args[position]
        if isinstance(arg, ast.Call) and _receiver_name(arg.func) in ("Path", "PurePath") and len(arg.args) == 1 \
                and not arg.keywords:
            arg = arg.args[0]  # play(Path("turn.wav"))
        paths: tuple[str, ...] = ()
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            paths = (arg.value,)
        elif isinstance(arg, ast.Name):
            value = _lookup(arg.id, scopes)
            if value is not None and value.kind == "str":
                paths = value.strings
        folder = str(self._source.resolve().parent)
        conftest = self._source.name == "conftest.py"
        for audio in paths:
            self.audio.append(AudioLiteral(audio, self._path, call.lineno, method, folder, conftest, expecting))

    def _resolve(self, arg: ast.expr, call: ast.Call, method: str, scopes: list[_Scope]) -> list[str]:
        """The strings ``arg`` may be, or ``[]`` after recording why it cannot be read."""
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return [arg.value]
        if isinstance(arg, ast.JoinedStr):
            self._skip(call, method, "f-string")
            return []
        if isinstance(arg, ast.Name):
            value = _lookup(arg.id, scopes)
            if value is not None and value.kind == "str":
                return list(value.strings)
            if value is not None and value.kind == "script":
                return []  # a call type's script line: collected from the call types, not here
            self._skip(call, method, f"variable {arg.id!r}")
            return []
        self._skip(call, method, "expression")
        return []

    def _skip(self, call: ast.Call, method: str, reason: str) -> None:
        self._skipped.append(SkippedCall(self._path, call.lineno, method, reason))


_TRY_NODES = (ast.Try, ast.TryStar)


def _mentions(node: ast.expr, name: str) -> bool:
    """Whether an expression names ``name`` anywhere (``pytest.mark.xfail(reason=...)``)."""
    return any(
        (isinstance(n, ast.Attribute) and n.attr == name) or (isinstance(n, ast.Name) and n.id == name)
        for n in ast.walk(node)
    )


def _receiver_name(node: ast.expr) -> str:
    """The last name of a receiver: ``self.session`` -> ``session``, ``call`` -> ``call``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _lookup(name: str, scopes: Sequence[_Scope]) -> _Value | None:
    """Resolve ``name`` from the innermost scope outwards (``None``: unknown or unbound)."""
    for scope in reversed(scopes):
        if name in scope:
            return scope[name]
    return None


def _literal(node: ast.expr | None, scopes: Sequence[_Scope]) -> _Value | None:
    """The value of an expression made of string literals, or ``None``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return _Value("str", (node.value,))
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_literal(e, scopes) for e in node.elts]
        if items and all(i is not None and i.kind == "str" for i in items):
            return _Value("seq", tuple(s for i in items if i is not None for s in i.strings))
        return None
    if isinstance(node, ast.Name):
        return _lookup(node.id, scopes)
    return None


def _merge(scope: _Scope, name: str, value: _Value | None) -> None:
    """Add a binding: values of the same kind are pooled; anything else makes the name unknown."""
    if name not in scope:
        scope[name] = value
        return
    old = scope[name]
    if old is None or value is None or old.kind != value.kind:
        scope[name] = None
    else:
        scope[name] = _Value(old.kind, tuple(dict.fromkeys((*old.strings, *value.strings))))


def _bindings(body: Sequence[ast.stmt], initial: Mapping[str, _Value | None], outer: Sequence[_Scope]) -> _Scope:
    """Bindings of one scope's body (flow-insensitive), nested scopes excluded.

    Names bound more than once keep all their literal values, so ``say(x)`` yields each; one
    non-literal binding makes the name unknown.
    """
    scope: _Scope = dict(initial)
    # Right-hand sides are resolved against the enclosing scopes and what this one bound so far
    # (``PHRASES = [...]`` then ``for p in PHRASES``), in source order.
    for node in _scope_nodes(body):
        chain = [*outer, scope]
        if isinstance(node, ast.Assign):
            value = _literal(node.value, chain)
            for target in node.targets:
                for name in _target_names(target):
                    _merge(scope, name, value if isinstance(target, ast.Name) else None)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            _merge(scope, node.target.id, _literal(node.value, chain) if node.value else None)
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            seq = _literal(node.iter, chain)
            item = _Value("str", seq.strings) if seq is not None and seq.kind == "seq" else None
            if isinstance(node.iter, ast.Attribute) and node.iter.attr == "script":
                item = _Value("script", ())
            for name in _target_names(node.target):
                _merge(scope, name, item if isinstance(node.target, ast.Name) else None)
        elif isinstance(node, ast.AugAssign):
            for name in _target_names(node.target):
                _merge(scope, name, None)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for withitem in node.items:
                if withitem.optional_vars is not None:
                    for name in _target_names(withitem.optional_vars):
                        _merge(scope, name, None)
        elif isinstance(node, ast.NamedExpr):
            _merge(scope, node.target.id, None)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                _merge(scope, (alias.asname or alias.name).split(".")[0], None)
        elif isinstance(node, (*_FUNCTIONS, ast.ClassDef)):
            _merge(scope, node.name, None)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            _merge(scope, node.name, None)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            for name in node.names:
                scope.pop(name, None)  # resolved further out
    return scope


def _scope_nodes(body: Sequence[ast.stmt]) -> Iterator[ast.AST]:
    """Every node of ``body`` in source order, not descending into nested scopes (but yielding them)."""
    stack: list[ast.AST] = list(reversed(body))
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, _SCOPES):
            continue
        stack.extend(reversed(list(ast.iter_child_nodes(node))))


def _target_names(target: ast.expr) -> list[str]:
    """Names an assignment target binds (``a``, ``a, b``, ``*rest``); attributes bind none."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for e in target.elts for n in _target_names(e)]
    if isinstance(target, ast.Starred):
        return _target_names(target.value)
    return []


def _parametrized(func: ast.FunctionDef | ast.AsyncFunctionDef, scopes: Sequence[_Scope]) -> dict[str, _Value | None]:
    """Values of ``@pytest.mark.parametrize`` arguments of ``func`` that are all string literals.

    Handles ``"text"`` with a list of strings and ``"text, expected"`` / ``["text", "expected"]``
    with a list of tuples; ``pytest.param(...)`` entries are unwrapped.
    """
    out: dict[str, _Value | None] = {}
    for deco in func.decorator_list:
        if not (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute)
                and deco.func.attr == "parametrize" and len(deco.args) >= 2):
            continue
        names_node, values_node = deco.args[0], deco.args[1]
        names: list[str] = []
        if isinstance(names_node, ast.Constant) and isinstance(names_node.value, str):
            names = [n.strip() for n in names_node.value.split(",") if n.strip()]
        elif isinstance(names_node, (ast.List, ast.Tuple)):
            names = [e.value for e in names_node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        rows = values_node.elts if isinstance(values_node, (ast.List, ast.Tuple)) else None
        for i, name in enumerate(names):
            if rows is None:
                out[name] = None
                continue
            strings: list[str] = []
            for row in rows:
                if isinstance(row, ast.Call) and _receiver_name(row.func) == "param":
                    cells: list[ast.expr] = list(row.args)
                elif len(names) == 1:
                    cells = [row]
                elif isinstance(row, (ast.Tuple, ast.List)):
                    cells = list(row.elts)
                else:
                    cells = []
                value = _literal(cells[i], scopes) if i < len(cells) else None
                if value is None or value.kind != "str":
                    strings = []
                    break
                strings.extend(value.strings)
            out[name] = _Value("str", tuple(dict.fromkeys(strings))) if strings else None
    return out


# -- caller input the call would refuse ----------------------------------------------------------
def caller_input_problems(scan: SayScan, *, root: str | os.PathLike[str] | None = None) -> list[tuple[str, str]]:
    """The literal caller input of a scan that the call would refuse at run time.

    Checked: the text of ``say()``, ``barge_in()`` and ``backchannel()`` (empty, or characters
    the offline TTS cannot say: :func:`pytest_livekit.audio.caller_text_problem`) and the audio
    files of ``play()`` (missing, not audio, too long, truncated, empty or silent:
    :func:`pytest_livekit.audio.check_audio_file`). The messages are the ones the call raises,
    so collection and run time say the same. Calls where the test expects an error
    (:attr:`SayLiteral.expects_error`) are left alone.

    A relative ``play()`` path is looked up where a call may resolve it: the test file's folder
    (``livekit_call``, ``make_livekit_call``), then ``root`` (``livekit_session.new_call``'s
    default); reported missing only when in neither. In a ``conftest.py`` a relative path is
    checked only if found (it resolves against the folder of the test that uses the fixture).

    Args:
        scan: What :func:`scan_test_files` found.
        root: The rootdir.

    Returns:
        ``(where, message)`` pairs in file then line order; ``where`` is e.g.
        ``"tests/test_x.py:12 say()"``.
    """
    from pytest_livekit.audio import caller_text_problem, check_audio_file
    from pytest_livekit.errors import AudioInputError

    problems: list[tuple[str, int, str, str]] = []  # (file, line, where, message)
    text_verdicts: dict[str, str | None] = {}
    for lit in scan.literals:
        if lit.method not in _SPOKEN_TEXT_METHODS or lit.expects_error:
            continue
        if lit.text not in text_verdicts:
            error = caller_text_problem(lit.text)
            text_verdicts[lit.text] = None if error is None else str(error)
        message = text_verdicts[lit.text]
        if message is not None:
            problems.append((lit.path, lit.line, lit.where, message))
    file_verdicts: dict[Path, str | None] = {}
    for audio in scan.audio:
        if audio.expects_error:
            continue
        path = _audio_path(audio, root)
        if path is None:
            continue
        if path not in file_verdicts:
            try:
                check_audio_file(path)
                file_verdicts[path] = None
            except AudioInputError as exc:
                file_verdicts[path] = str(exc)
        message = file_verdicts[path]
        if message is not None:
            problems.append((audio.path, audio.line, audio.where, message))
    problems.sort(key=lambda p: (p[0], p[1]))  # stable: a line's own calls keep their order
    return [(where, message) for _, _, where, message in problems]


def _audio_path(audio: AudioLiteral, root: str | os.PathLike[str] | None) -> Path | None:
    """The file a ``play()`` literal names, as a call would resolve it (see
    :func:`caller_input_problems`); ``None`` when it cannot be known.
    """
    written = Path(audio.audio).expanduser()
    if written.is_absolute():
        return written
    candidates = [Path(audio.folder) / written]
    if root is not None:
        candidates.append(Path(root) / written)
    for candidate in candidates:
        if candidate.exists():
            return candidate
    return None if audio.conftest else candidates[0]


def _problems_message(problems: Sequence[tuple[str, str]], rest: str | None) -> str:
    """One message for every refused caller input (and the vocabulary's own problem, if any)."""
    lines = [
        f"{len(problems)} caller input(s) in the collected tests would fail their call at run time "
        "(each with the message below):"
    ]
    for where, message in problems:
        first, *more = message.splitlines()
        lines.append(f"  {where}: {first}")
        lines.extend(f"      {line}" for line in more)
    if rest:
        lines.append(rest)
    return "\n".join(lines)


# -- the livekit_stt_phrases setting ------------------------------------------------------------
def load_stt_phrases(
    value: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None,
    *,
    root: str | os.PathLike[str] | None = None,
    setting: str = "livekit_stt_phrases",
) -> list[tuple[str, str]]:
    """Read the ``livekit_stt_phrases`` setting into ``(phrase, where it came from)`` pairs.

    The setting is a list whose items are phrases, or paths of text files of phrases; a single
    string or path is one file. An item is a file when it ends in ``.txt`` or names an existing
    file (relative paths resolve against ``root``). In a file: one phrase per line, blank lines
    ignored, ``#`` starts a comment (whole line or end of line).

    Args:
        value: The setting's value (``None`` or empty: no phrases).
        root: Folder relative file paths resolve against (the rootdir); the working directory
            when ``None``.
        setting: The setting's name, for messages.

    Returns:
        The phrases as written, each with its origin: ``"livekit_stt_phrases"`` or
        ``"phrases.txt:3 (livekit_stt_phrases)"``.

    Raises:
        VocabularyError: A file that should hold phrases is missing or unreadable, or an item
            is not a string.
    """
    if value is None:
        return []
    base = Path(root) if root is not None else Path.cwd()
    items: Sequence[Any] = [value] if isinstance(value, (str, os.PathLike)) else value
    single_file = isinstance(value, os.PathLike) or (isinstance(value, str) and _looks_like_file(value, base))
    if isinstance(value, str) and not single_file:
        # A bare string that is no file is one phrase; iterating it would give its letters.
        return [(value, setting)] if value.strip() else []
    out: list[tuple[str, str]] = []
    for item in items:
        if isinstance(item, os.PathLike) or (isinstance(item, str) and _looks_like_file(item, base)):
            out.extend(_read_phrase_file(base / Path(item), setting, base))
        elif isinstance(item, str):
            if item.strip():
                out.append((item, setting))
        else:
            raise VocabularyError(
                f"{setting}: every item must be a phrase or a path of a phrase file, got {item!r}.\n"
                f"Hint: {setting} = [\"where is my order\", \"stt_phrases.txt\"]"
            )
    return out


def _looks_like_file(item: str, base: Path) -> bool:
    """Whether a setting item names a phrase file rather than being a phrase."""
    text = item.strip()
    if not text:
        return False
    if text.lower().endswith(".txt"):
        return True
    try:
        return (base / text).is_file()
    except (OSError, ValueError):  # a phrase too long or odd to be a path
        return False


def _read_phrase_file(path: Path, setting: str, base: Path) -> list[tuple[str, str]]:
    """The phrases of one phrase file, each with ``file:line`` as its origin."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise VocabularyError(
            f"{setting}: cannot read the phrase file {path}: {exc}.\n"
            "Hint: a UTF-8 text file, one phrase per line, '#' for comments; relative paths "
            "are relative to the rootdir."
        ) from None
    shown = _display_path(path, base.resolve())
    out = []
    for number, line in enumerate(lines, start=1):
        phrase = line.split("#", 1)[0].strip()
        if phrase:
            out.append((phrase, f"{shown}:{number} ({setting})"))
    return out


def parse_model_choice(value: str | None) -> ModelChoice:
    """Validate a model choice (a setting or marker value).

    Args:
        value: ``"domain"``, ``"generic"`` (any case, surrounding blanks ignored), or ``None``
            for the default, ``"domain"``.

    Returns:
        ``"domain"`` or ``"generic"``.

    Raises:
        VocabularyError: Any other value.
    """
    if value is None:
        return DOMAIN_MODEL
    choice = str(value).strip().lower()
    if choice == DOMAIN_MODEL:
        return DOMAIN_MODEL
    if choice == GENERIC_MODEL:
        return GENERIC_MODEL
    raise VocabularyError(
        f"unknown STT model {value!r}.\nHint: use 'domain' (the run's vocabulary, the default) or "
        "'generic' (pocketsphinx's open-vocabulary model)."
    )


# -- the vocabulary -------------------------------------------------------------------------------
class _CallTypeLike(Protocol):
    """What the vocabulary needs of a :class:`~pytest_livekit.metrics.thresholds.CallType`."""

    @property
    def name(self) -> str: ...  # noqa: D102

    @property
    def script(self) -> Sequence[str]: ...  # noqa: D102


@dataclass(frozen=True)
class Phrase:
    """One normalised phrase of the vocabulary and every place it was declared."""

    text: str
    """Normalised (:func:`~pytest_livekit.offline.stt.normalize_phrase`): lowercase words."""
    sources: tuple[str, ...]
    """Where it came from, e.g. ``"call type 'refund' script"``, ``"tests/test_x.py:12 say()"``."""


@dataclass(frozen=True)
class SuiteVocabulary:
    """The phrases the run's offline STT model is built from, with their origins.

    Build it with :meth:`collect` (or :meth:`from_phrases`); it is immutable, and
    :meth:`to_json` / :meth:`from_json` carry it to an agent worker process. The language model
    is built by :meth:`build_model`, once per distinct vocabulary: its file name carries
    :attr:`digest`, so every call, process and later run with the same phrases reuses it.
    """

    phrases: tuple[Phrase, ...] = ()
    """Normalised, deduplicated, in declaration order: call type scripts, the setting, tests."""
    scan: SayScan = field(default_factory=SayScan, compare=False, repr=False)
    """The test scan this vocabulary used (skipped calls, unparseable files); not serialised."""

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def collect(
        cls,
        *,
        call_types: Mapping[str, _CallTypeLike] | Iterable[_CallTypeLike] = (),
        stt_phrases: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
        test_paths: Iterable[str | os.PathLike[str]] = (),
        root: str | os.PathLike[str] | None = None,
    ) -> SuiteVocabulary:
        """Gather the suite's phrases from everything it declares.

        Order (which only matters for reading): call type scripts in table order, then
        ``livekit_stt_phrases``, then the tests' literals in file and line order. Each
        normalised phrase appears once, with all its sources.

        Args:
            call_types: The call types (a name -> CallType mapping or the CallTypes); their
                ``script`` lines.
            stt_phrases: The ``livekit_stt_phrases`` setting (see :func:`load_stt_phrases`).
            test_paths: The collected test modules (or directories) to scan for literals (see
                :func:`scan_test_files`).
            root: The rootdir: phrase files resolve and paths are shown relative to it.

        Returns:
            The vocabulary; its :attr:`scan` tells what the test scan skipped.

        Raises:
            VocabularyError: A phrase file is missing or unreadable.
            CallerInputError: The tests pass the caller literal input the call would refuse
                (:func:`caller_input_problems`): the message lists every such input with its
                ``file:line`` and the call's own message, then the rest of the vocabulary's
                missing words, if any.
        """
        from pytest_livekit.audio import caller_text_problem

        entries: list[tuple[str, str]] = []
        types = call_types.values() if isinstance(call_types, Mapping) else call_types
        for call_type in types:
            entries.extend((line, f"call type {call_type.name!r} script") for line in call_type.script)
        entries.extend(load_stt_phrases(stt_phrases, root=root))
        scan = scan_test_files(test_paths, root=root)
        # Text the call refuses is never spoken: it has no place in the vocabulary (its words,
        # e.g. of another script, would only add a "missing word" error about the same line).
        entries.extend(
            (lit.text, lit.where) for lit in scan.literals
            if lit.method not in _SPOKEN_TEXT_METHODS or caller_text_problem(lit.text) is None
        )
        vocabulary = cls(phrases=cls.from_phrases(entries).phrases, scan=scan)
        problems = caller_input_problems(scan, root=root)
        if problems:
            rest = None
            try:
                vocabulary.check()
            except VocabularyError as exc:
                rest = str(exc)
            raise CallerInputError(_problems_message(problems, rest))
        return vocabulary

    @classmethod
    def from_phrases(cls, phrases: Iterable[tuple[str, str] | str], *, source: str = "phrases") -> SuiteVocabulary:
        """A vocabulary of given phrases: normalised, deduplicated in first-seen order.

        Args:
            phrases: Phrases, each a string or a ``(phrase, source)`` pair.
            source: The source of bare-string phrases.

        Returns:
            The vocabulary (phrases that normalise to nothing, like ``"?!"``, are dropped).

        Raises:
            TypeError: If ``phrases`` is a single string.
        """
        if isinstance(phrases, str):
            raise TypeError("phrases must be an iterable of phrases, not a single string")
        from pytest_livekit.offline.stt import normalize_phrase  # loads livekit-agents: only when needed

        merged: dict[str, list[str]] = {}
        for item in phrases:
            text, origin = (item, source) if isinstance(item, str) else item
            normalized = normalize_phrase(text)
            if not normalized:
                continue
            origins = merged.setdefault(normalized, [])
            if origin not in origins:
                origins.append(origin)
        return cls(phrases=tuple(Phrase(t, tuple(o)) for t, o in merged.items()))

    # -- identity --------------------------------------------------------------------------------
    @property
    def texts(self) -> tuple[str, ...]:
        """The normalised phrases, in order."""
        return tuple(p.text for p in self.phrases)

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the phrase set and the model builder's version.

        Sorted, so the same phrases declared in another order (tests reordered, a phrase moved
        between sources) name the same model; sources are not part of it either.
        """
        payload = "\n".join([_BUILDER_TAG, *sorted(self.texts)])
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    # -- checking and building -------------------------------------------------------------------
    def missing_words(self) -> dict[str, list[Phrase]]:
        """Words the pronunciation dictionary lacks, each with the phrases that use it.

        pocketsphinx silently drops such words from a model, so they could never be recognised.

        Returns:
            Word -> phrases containing it, words sorted; empty when all is well.
        """
        from pytest_livekit.offline.stt import dictionary_words

        known = dictionary_words()
        missing: dict[str, list[Phrase]] = {}
        for phrase in self.phrases:
            for word in dict.fromkeys(phrase.text.split()):
                if word not in known:
                    missing.setdefault(word, []).append(phrase)
        return dict(sorted(missing.items()))

    def check(self) -> None:
        """Raise if a word cannot be recognised (see :meth:`missing_words`).

        Raises:
            VocabularyError: Listing each missing word, the phrases using it and where each
                phrase was declared.
        """
        missing = self.missing_words()
        if not missing:
            return
        lines = [
            f"The offline STT vocabulary has {len(missing)} word(s) the pronunciation dictionary "
            "lacks, so the recogniser could never hear them:"
        ]
        for word, phrases in missing.items():
            lines.append(f"  {word!r}:")
            for phrase in phrases:
                lines.append(f"    \"{phrase.text}\" from {'; '.join(phrase.sources)}")
        lines.append(
            "Hint: spell numbers and symbols out as words (\"order one two three four\", not "
            "\"order 1234\") and use common spellings; the dictionary is CMUdict (about 135,000 "
            "English words)."
        )
        raise VocabularyError("\n".join(lines))

    def model_path(self, cache_dir: str | os.PathLike[str]) -> Path:
        """Where :meth:`build_model` puts (or finds) this vocabulary's model."""
        return Path(cache_dir) / f"domain-{self.digest[:16]}.lm"

    def build_model(self, cache_dir: str | os.PathLike[str]) -> Path:
        """The domain language model (ARPA) of these phrases, built once and cached on disk.

        A model already in ``cache_dir`` for the same :attr:`digest` is returned as is, so
        calling this for every call, in every worker process, costs a ``stat``. A new model is
        written to a temporary file and renamed into place, so concurrent builders (xdist
        workers) never read half a file.

        Args:
            cache_dir: Folder of cached models (created if missing).

        Returns:
            The model's path; pass it as ``SphinxSTT(language_model=...)``.

        Raises:
            VocabularyError: The vocabulary is empty, or has words the dictionary lacks.
        """
        path = self.model_path(cache_dir)
        if path.is_file():
            return path
        if not self.phrases:
            raise VocabularyError(
                "The offline STT vocabulary is empty: no call type script, no livekit_stt_phrases "
                "and no literal say() text in the collected tests.\n"
                "Hint: declare what callers say in livekit_stt_phrases, or use the generic model "
                "(model='generic')."
            )
        self.check()
        from pytest_livekit.offline import stt as offline_stt

        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".lm.tmp", dir=path.parent)
        os.close(fd)
        try:
            offline_stt.build_domain_lm(self.texts, tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def language_model(self, cache_dir: str | os.PathLike[str], model: str | None = DOMAIN_MODEL) -> Path | None:
        """The ``language_model`` argument of :class:`~pytest_livekit.offline.stt.SphinxSTT`.

        Args:
            cache_dir: Folder of cached models (see :meth:`build_model`).
            model: ``"domain"`` (default) or ``"generic"`` (see :func:`parse_model_choice`).

        Returns:
            The domain model's path, or ``None`` for the generic model (SphinxSTT's default).

        Raises:
            VocabularyError: Unknown ``model``, or the domain model cannot be built.
        """
        if parse_model_choice(model) == GENERIC_MODEL:
            return None
        return self.build_model(cache_dir)

    def make_stt(self, cache_dir: str | os.PathLike[str], *, model: str | None = DOMAIN_MODEL, **kwargs: Any) -> SphinxSTT:
        """A :class:`~pytest_livekit.offline.stt.SphinxSTT` decoding with this vocabulary.

        Args:
            cache_dir: Folder of cached models (see :meth:`build_model`).
            model: ``"domain"`` (default) or ``"generic"``.
            **kwargs: Other ``SphinxSTT`` arguments (``interim_results``, ``endpoint_silence``, ...).

        Returns:
            The recogniser.
        """
        from pytest_livekit.offline.stt import SphinxSTT

        return SphinxSTT(language_model=self.language_model(cache_dir, model), **kwargs)

    # -- transport -------------------------------------------------------------------------------
    def to_json(self) -> str:
        """Serialise (phrases, sources and digest) for another process; see :meth:`from_json`."""
        return json.dumps(
            {
                "format": _FORMAT_VERSION,
                "digest": self.digest,
                "phrases": [{"text": p.text, "sources": list(p.sources)} for p in self.phrases],
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, data: str | bytes) -> SuiteVocabulary:
        """Read what :meth:`to_json` wrote.

        Args:
            data: The JSON text.

        Returns:
            An equal vocabulary (without :attr:`scan`).

        Raises:
            VocabularyError: Not a vocabulary of a known format, or its digest does not match
                its phrases (a corrupted or hand-edited file).
        """
        try:
            raw = json.loads(data)
            if raw.get("format") != _FORMAT_VERSION:
                raise ValueError(f"unknown format {raw.get('format')!r}")
            phrases = tuple(Phrase(str(p["text"]), tuple(str(s) for s in p["sources"])) for p in raw["phrases"])
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise VocabularyError(f"not a pytest-livekit STT vocabulary: {exc}") from None
        vocab = cls(phrases=phrases)
        if raw.get("digest") not in (None, vocab.digest):
            raise VocabularyError("STT vocabulary file is inconsistent: its digest does not match its phrases")
        return vocab

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_json` to ``path`` (atomically: a reader never sees half a file).

        Returns:
            ``path`` as a :class:`~pathlib.Path`.
        """
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        os.replace(tmp, out)
        return out

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> SuiteVocabulary:
        """Read a vocabulary file written by :meth:`write`.

        Raises:
            VocabularyError: Unreadable or not a vocabulary.
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise VocabularyError(f"cannot read the STT vocabulary file {path}: {exc}") from None
        return cls.from_json(text)

