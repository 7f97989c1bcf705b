"""The task registry: NAME → task module (the protocol is tasks/base.py). Its order is the order of
the leaderboard's columns, row keys and sections."""

from tasks import arith, gsm8k, math, tldr

TASKS = {m.NAME: m for m in (gsm8k, math, arith, tldr)}
