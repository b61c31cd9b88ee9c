"""Text scoring: the one engine behind every WER and CER the plugin computes.

``assert_asr_accuracy``, the call metrics, the HTML report and the baseline all score a
transcript here, so an assertion and the report can never disagree on the same two texts with the
same options. Normalisation is a chain of jiwer transforms (:meth:`ScoringOptions.transform`),
alignment is jiwer's (``process_words`` / ``process_characters``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "ScoringOptions",
    "TextErrors",
    "WordErrors",
    "character_error_rate",
    "AS_IS",
    "fold_text",
    "normalize_text",
    "pooled_rate",
    "score_text",
    "spell_out_digits",
    "text_error_rate",
    "word_error_rate",
]

_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: Punctuation becomes a space; apostrophes inside words (``don't``) stay, others go.
_PUNCTUATION = {r"[^\w\s']|_": " ", r"(?<!\w)'|'(?!\w)": " "}


@dataclass(frozen=True)
class ScoringOptions:
    r"""How transcripts are normalised before WER/CER; applied identically to both sides.

    The default is the standard scoring normalisation (lowercase, no punctuation, single spaces).

    Example:
        >>> ScoringOptions(normalize_numbers=True, rules=((r"\bokay\b", "ok"),)).apply("Okay, 42!")
        'ok four two'
    """

    fold_case: bool = True
    """Lowercase both texts."""
    strip_punctuation: bool = True
    """Replace punctuation by spaces, keeping apostrophes inside words (``don't``)."""
    normalize_numbers: bool = False
    """Spell every digit out as an English word (``"42"`` -> ``"four two"``), before casing."""
    rules: tuple[tuple[str, str], ...] = ()
    """``(regex, replacement)`` pairs applied with :func:`re.sub`, in order, after the options
    above (so patterns see lowercased, punctuation-free text when those are on)."""

    def __post_init__(self) -> None:
        """Compile the rules once, so a bad pattern fails here and not mid-report.

        Raises:
            re.error: If a rule's pattern is not a valid regular expression.
        """
        for pattern, _ in self.rules:
            re.compile(pattern)

    def transform(self) -> Any:
        """The normalisation as a ``jiwer.Compose`` of jiwer transforms (text in, text out)."""
        return _transform(self)

    def apply(self, text: str) -> str:
        """Normalise ``text``.

        Args:
            text: A reference or a transcript.

        Returns:
            The normalised text, words separated by single spaces.
        """
        return str(self.transform()(text))

    def describe(self) -> str:
        """Human-readable description of the transform, for reports.

        Returns:
            E.g. ``"lowercased; punctuation removed (apostrophes inside words kept); whitespace
            collapsed"``.
        """
        steps: list[str] = []
        if self.normalize_numbers:
            steps.append('digits spelled out as words ("42" -> "four two")')
        if self.fold_case:
            steps.append("lowercased")
        if self.strip_punctuation:
            steps.append("punctuation removed (apostrophes inside words kept)")
        steps.extend(f"regex {p!r} -> {r!r}" for p, r in self.rules)
        steps.append("whitespace collapsed")
        return "; ".join(steps)


@functools.lru_cache(maxsize=64)
def _transform(options: ScoringOptions) -> Any:
    import jiwer

    steps: list[Any] = []
    if options.normalize_numbers:
        steps.append(jiwer.SubstituteRegexes({str(d): f" {w} " for d, w in enumerate(_DIGIT_WORDS)}))
    if options.fold_case:
        steps.append(jiwer.ToLowerCase())
    if options.strip_punctuation:
        steps.append(jiwer.SubstituteRegexes(dict(_PUNCTUATION)))
    for pattern, replacement in options.rules:  # one step per rule: their order is kept
        steps.append(jiwer.SubstituteRegexes({pattern: replacement}))
    steps += [jiwer.RemoveWhiteSpace(replace_by_space=True), jiwer.RemoveMultipleSpaces(), jiwer.Strip()]
    return jiwer.Compose(steps)


def fold_text(
    text: str,
    *,
    fold_case: bool = True,
    strip_punctuation: bool = True,
    normalize_numbers: bool = False,
    rules: tuple[tuple[str, str], ...] = (),
) -> str:
    """:meth:`ScoringOptions.apply` with the options as keywords."""
    return ScoringOptions(fold_case, strip_punctuation, normalize_numbers, tuple(rules)).apply(text)


def normalize_text(text: str, *, exact: bool = False, normalize_numbers: bool = False) -> str:
    """Standard WER scoring normalisation: lowercase, drop punctuation (keeping apostrophes
    inside words), collapse spaces. ``exact=True`` only collapses whitespace.
    """
    return _options(exact, normalize_numbers).apply(text)


def spell_out_digits(text: str) -> str:
    """Replace every digit by its English word: ``"order 1234"`` -> ``"order one two three four"``
    (case and punctuation untouched, whitespace collapsed).

    Opt-in number normalisation for WER, for agents whose STT writes digits where the caller
    spoke them digit by digit.
    """
    return ScoringOptions(fold_case=False, strip_punctuation=False, normalize_numbers=True).apply(text)


@dataclass(frozen=True)
class TextErrors:
    """An error rate and its parts, from jiwer's alignment of two normalised texts."""

    rate: float
    """(substitutions + deletions + insertions) / reference units; 0.0 is perfect, can exceed 1.
    An empty reference gives the number of inserted units."""
    substitutions: int
    """Reference units replaced by another unit."""
    deletions: int
    """Reference units missing from the hypothesis."""
    insertions: int
    """Hypothesis units not in the reference."""
    hits: int
    """Units recognised correctly."""
    reference: str
    """The reference after normalisation."""
    hypothesis: str
    """The hypothesis after normalisation."""
    reference_units: int = 0
    """Words (or characters) in the normalised reference: the rate's denominator."""
    unit: Literal["word", "char"] = "word"
    """What is counted: words, or characters (spaces included, as ``jiwer.cer``)."""

    @property
    def errors(self) -> int:
        """Substitutions + deletions + insertions: the rate's numerator."""
        return self.substitutions + self.deletions + self.insertions


@dataclass(frozen=True)
class WordErrors(TextErrors):
    """Word error rate and its parts (:class:`TextErrors` counted in words)."""

    @property
    def wer(self) -> float:
        """The word error rate (= :attr:`rate`)."""
        return self.rate


def score_text(
    reference: str,
    hypothesis: str,
    scoring: ScoringOptions = ScoringOptions(),
    unit: Literal["word", "char"] = "word",
) -> TextErrors:
    """Align ``hypothesis`` with ``reference`` after ``scoring`` on both sides and count errors.

    Args:
        reference: What was really said.
        hypothesis: What was recognised.
        scoring: Normalisation applied to both texts.
        unit: ``"word"`` (WER) or ``"char"`` (CER).

    Returns:
        A :class:`WordErrors` for words, a :class:`TextErrors` for characters.
    """
    import jiwer

    ref, hyp = scoring.apply(reference), scoring.apply(hypothesis)
    cls = WordErrors if unit == "word" else TextErrors
    split = str.split if unit == "word" else list
    n_ref, n_hyp = len(split(ref)), len(split(hyp))
    if not ref or not hyp:  # jiwer refuses empty texts; the counts are plain
        errors = n_hyp if not ref else n_ref
        return cls(
            rate=float(errors) if not ref else 1.0,
            substitutions=0,
            deletions=n_ref,
            insertions=n_hyp if not ref else 0,
            hits=0,
            reference=ref,
            hypothesis=hyp,
            reference_units=n_ref,
            unit=unit,
        )
    out: Any = jiwer.process_words(ref, hyp) if unit == "word" else jiwer.process_characters(ref, hyp)
    s, d, i = int(out.substitutions), int(out.deletions), int(out.insertions)
    return cls(
        rate=(s + d + i) / n_ref,
        substitutions=s,
        deletions=d,
        insertions=i,
        hits=int(out.hits),
        reference=ref,
        hypothesis=hyp,
        reference_units=n_ref,
        unit=unit,
    )


def pooled_rate(scores: list[TextErrors]) -> float | None:
    """One rate over several scored texts: all their errors over all their reference units (a
    call's WER over its turns), None for no texts; an empty total reference gives the errors.
    """
    if not scores:
        return None
    errors, units = sum(s.errors for s in scores), sum(s.reference_units for s in scores)
    return errors / units if units else float(errors)


#: For texts that are already normalised: only whitespace is collapsed.
AS_IS = ScoringOptions(fold_case=False, strip_punctuation=False)


def _options(exact: bool, normalize_numbers: bool) -> ScoringOptions:
    return ScoringOptions(fold_case=not exact, strip_punctuation=not exact, normalize_numbers=normalize_numbers)


def word_error_rate(
    reference: str, hypothesis: str, *, exact: bool = False, normalize_numbers: bool = False
) -> WordErrors:
    """WER of ``hypothesis`` against ``reference`` after :func:`normalize_text` on both sides.

    An empty reference gives 0.0 for an empty hypothesis, else 1.0 per inserted word.
    """
    errors = score_text(reference, hypothesis, _options(exact, normalize_numbers), "word")
    assert isinstance(errors, WordErrors)
    return errors


def text_error_rate(reference: str, hypothesis: str, scoring: ScoringOptions = ScoringOptions()) -> float:
    """Word error rate after ``scoring`` on both sides (jiwer word alignment).

    Returns:
        (substitutions + deletions + insertions) / reference words; 0.0 is perfect and it can
        exceed 1. An empty reference gives the number of inserted words.
    """
    return score_text(reference, hypothesis, scoring, "word").rate


def character_error_rate(
    reference: str, hypothesis: str, scoring: ScoringOptions = ScoringOptions()
) -> float:
    """Character error rate after ``scoring`` on both sides (same as ``jiwer.cer`` on them).

    Returns:
        Character edits / reference characters (spaces included); 0.0 is perfect.
    """
    return score_text(reference, hypothesis, scoring, "char").rate
