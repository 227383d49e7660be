"""`python -m amqpd` runs the same command as `amqpd`."""

import sys

from amqpd.cli import main

sys.exit(main())
