"""models layer of mitoscope."""
