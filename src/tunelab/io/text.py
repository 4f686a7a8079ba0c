"""Text files as users hand them over: UTF-8, checked, with the line of any bad byte named."""

import codecs
from pathlib import Path

from tunelab.errors import TunelabError


def read_text(path: str | Path) -> str:
    """The file decoded as UTF-8; a byte-order mark or a non-UTF-8 byte is refused at its line."""
    path = Path(path)
    data = path.read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        raise TunelabError(f"{path}:1: starts with a UTF-8 byte-order mark (BOM), which would become part of "
                           "the first field; save the file as UTF-8 without BOM")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise TunelabError(f"{path}:{line}: not UTF-8 (byte 0x{data[error.start]:02x}); convert the file to "
                           "UTF-8, e.g. `iconv -f latin1 -t utf-8`") from None


def numbered_lines(path: str | Path) -> list[tuple[int, str]]:
    """(line number, line without its end of line) of a UTF-8 text file; only \\n ends a line."""
    return [(number, line.rstrip("\r")) for number, line in enumerate(read_text(path).split("\n"), start=1)]
