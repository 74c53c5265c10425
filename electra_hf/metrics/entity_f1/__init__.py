"""Part of the package so that the `evaluate` module script beside this file ships with it."""
