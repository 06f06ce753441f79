"""The "fast over a slow wire" benchmark: kp-list against a naive walker (`make bench`).

relay.py slows and counts the gdb ↔ gdbstub link, naive_walker.py is the naive gdb
command kp-list is measured against, gdb_timer.py times commands inside gdb; run.py (the
command line) boots the labs through plan.py and measure.py and writes bench/results/
with report.py. README.md lists every module.
"""
