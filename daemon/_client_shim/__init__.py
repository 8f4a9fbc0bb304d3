"""``edgetpud.client``: the name camera apps import.

The implementation lives in ``edgetpud.daemon.client``; this package only
re-exports it (setup.py maps it to ``edgetpud.client``), so both names give the
same classes and ``except ClientError`` catches errors raised through either.
"""
from edgetpud.daemon.client import *  # noqa: F401,F403
from edgetpud.daemon.client import __all__  # noqa: F401
