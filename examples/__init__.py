"""Examples for deployments: a formula module and a signals file (docs/formulas.md)."""
