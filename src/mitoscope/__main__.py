"""``python -m mitoscope`` runs the command-line interface."""

from __future__ import annotations

from mitoscope.cli.main import main

if __name__ == "__main__":
    main()
