"""The kp-* commands, one per file: parse → one model call → render.

plugin.load() registers them (plugin.COMMANDS lists them); importing registers nothing."""
