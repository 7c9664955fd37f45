"""utils layer of mitoscope."""
