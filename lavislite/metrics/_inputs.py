"""Input checks shared by the metric functions (ids, emptiness)."""

from __future__ import annotations

from typing import Any, Hashable, Mapping

from lavislite.common.errors import DataError


def match_ids(results: Mapping, reference: Mapping, *, what: str) -> list[tuple[Hashable, Hashable]]:
    """Pair every result id with its reference id, in result order.

    Ids may be ints in one mapping and strings in the other (json round trips turn int keys into
    strings), so ``7`` and ``"7"`` match. An id found in neither form is an error naming it.
    """
    if not results:
        raise DataError(f"{what}: the result set is empty; there is nothing to evaluate")
    by_text: dict[str, Hashable] = {}
    for key in reference:
        text = str(key)
        if text in by_text and by_text[text] != key:
            raise DataError(
                f"{what}: ground-truth ids {by_text[text]!r} and {key!r} only differ in type; "
                "use one type (int or str) for the ids"
            )
        by_text[text] = key
    pairs = []
    for key in results:
        if key in reference:
            pairs.append((key, key))
        elif str(key) in by_text:
            pairs.append((key, by_text[str(key)]))
        else:
            sample = ", ".join(repr(k) for k in list(reference)[:3])
            raise DataError(
                f"{what}: result id {key!r} is not in the ground truth ({len(reference)} ids, e.g. {sample}); "
                "evaluate against the annotation file of the same split"
            )
    return pairs


def type_name(value: Any) -> str:
    return type(value).__name__
