"""Per-PC analysis: what the prologue has done by a PC, the variables in scope there and
where each lives, kp-locals' report, and where a CPU is in kprobe handling (kp-where)."""
