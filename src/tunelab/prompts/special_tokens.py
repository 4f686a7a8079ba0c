"""Data text is text: a row that holds a model's control token (``<|im_end|>``, ``<|endoftext|>``)
must not reach the model as that token, or a sentence could end a chat turn mid-answer, in
training and at the server alike.

The tokenizer cannot be told which parts of a rendered prompt came from data (the chat template
writes real control tokens around them; ``split_special_tokens`` would split those too), so
the data is escaped before any template sees it: a zero-width space after a control token's first
character, which the tokenizer then reads as ordinary characters, and a reader barely sees.
"""

import re
from collections.abc import Iterable

ZERO_WIDTH_SPACE = "\u200b"


class DataText:
    """Escapes a tokenizer's control tokens in data, counting what it escaped (data/formatted/report.json)."""

    def __init__(self, tokenizer):
        tokens = {token.content for token in tokenizer.added_tokens_decoder.values() if token.special}
        ordered = sorted((token for token in tokens if len(token) > 1), key=len, reverse=True)  # longest first
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        self.escaped = 0
        """Control-token strings escaped so far."""
        self.rows_escaped = 0
        """Rows (or requests) that held at least one."""

    def text(self, value: str) -> str:
        if self._pattern is None:
            return value
        escaped, count = self._pattern.subn(lambda found: found[0][0] + ZERO_WIDTH_SPACE + found[0][1:], value)
        self.escaped += count
        return escaped

    def value(self, value):
        """Every string inside ``value`` (a row, its chat turns, a request's messages) escaped."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {key: self.value(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.value(item) for item in value]
        return value

    def rows(self, rows: Iterable[dict]) -> list[dict]:
        escaped_rows = []
        for row in rows:
            before = self.escaped
            escaped_rows.append(self.value(row))
            self.rows_escaped += self.escaped > before
        return escaped_rows

    def report(self) -> dict:
        return {"rows": self.rows_escaped, "occurrences": self.escaped,
                "how": "a zero-width space after the first character, so data text is never a control token"}
