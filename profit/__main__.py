"""`python -m profit ...`: the same as the `profit` console script."""

from profit.cli import main

raise SystemExit(main())
