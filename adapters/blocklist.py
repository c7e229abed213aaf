"""Terms a listing must not use: trademarks, brand and character names.

One term per line in the file (``#`` starts a comment). A term matches as
whole words, case-insensitively, so "Nike" blocks "nike tee" but not
"Nikerson", and "Star Wars" blocks "star-wars" too.
"""

import re
from pathlib import Path

from adapters.base import ConfigError

DEFAULT_FILE = Path(__file__).resolve().parent / 'blocked_terms.txt'


class Blocklist:
    """The blocked terms, compiled into one pattern."""

    def __init__(self, terms):
        self.terms = sorted({t.strip() for t in terms if t.strip()}, key=str.lower)
        words = [r'[\s\-_]+'.join(map(re.escape, term.split())) for term in self.terms]
        self._pattern = re.compile(r'(?<![\w])(' + '|'.join(words) + r')(?![\w])',
                                   re.IGNORECASE) if words else None

    @classmethod
    def load(cls, path=''):
        path = Path(path) if path else DEFAULT_FILE
        try:
            lines = path.read_text(encoding='utf-8').splitlines()
        except OSError as exc:
            raise ConfigError(f'BLOCKED_TERMS_FILE: cannot read {path}: {exc}') from None
        return cls(line.split('#', 1)[0] for line in lines)

    def find(self, *texts):
        """The first blocked term in any of ``texts`` (strings or lists), or None."""
        if self._pattern is None:
            return None
        for text in texts:
            for part in (text if isinstance(text, (list, tuple)) else [text]):
                found = self._pattern.search(str(part or ''))
                if found:
                    return found.group(1)
        return None
