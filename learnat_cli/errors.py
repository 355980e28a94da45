"""One error type for everything a user can get wrong.

``LearnatError`` carries where the problem is (file, line, field) so the CLI boundary can print one line
``file:line: field: message`` and exit 2.
"""

from __future__ import annotations


class LearnatError(Exception):
    """A user-facing error: bad input, missing file, SQL that does not parse, a refused query..."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.field = field

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = str(self.file)
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        if self.field:
            where += f"field '{self.field}': "
        return where + self.message


class GenerationError(LearnatError):
    """Generation failed for one prompt only (a served model's garbage answer, a prompt over its context
    length): ``ask`` records it as that question's error and goes on with the others."""
