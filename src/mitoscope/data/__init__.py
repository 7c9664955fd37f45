"""data layer of mitoscope."""
