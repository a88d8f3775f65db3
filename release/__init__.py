"""The release phase: checks a deploy before its processes start (Procfile: release)."""
