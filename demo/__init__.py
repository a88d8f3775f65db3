"""The one-command demo: embedded Redis plus every Procfile process under honcho."""
