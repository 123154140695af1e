"""Decisions: observed children and the job's spec -> actions and a computed status. No I/O."""
