"""cli layer of mitoscope."""
