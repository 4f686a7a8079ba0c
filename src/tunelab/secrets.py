"""Credentials never leave in what tunelab prints or logs: URLs lose their password, and values
under a key that names a secret are masked, before a config reaches MLflow's params, tags or
artifacts, or a line reaches the terminal."""

import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
SECRET_KEY = re.compile(r"(password|passwd|secret|token|api_key|apikey|access_key|credentials?)$", re.IGNORECASE)


def shown(url: str) -> str:
    """The URL without its password (``postgresql://user:***@host/db``); anything else as it is."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL (a path with brackets, say)
        return url
    if password is None:
        return url
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{MASK}@{parts.hostname}{port}"))


def redacted(tree):
    """A config tree with every secret-named key's value masked and every URL shown without its password."""
    if isinstance(tree, dict):
        return {key: MASK if SECRET_KEY.search(str(key)) and value not in (None, "") else redacted(value)
                for key, value in tree.items()}
    if isinstance(tree, list):
        return [redacted(item) for item in tree]
    return shown(tree) if isinstance(tree, str) and "@" in tree else tree


USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@", re.IGNORECASE)


def scrubbed(text: str) -> str:
    """Free text (an error message) with the password of every URL in it masked."""
    return USERINFO.sub(rf"\g<1>{MASK}@", text)
