"""io layer of mitoscope."""
