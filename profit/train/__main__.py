"""`python -m profit.train`: train the shipped networks (see `profit.train.classifiers`)."""

import sys

from profit.train.classifiers import main

sys.exit(main())
