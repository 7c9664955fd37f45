"""inference layer of mitoscope."""
