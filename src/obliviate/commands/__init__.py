"""One module per ``obliviate`` subcommand, each exposing ``register(subparsers)``."""
