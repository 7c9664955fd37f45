"""Real H&E samples shipped with mitoscope for the demo and the bundled models' golden tests (see README.md here)."""
