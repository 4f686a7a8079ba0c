"""Reading a label out of generated text, as a deployed model is used.

The rule, in order: text after an explicit answer marker ("the answer is", "Answer:",
"Sentiment:") decides; otherwise the last choice mentioned decides (chain-of-thought
reasoning mentions choices along the way and concludes last); a choice must stand as a word
(so "negatively" is not "negative", "positives" is not "positive"). None means unparseable,
which the evaluation reports as its own share.
"""

import re

_MARKER = re.compile(r"(?:the\s+answer\s+is|answer\s*:|sentiment\s*:|label\s*:)", re.IGNORECASE)


def _mentions(text: str, choices: list[str]) -> list[tuple[int, str]]:
    found = []
    for choice in choices:
        for match in re.finditer(rf"(?<![\w-]){re.escape(choice)}(?![\w-])", text, re.IGNORECASE):
            found.append((match.start(), choice))
    return sorted(found)


def parse_choice(text: str, choices: list[str]) -> str | None:
    """The choice the text answers with, or None when it names none (or only negates them all)."""
    markers = list(_MARKER.finditer(text))
    if markers:
        after = _mentions(text[markers[-1].end():], choices)
        if after:
            return after[0][1]
    mentioned = _mentions(text, choices)
    return mentioned[-1][1] if mentioned else None
