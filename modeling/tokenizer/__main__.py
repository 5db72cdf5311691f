"""``python -m modeling.tokenizer``: see ``modeling/tokenizer/__init__.py`` for the usage."""

import sys

from modeling.tokenizer.cli import main

sys.exit(main())
