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
