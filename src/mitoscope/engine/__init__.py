"""engine layer of mitoscope."""
