import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while the libraries load: nothing was started
    sys.exit(130)

sys.exit(main())
