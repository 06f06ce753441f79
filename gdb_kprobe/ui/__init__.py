"""Output: text (byte-identical to debugfs where it mirrors it), JSON, colour. No gdb calls:
everything arrives as model objects and a palette."""
