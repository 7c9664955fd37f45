"""metrics layer of mitoscope."""
