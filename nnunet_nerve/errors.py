"""The one exception type that the command line turns into a single error line."""


class NerveError(Exception):
    """Bad input or an impossible request.

    The message must name the file (or case) and the problem in one line; the CLI prints
    ``error: <message>`` to stderr and exits with status 2. A list of problems (for
    example every validation failure of a registry) goes in ``problems``; each is
    printed on its own line before the summary message.
    """

    def __init__(self, message: str, problems: "list[str] | None" = None):
        super().__init__(message)
        self.problems = list(problems or [])


def refusals(items, check) -> dict:
    """{item: the NerveError} for every item of ``items`` whose ``check(item)`` raises
    NerveError; {} when every item passes. A batch runs this over all its cases before any
    work, so that a user learns of every bad file in one run (``refuse_batch``)."""
    refused = {}
    for item in items:
        try:
            check(item)
        except NerveError as e:
            refused[item] = e
    return refused


def refuse_batch(where, refused: dict, total: int, outcome: str, what: str = "case(s)") -> None:
    """Raise when ``refusals`` refused any item: the refusal itself when there is one, or when
    every refusal reads alike (a folder-wide problem that refuses every case); else every
    refusal's lines (each distinct line once), then ``<where>: N of <total> <what> refused
    (above); <outcome>``."""
    if not refused:
        return
    first = next(iter(refused.values()))
    if all((str(e), e.problems) == (str(first), first.problems) for e in refused.values()):
        raise first
    lines = list(dict.fromkeys(line for e in refused.values() for line in (*e.problems, str(e))))
    raise NerveError(f"{where}: {len(refused)} of {total} {what} refused (above); {outcome}", lines)
