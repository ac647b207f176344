"""The `turnout` client commands, one module per family, each with an
`add(subparsers)` that registers its commands; gateway/cli.py lists them."""
