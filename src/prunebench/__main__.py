"""``python -m prunebench``: same as the ``prunebench`` command."""

from prunebench.cli.main import main

raise SystemExit(main())
