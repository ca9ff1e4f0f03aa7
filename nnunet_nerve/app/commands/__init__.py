"""One module per group of verbs; each has ``add_parsers(subparsers)``."""
