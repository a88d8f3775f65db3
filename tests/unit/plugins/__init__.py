"""Formula modules for tests of ``tasks.formulas.load_modules`` (not test files themselves)."""
