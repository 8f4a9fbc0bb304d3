"""edgetpuctl's exit codes, one table for every command module (``check`` adds its verdicts)."""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
#: A bad command line (argparse exits with it).
EXIT_USAGE = 2
#: What a shell reports for a tool stopped by Ctrl-C (128 + SIGINT's 2).
EXIT_INTERRUPTED = 130
#: What a shell reports for a tool killed by SIGPIPE (128 + 13).
EXIT_BROKEN_PIPE = 141
