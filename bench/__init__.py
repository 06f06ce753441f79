"""The "fast over a slow wire" benchmark: kp-list against a naive walker (`make bench`).

relay.py slows and counts the gdb ↔ gdbstub link, naive_walker.py is the baseline gdb
command, gdb_timer.py times commands inside gdb, run.py boots the labs and writes
bench/results/.
"""
