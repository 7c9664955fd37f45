"""report layer of mitoscope."""
